"""
JupyterLab on kgw, in headless Chromium: C{jupyter lab --gateway-url=<kgw>} opened in a browser.

Run by tox's C{browser} env (see L{tests.browser.support}); skipped elsewhere, but never in CI.
"""

from __future__ import annotations

import os
import re

from twisted.trial.unittest import TestCase

from tests.browser.support import (
    CHROMIUM,
    CHROMIUM_FLAGS,
    STEP_TIMEOUT,
    ProcessWatch,
    missing,
    onReactor,
    skipUnlessRequired,
    startKgw,
)
from tests.integration.test_jupyter_server import GATEWAY_TOKEN, SERVER_TOKEN, startJupyter


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
    skip = skipUnlessRequired()

    def setUp(self) -> None:
        reason = missing()
        if reason:
            self.fail(reason)
        # Registered first, so it runs last: Chromium, Playwright's driver, JupyterLab and the
        # kernel must all have ended by then.
        self.addCleanup(ProcessWatch(self).check)

    async def test_runCell(self):
        """A notebook opened in JupyterLab runs print(6*7) on a kgw kernel and shows 42."""
        # A gateway process of its own, as users run it: Autobahn's timers stay out of the
        # test's reactor.
        gateway = await startKgw(self, GATEWAY_TOKEN)
        lab, server = await startJupyter(self, gateway, "jupyterlab")
        screenshots = os.environ.get("KGW_SCREENSHOT_DIR") or os.path.abspath(self.mktemp())
        os.makedirs(screenshots, exist_ok=True)
        screenshot = os.path.join(screenshots, "jupyterlab-print-6x7.png")
        url = f"http://{server.address}/lab?token={SERVER_TOKEN}"
        text = await onReactor(runCell(url, os.path.abspath(self.mktemp()), screenshot))
        print(f"\nscreenshot: {screenshot}")
        self.assertEqual(text.strip(), "42")
        self.assertTrue(os.path.getsize(screenshot) > 0)
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
