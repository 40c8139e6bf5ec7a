"""The scripts served below the endpoints' mount point: the browser client and the live HTML helper."""

from __future__ import annotations

from pathlib import Path

from pubsubsse.web._http import Answer, FileReply, Request, error_reply

__all__ = ["SCRIPTS", "client_script", "client_script_reply"]

#: The scripts served below the mount point, by action: the browser client, and the helper that
#: makes live HTML streams (htmx's SSE extension, Turbo) resume where their page is.
SCRIPTS = {"client_script": "pubsubsse.js", "html_script": "pubsubsse-html.js"}


def client_script(name: str = "pubsubsse.js") -> Path:
    """Where a served script is: in the installed package, or (a source checkout) in ``static/``."""
    if name not in SCRIPTS.values():
        raise ValueError(f"no script {name!r}; one of {sorted(SCRIPTS.values())}")
    package = Path(__file__).resolve().parent.parent
    built = package / "static" / name
    return built if built.exists() else package.parent / "static" / name


def client_script_reply(request: Request) -> Answer:
    """Answer a request for a served script (the browser client, the live HTML helper)."""
    if request.method not in ("GET", "HEAD"):
        return error_reply(405, "method not allowed", {"Allow": "GET, HEAD"})
    return FileReply(client_script(request.path.rsplit("/", 1)[-1]), "text/javascript", 300, [])
