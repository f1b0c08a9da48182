"""
JupyterLab on kgw, in headless Chromium: C{jupyter lab --gateway-url=<kgw>} opened in a browser.

Run by tox's C{browser} env, which sets C{KGW_BROWSER_TEST=1} and installs JupyterLab and
Playwright for Python; skipped otherwise. Playwright drives the system's Chromium
(C{/usr/bin/chromium}, or C{KGW_CHROMIUM}) and never downloads a browser of its own.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import re
import shutil
import signal
from collections.abc import Coroutine
from typing import Any

from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from tests.integration.test_jupyter_server import GATEWAY_TOKEN, SERVER_TOKEN, startJupyter
from tests.support import RunningGateway, childProcesses

CHROMIUM = os.environ.get("KGW_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Milliseconds Playwright waits for one step: JupyterLab's first load is slow.
STEP_TIMEOUT = 90_000


def skipReason() -> str | None:
    if os.environ.get("KGW_BROWSER_TEST") != "1":
        return "set KGW_BROWSER_TEST=1 to run the browser tests (tox -e browser does)"
    for module in ("jupyterlab", "playwright"):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed (tox -e browser installs it)"
    if not shutil.which(CHROMIUM):
        return f"no Chromium at {CHROMIUM} (apt-get install chromium, or set KGW_CHROMIUM)"
    return None


def commandLine(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def descendants(pid: int) -> set[int]:
    """The live processes below C{pid}: its children, theirs, and so on."""
    found = set()
    for child in childProcesses(pid):
        found |= {child} | descendants(child)
    return found


def onReactor(coroutine: Coroutine[Any, Any, Any]) -> Deferred[Any]:
    """Run an asyncio coroutine on the asyncio loop under Trial's reactor, as a Deferred."""
    return Deferred.fromFuture(asyncio.ensure_future(coroutine))


async def runCell(url: str, userDataDir: str, screenshot: str) -> str:
    """
    Open JupyterLab at C{url}, start a Python 3 notebook from the launcher, run C{print(6*7)}
    in its first cell and return the text of the cell's output, once it says 42; save a
    screenshot of the page to C{screenshot}.
    """
    from playwright.async_api import async_playwright, expect

    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            userDataDir,
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1280, "height": 800},
        )
        context.set_default_timeout(STEP_TIMEOUT)
        try:
            page = context.pages[0] if context.pages else await context.new_page()
            await page.goto(url)
            await page.locator(
                '.jp-LauncherCard[data-category="Notebook"][title="Python 3 (ipykernel)"]'
            ).click()
            # The status bar names the notebook's kernel and its state: wait for it to be idle.
            await expect(
                page.get_by_role("button", name=re.compile(r"Python 3 \(ipykernel\) \| Idle"))
            ).to_be_visible(timeout=STEP_TIMEOUT)
            notebook = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)")
            await notebook.locator(".jp-Cell .cm-content").first.click()
            await page.keyboard.type("print(6*7)")
            await page.keyboard.press("Shift+Enter")
            output = notebook.locator(".jp-Cell").first.locator(".jp-OutputArea-output")
            await expect(output).to_have_text("42", timeout=STEP_TIMEOUT)
            text = await output.inner_text()
            await page.screenshot(path=screenshot)
            return text
        finally:
            await context.close()


class JupyterLabTests(TestCase):
    """JupyterLab, served by jupyter_server in front of kgw, used from a browser."""

    timeout = 300
    skip = skipReason()

    async def test_runCell(self):
        """A notebook opened in JupyterLab runs print(6*7) on a kgw kernel and shows 42."""
        gateway = await RunningGateway(self, auth_token=GATEWAY_TOKEN).start()
        before = childProcesses()
        lab, server = await startJupyter(self, gateway, "jupyterlab")

        def killDrivers() -> None:
            # Playwright closes the browser and its driver itself; after a failure or a timeout
            # that interrupted it, kill whatever is left of them, each by its pid.
            for driver in childProcesses() - before:
                if "playwright" in commandLine(driver):
                    for pid in {driver} | descendants(driver):
                        try:
                            os.kill(pid, signal.SIGKILL)
                        except ProcessLookupError:
                            pass  # it ended meanwhile

        self.addCleanup(killDrivers)
        screenshots = os.environ.get("KGW_SCREENSHOT_DIR") or os.path.abspath(self.mktemp())
        os.makedirs(screenshots, exist_ok=True)
        screenshot = os.path.join(screenshots, "jupyterlab-print-6x7.png")
        url = f"http://{server.address}/lab?token={SERVER_TOKEN}"
        text = await onReactor(runCell(url, os.path.abspath(self.mktemp()), screenshot))
        print(f"\nscreenshot: {screenshot}")
        self.assertEqual(text.strip(), "42")
        self.assertTrue(os.path.getsize(screenshot) > 0)
        # Playwright's driver (and with it the browser) is gone: JupyterLab and the notebook's
        # kernel are this test's only new processes.
        drivers = [pid for pid in childProcesses() - before if "playwright" in commandLine(pid)]
        self.assertEqual(drivers, [])

        # The notebook's kernel is one of kgw's.
        code, sessions = await server.request("GET", "api/sessions")
        self.assertEqual(code, 200, lab.log())
        self.assertEqual(len(sessions), 1, sessions)
        kernelId = sessions[0]["kernel"]["id"]
        code, kernels = await gateway.request(
            "GET", "api/kernels", headers={"Authorization": f"token {GATEWAY_TOKEN}"}
        )
        self.assertEqual((code, [kernel["id"] for kernel in kernels]), (200, [kernelId]))
        code, _ = await server.request("DELETE", f"api/sessions/{sessions[0]['id']}")
        self.assertEqual(code, 204, lab.log())
