"""Headless Chromium (Debian's `chromium`) driven over the Chrome DevTools protocol.

Why CDP and not Playwright: the protocol needs nothing but the browser and the
`websockets` library already in the lock; Playwright would add a Python package with its
own Node driver, pinned to a Chromium revision that Debian's security updates move past.
The few calls the dashboard tests need (navigate, evaluate, keys, screenshot, console)
are a page of code.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from websockets.sync.client import ClientConnection, connect

CHROMIUM = os.environ.get("POTOK_CHROMIUM", "/usr/bin/chromium")


class BrowserError(AssertionError):
    pass


class Browser:
    """One headless Chromium with one page; console errors and uncaught exceptions
    collected as they happen."""

    def __init__(self, width: int = 1280, height: int = 1000) -> None:
        if shutil.which(CHROMIUM) is None:
            raise RuntimeError(f"{CHROMIUM} is not installed (Debian package `chromium`)")
        self.profile = Path(tempfile.mkdtemp(prefix="potok-chromium-"))
        self.process = subprocess.Popen(
            [
                CHROMIUM,
                "--headless=new",
                "--no-sandbox",  # root in CI containers
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--metrics-recording-only",
                "--password-store=basic",
                f"--window-size={width},{height}",
                f"--user-data-dir={self.profile}",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.errors: list[str] = []
        self._ids = itertools.count(1)
        self._closing = contextlib.ExitStack()
        try:
            self.port = self._debugging_port()
            self.ws = self._open_page()
        except BaseException:
            self.close()  # never leave a browser behind
            raise
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable")
        self.send(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )

    def _debugging_port(self) -> int:
        active = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"chromium exited with {self.process.returncode}")
            try:
                return int(active.read_text().splitlines()[0])
            except (OSError, IndexError, ValueError):
                time.sleep(0.05)
        raise RuntimeError("chromium did not open its debugging port")

    def _open_page(self) -> ClientConnection:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list", timeout=10) as r:
            pages = [t for t in json.load(r) if t["type"] == "page"]
        url = pages[0]["webSocketDebuggerUrl"]
        return self._closing.enter_context(connect(url, max_size=64 * 1024 * 1024))

    # The protocol -----------------------------------------------------------------

    def send(self, method: str, timeout: float = 30.0, **params: Any) -> dict[str, Any]:
        ident = next(self._ids)
        self.ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            message = json.loads(self.ws.recv(timeout=max(0.01, deadline - time.monotonic())))
            if message.get("id") == ident:
                if "error" in message:
                    raise BrowserError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result
            self._event(message)

    def _event(self, message: dict[str, Any]) -> None:
        method, params = message.get("method"), message.get("params", {})
        if method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
            texts = [str(a.get("value", a.get("description", ""))) for a in params["args"]]
            self.errors.append("console." + params["type"] + ": " + " ".join(texts))
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            exception = details.get("exception", {})
            self.errors.append("uncaught: " + exception.get("description", details.get("text", "")))
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            entry = params["entry"]
            self.errors.append(f"log ({entry['source']}): {entry['text']} {entry.get('url', '')}")

    def pump(self) -> None:
        """Take the events that arrived since the last call (console errors)."""
        self.evaluate("0")

    # What the tests do -------------------------------------------------------------

    def navigate(self, url: str) -> None:
        self.send("Page.navigate", url=url)
        self.wait_for("document.readyState === 'complete'")

    def evaluate(self, expression: str, await_promise: bool = False) -> Any:
        result = self.send(
            "Runtime.evaluate",
            expression=expression,
            returnByValue=True,
            awaitPromise=await_promise,
        )
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression!r}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 20.0) -> None:
        """Until `expression` is truthy in the page (an element counts: `!!` there)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.evaluate(f"!!({expression})"):
                return
            time.sleep(0.1)
        raise BrowserError(f"never true: {expression}")

    def focus(self, selector: str) -> None:
        found = self.evaluate(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
            " if (!e) return false; e.focus(); return document.activeElement === e; })()"
        )
        if not found:
            raise BrowserError(f"cannot focus {selector}")

    def press(self, key: str) -> None:
        """A real key press (keyDown, char, keyUp) to the focused element."""
        codes = {"Enter": 13, "Tab": 9, "Escape": 27, " ": 32}
        code = codes[key]
        text = {"Enter": "\r", " ": " "}.get(key)
        down = {"key": key, "code": "Space" if key == " " else key}
        down["windowsVirtualKeyCode"] = code  # type: ignore[assignment]
        self.send("Input.dispatchKeyEvent", type="rawKeyDown", **down)
        if text is not None:
            self.send("Input.dispatchKeyEvent", type="char", text=text, **down)
        self.send("Input.dispatchKeyEvent", type="keyUp", **down)

    def type_text(self, text: str) -> None:
        """Text typed into the focused element (as an input method would)."""
        self.send("Input.insertText", text=text)

    def screenshot(self, path: Path) -> None:
        data = self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data["data"]))

    def inject_script(self, path: Path) -> None:
        """Run a script file in the page (DevTools evaluation is not bound by its CSP)."""
        self.evaluate(path.read_text())

    def close(self) -> None:
        try:
            self._closing.close()
        finally:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            shutil.rmtree(self.profile, ignore_errors=True)
