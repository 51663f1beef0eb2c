"""The ``payments`` command: run the stack, and call the service from a terminal."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit

import httpx
import pydantic

from payments.client import NotRunningError, PaymentsClient, ServiceError
from payments.config import Settings
from payments.runtime import postgres, supervisor
from payments.service.validation import DEFAULT_PAGE, MAX_PAGE, InvalidInputError, parse_id

if TYPE_CHECKING:
    from payments.service.ledger import Balance, Ledger

T = TypeVar("T")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``payments`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env(
            data_dir=getattr(args, "data_dir", None),
            host=getattr(args, "host", None),
            ingress_port=getattr(args, "ingress_port", None),
            admin_port=getattr(args, "admin_port", None),
            service_port=getattr(args, "service_port", None),
            console_port=getattr(args, "console_port", None),
            node_port=getattr(args, "node_port", None),
            nodes=getattr(args, "nodes", None),
        )
    except ValueError as error:
        parser.error(str(error))
    command: Callable[[argparse.Namespace, Settings], int] = args.command
    try:
        return command(args, settings)
    except ModuleNotFoundError as missing:
        if missing.name not in TOOLS_EXTRA:
            raise
        hint = "pip install 'restate-payments[tools]'"
        print(f"payments: this command needs the tools extra: {hint} ({missing})", file=sys.stderr)
        return 1


TOOLS_EXTRA = frozenset({"psutil", "matplotlib"})
"""What ``payments chaos`` and ``payments bench`` need beyond the service (pyproject's ``tools`` extra)."""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="payments",
        description="A payment service on Restate that charges each payment id at most once.",
    )
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    up = commands.add_parser(
        "up",
        help="run PostgreSQL, restate-server, the service and the console, restarting what dies",
        description="Run PostgreSQL, restate-server, the service and the console until Ctrl-C or SIGTERM.",
    )
    up.add_argument("--data-dir", type=Path, help="where state and logs live (PAYMENTS_DATA_DIR)")
    up.add_argument("--host", help="address everything binds to (PAYMENTS_HOST)")
    up.add_argument(
        "--nodes",
        type=int,
        help="restate-server nodes: 1, or 3 for a cluster that survives the loss of one (PAYMENTS_NODES)",
    )
    for name in ("ingress", "admin", "service", "node", "console"):
        help_text = f"{name} port (PAYMENTS_{name.upper()}_PORT)"
        if name not in ("service", "console"):
            help_text += "; node N of a cluster uses this port + N - 1"
        up.add_argument(f"--{name}-port", type=int, help=help_text)
    up.set_defaults(command=_up)

    def client_command(name: str, help_text: str, run: _ClientCall) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument(
            "--ingress",
            action="append",
            metavar="URL",
            help="an ingress URL; repeat it for the nodes of a cluster, the next one is tried when one"
            " does not answer (default: every node's from PAYMENTS_HOST, PAYMENTS_INGRESS_PORT and"
            " PAYMENTS_NODES)",
        )
        sub.add_argument("--ingress-port", type=int, help="ingress port of the stack (PAYMENTS_INGRESS_PORT)")
        sub.add_argument("--host", help="host of the stack (PAYMENTS_HOST)")
        sub.set_defaults(
            command=lambda args, settings: _call(
                args.ingress or settings.ingress_urls, lambda c: run(c, args)
            )
        )
        return sub

    pay = client_command(
        "pay",
        "charge an account once for a payment id",
        lambda c, a: c.make_payment(a.payment_id, a.account, a.amount),
    )
    pay.add_argument("payment_id", metavar="ID")
    pay.add_argument("--account", required=True, help="account to charge")
    pay.add_argument("--amount", required=True, type=int, help="amount in cents")

    cancel = client_command(
        "cancel",
        "cancel a payment: block it, or refund it",
        lambda c, a: c.cancel_payment(a.payment_id),
    )
    cancel.add_argument("payment_id", metavar="ID")

    status = client_command("status", "show a payment's state", lambda c, a: c.get_status(a.payment_id))
    status.add_argument("payment_id", metavar="ID")

    deposit = client_command(
        "deposit",
        "add funds to an account",
        lambda c, a: c.deposit(a.account_id, a.amount, idempotency_key=a.idempotency_key),
    )
    deposit.add_argument("account_id", metavar="ACCOUNT")
    deposit.add_argument("amount", type=int, metavar="AMOUNT", help="amount in cents")
    deposit.add_argument("--idempotency-key", help="send again with the same key to retry safely")

    balance = client_command("balance", "show an account's balance", lambda c, a: c.balance(a.account_id))
    balance.add_argument("account_id", metavar="ACCOUNT")

    _add_open(commands)

    statement = client_command(
        "statement",
        "show an account's entries, newest first, a page at a time",
        lambda c, a: c.statement(a.account_id, before=a.before, limit=a.limit),
    )
    statement.add_argument("account_id", metavar="ACCOUNT")
    statement.add_argument("--before", type=int, metavar="ENTRY", help="the nextBefore of the previous page")
    statement.add_argument(
        "--limit",
        type=int,
        metavar="N",
        help=f"entries in the page (default {DEFAULT_PAGE}, at most {MAX_PAGE})",
    )

    history = commands.add_parser(
        "history",
        help="show every ledger entry of a payment id, across its lifecycles",
        description="Read every ledger entry of a payment id from the ledger (PAYMENTS_DATABASE_URL or"
        " the embedded PostgreSQL of PAYMENTS_DATA_DIR), oldest first, as JSON lines.",
    )
    history.add_argument("payment_id", metavar="ID")
    history.add_argument("--data-dir", type=Path, help="the stack's data directory (PAYMENTS_DATA_DIR)")
    history.set_defaults(command=_history)
    _add_migrate(commands)
    _add_chaos(commands)
    _add_bench(commands)
    _add_psql(commands)
    _add_reconcile(commands)
    return parser


def _on_ledger(url: str, doing: str, work: Callable[[Ledger], Awaitable[T]]) -> T:
    """``work`` done on the ledger at ``url`` through one connection.

    A failure is one line (:class:`_LedgerFailedError`), never the driver's stack.
    """
    import asyncpg  # noqa: PLC0415 - with the ledger, which the client commands never load

    from payments.service.ledger import Ledger, LedgerError  # noqa: PLC0415

    async def run() -> T:
        ledger = await Ledger.connect(url, max_size=1)
        try:
            return await work(ledger)
        finally:
            await ledger.close()

    try:
        return asyncio.run(run())
    except OSError as error:
        raise _LedgerFailedError(f"the ledger does not answer at {_without_password(url)}: {error}") from None
    except (asyncpg.PostgresError, asyncpg.InterfaceError, LedgerError) as error:
        raise _LedgerFailedError(f"the ledger refused to {doing}: {type(error).__name__}: {error}") from None


def _without_password(url: str) -> str:
    """``url`` as it may be shown: without a password in its user part or its query."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.partition(':')[0]}@{host}"
    query = "&".join(pair for pair in parts.query.split("&") if pair and not pair.startswith("password="))
    return urlunsplit(parts._replace(netloc=netloc, query=query))


class _LedgerFailedError(Exception):
    """A ledger command failed; the message says why in one line."""


def _ledger_command(run: Callable[[argparse.Namespace, Settings], int]) -> Callable[..., int]:
    """``run``, a refused id or setting one line (exit 2), and a failure of the ledger one line (exit 1)."""

    def command(args: argparse.Namespace, settings: Settings) -> int:
        try:
            return run(args, settings)
        except ValueError as error:  # an id outside the rules, or settings that name no administrator
            print(f"payments: {error}", file=sys.stderr)
            return 2
        except _LedgerFailedError as error:
            print(f"payments: {error}", file=sys.stderr)
            return 1

    return command


@_ledger_command
def _history(args: argparse.Namespace, settings: Settings) -> int:
    payment_id = parse_id(args.payment_id, "paymentId")
    entries = _on_ledger(settings.ledger_url, "read", lambda ledger: ledger.history(payment_id))
    print(
        "\n".join(json.dumps(e.to_json()) for e in entries) or f"no ledger entry for payment id {payment_id}"
    )
    return 0


@_ledger_command
def _migrate(_: argparse.Namespace, settings: Settings) -> int:
    applied = _on_ledger(settings.admin_ledger_url, "migrate", lambda ledger: ledger.migrate())
    print("\n".join(f"applied {name}" for name in applied) or "the ledger's schema is up to date")
    return 0


@_ledger_command
def _open(args: argparse.Namespace, settings: Settings) -> int:
    account_id = parse_id(args.account_id, "accountId")

    async def open_it(ledger: Ledger) -> Balance:
        from payments.service.ledger import TransferConflictError  # noqa: PLC0415

        # Opened before, maybe with another opening balance: it is open, and says its balance now.
        with contextlib.suppress(TransferConflictError):
            await ledger.open_account(account_id, settings.opening_balance)
        return await ledger.balance(account_id, opening=None)

    opened = _on_ledger(settings.ledger_url, "open the account", open_it)
    print(json.dumps({"accountId": opened.account_id, "balance": opened.balance}))
    return 0


def _add_migrate(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``migrate`` subcommand: an administrator's, on the ledger itself."""
    migrate = commands.add_parser(
        "migrate",
        help="bring the ledger's schema up to date, as its administrator",
        description="Apply the ledger's migrations that its database lacks, connected as an administrator"
        " (PAYMENTS_DATABASE_ADMIN_URL, else the superuser of the embedded PostgreSQL of"
        " PAYMENTS_DATA_DIR). `payments up` runs it before it starts the service, which may not.",
    )
    migrate.add_argument("--data-dir", type=Path, help="the stack's data directory (PAYMENTS_DATA_DIR)")
    migrate.set_defaults(command=_migrate)


def _add_open(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``open`` subcommand: an operator's, on the ledger itself."""
    opened = commands.add_parser(
        "open",
        help="open an account with the opening balance: an operator's call, in the ledger",
        description="Open an account in the ledger (PAYMENTS_DATABASE_URL or the embedded PostgreSQL of"
        " PAYMENTS_DATA_DIR) with PAYMENTS_OPENING_BALANCE, as the service's role; an open account"
        " answers the balance it was opened with. With PAYMENTS_AUTO_OPEN=false this is the only way"
        " an account opens: the public ingress has no such call.",
    )
    opened.add_argument("account_id", metavar="ACCOUNT")
    opened.add_argument("--data-dir", type=Path, help="the stack's data directory (PAYMENTS_DATA_DIR)")
    opened.set_defaults(command=_open)


def _add_psql(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``psql`` subcommand: every argument after it is psql's, ``--help`` included."""
    text = (
        "open psql on the ledger as its administrator (PAYMENTS_DATABASE_ADMIN_URL, else the superuser"
        " of the PostgreSQL of `payments up`)"
    )
    psql = commands.add_parser("psql", help=text, description=text, prefix_chars="+", add_help=False)
    psql.add_argument("psql_args", nargs=argparse.REMAINDER, metavar="ARGS")
    psql.set_defaults(command=_psql)


@_ledger_command
def _psql(args: argparse.Namespace, settings: Settings) -> int:
    """Become the embedded psql, connected to the ledger, standard input and output untouched."""
    url = urlsplit(settings.admin_ledger_url)
    psql = str(postgres.binary("psql"))
    # A password goes through the environment: every local user can read a process's arguments.
    env = {**os.environ, **({"PGPASSWORD": unquote(url.password)} if url.password else {})}
    dbname = _without_password(settings.admin_ledger_url)
    os.execve(psql, [psql, "--dbname", dbname, *args.psql_args], env)  # noqa: S606 - our own binary


def _add_reconcile(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``reconcile`` subcommand: exit status 0 when clean, 1 on a mismatch, 2 when it cannot check."""
    text = (
        "check the ledger and Restate against each other: balances, entries, refunds, and every payment"
        " id's state against its debits; lists each mismatch and exits 1 on any"
    )
    run = commands.add_parser("reconcile", help=text, description=text)
    run.add_argument("--json", action="store_true", help="print the result as JSON")
    run.add_argument("--data-dir", type=Path, help="the stack's data directory (PAYMENTS_DATA_DIR)")
    run.add_argument("--host", help="host of the stack (PAYMENTS_HOST)")
    run.add_argument(
        "--admin-port",
        type=int,
        help="Restate's admin port (PAYMENTS_ADMIN_PORT); node N of a cluster uses this port + N - 1",
    )
    run.add_argument(
        "--nodes",
        type=int,
        help="restate-server nodes of the stack, whose admin APIs are asked in turn (PAYMENTS_NODES)",
    )

    def reconcile(args: argparse.Namespace, settings: Settings) -> int:
        from payments.runtime.reconcile import CannotReconcileError, reconcile  # noqa: PLC0415

        try:
            result = asyncio.run(reconcile(settings))
        except CannotReconcileError as error:
            print(f"payments: {error}", file=sys.stderr)
            return 2
        print(json.dumps(result.to_json(), indent=2) if args.json else result.describe())
        return 0 if result.ok else 1

    run.set_defaults(command=reconcile)


def _add_chaos(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``chaos`` subcommand and its options."""
    # Every command builds this parser: the options module is light, the storm loads only in _chaos.
    from payments.tools.chaos.options import ChaosOptions  # noqa: PLC0415 - the tools load only for their commands

    defaults = ChaosOptions()
    run = commands.add_parser(
        "chaos",
        help="storm a stack of its own with payments while killing its processes, then check it",
        description=(
            "Start a stack of its own (fresh data directory, free ports), send a storm of duplicated,"
            " conflicting and cancelled payments and deposits while SIGKILLing the service,"
            " restate-server and PostgreSQL at random, wait until it settles, check the answers and"
            " the ledger that no money was created, lost or moved twice, and reconcile."
            " Exits 1 when an invariant is violated."
        ),
    )
    run.add_argument(
        "--duration", type=float, default=defaults.duration, help="seconds of storm (%(default)s)"
    )
    run.add_argument("--ids", type=int, default=defaults.ids, help="payment ids in the storm (%(default)s)")
    run.add_argument(
        "--accounts", type=int, default=defaults.accounts, help="accounts they charge (%(default)s)"
    )
    run.add_argument(
        "--concurrency", type=int, default=defaults.concurrency, help="concurrent clients (%(default)s)"
    )
    run.add_argument("--seed", type=int, help="repeat the choices of an earlier run (default: random)")
    run.add_argument(
        "--nodes",
        type=int,
        default=defaults.nodes,
        help="restate-server nodes of the stack; clients spread over their ingresses (%(default)s)",
    )
    run.add_argument(
        "--max-nodes-down",
        type=int,
        default=defaults.max_nodes_down,
        metavar="N",
        help="how many nodes may be down at once; a node is killed only while fewer are (%(default)s)."
        " More than a minority of the nodes stalls every call until enough are back",
    )
    run.add_argument("--no-kill-service", action="store_true", help="never kill the service")
    run.add_argument(
        "--no-kill-server", action="store_true", help="never kill restate-server (none of its nodes)"
    )
    run.add_argument("--no-kill-database", action="store_true", help="never kill PostgreSQL")
    run.add_argument(
        "--kill-min",
        type=float,
        default=defaults.kill_min,
        metavar="SECONDS",
        help="shortest time a process runs after a restart before it is killed again (%(default)s)",
    )
    run.add_argument(
        "--kill-max",
        type=float,
        default=defaults.kill_max,
        metavar="SECONDS",
        help="longest such time (%(default)s); each kill waits a random time between the two",
    )
    run.add_argument(
        "--settle-timeout",
        type=float,
        default=defaults.settle_timeout,
        metavar="SECONDS",
        help="how long to wait for Restate to finish its work after the storm (%(default)s)",
    )
    run.add_argument(
        "--expiry",
        type=float,
        metavar="SECONDS",
        help="the stack's expiry window (PAYMENTS_EXPIRY_SECONDS): a few seconds make ids expire and be"
        " paid again during the storm (default: the service's, a day)",
    )
    run.add_argument(
        "--data-dir",
        type=Path,
        help="an empty directory for the stack's data (default: a temporary one, removed after a clean run)",
    )
    run.add_argument(
        "--report",
        type=Path,
        default=Path("results/chaos.json"),
        metavar="PATH",
        help="where to write the JSON report (%(default)s)",
    )
    run.set_defaults(command=_chaos)


def _add_bench(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``bench`` subcommand and its options."""
    from payments.tools.bench.options import BenchOptions  # noqa: PLC0415 - the tools load only for their commands

    defaults = BenchOptions()
    run = commands.add_parser(
        "bench",
        help="measure payments/s and latency against a fresh stack, next to Restate's ceiling",
        description=(
            "Start a fresh stack and drive closed-loop makePayment load with wrk (new payment ids over"
            " 100 accounts) at each concurrency, then the same load against a one-state-write handler"
            " on the same restate-server. Prints a table and writes a JSON report and a plot."
        ),
    )
    run.add_argument("--quick", action="store_true", help="short windows: about a minute in all")
    run.add_argument("--measure", type=float, metavar="SECONDS", help="length of each measured window")
    run.add_argument("--warmup", type=float, metavar="SECONDS", help="length of each warm-up")
    run.add_argument(
        "--concurrency",
        type=int,
        action="append",
        metavar="N",
        help="a concurrency to measure; repeat for several (default: 1, 16 and 64)",
    )
    run.add_argument("--output", type=Path, default=defaults.output, help="the JSON report (%(default)s)")
    run.add_argument("--plot", type=Path, default=defaults.plot, help="the PNG plot (%(default)s)")
    run.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a PAYMENTS_* or RESTATE_* variable for the measured stack, for experiments",
    )
    run.set_defaults(command=_bench)


def _bench(args: argparse.Namespace, _settings: Settings) -> int:
    from payments.tools.bench.options import BenchOptions  # noqa: PLC0415 - the tools load only for their commands
    from payments.tools.bench.runner import BenchError, run_bench  # noqa: PLC0415
    from payments.tools.launcher import LaunchError  # noqa: PLC0415

    try:
        env = dict(item.split("=", 1) for item in args.env)
    except ValueError:
        print("payments: --env takes NAME=VALUE", file=sys.stderr)
        return 2
    changes = {"output": args.output, "plot": args.plot, "env": env}
    if args.concurrency:
        changes["concurrencies"] = tuple(args.concurrency)
    if args.measure:
        changes["measure_seconds"] = args.measure
    if args.warmup:
        changes["warmup_seconds"] = args.warmup
    options = BenchOptions.quick(**changes) if args.quick else BenchOptions(**changes)
    try:
        run_bench(options)
    except (BenchError, LaunchError) as error:
        print(f"payments: {error}", file=sys.stderr)
        return 1
    print(f"report: {options.output}" + (f", plot: {options.plot}" if options.plot else ""))
    return 0


_ClientCall = Callable[[PaymentsClient, argparse.Namespace], Awaitable[pydantic.BaseModel]]


def _up(_args: argparse.Namespace, settings: Settings) -> int:
    try:
        print_welcome(settings)
        asyncio.run(supervisor.supervise(settings))
    except supervisor.StackError as error:
        print(f"payments: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C before the supervisor catches it: nothing has started yet
        return 130  # the shell's code for SIGINT
    return 0


def _chaos(args: argparse.Namespace, _settings: Settings) -> int:
    from payments.tools.chaos.options import ChaosOptions  # noqa: PLC0415 - the tools load only for their commands
    from payments.tools.chaos.progress import Progress  # noqa: PLC0415
    from payments.tools.chaos.run import run_chaos  # noqa: PLC0415
    from payments.tools.launcher import LaunchError  # noqa: PLC0415

    options = ChaosOptions(
        duration=args.duration,
        ids=args.ids,
        accounts=args.accounts,
        concurrency=args.concurrency,
        seed=args.seed,
        nodes=args.nodes,
        max_nodes_down=args.max_nodes_down,
        kill_service=not args.no_kill_service,
        kill_server=not args.no_kill_server,
        kill_database=not args.no_kill_database,
        kill_min=args.kill_min,
        kill_max=args.kill_max,
        settle_timeout=args.settle_timeout,
        expiry=args.expiry,
        data_dir=args.data_dir,
    )
    try:
        options.validate()
        report = run_chaos(options, progress=Progress(sys.stderr))
    except ValueError as error:
        print(f"payments: {error}", file=sys.stderr)
        return 2
    except LaunchError as error:
        print(f"payments: the chaos run's stack failed: {error}", file=sys.stderr)
        return 1
    for violation in report.violations:
        print(violation.describe())
    print(report.table())
    report.write(args.report)
    print(f"report: {args.report}")
    if not report.ok:
        print(f"data and logs kept in {report.data_dir}")
        return 1
    return 0


def print_welcome(settings: Settings) -> None:
    """Tell the user where everything is and how to try it."""
    ingress = settings.ingress_url
    # The original example's commands say localhost; curl falls back from ::1 to 127.0.0.1.
    short = f"localhost:{settings.ingress_port}" if settings.host == "127.0.0.1" else ingress
    make_payment = (
        f"curl -X POST {short}/payments/my-payment-id/makePayment"
        ' -H \'content-type: application/json\' -d \'{"accountId": "abc", "amount": 100}\''
    )
    where = f"Ingress:    {ingress}\nRestate UI: {settings.admin_url}/ui/"
    if settings.nodes > 1:
        where = (
            f"Cluster:    {settings.nodes} restate-server nodes, log replication {settings.replication};"
            f" {settings.tolerated_failures} may be down at once\n"
            + "\n".join(
                f"Node {node.index}:     ingress {node.ingress_url}  UI {node.admin_url}/ui/"
                for node in settings.restate_nodes
            )
        )
    print(
        f"""\
{where}
Console:    {settings.console_url}/
Data:       {settings.data_dir.resolve()}

Try it:
  {make_payment}
  curl -X POST {short}/payments/my-payment-id/cancelPayment
""",
        flush=True,
    )


def _call(ingress_urls: Sequence[str], run: Callable[[PaymentsClient], Awaitable[pydantic.BaseModel]]) -> int:
    async def call() -> pydantic.BaseModel:
        async with PaymentsClient(ingress_urls) as client:
            return await run(client)

    try:
        answer = asyncio.run(call())
    except InvalidInputError as error:
        # The client refused an id before sending anything: a usage error, like argparse's.
        print(f"payments: {error}", file=sys.stderr)
        return 2
    except NotRunningError:
        print(
            f"payments: the stack is not running at {', '.join(ingress_urls)} (start it with `make run`)",
            file=sys.stderr,
        )
        return 1
    except ServiceError as error:
        print(f"payments: {error.status} {error.message}", file=sys.stderr)
        return 1
    except httpx.TransportError as error:
        print(
            f"payments: the connection broke during the call ({type(error).__name__}), which may or may not"
            " have happened; sending it again is safe for a payment id or a deposit's idempotency key",
            file=sys.stderr,
        )
        return 1
    print(answer.model_dump_json(indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
