"""
A new user's first run in JupyterLab, on kgw and on Jupyter Kernel Gateway 3.0.1 side by side.

A new notebook from the launcher, C{print(6*7)} typed and Shift+Enter pressed as soon as the
cell is editable, without waiting for the kernel. JupyterLab drops a run asked for before its
session has a kernel (jupyterlab/jupyterlab#8490): the cell goes back to C{[ ]:}, the kernel
comes up idle, and nothing runs. How often that happens depends on how soon the gateway answers
C{POST /api/kernels}, and, once the gateway has answered, on JupyterLab's own timing: with both
gateways answering at launch the outcome of a try is a coin JupyterLab throws. One test counts
the runs that print 42 on each gateway, in tries that alternate between them so that both see
the same machine; another presses Shift+Enter the moment the session has its kernel (still
starting, on kgw), which must print 42 every time. Both count JupyterLab's console warning
"History was unable to be retrieved" (a C{history_reply} that never reached the browser).
"""

from __future__ import annotations

import json
import os
import re
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any

from twisted.trial.unittest import TestCase

from tests.browser.support import (
    CHROMIUM,
    CHROMIUM_FLAGS,
    STEP_TIMEOUT,
    ProcessWatch,
    missing,
    onReactor,
    skipUnlessRequired,
    startKG,
    startKgw,
)
from tests.integration.test_jupyter_server import GATEWAY_TOKEN, SERVER_TOKEN, startJupyter

TRIES = int(os.environ.get("KGW_BROWSER_TRIES", "5"))
LAUNCHER_CARD = '.jp-LauncherCard[data-category="Notebook"][title="Python 3 (ipykernel)"]'
KERNEL_STATUS = re.compile(r"Python 3 \(ipykernel\) \| ")
HISTORY_WARNING = "History was unable to be retrieved"
# A run counts as dropped once the kernel is idle and the cell's prompt has stayed empty ("[ ]:")
# this many seconds; a run that is merely slow shows "[*]:" meanwhile.
DROPPED_AFTER = 3.0
# Seconds after Shift+Enter by which 42 must have appeared, whatever the prompt says.
RUN_DEADLINE = 60.0
EMPTY_PROMPT = re.compile(r"\[\s*\]:")


@dataclass
class Try:
    """One first run: on which gateway, whether 42 appeared, and what the page showed."""

    gateway: str
    number: int
    ran: bool
    # Seconds from the click on the launcher to Shift+Enter, and the kernel's state then.
    pressedAfter: float
    statusAtPress: str
    # Seconds from Shift+Enter to 42 (ran) or to the verdict (not ran).
    verdictAfter: float
    prompt: str
    historyWarnings: int


async def firstRun(
    context: Any, url: str, label: str, number: int, screenshot: str, waitForKernel: bool = False
) -> Try:
    """
    Open JupyterLab at C{url} in a new page, start a Python 3 notebook from the launcher, type
    C{print(6*7)} and press Shift+Enter as soon as the cell is editable (with C{waitForKernel},
    as soon as the session has its kernel: the status bar has left "Initializing"); wait for 42
    or for the run to be dropped. Saves a screenshot of the page at the verdict.
    """
    page = await context.new_page()
    warnings: list[str] = []
    page.on("console", lambda m: warnings.append(m.text) if HISTORY_WARNING in m.text else None)
    try:
        await page.goto(url)
        await page.locator(LAUNCHER_CARD).click()
        clicked = time.monotonic()
        notebook = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)")
        cell = notebook.locator(".jp-Cell").first
        await cell.locator('.cm-content[contenteditable="true"]').click()
        await page.keyboard.type("print(6*7)")
        status = page.get_by_role("button", name=KERNEL_STATUS).first
        while waitForKernel and not await sessionHasKernel(status):
            if time.monotonic() - clicked > RUN_DEADLINE:
                break
            await page.wait_for_timeout(10)
        await page.keyboard.press("Shift+Enter")
        pressed = time.monotonic()
        statusAtPress = await statusText(status)

        output = cell.locator(".jp-OutputArea-output")
        prompt = cell.locator(".jp-InputPrompt")
        emptySince = None
        while True:
            now = time.monotonic()
            texts = await output.all_inner_texts()
            promptText = (await prompt.inner_text()).strip()
            if any(text.strip() == "42" for text in texts):
                ran = True
                break
            state = await statusText(status)
            if state.endswith("Idle") and EMPTY_PROMPT.fullmatch(promptText):
                emptySince = emptySince or now
                if now - emptySince >= DROPPED_AFTER:
                    ran = False
                    break
            else:
                emptySince = None
            if now - pressed > RUN_DEADLINE:
                ran = False
                break
            await page.wait_for_timeout(100)
        verdict = time.monotonic()
        await page.screenshot(path=screenshot)
        return Try(
            gateway=label,
            number=number,
            ran=ran,
            pressedAfter=round(pressed - clicked, 3),
            statusAtPress=statusAtPress,
            verdictAfter=round(verdict - pressed, 3),
            prompt=promptText,
            historyWarnings=len(warnings),
        )
    finally:
        await page.close()


async def statusText(status: Any) -> str:
    """The kernel's state as the status bar shows it ("Python 3 (ipykernel) | Idle")."""
    if not await status.count():
        return "(no kernel status yet)"
    return (await status.inner_text()).strip()


async def sessionHasKernel(status: Any) -> bool:
    """Whether JupyterLab's session has its kernel: the status bar shows one, not initializing."""
    state = await statusText(status)
    return state.startswith("Python 3") and not state.endswith("Initializing")


async def warmUp(context: Any, url: str) -> None:
    """Load JupyterLab once, so that no try pays for the browser's first load of its code."""
    page = await context.new_page()
    try:
        await page.goto(url)
        await page.locator(LAUNCHER_CARD).wait_for()
    finally:
        await page.close()


class FirstRunTests(TestCase):
    """JupyterLab's first run of a new notebook, on kgw and on KG 3.0.1."""

    timeout = 900
    skip = skipUnlessRequired()

    def setUp(self) -> None:
        reason = missing(kg=True)
        if reason:
            self.fail(reason)
        # Registered first, so it runs last: after the browser, JupyterLab and the gateways
        # have been stopped, every process they started must have ended.
        self.addCleanup(ProcessWatch(self).check)

    async def startLabs(self, labels: tuple[str, ...]) -> dict[str, Any]:
        """Each gateway of C{labels} with a JupyterLab in front of it, by label."""
        labs = {}
        for label, start in (("kgw", startKgw), ("KG", startKG)):
            if label in labels:
                gateway = await start(self, GATEWAY_TOKEN)
                lab, server = await startJupyter(self, gateway, "jupyterlab")
                labs[label] = (gateway, lab, server)
        return labs

    async def runTries(
        self, labs: dict[str, Any], name: str, waitForKernel: bool
    ) -> tuple[dict[str, int], dict[str, int], dict[str, float], str]:
        """
        C{TRIES} first runs on each gateway of C{labs}, alternating: the runs that printed 42,
        the history warnings and the median seconds from the launcher's click to Shift+Enter,
        by gateway, and where the screenshots are.
        """
        from playwright.async_api import async_playwright

        playwright = await onReactor(async_playwright().start())
        self.addCleanup(lambda: onReactor(playwright.stop()))
        context = await onReactor(
            playwright.chromium.launch_persistent_context(
                os.path.abspath(self.mktemp()),
                executable_path=CHROMIUM,
                headless=True,
                args=CHROMIUM_FLAGS,
                viewport={"width": 1280, "height": 800},
            )
        )
        self.addCleanup(lambda: onReactor(context.close()))
        context.set_default_timeout(STEP_TIMEOUT)
        screenshots = os.environ.get("KGW_SCREENSHOT_DIR") or os.path.abspath(self.mktemp())
        os.makedirs(screenshots, exist_ok=True)

        def url(server: Any, workspace: str) -> str:
            # A workspace of its own for each try: JupyterLab opens it with the launcher only.
            return f"http://{server.address}/lab/workspaces/{workspace}?token={SERVER_TOKEN}"

        for label, (_, _, server) in labs.items():
            await onReactor(warmUp(context, url(server, f"warm-up-{name}-{label}")))

        tries: list[Try] = []
        for number in range(1, TRIES + 1):
            # kgw first in odd rounds, KG first in even ones: neither always follows the other.
            order = list(labs) if number % 2 else list(reversed(labs))
            for label in order:
                gateway, lab, server = labs[label]
                screenshot = os.path.join(screenshots, f"{name}-{label}-{number}.png")
                workspace = url(server, f"{name}-{number}")
                done = await onReactor(
                    firstRun(context, workspace, label, number, screenshot, waitForKernel)
                )
                tries.append(done)
                print(f"\n  {label} try {number}: {json.dumps(asdict(done))}", end="")
                await self.endSessions(gateway, lab, server)

        scores = {label: sum(t.ran for t in tries if t.gateway == label) for label in labs}
        history = {
            label: sum(t.historyWarnings for t in tries if t.gateway == label) for label in labs
        }
        pressed = {
            label: statistics.median(t.pressedAfter for t in tries if t.gateway == label)
            for label in labs
        }
        with open(os.path.join(screenshots, f"{name}.json"), "w") as f:
            json.dump({"tries": [asdict(t) for t in tries]}, f, indent=1)
        return scores, history, pressed, screenshots

    async def test_runAsSoonAsEditable(self):
        """
        Shift+Enter pressed as soon as a new notebook's cell is editable: the runs that print 42
        on kgw and on KG 3.0.1, over the same number of alternating tries. kgw must not lose
        them all where KG keeps most: kgw 0 against KG 3 or more of 5 fails (with equal odds of
        about 0.6 a try, that happens by chance in under 1% of runs; a gateway that answered
        only once the kernel replied, as kgw did, scored 0 of 5 in every run measured).
        """
        labs = await self.startLabs(("kgw", "KG"))
        scores, history, pressed, screenshots = await self.runTries(labs, "first-run", False)
        summary = (
            f"first run as soon as the cell is editable, {TRIES} tries each: "
            f"kgw {scores['kgw']}/{TRIES}, KG {scores['KG']}/{TRIES}; pressed after a median "
            f"of {pressed['kgw']:.2f} s (kgw) and {pressed['KG']:.2f} s (KG); "
            f'"{HISTORY_WARNING}": kgw {history["kgw"]}, KG {history["KG"]}'
        )
        print(f"\n{summary}\nscreenshots: {screenshots}")
        self.assertFalse(scores["kgw"] == 0 and scores["KG"] * 5 >= 3 * TRIES, summary)

    async def test_runAsSoonAsSessionHasKernel(self):
        """
        Shift+Enter pressed the moment JupyterLab's session has its kernel, while kgw's kernel
        is still starting (its start is answered at launch), prints 42 every time: what a
        client sends before the kernel is ready is held, not lost. No history warning either.
        KG runs beside it, for the time JupyterLab's session takes to get its kernel on each.
        """
        labs = await self.startLabs(("kgw", "KG"))
        scores, history, pressed, screenshots = await self.runTries(labs, "session-ready", True)
        summary = (
            f"Shift+Enter once the session has its kernel, {TRIES} tries each: "
            f"kgw {scores['kgw']}/{TRIES}, KG {scores['KG']}/{TRIES}; the session had its "
            f"kernel after a median of {pressed['kgw']:.2f} s (kgw) and {pressed['KG']:.2f} s "
            f'(KG); "{HISTORY_WARNING}": kgw {history["kgw"]}, KG {history["KG"]}'
        )
        print(f"\n{summary}\nscreenshots: {screenshots}")
        self.assertEqual((scores["kgw"], history["kgw"]), (TRIES, 0), summary)

    async def endSessions(self, gateway: Any, lab: Any, server: Any) -> None:
        """Delete JupyterLab's sessions, then any kernel the gateway still has."""
        code, sessions = await server.request("GET", "api/sessions")
        self.assertEqual(code, 200, lab.log())
        for session in sessions:
            code, _ = await server.request("DELETE", f"api/sessions/{session['id']}")
            self.assertEqual(code, 204, lab.log())
        code, kernels = await gateway.request("GET", "api/kernels")
        self.assertEqual(code, 200, kernels)
        for kernel in kernels:
            await gateway.request("DELETE", f"api/kernels/{kernel['id']}")
