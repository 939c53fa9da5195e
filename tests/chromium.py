"""Headless Chromium for the dashboard's browser tests, driven over the Chrome DevTools Protocol.

No selenium or playwright (they download browsers): the tests use the machine's own
Chromium (Debian's `chromium` package, or `MURMUR_CHROMIUM=/path/to/chrome`) and speak
CDP over its websocket with aiohttp. A test without a browser skips with the reason.

`Chromium` starts the browser in its own session with a throwaway profile and, when it
ends, closes it, kills what is left of that session by process id and checks that no
process of it remains (Chromium forks renderers, a GPU process and a crash handler).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp
import pytest

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "headless_shell")
START_TIMEOUT_S = 30.0
COMMAND_TIMEOUT_S = 30.0
CLOSE_TIMEOUT_S = 10.0


def find_chromium() -> str | None:
    """The Chromium binary to use: MURMUR_CHROMIUM if set, else the first of CANDIDATES on PATH."""
    chosen = os.environ.get("MURMUR_CHROMIUM")
    if chosen:
        return chosen if os.access(chosen, os.X_OK) else None
    for name in CANDIDATES:
        path = shutil.which(name)
        if path is not None:
            return path
    return None


def chromium_or_skip() -> str:
    """The Chromium binary, or skip the test saying how to get one."""
    path = find_chromium()
    chosen = os.environ.get("MURMUR_CHROMIUM")
    if path is None and chosen:
        pytest.skip(f"MURMUR_CHROMIUM={chosen} is not an executable file; point it at a Chromium binary")
    if path is None:
        pytest.skip(
            "no Chromium binary found (looked for MURMUR_CHROMIUM, then "
            f"{', '.join(CANDIDATES)} on PATH); the dashboard's browser tests need one: "
            "apt-get install chromium, or set MURMUR_CHROMIUM=/path/to/chrome"
        )
    return path


def session_pids(sid: int) -> list[int]:
    """Process ids of every process in session `sid` (read from /proc)."""
    pids: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Fields after the command name (which may hold spaces) start after the last ')'.
        fields = stat[stat.rfind(")") + 2 :].split()
        # state ppid pgrp session ...; a zombie already exited (its parent reaps it).
        if len(fields) > 3 and fields[3] == str(sid) and fields[0] != "Z":
            pids.append(int(entry.name))
    return pids


class CdpError(Exception):
    """A DevTools command failed or the browser did not answer."""


class Chromium:
    """One headless Chromium and one page of it, as an async context manager."""

    def __init__(self, binary: str, profile_dir: Path, *, width: int = 1360, height: int = 900) -> None:
        self.binary = binary
        self.profile_dir = profile_dir
        self.width = width
        self.height = height
        self.process: subprocess.Popen[bytes] | None = None
        self.console: list[str] = []  # exceptions, console errors and CSP reports of the page
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._next_id = 0
        self._session_id = ""

    async def __aenter__(self) -> Chromium:
        try:
            await self._start()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def _start(self) -> None:
        self.profile_dir.mkdir(parents=True, exist_ok=True)
        port_file = self.profile_dir / "DevToolsActivePort"
        port_file.unlink(missing_ok=True)
        args = [
            self.binary,
            "--headless",
            "--disable-gpu",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--disable-lcd-text",  # grayscale text: smaller screenshots, the same on every machine
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
            f"--user-data-dir={self.profile_dir}",
            f"--window-size={self.width},{self.height}",
            "about:blank",
        ]
        if os.geteuid() == 0:
            args.insert(1, "--no-sandbox")  # Chromium refuses to run as root with its sandbox
        with open(self.profile_dir / "chromium.log", "ab") as log:
            self.process = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        lines: list[str] = []
        while len(lines) < 2 or not lines[0].isdigit():
            if self.process.poll() is not None:
                raise CdpError(f"chromium exited with {self.process.returncode}: {self.log_tail()}")
            if time.monotonic() > deadline:
                raise CdpError(f"chromium did not open its DevTools port in {START_TIMEOUT_S:g} s")
            await asyncio.sleep(0.1)
            with contextlib.suppress(OSError):
                lines = port_file.read_text().split()
        url = f"ws://127.0.0.1:{lines[0]}{lines[1]}"
        self._http = aiohttp.ClientSession()
        self._ws = await self._http.ws_connect(url, max_msg_size=0)
        self._reader = asyncio.create_task(self._read())
        target = await self.send("Target.createTarget", {"url": "about:blank"})
        attached = await self.send("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True})
        self._session_id = attached["sessionId"]
        for domain in ("Page.enable", "Runtime.enable", "Log.enable"):
            await self.page(domain)
        await self.page(
            "Emulation.setDeviceMetricsOverride",
            {"width": self.width, "height": self.height, "deviceScaleFactor": 1, "mobile": False},
        )

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = (self.profile_dir / "chromium.log").read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    async def _read(self) -> None:
        assert self._ws is not None
        async for message in self._ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                break
            doc = json.loads(message.data)
            if "id" in doc:
                future = self._pending.pop(doc["id"], None)
                if future is not None and not future.done():
                    future.set_result(doc)
            else:
                self._on_event(doc.get("method", ""), doc.get("params", {}))
        for future in self._pending.values():
            if not future.done():
                future.set_exception(CdpError("the browser closed its DevTools connection"))

    def _on_event(self, method: str, params: Mapping[str, Any]) -> None:
        if method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            self.console.append(f"exception: {details.get('exception', {}).get('description') or details}")
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            args = [str(a.get("value", a.get("description", ""))) for a in params.get("args", [])]
            self.console.append(f"console.error: {' '.join(args)}")
        elif method == "Log.entryAdded":
            entry = params.get("entry", {})
            if entry.get("level") == "error" or "Content Security Policy" in str(entry.get("text")):
                self.console.append(f"log ({entry.get('source')}): {entry.get('text')}")

    async def send(
        self, method: str, params: Mapping[str, Any] | None = None, *, session: str = ""
    ) -> dict[str, Any]:
        """Send one DevTools command (to the browser, or to a page's `session`); its result."""
        if self._ws is None:
            raise CdpError("not connected")
        self._next_id += 1
        command: dict[str, Any] = {"id": self._next_id, "method": method, "params": dict(params or {})}
        if session:
            command["sessionId"] = session
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[self._next_id] = future
        await self._ws.send_str(json.dumps(command))
        try:
            answer = await asyncio.wait_for(future, COMMAND_TIMEOUT_S)
        except TimeoutError:
            raise CdpError(f"{method}: no answer in {COMMAND_TIMEOUT_S:g} s") from None
        if "error" in answer:
            raise CdpError(f"{method}: {answer['error']}")
        result: dict[str, Any] = answer.get("result", {})
        return result

    async def page(self, method: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """A command to the page."""
        return await self.send(method, params, session=self._session_id)

    async def goto(self, url: str) -> None:
        await self.page("Page.navigate", {"url": url})

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (awaited if it is a promise)."""
        result = await self.page(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True}
        )
        if "exceptionDetails" in result:
            raise CdpError(f"{expression[:80]}: {result['exceptionDetails'].get('text')}")
        return result.get("result", {}).get("value")

    async def wait_for(self, expression: str, timeout_s: float, interval_s: float = 0.2) -> bool:
        """Poll a JavaScript expression until it is truthy (True) or `timeout_s` passes (False)."""
        deadline = time.monotonic() + timeout_s
        while True:
            with contextlib.suppress(CdpError):
                if await self.evaluate(expression):
                    return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(interval_s)

    async def screenshot(self) -> bytes:
        """The page as PNG bytes."""
        shot = await self.page("Page.captureScreenshot", {"format": "png"})
        return base64.b64decode(shot["data"])

    async def close(self) -> None:
        """Close the browser; kill what remains of its session; fail if a process of it survives."""
        if self._ws is not None and not self._ws.closed:
            with contextlib.suppress(CdpError, ConnectionError, RuntimeError, aiohttp.ClientError):
                await asyncio.wait_for(self.send("Browser.close"), CLOSE_TIMEOUT_S)
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._http is not None:
            await self._http.close()
        process = self.process
        if process is None:
            return
        try:
            await asyncio.to_thread(process.wait, CLOSE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        # The browser's children (renderers, zygotes, the crash handler) are in its session.
        deadline = time.monotonic() + CLOSE_TIMEOUT_S
        while (left := session_pids(process.pid)) and time.monotonic() < deadline:
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            await asyncio.sleep(0.1)
        left = session_pids(process.pid)
        assert not left, f"chromium processes left behind: {left}"
