"""The console in a real browser: one stack, one headless Chromium and some traffic per module."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from playwright.sync_api import Browser, Dialog, Page, ViewportSize, sync_playwright

from payments.client import PaymentsClient
from payments.tools.launcher import LaunchedStack
from tests.helpers import PROJECT_ROOT

CHROMIUM = Path("/usr/bin/chromium")
"""Debian's browser, which `make chromium` installs; Playwright's own download is never used."""
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT: ViewportSize = {"width": 1280, "height": 800}
SCREENSHOTS = PROJECT_ROOT / "results" / "console"
CALL_TIMEOUT_SECONDS = 60.0
T = TypeVar("T")


class Api:
    """A :class:`PaymentsClient` for synchronous tests.

    Playwright's sync API runs its own event loop in the test's thread, so the client's calls run on
    a loop of their own in another thread.
    """

    def __init__(self, ingress_url: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="payments-client", daemon=True)
        self._thread.start()
        self.client = PaymentsClient(ingress_url)

    def __call__(self, call: Coroutine[Any, Any, T]) -> T:
        """Run one of the client's calls and return its answer."""
        return asyncio.run_coroutine_threadsafe(call, self._loop).result(CALL_TIMEOUT_SECONDS)

    def close(self) -> None:
        self(self.client.__aexit__(None, None, None))
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()


@dataclass(frozen=True)
class Activity:
    """Traffic made once per module: the chart has bars, the feed rows, one account a long statement."""

    account_id: str
    completed: list[str]
    declined: str
    cancelled: str


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LaunchedStack]:
    """``payments up`` with its console, on free ports."""
    with LaunchedStack(tmp_path_factory.mktemp("console-stack")) as launched:
        yield launched


@pytest.fixture(scope="module")
def api(stack: LaunchedStack) -> Iterator[Api]:
    """Calls to the stack's ingress."""
    calls = Api(stack.settings.ingress_url)
    yield calls
    calls.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless Chromium per module."""
    if not CHROMIUM.exists():
        pytest.fail(f"no {CHROMIUM}: `make chromium` installs Debian's chromium package")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def dialogs() -> list[str]:
    """The messages of every alert, confirm or prompt a page opened: a script the page never meant to run."""
    return []


@pytest.fixture
def page(browser: Browser, stack: LaunchedStack, dialogs: list[str]) -> Iterator[Page]:
    """A fresh tab on the console; paths given to ``goto`` are the console's.

    A script error on any page fails the test.
    """
    context = browser.new_context(base_url=stack.settings.console_url, viewport=VIEWPORT)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))

    def dismiss(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    tab.on("dialog", dismiss)
    yield tab
    context.close()
    assert errors == []


@pytest.fixture(scope="module")
def screenshot() -> Callable[[Page, str], None]:
    """Saves a full-page screenshot as ``results/console/<name>.png``, to look at after the run."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def take(tab: Page, name: str) -> None:
        # Finished, not frozen mid-way: the feed's new rows fade from yellow.
        tab.screenshot(path=SCREENSHOTS / f"{name}.png", full_page=True, animations="disabled")

    return take


@pytest.fixture(scope="module")
def activity(api: Api) -> Activity:
    """Thirty payments from one account, one of them declined and one cancelled."""
    prefix = uuid.uuid4().hex[:8]
    account_id = f"shop-{prefix}"
    completed = []
    for n in range(30):
        payment_id = f"order-{prefix}-{n:02d}"
        assert api(api.client.make_payment(payment_id, account_id, 1_250 + 37 * n)).outcome == "completed"
        completed.append(payment_id)
    declined = f"order-{prefix}-too-big"
    assert api(api.client.make_payment(declined, account_id, 10_000_000)).outcome == "declined"
    cancelled = completed[-1]
    assert api(api.client.cancel_payment(cancelled)).outcome == "refunded"
    return Activity(account_id, completed, declined, cancelled)
