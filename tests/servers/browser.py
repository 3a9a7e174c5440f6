"""Headless Chromium (Debian's ``chromium``) driven over the DevTools protocol.

:class:`Browser` starts Chromium as root with ``--headless --no-sandbox`` and a
fresh profile, opens one page and talks to it through the DevTools WebSocket:
:meth:`Browser.evaluate` runs JavaScript in the page and returns its value,
:meth:`Browser.wait_for` polls an expression until it is truthy, and
:meth:`Browser.screenshot` saves a PNG. Nothing is faked: the page is loaded
from a real HTTP server and runs its own script.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from websockets.sync.client import ClientConnection, connect

from servers import ServerStartError

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-dev-shm-usage",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
)
_LISTENING = re.compile(r"DevTools listening on (ws://127\.0\.0\.1:(\d+)/\S+)")


def chromium_binary() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    raise ServerStartError("chromium is not installed (apt-get install -y chromium)")


class Browser:
    def __init__(self, width: int = 1100, height: int = 900) -> None:
        self.width, self.height = width, height
        self._profile = tempfile.mkdtemp(prefix="exportmon-chromium-")
        self._process: subprocess.Popen[bytes] | None = None
        self._socket: ClientConnection | None = None
        self._next_id = 0
        self.port = 0

    def start(self, timeout: float = 90.0) -> None:
        command = [
            chromium_binary(),
            *FLAGS,
            f"--user-data-dir={self._profile}",
            f"--window-size={self.width},{self.height}",
            "about:blank",
        ]
        self._process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        assert self._process.stderr is not None
        deadline = time.monotonic() + timeout
        seen = []
        while time.monotonic() < deadline:
            line = self._process.stderr.readline().decode("utf-8", "replace")
            if not line:
                if self._process.poll() is not None:
                    break
                continue
            seen.append(line)
            match = _LISTENING.search(line)
            if match:
                self.port = int(match.group(2))
                break
        if not self.port:
            self.stop()
            raise ServerStartError("chromium did not start:\n" + "".join(seen[-20:]))
        # Keep reading stderr so Chromium never blocks on a full pipe.
        import threading

        threading.Thread(target=self._drain, daemon=True).start()
        targets = json.loads(
            urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list", timeout=30).read()
        )
        page = next(t for t in targets if t.get("type") == "page")
        self._socket = connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=30)
        self.call("Page.enable")
        self.call("Runtime.enable")

    def _drain(self) -> None:
        assert self._process is not None and self._process.stderr is not None
        for _ in iter(self._process.stderr.readline, b""):
            pass

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """One DevTools command; its result (events that arrive meanwhile are dropped)."""
        assert self._socket is not None
        self._next_id += 1
        number = self._next_id
        self._socket.send(json.dumps({"id": number, "method": method, "params": params}))
        while True:
            message = json.loads(self._socket.recv(timeout=60))
            if message.get("id") == number:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return dict(message.get("result") or {})

    def goto(self, url: str) -> None:
        self.call("Page.navigate", url=url)
        self.wait_for("document.readyState === 'complete'")

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float = 30.0) -> None:
        """Poll until ``expression`` is truthy in the page (a DOM node counts)."""
        deadline = time.monotonic() + timeout
        while True:
            if self.evaluate(f"Boolean({expression})"):
                return
            if time.monotonic() > deadline:
                body = self.evaluate("document.body ? document.body.innerText.slice(0, 2000) : ''")
                raise AssertionError(f"timed out waiting for: {expression}\npage text:\n{body}")
            time.sleep(0.2)

    def screenshot(self, path: Path) -> None:
        data = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        path.write_bytes(base64.b64decode(data["data"]))

    def stop(self) -> None:
        if self._socket is not None:
            with contextlib.suppress(Exception):
                self._socket.close()
            self._socket = None
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(10)
            self._process = None
        shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
