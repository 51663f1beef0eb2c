"""``payments chaos``: a storm of duplicated, conflicting and cancelled payments while processes die.

:func:`run_chaos` starts its own stack (fresh data directory, free ports; one restate-server or a
cluster of nodes; optionally a short expiry window, so that ids go through several lifecycles), draws
a plan from one seed (:mod:`~payments.tools.chaos.plan`), plays its scripts through many concurrent
clients spread over the nodes' ingresses while the kill loops (:mod:`~payments.tools.chaos.kills`)
SIGKILL the service, restate-server and PostgreSQL at random moments, waits until Restate has
nothing left to run, reads every payment's status and every balance through the ingress and every
transfer from the ledger's database, and hands all of it to
:func:`~payments.tools.chaos.invariants.find_violations`.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import asyncpg
import httpx

from payments.client import NotRunningError, PaymentsClient, ServiceError, rotated, until_answered
from payments.runtime.admin import Admin, AdminError
from payments.runtime.reconcile import CannotReconcileError, Reconciliation, reconcile
from payments.service.answers import BalanceAnswer, PaymentAnswer
from payments.tools.chaos.invariants import (
    CANCEL,
    DEPOSIT,
    Call,
    Expiry,
    LedgerState,
    Request,
    Transfer,
    Violation,
    find_violations,
)
from payments.tools.chaos.kills import Kills, health_probe
from payments.tools.chaos.options import PARTS, ChaosOptions
from payments.tools.chaos.plan import Plan, Script, draw_plan
from payments.tools.chaos.progress import Progress, redrawn, status_line
from payments.tools.chaos.report import Report
from payments.tools.launcher import LaunchedStack

RETRY_DEADLINE_SECONDS: Final = 300.0
"""How long a client keeps retrying one call, far less than the expiry window, as the README asks."""
UNSETTLED_SQL: Final = (
    "SELECT target_service_name AS service, target_handler_name AS handler, status, count(*) AS n"
    " FROM sys_invocation WHERE status <> 'completed'"
    " GROUP BY target_service_name, target_handler_name, status"
)
HTTP_SERVER_ERROR: Final = 500
LEDGER_TRANSFERS_SQL: Final = """
    SELECT t.id, t.kind, t.amount, t.payment_id, t.refund_of, t.status = 'posted' AS posted,
           CASE WHEN t.kind = 'payment' THEN t.debit_account ELSE t.credit_account END AS account_id,
           extract(epoch FROM t.created_at)::float8 AS at, e.balance_after
    FROM ledger_transfers t
    LEFT JOIN ledger_entries e ON e.transfer_id = t.id
        AND e.account_id = CASE WHEN t.kind = 'payment' THEN t.debit_account ELSE t.credit_account END
"""
"""Every transfer from its customer account's side, with that account's balance right after it."""
LEDGER_BALANCES_SQL: Final = """
    SELECT a.id, a.balance, coalesce(sum(e.amount), 0)::bigint AS entry_sum
    FROM ledger_accounts a LEFT JOIN ledger_entries e ON e.account_id = a.id
    WHERE a.kind = 'customer' GROUP BY a.id, a.balance
"""


def run_chaos(
    options: ChaosOptions,
    *,
    stack_env: Mapping[str, str] | None = None,
    progress: Progress | None = None,
) -> Report:
    """Start a stack, storm it while killing its processes, let it settle, and check the invariants.

    ``stack_env`` reaches ``payments up``, as :class:`~payments.tools.launcher.LaunchedStack` describes.
    """
    options.validate()
    seed = options.seed if options.seed is not None else random.SystemRandom().randrange(1 << 32)
    data_dir = options.data_dir or Path(tempfile.mkdtemp(prefix="payments-chaos-"))
    if progress is not None:
        progress.say(f"chaos: seed {seed}; starting a stack in {data_dir}")
    env = dict(stack_env or {})
    if options.expiry is not None:
        env["PAYMENTS_EXPIRY_SECONDS"] = str(options.expiry)
    with LaunchedStack(data_dir, env=env, nodes=options.nodes) as stack:
        report = asyncio.run(_storm_and_check(stack, options, seed, progress))
    if options.data_dir is None and report.ok:
        shutil.rmtree(data_dir, ignore_errors=True)
    return report


async def _storm_and_check(
    stack: LaunchedStack, options: ChaosOptions, seed: int, progress: Progress | None
) -> Report:
    """The whole run against a started stack, from the first call to the report."""
    settings = stack.settings
    plan = draw_plan(options, seed, settings.opening_balance)
    kills = Kills(stack, options, seed, health_probe(settings))
    async with (
        Admin(settings.admin_url) as admin,
        open_clients(settings.ingress_urls, options.concurrency) as clients,
    ):
        storm = Storm(plan, options, clients)
        async with redrawn(progress, lambda: storm.status_line(kills)):
            storm_seconds = await storm.play(kills)
            storm.phase = "settling"
            await asyncio.to_thread(stack.wait_ready)
            not_settled: list[Violation] = []
            settle_seconds: float | None = None
            try:
                await settle(admin, options.settle_timeout)
                settle_seconds = storm.elapsed() - storm_seconds
            except NotSettledError as error:
                not_settled.append(Violation("not-settled", str(error)))
            storm.phase = "reading the final state"
            statuses, balances = await read_final_state(clients, plan)
            expiry = Expiry(settings.expiry_seconds, read_by=storm.elapsed())
            storm.phase = "reading the ledger"
            ledger = await read_ledger_state(settings.ledger_url, storm.started_wall)
            storm.phase = "reconciling"
            reconciliation, unreconciled = await reconciled(stack)
            storm.phase = "done"
    found = find_violations(
        settings.opening_balance, storm.calls, statuses, balances, ledger=ledger, expiry=expiry
    )
    return Report(
        seed=seed,
        options=options,
        calls=storm.calls,
        kills={part: kills.of(part) for part in PARTS},
        storm_seconds=storm_seconds,
        settle_seconds=settle_seconds,
        violations=[*not_settled, *found, *unreconciled],
        data_dir=settings.data_dir,
        retries=storm.retries,
        kills_by_node=kills.by_node(),
        most_nodes_down=kills.most_nodes_down,
        reconciliation=reconciliation,
    )


async def reconciled(stack: LaunchedStack) -> tuple[Reconciliation | None, list[Violation]]:
    """``payments reconcile`` on the settled stack, and a ``reconcile`` violation for each problem it finds.

    None when it could not read the ledger or Restate, which is a violation too: a run is clean only
    when the reconciliation is.
    """
    try:
        reconciliation = await reconcile(stack.settings)
    except CannotReconcileError as error:
        return None, [Violation("reconcile", str(error))]
    return reconciliation, [Violation("reconcile", problem.describe()) for problem in reconciliation.problems]


class Clients:
    """A pool of clients, one per concurrent caller; each sends one call at a time."""

    def __init__(self) -> None:
        self._idle: asyncio.Queue[PaymentsClient] = asyncio.Queue()

    def add(self, client: PaymentsClient) -> None:
        """Put an open client in the pool."""
        self._idle.put_nowait(client)

    @contextlib.asynccontextmanager
    async def borrow(self) -> AsyncIterator[PaymentsClient]:
        """A client nobody is using, which limits the calls in flight to the number of clients."""
        client = await self._idle.get()
        try:
            yield client
        finally:
            self._idle.put_nowait(client)


@contextlib.asynccontextmanager
async def open_clients(urls: Sequence[str], count: int) -> AsyncIterator[Clients]:
    """A pool of ``count`` open clients, closed when the block ends."""
    clients = Clients()
    async with contextlib.AsyncExitStack() as opened:
        for index in range(count):
            # Each client starts at another node's ingress, so that every node takes calls.
            clients.add(await opened.enter_async_context(PaymentsClient(rotated(urls, index))))
        yield clients


class Storm:
    """Plays the scripts of a plan through a pool of clients, and records every call."""

    def __init__(self, plan: Plan, options: ChaosOptions, clients: Clients) -> None:
        self.plan = plan
        self.options = options
        self.clients = clients
        self.calls: list[Call] = []
        self.in_flight = 0
        self.retries = 0
        self.phase = "storm"
        """What the run is doing, for the progress line; the run moves it on after the storm."""
        self._started = time.monotonic()
        self.started_wall = time.time()
        """When the storm began on the wall clock, which the ledger's times are on."""

    def elapsed(self) -> float:
        """Seconds since the storm began."""
        return time.monotonic() - self._started

    async def play(self, kills: Kills) -> float:
        """Play every script, with the kill loops running, until the duration is over.

        Stops the kill loops then, and waits for the last answers; returns the storm's length.
        """
        self._started, self.started_wall = time.monotonic(), time.time()
        stop_killing = asyncio.Event()
        killers = [asyncio.create_task(kills.loop(part, stop_killing)) for part in self.options.parts_to_kill]
        scripts = [asyncio.create_task(self._play(script)) for script in self.plan.scripts]
        await asyncio.sleep(self.options.duration)
        storm_seconds = self.elapsed()
        stop_killing.set()
        self.phase = "draining"
        await asyncio.gather(*killers, *scripts)
        return storm_seconds

    def status_line(self, kills: Kills) -> str:
        """The progress line of the run."""
        return status_line(
            self.phase,
            elapsed=self.elapsed(),
            duration=self.options.duration,
            calls=len(self.calls) + self.in_flight,
            in_flight=self.in_flight,
            retries=self.retries,
            kills={part: kills.of(part) for part in self.options.parts_to_kill},
        )

    async def _play(self, script: Script) -> None:
        """Send each step of ``script`` at its time, once the step before it was answered."""
        for step in script:
            if step.at >= self.options.duration:
                return
            await asyncio.sleep(step.at - self.elapsed())
            if self.elapsed() >= self.options.duration:
                return
            await asyncio.gather(*(self._send(request) for request in step.requests))

    async def _send(self, request: Request) -> None:
        """Send one request with a free client, retrying as a real client would, and record it."""
        async with self.clients.borrow() as client:
            sent_at = self.elapsed()
            attempts = 1
            lost = 0

            def retried(error: BaseException) -> None:
                nonlocal attempts, lost
                attempts += 1
                lost += may_have_run(error)
                self.retries += 1

            status: int | None = None
            answer: PaymentAnswer | BalanceAnswer | None = None
            error: str | None = None
            self.in_flight += 1
            try:
                answer = await until_answered(
                    lambda: _send_once(client, request),
                    deadline_seconds=RETRY_DEADLINE_SECONDS,
                    on_retry=retried,
                )
                status = 200
            except ServiceError as refused:
                status, error = refused.status, refused.message
            except (NotRunningError, httpx.TransportError) as failed:
                error = f"{type(failed).__name__}: {failed}"
            finally:
                self.in_flight -= 1
            answered_at = None if status is None else self.elapsed()
            self.calls.append(Call(request, sent_at, answered_at, attempts, status, answer, error, lost))


async def _send_once(client: PaymentsClient, request: Request) -> PaymentAnswer | BalanceAnswer:
    """One attempt at ``request``."""
    if request.kind == CANCEL:
        return await client.cancel_payment(request.target)
    if request.amount is None:
        raise ValueError(f"{request.kind} needs an amount")
    if request.kind == DEPOSIT:
        return await client.deposit(request.target, request.amount, idempotency_key=request.idempotency_key)
    if request.account_id is None:
        raise ValueError("makePayment needs an account")
    return await client.make_payment(request.target, request.account_id, request.amount)


def may_have_run(error: BaseException) -> bool:
    """Whether a failed attempt may have run in Restate: it was sent, and nothing said it was refused.

    A 404 (a node that does not know the service yet) and a connection that never opened are
    refusals; a connection broken mid-call or a 5xx may come after the call ran.
    """
    if isinstance(error, ServiceError):
        return error.status >= HTTP_SERVER_ERROR
    return isinstance(error, httpx.TransportError) and not isinstance(
        error, httpx.ConnectError | httpx.ConnectTimeout
    )


class NotSettledError(Exception):
    """Restate still had work to do when the settle timeout ran out."""


async def settle(admin: Admin, seconds: float) -> None:
    """Wait until no invocation is left but the expiry timers; NotSettledError after ``seconds``."""
    deadline = time.monotonic() + seconds
    unsettled: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        try:
            rows = await admin.query(UNSETTLED_SQL)
        except (AdminError, httpx.TransportError):
            await asyncio.sleep(0.5)
            continue
        unsettled = [row for row in rows if not _is_expiry_timer(row)]
        if not unsettled:
            return
        await asyncio.sleep(0.25)
    still = "; ".join(f"{row['service']}/{row['handler']} {row['status']} x{row['n']}" for row in unsettled)
    raise NotSettledError(f"Restate still had work after {seconds:.0f} s: {still}")


def _is_expiry_timer(row: Mapping[str, Any]) -> bool:
    """Whether a row of :data:`UNSETTLED_SQL` is only the armed expiry timers, which wait for a day."""
    return bool(row["status"] == "scheduled" and row["handler"] == "expireToken")


async def read_final_state(clients: Clients, plan: Plan) -> tuple[dict[str, PaymentAnswer], dict[str, int]]:
    """The status of every payment id and the balance of every account of ``plan``, as clients read them."""

    async def status(payment_id: str) -> PaymentAnswer:
        async with clients.borrow() as client:
            return await until_answered(lambda: client.get_status(payment_id))

    async def balance(account: str) -> int:
        async with clients.borrow() as client:
            return (await until_answered(lambda: client.balance(account))).balance

    ids, accounts = plan.payment_ids, plan.accounts
    statuses = await asyncio.gather(*(status(payment_id) for payment_id in ids))
    balances = await asyncio.gather(*(balance(account) for account in accounts))
    return dict(zip(ids, statuses, strict=True)), dict(zip(accounts, balances, strict=True))


async def read_ledger_state(url: str, started_wall: float) -> LedgerState:
    """Every transfer of the ledger at ``url``, and each customer account's cached and summed balance.

    Times become seconds since ``started_wall``, the storm's start on the wall clock. The stack's
    ``wait_ready`` has seen the database answer after its last kill.
    """
    connection = await asyncpg.connect(url, timeout=5)
    try:
        async with connection.transaction(isolation="repeatable_read", readonly=True):
            transfers = await connection.fetch(LEDGER_TRANSFERS_SQL)
            accounts = await connection.fetch(LEDGER_BALANCES_SQL)
    finally:
        await connection.close()
    return LedgerState(
        transfers=tuple(
            Transfer(
                transfer_id=row["id"],
                kind=row["kind"],
                account_id=row["account_id"],
                amount=row["amount"],
                at=row["at"] - started_wall,
                posted=row["posted"],
                payment_id=row["payment_id"],
                refund_of=row["refund_of"],
                balance_after=row["balance_after"],
            )
            for row in transfers
        ),
        balances={row["id"]: row["balance"] for row in accounts},
        entry_sums={row["id"]: row["entry_sum"] for row in accounts},
    )
