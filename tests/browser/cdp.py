"""A Chromium driven over the DevTools protocol alone, for what Playwright cannot do.

Playwright emulates focus on every page it attaches to, which keeps the page "visible": CDP's
``Page.setWebLifecycleState`` then cannot freeze it. This browser has no Playwright attached.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import websocket

from .conftest import CHROMIUM


class Browser:
    """A headless Chromium of its own (stopped by :meth:`close`), with one page driven over CDP."""

    def __init__(self) -> None:
        self._profile = tempfile.TemporaryDirectory(prefix="pubsubsse-cdp-")
        self.proc = subprocess.Popen(
            [
                CHROMIUM,
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                f"--user-data-dir={self._profile.name}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its helper processes in a group of their own, stopped with it
        )
        try:
            port_file = Path(self._profile.name) / "DevToolsActivePort"
            deadline = time.monotonic() + 30
            while not port_file.exists() or not port_file.read_text().strip():
                assert time.monotonic() < deadline, "Chromium did not open its DevTools port"
                time.sleep(0.05)
            port = int(port_file.read_text().split()[0])
            targets = httpx.get(f"http://127.0.0.1:{port}/json", timeout=10).json()
            page = next(target for target in targets if target["type"] == "page")
            self._socket = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=30)
        except BaseException:
            self.close()
            raise
        self._id = 0

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        """Send a command to the page and return its result (events that come meanwhile are dropped)."""
        self._id += 1
        self._socket.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            answer = json.loads(self._socket.recv())
            if answer.get("id") == self._id:
                assert "error" not in answer, answer["error"]
                return answer["result"]

    def evaluate(self, expression: str) -> Any:
        """Return the value of a JavaScript expression in the page."""
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 15) -> Any:
        """Wait until the expression is truthy in the page; return its value."""
        deadline = time.monotonic() + timeout
        while not (value := self.evaluate(expression)):
            assert time.monotonic() < deadline, f"timed out waiting for {expression}"
            time.sleep(0.05)
        return value

    def close(self) -> None:
        """Stop the browser."""
        sock = getattr(self, "_socket", None)
        if sock is not None:
            sock.close()
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        # Helpers that outlive the browser process may still write to the profile while it is removed.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while True:
            try:
                self._profile.cleanup()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
