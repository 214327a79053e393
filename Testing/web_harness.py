"""What the browser tests share: a real ``swinssl web`` server subprocess on 127.0.0.1 and Debian's headless
Chromium driven by Playwright, with every request that leaves the machine blocked and screenshots kept
in ``Testing/screenshots``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

CHROMIUM = Path("/usr/lib/chromium/chromium-headless-shell")
SCREENSHOTS = Path(__file__).parent / "screenshots"
LOOPBACK = re.compile(r"^(https?|wss?)://(127\.0\.0\.1|localhost)(:\d+)?/")


def require_browser() -> None:
    """The browser tests need trame-slicer, Playwright and Debian's Chromium; in CI their absence is a failure."""
    missing = [name for name, ok in (("trame-slicer", _importable("trame_slicer")), ("playwright", _importable("playwright")),
                                     (str(CHROMIUM), CHROMIUM.exists())) if not ok]
    if missing:
        message = f"browser tests need {', '.join(missing)} (bash .ci/run installs them)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


class WebServer:
    """``python -m swinssl web`` on a free port; ``url`` is the address it printed."""

    def __init__(self, folder: Path, *arguments: str, env: dict | None = None) -> None:
        self.log = folder / "server.log"
        environment = {**os.environ, "OMP_NUM_THREADS": "2", **(env or {})}
        self.process = subprocess.Popen([sys.executable, "-m", "swinssl", "web", "--port", "0", *arguments], stdout=subprocess.PIPE,
                                        stderr=self.log.open("w"), stdin=subprocess.DEVNULL, text=True, env=environment)
        deadline = time.monotonic() + 120
        self.url = ""
        while time.monotonic() < deadline and not self.url:
            line = self.process.stdout.readline()
            if not line and self.process.poll() is not None:
                raise RuntimeError(f"swinssl web exited ({self.process.returncode}):\n{self.log.read_text(encoding='utf-8')[-3000:]}")
            if match := re.search(r"SwinSSL Web: open (\S+) in a browser", line):
                self.url = match.group(1)
        assert self.url, f"swinssl web did not start:\n{self.log.read_text(encoding='utf-8')[-3000:]}"
        self.output = folder / "server.out"
        threading.Thread(target=self._drain, daemon=True).start()  # a full pipe would block the server

    def _drain(self) -> None:
        with self.output.open("w") as sink:
            for line in self.process.stdout:
                sink.write(line)
                sink.flush()

    def engine_processes(self) -> list[psutil.Process]:
        """The server's live descendants (engine subprocesses and their workers)."""
        try:
            return [p for p in psutil.Process(self.process.pid).children(recursive=True) if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        except psutil.NoSuchProcess:
            return []

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def block_outside_requests(page) -> list[str]:
    """Aborts every request that is not to 127.0.0.1 (or a data:/blob: URL); returns the list of those blocked."""
    blocked: list[str] = []

    def route(request_route) -> None:
        url = request_route.request.url
        if LOOPBACK.match(url) or url.startswith(("data:", "blob:")):
            request_route.continue_()
        else:
            blocked.append(url)
            request_route.abort()

    page.route("**/*", route)
    return blocked


def screenshot(page, name: str) -> Path:
    SCREENSHOTS.mkdir(exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path))
    return path


def text_of(page, selector: str) -> str:
    return page.locator(selector).first.inner_text()


def wait_for_text(page, selector: str, pattern: str, timeout_s: float = 180) -> str:
    """Waits until the element's text matches ``pattern`` (a regular expression); fails with the page's error."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = text_of(page, selector)
        if re.search(pattern, text):
            return text
        time.sleep(0.5)
    errors = page.locator(".swinssl-error").all_inner_texts()
    raise AssertionError(f"{selector}: {text!r} never matched {pattern!r} (page error: {errors})")


def fill(page, selector: str, value) -> None:
    field = page.locator(f"{selector} input").first
    field.fill(str(value))
    field.blur()
