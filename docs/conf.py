"""Sphinx configuration of the pubsubsse documentation (``sphinx-build -W -n docs docs/_build/html``)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pubsubsse  # noqa: E402

project = "pubsubsse"
author = "The pubsubsse authors"
copyright = "2026, the pubsubsse authors"
release = pubsubsse.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3
exclude_patterns = ["_build", "bench-results", "README.md"]

html_theme = "furo"
html_title = f"pubsubsse {release}"
html_static_path: list[str] = []

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autodoc_default_options: dict[str, object] = {}
autoclass_content = "class"

# Nitpicky mode checks every reference. References into other projects' documentation
# (Python's, Flask's, Django's, ...) cannot resolve without network access to their
# inventories, so they are named here, by module, rather than silenced wholesale.
nitpick_ignore_regex = [
    (r"py:.*", r"(typing|typing_extensions|collections\.abc|_typeshed)\..*"),
    (r"py:.*", r"(flask|werkzeug|django|blinker|redis|psycopg|click|itsdangerous|gevent|celery)(\..*)?"),
    (r"py:.*", r"(threading|socket|select|selectors|queue|enum|json|pathlib|dataclasses|decimal|uuid)(\..*)?"),
    # The type variable of EventManager[T], and the core's internals that public signatures mention.
    (r"py:.*", r"pubsubsse\.events\.T"),
    (r"py:.*", r"pubsubsse\.(core|streams|servers)(\..*)?"),
    (r"py:.*", r"Flask|JsonDumps|Authorize|ClientRecord|TopicRecord|GroupRecord|StreamOwner"),
    (r"py:class", r"(Any|Callable|Iterator|Iterable|Mapping|Protocol|Path|Effects|StateItem|Position|T|T_co)"),
    (r"py:class", r"(bytes|str|int|float|bool|dict|list|tuple|set|frozenset|type|object|None|NoneType)"),
    (r"py:class", r"(Exception|ValueError|TypeError|RuntimeError|KeyError)"),
]
