"""What a user installs: the wheel in a fresh venv with no test extras, serving the README's app.

The wheel is built from this checkout and installed with ``[gevent]`` only; the README's Flask
example is written to ``app.py`` and served with the README's command. Then ``[redis]`` is added
and the same app runs as two workers sharing one service. Nothing from the test extras may be
needed: a missing runtime dependency fails here.
"""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

from .servers import ROOT, start_gunicorn_gevent

VENV_PYTHON = "bin/python"


def readme_app() -> str:
    """The Flask example of the README, marked ``<!-- app.py: ... -->``."""
    after = (ROOT / "README.md").read_text().split("<!-- app.py:", 1)[1]
    return after.split("```python\n", 1)[1].split("```", 1)[0]


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    """A fresh venv with the wheel of this checkout installed with [gevent]."""
    wheels = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-q", "-w", str(wheels)], check=True)
    (wheel,) = wheels.glob("pubsubsse-*.whl")
    root = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(root)], check=True)
    install(root, f"{wheel}[gevent]")
    return root, wheel


def install(root, requirement: str) -> None:
    subprocess.run(
        [str(root / VENV_PYTHON), "-m", "pip", "install", "-q", "--disable-pip-version-check", requirement],
        check=True,
        timeout=600,
    )


def serve(root, app_dir, extra_args=(), env=None):
    """The README's command: ``gunicorn -k gevent -b 127.0.0.1:PORT app:app``, from the venv."""
    env = {"PATH": "/usr/bin:/bin", **(env or {})}
    return start_gunicorn_gevent(str(root / VENV_PYTHON), "app:app", app_dir, env, extra_args)


def stop(proc) -> str:
    proc.terminate()
    output, _ = proc.communicate(timeout=30)
    return output


def check_serving(base: str) -> None:
    """A client subscribes to T-orders, opens its stream and gets what the app publishes."""
    with httpx.Client(base_url=base, timeout=10) as http:
        assert "PubSubSSE" in http.get("/sse/pubsubsse.js").text  # the browser client, from the wheel
        client = http.get("/sse/add/user").json()["client_id"]
        assert http.get("/sse/sub", params={"client_id": client, "topic": "T-orders"}).json() == {"ok": "true"}
        with http.stream("GET", "/sse/event", params={"client_id": client}) as stream:
            lines = stream.iter_lines()
            assert next(lines) == "retry: 3000"
            assert http.post("/orders/7/shipped").status_code == 204
            for line in lines:
                if '"updates":[' in line:
                    assert '{"order":7,"status":"shipped"}' in line
                    return
        raise AssertionError("no update arrived")


@pytest.mark.timeout(900)
def test_the_wheel_with_gevent_then_redis_serves_the_readme_app(venv, tmp_path, redis_server):
    root, wheel = venv
    python = str(root / VENV_PYTHON)
    for absent in ("pytest", "redis", "psycopg", "hypothesis", "playwright"):  # no test extras here
        assert subprocess.run([python, "-c", f"import {absent}"], capture_output=True).returncode != 0, absent
    (tmp_path / "app.py").write_text(readme_app())

    proc, base = serve(root, tmp_path)
    try:
        check_serving(base)
    finally:
        output = stop(proc)
    assert "Traceback" not in output, output

    install(root, f"{wheel}[redis]")
    env = {"FLASK_PUBSUBSSE_REDIS_URL": redis_server.url, "FLASK_PUBSUBSSE_REDIS_KEY": "install-test"}
    proc, base = serve(root, tmp_path, ["-w", "2"], env)
    try:
        for _ in range(3):  # whichever worker answers
            check_serving(base)
        publisher = (
            "import sys; from pubsubsse import Publisher; "
            "Publisher(sys.argv[1], redis_key='install-test').publish('orders', 1)"
        )
        subprocess.run([python, "-c", publisher, redis_server.url], check=True, timeout=60)
    finally:
        output = stop(proc)
    assert "Traceback" not in output, output


@pytest.mark.timeout(900)
def test_the_wheel_with_django_serves_the_django_example(venv, tmp_path):
    """``pip install pubsubsse[gevent,django]`` and the example project, copied out of the checkout."""
    import shutil

    from .test_django import check_django_demo, serve_django_demo

    root, wheel = venv
    install(root, f"{wheel}[gevent,django]")
    project = tmp_path / "django_demo"
    shutil.copytree(ROOT / "example" / "django_demo", project)
    proc, base = serve_django_demo(str(root / VENV_PYTHON), project, env={"PATH": "/usr/bin:/bin"})
    try:
        check_django_demo(base)
    finally:
        output = stop(proc)
    assert "Traceback" not in output, output
