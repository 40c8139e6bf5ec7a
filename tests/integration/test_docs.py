"""Every Python example in the documentation runs, and the pages the README links to exist.

A page's examples run in order in one fresh process (a later example may use an earlier one's
names), from an empty directory, with the repository importable. An example marked
``<!-- fragment: path -->`` is an excerpt of a file of the repository (which its own tests run):
it must parse as it is shown (a reader pastes it), and each of its lines must be in that file.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from ..servers import ROOT

DOCS = ROOT / "docs"
PAGES = sorted(p for p in DOCS.rglob("*.md") if "_build" not in p.parts)
BLOCK = re.compile(r"(?:<!-- fragment: (?P<source>[^ ]+) -->\n)?```python\n(?P<code>.*?)```", re.S)


def examples(page: Path) -> list[tuple[str | None, str]]:
    return [(m.group("source"), m.group("code")) for m in BLOCK.finditer(page.read_text())]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("page", [p for p in PAGES if examples(p)], ids=lambda p: str(p.relative_to(DOCS)))
def test_the_examples_of_the_page_run(page: Path, tmp_path: Path) -> None:
    runnable = []
    for source, code in examples(page):
        if source is None:
            runnable.append(code)
            continue
        text = (ROOT / source).read_text()
        compile(code, f"{page.name}: a fragment of {source}", "exec")  # pasted as shown, it must parse
        for line in code.splitlines():
            if line.strip() and not line.strip().startswith("#"):
                assert line.strip() in text, f"{page.name}: {line.strip()!r} is not in {source}"
    script = "\n\n".join(runnable)
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert result.returncode == 0, f"{page.name}:\n{result.stderr[-3000:]}"


def test_every_page_the_readme_links_to_exists() -> None:
    readme = (ROOT / "README.md").read_text()
    for target in re.findall(r"\]\(((?:docs|example)/[^)#]+)\)", readme):
        assert (ROOT / target).exists(), target


def test_the_docs_and_docstrings_cite_nothing_outside_the_repository() -> None:
    shipped = [*PAGES, ROOT / "README.md", *(ROOT / "pubsubsse").rglob("*.py"), *(ROOT / "example").rglob("*.py")]
    for path in shipped:
        text = path.read_text()
        for outside in ("PROTOCOL.md", "API.md", "CONTEXT.md", "../shared"):
            assert outside not in text, f"{path.relative_to(ROOT)} cites {outside}"


#: The modules whose ``__all__`` is public API, and where the reference documents each name.
PUBLIC = {
    "pubsubsse": None,
    "pubsubsse.web": None,
    "pubsubsse.wsgi": None,
    "pubsubsse.django": None,
    "pubsubsse.errors": None,
    "pubsubsse.backends": None,
    "pubsubsse.metrics": None,
    "pubsubsse.pages": None,
    "pubsubsse.transactions": None,
    "pubsubsse.testing": None,
    "pubsubsse.testing.pytest_plugin": None,
}


@pytest.mark.timeout(300)
def test_the_api_reference_documents_every_public_name(tmp_path: Path) -> None:
    """The site builds without a warning (nitpicky), and every public name has an entry."""
    import importlib

    build = subprocess.run(
        [sys.executable, "-m", "sphinx", "-E", "-W", "--keep-going", "-n", "-q", "-b", "html", "docs", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert build.returncode == 0, build.stderr[-5000:]
    anchors = set(re.findall(r'id="(pubsubsse[\w.]*)"', (tmp_path / "api.html").read_text()))
    documented = {anchor.rsplit(".", 1)[-1] for anchor in anchors}
    missing = []
    for module, names in PUBLIC.items():
        for name in names if names is not None else importlib.import_module(module).__all__:
            if name != "__version__" and name not in documented:
                missing.append(f"{module}.{name}")
    assert not missing, missing
