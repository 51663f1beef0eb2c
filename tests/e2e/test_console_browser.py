"""The operator console in headless Chromium, against a real stack: what an operator sees and does."""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import quote

import pytest
from playwright.sync_api import Page, expect

from payments.console.app import ID_RULE, STATEMENT_PAGE
from payments.console.formats import money
from payments.service.validation import ID_MAX_LENGTH
from tests.e2e.conftest import Activity, Api

Screenshot = Callable[[Page, str], None]
HTML_ID = "<img src=x onerror=alert(1)>"


def _customer_rows(page: Page, table: str, account_id: str) -> list[list[str]]:
    """The cells of each row of ``table`` that links to ``account_id``."""
    rows = page.locator(f"{table} tbody tr").filter(has=page.get_by_role("link", name=account_id, exact=True))
    return [row.locator("td").all_inner_texts() for row in rows.all()]


def test_cancelled_payment_shows_its_debit_its_refund_and_cancelled(
    page: Page, api: Api, unique: str, screenshot: Screenshot
) -> None:
    payment_id, account_id = f"pay-{unique}", f"buyer-{unique}"
    assert api(api.client.make_payment(payment_id, account_id, 2_500)).outcome == "completed"
    assert api(api.client.cancel_payment(payment_id)).outcome == "refunded"

    answer = page.goto(f"/payments/{payment_id}")

    assert answer is not None
    assert answer.status == 200
    expect(page.locator("#state")).to_have_text("CANCELLED")
    entries = _customer_rows(page, "#entries", account_id)
    # Time, Entry, Kind, Account, Transfer, Amount, Balance after
    assert sorted((cells[2], cells[5]) for cells in entries) == [
        ("payment", money(-2_500)),
        ("refund", money(2_500)),
    ]
    # Charged, Debit, Account, Amount, Outcome, Refunded
    [lifecycle] = _customer_rows(page, "#lifecycles", account_id)
    assert lifecycle[4].strip() == "refunded"
    screenshot(page, "payment")


def test_account_page_shows_the_balance_the_api_answers(
    page: Page, api: Api, activity: Activity, screenshot: Screenshot
) -> None:
    balance = api(api.client.balance(activity.account_id)).balance

    page.goto(f"/accounts/{activity.account_id}")

    expect(page.locator("#balance")).to_have_text(money(balance))
    screenshot(page, "account")


def test_new_payment_appears_in_the_live_feed_within_two_seconds(
    page: Page, api: Api, activity: Activity, unique: str, screenshot: Screenshot
) -> None:
    page.goto("/")
    expect(page.locator("#feed-state")).to_have_text("live")
    payment_id = f"live-{unique}"

    assert api(api.client.make_payment(payment_id, activity.account_id, 999)).outcome == "completed"

    row = page.locator("#feed tr[data-entry]").filter(has=page.get_by_role("link", name=payment_id))
    expect(row).to_be_visible(timeout=2_000)
    screenshot(page, "overview")


@pytest.mark.parametrize(
    ("path", "status", "says"),
    [
        pytest.param("/payments/bad!id", 404, ID_RULE, id="payment-id-breaking-the-rule"),
        pytest.param(f"/accounts/{'a' * (ID_MAX_LENGTH + 1)}", 404, ID_RULE, id="account-id-too-long"),
        pytest.param("/payments/never-made", 404, "Restate holds nothing for it", id="unknown-payment"),
        pytest.param("/accounts/nobody", 404, "No account 'nobody' in the ledger", id="unknown-account"),
        pytest.param("/accounts/nobody?before=soon", 400, "before: must be an entry id", id="bad-cursor"),
    ],
)
def test_bad_id_in_the_url_gets_a_clear_error_page(
    page: Page, path: str, status: int, says: str, screenshot: Screenshot
) -> None:
    answer = page.goto(path)

    assert answer is not None
    assert answer.status == status
    expect(page.locator("main .detail")).to_contain_text(says)
    assert "Traceback" not in page.content()
    if path == "/payments/bad!id":
        screenshot(page, "not-found")


def test_html_in_a_path_id_is_shown_as_text(page: Page, dialogs: list[str]) -> None:
    answer = page.goto(f"/payments/{quote(HTML_ID, safe='')}")

    assert answer is not None
    assert answer.status == 404
    expect(page.locator("main .detail")).to_contain_text(HTML_ID)
    assert page.locator("img[src=x]").count() == 0
    assert dialogs == []


def test_html_in_the_search_box_is_shown_as_text(page: Page, dialogs: list[str]) -> None:
    page.goto("/")
    page.get_by_role("searchbox").fill(HTML_ID)

    with page.expect_response(re.compile(r"/search\?")) as answer:
        page.get_by_role("searchbox").press("Enter")

    assert answer.value.status == 400
    expect(page.locator("main .detail")).to_contain_text(HTML_ID)
    assert page.locator("img[src=x]").count() == 0
    assert dialogs == []


@pytest.mark.parametrize(("kind", "shown"), [("payment", "#state"), ("account", "#balance")])
def test_search_lands_on_the_page_of_the_id(page: Page, activity: Activity, kind: str, shown: str) -> None:
    wanted = activity.completed[0] if kind == "payment" else activity.account_id
    page.goto("/")

    page.get_by_role("searchbox").fill(wanted)
    page.get_by_role("searchbox").press("Enter")

    expect(page).to_have_url(re.compile(f"/{kind}s/{re.escape(wanted)}$"))
    expect(page.locator(shown)).to_be_visible()
    expect(page.locator("h1 code")).to_have_text(wanted)


def test_reconcile_button_shows_clean(page: Page, activity: Activity) -> None:
    page.goto("/")

    page.get_by_role("button", name="Reconcile now").click()

    expect(page.locator("#reconcile .verdict")).to_have_text("Clean")


def test_statement_pager_reaches_the_older_entries(page: Page, api: Api, activity: Activity) -> None:
    everything = api(api.client.statement(activity.account_id, limit=100))
    assert everything.nextBefore is None
    assert len(everything.entries) > STATEMENT_PAGE
    page.goto(f"/accounts/{activity.account_id}")
    newest = page.locator("#statement tbody tr td:nth-child(2)").all_inner_texts()

    page.locator("#older").click()

    expect(page).to_have_url(re.compile(r"\?before=\d+$"))
    older = page.locator("#statement tbody tr td:nth-child(2)").all_inner_texts()
    assert [int(entry) for entry in newest + older] == [entry.entryId for entry in everything.entries]
    assert page.locator("#older").count() == 0
