"""Headless Chromium over the DevTools protocol: open a page, wait for it, click, take screenshots.

Used by the viewer's browser test and to make the documentation's screenshot. Needs Debian's
``chromium`` (``make setup`` installs it). WebGL runs on SwiftShader (Chromium's CPU implementation),
so splats render without a GPU. The browser runs in its own process group with a throw-away profile;
:meth:`HeadlessChromium.close` ends the whole group, so nothing is left running.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_FLAGS = (
    "--headless=new", "--no-first-run", "--no-default-browser-check", "--disable-extensions",
    "--disable-background-networking", "--disable-sync", "--disable-dev-shm-usage", "--mute-audio",
    "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist",
    "--disable-background-timer-throttling", "--disable-renderer-backgrounding", "--hide-scrollbars",
)


class BrowserError(RuntimeError):
    """The browser could not be started or did not answer in time."""


def find_chromium() -> str | None:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


class HeadlessChromium:
    """One headless browser with one page; a context manager that always ends the browser."""

    def __init__(self, width: int = 1200, height: int = 800, timeout_s: float = 120.0) -> None:
        exe = find_chromium()
        if exe is None:
            raise BrowserError("chromium not found: install Debian's chromium package (make setup does)")
        self.timeout_s = timeout_s
        self._profile = Path(tempfile.mkdtemp(prefix="synshot-chromium-"))
        flags = list(CHROMIUM_FLAGS) + [f"--window-size={width},{height}", "--remote-debugging-port=0",
                                        f"--user-data-dir={self._profile}"]
        if os.geteuid() == 0:
            flags.append("--no-sandbox")  # Chromium refuses to run as root with its sandbox
        self._log = open(self._profile / "chromium.log", "wb")
        self.proc = subprocess.Popen([exe, *flags, "about:blank"], stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        self._ws = None
        self._id = 0
        try:
            self._connect()
            self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                      mobile=False)  # the page is exactly width x height, whatever the window decorations
        except BaseException:
            self.close()
            raise

    # ---------------------------------------------------------------- protocol
    def _connect(self) -> None:
        from websockets.sync.client import connect

        port_file = self._profile / "DevToolsActivePort"
        end = time.monotonic() + self.timeout_s
        while not (port_file.is_file() and port_file.read_text().strip()):
            if self.proc.poll() is not None:
                raise BrowserError(f"chromium exited with {self.proc.returncode}: {self.log_tail()}")
            if time.monotonic() > end:
                raise BrowserError(f"chromium did not open its DevTools port in {self.timeout_s:.0f} s")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as resp:
                    pages = [t for t in json.load(resp) if t.get("type") == "page"]
                if pages:
                    break
            except OSError:
                pass
            if time.monotonic() > end:
                raise BrowserError("chromium has no page to attach to")
            time.sleep(0.2)
        self._ws = connect(pages[0]["webSocketDebuggerUrl"], max_size=None, open_timeout=30)

    def call(self, method: str, timeout_s: float | None = None, **params):
        """Send one DevTools command and return its result (events in between are dropped)."""
        self._id += 1
        my_id = self._id
        self._ws.send(json.dumps({"id": my_id, "method": method, "params": params}))
        end = time.monotonic() + (timeout_s or self.timeout_s)
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise BrowserError(f"{method}: no answer in {timeout_s or self.timeout_s:.0f} s")
            msg = json.loads(self._ws.recv(timeout=left))
            if msg.get("id") == my_id:
                if "error" in msg:
                    raise BrowserError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    # ---------------------------------------------------------------- page actions
    def open(self, url: str) -> None:
        self.call("Page.enable")
        self.call("Page.navigate", url=url)

    def evaluate(self, expression: str):
        """Value of a JavaScript expression in the page (JSON-serialisable results)."""
        res = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in res:
            raise BrowserError(f"javascript failed: {res['exceptionDetails'].get('text')}: {expression[:200]}")
        return res.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout_s: float, poll_s: float = 0.5):
        """Poll until the expression is truthy; returns its value (raises BrowserError on timeout)."""
        end = time.monotonic() + timeout_s
        while True:
            try:
                value = self.evaluate(expression)
            except BrowserError:
                value = None
            if value:
                return value
            if time.monotonic() > end:
                raise BrowserError(f"timed out after {timeout_s:.0f} s waiting for: {expression[:200]}")
            time.sleep(poll_s)

    def click(self, x: float, y: float) -> None:
        """A left mouse click at page coordinates (press, release), as a person would."""
        self.call("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)
        self.call("Input.dispatchMouseEvent", type="mousePressed", x=x, y=y, button="left", clickCount=1)
        self.call("Input.dispatchMouseEvent", type="mouseReleased", x=x, y=y, button="left", clickCount=1)

    def screenshot(self) -> np.ndarray:
        """(H, W, 3) uint8 of the page as shown."""
        from PIL import Image

        data = self.call("Page.captureScreenshot", format="png")["data"]
        return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB"))

    def log_tail(self, n: int = 2000) -> str:
        try:
            return (self._profile / "chromium.log").read_text(errors="replace")[-n:]
        except OSError:
            return ""

    # ---------------------------------------------------------------- lifecycle
    def close(self) -> None:
        """End the browser and every process it started; remove the profile."""
        if self._ws is not None:
            try:
                self._ws.close()
            except Exception:  # noqa: BLE001 - closing a dead connection
                pass
            self._ws = None
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # helpers (GPU, renderer, zygote) share the group
        except ProcessLookupError:
            pass
        if self.proc.poll() is None:
            self.proc.wait(timeout=10)
        end = time.monotonic() + 30  # orphaned helpers are reaped by init: wait until the group is gone
        while time.monotonic() < end:
            try:
                os.killpg(self.proc.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        self._log.close()
        shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> "HeadlessChromium":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
