"""Headless Chromium driven over the Chrome DevTools Protocol, with `websockets`.

    async with Chromium(tmp_path) as browser:
        page = await browser.open("http://127.0.0.1:8080/")
        await page.evaluate("document.title")
        await page.screenshot(tmp_path / "page.png")

Chromium is Debian's `chromium` package (.ci/run installs it). Where it is not
installed the browser tests skip, unless NETCORE_REQUIRE_BROWSER=1 (set by
.ci/run), where they fail: CI must never pass by skipping them.
"""
from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import shutil
import sys

import pytest
import websockets

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
START_TIMEOUT = 60.0


def find_chromium() -> str:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    if os.environ.get("NETCORE_REQUIRE_BROWSER") == "1":
        pytest.fail("chromium is not installed (apt-get install chromium), and "
                    "NETCORE_REQUIRE_BROWSER=1 says this run must test in a browser")
    pytest.skip("chromium is not installed (Debian: apt-get install chromium)")


class CdpError(Exception):
    pass


class Chromium:
    def __init__(self, profile_dir):
        self.profile_dir = profile_dir
        self.proc = None
        self.ws = None
        self.ids = itertools.count(1)
        self.pending: dict[int, asyncio.Future] = {}
        self.waiting: dict[tuple[str, str | None], asyncio.Future] = {}    # events awaited
        self.reader = None
        self.stderr_lines: list[str] = []

    async def __aenter__(self):
        exe = find_chromium()
        args = [exe, "--headless=new", "--disable-gpu", "--no-first-run",
                "--no-default-browser-check", "--disable-extensions", "--mute-audio",
                "--window-size=900,700", "--remote-debugging-port=0",
                f"--user-data-dir={self.profile_dir}", "about:blank"]
        if sys.platform.startswith("linux") and os.geteuid() == 0:
            args.insert(1, "--no-sandbox")      # Chromium refuses to sandbox as root
        self.proc = await asyncio.create_subprocess_exec(
            *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        url = await asyncio.wait_for(self._devtools_url(), START_TIMEOUT)
        self.ws = await websockets.connect(url, max_size=None, open_timeout=START_TIMEOUT)
        self.reader = asyncio.ensure_future(self._read())
        return self

    async def _devtools_url(self) -> str:
        while True:
            line = await self.proc.stderr.readline()
            if not line:
                raise RuntimeError("chromium exited before it listened:\n"
                                   + "".join(self.stderr_lines[-20:]))
            text = line.decode(errors="replace")
            self.stderr_lines.append(text)
            if "DevTools listening on " in text:
                return text.split("DevTools listening on ", 1)[1].strip()

    async def _read(self):
        try:
            async for raw in self.ws:
                msg = json.loads(raw)
                if "method" in msg:
                    fut = self.waiting.pop((msg["method"], msg.get("sessionId")), None)
                    if fut is not None and not fut.done():
                        fut.set_result(msg.get("params", {}))
                    continue
                fut = self.pending.pop(msg.get("id"), None)
                if fut is not None and not fut.done():
                    if "error" in msg:
                        fut.set_exception(CdpError(msg["error"]))
                    else:
                        fut.set_result(msg.get("result", {}))
        except websockets.ConnectionClosed:
            pass
        finally:
            for fut in [*self.pending.values(), *self.waiting.values()]:
                if not fut.done():
                    fut.set_exception(CdpError("the browser connection closed"))

    async def call(self, method: str, params: dict | None = None, session: str | None = None):
        msg_id = next(self.ids)
        fut = asyncio.get_running_loop().create_future()
        self.pending[msg_id] = fut
        msg = {"id": msg_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        await self.ws.send(json.dumps(msg))
        return await fut

    def event(self, method: str, session: str | None = None) -> asyncio.Future:
        """A future for the next event `method` (of one page's session)."""
        fut = asyncio.get_running_loop().create_future()
        self.waiting[(method, session)] = fut
        return fut

    async def open(self, url: str) -> "Page":
        """A new tab showing url, once its load event has fired."""
        target = await self.call("Target.createTarget", {"url": "about:blank"})
        attached = await self.call("Target.attachToTarget",
                                   {"targetId": target["targetId"], "flatten": True})
        page = Page(self, attached["sessionId"])
        await self.call("Page.enable", session=page.session)
        loaded = self.event("Page.loadEventFired", page.session)
        navigated = await self.call("Page.navigate", {"url": url}, page.session)
        if navigated.get("errorText"):
            raise CdpError(f"{url}: {navigated['errorText']}")
        await asyncio.wait_for(loaded, START_TIMEOUT)
        return page

    async def __aexit__(self, *exc):
        if self.ws is not None:
            await self.ws.close()
        if self.reader is not None:
            await self.reader
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except asyncio.TimeoutError:
                self.proc.kill()
                await self.proc.wait()


class Page:
    def __init__(self, browser: Chromium, session: str):
        self.browser = browser
        self.session = session

    async def evaluate(self, expression: str):
        """The value of a JavaScript expression (a promise is awaited)."""
        result = await self.browser.call("Runtime.evaluate", {
            "expression": expression, "returnByValue": True, "awaitPromise": True},
            self.session)
        if "exceptionDetails" in result:
            raise CdpError(result["exceptionDetails"])
        return result["result"].get("value")

    async def wait_for(self, condition: str, timeout: float = 20.0):
        """Wait until a JavaScript expression is truthy in the page; its value.
        The page checks it every 10 ms until then (inside the page: one call
        from here, however long it takes)."""
        script = ("new Promise(done => { const check = () => { let v; try { v = (%s); } "
                  "catch (e) { v = undefined; } if (v) done(v); else setTimeout(check, 10); }; "
                  "check(); })" % condition)
        return await asyncio.wait_for(self.evaluate(script), timeout)

    async def type_into(self, element_id: str, text: str):
        """Set an input's value as typing would (the page reads .value on click)."""
        await self.evaluate(f"(() => {{ const e = document.getElementById({json.dumps(element_id)});"
                            f" e.focus(); e.value = {json.dumps(text)};"
                            f" e.dispatchEvent(new Event('input')); return true; }})()")

    async def click(self, element_id: str):
        await self.evaluate(f"document.getElementById({json.dumps(element_id)}).click() || true")

    async def screenshot(self, path) -> bytes:
        shot = await self.browser.call("Page.captureScreenshot", {"format": "png"}, self.session)
        data = base64.b64decode(shot["data"])
        path.write_bytes(data)
        return data
