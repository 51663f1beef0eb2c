"""The ``payments`` command: run the stack, and call the service from a terminal."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import pydantic

from payments.client import NotRunningError, PaymentsClient, ServiceError
from payments.config import Settings
from payments.stack import Stack, StackError


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
            node_port=getattr(args, "node_port", None),
        )
    except ValueError as error:
        parser.error(str(error))
    command: Callable[[argparse.Namespace, Settings], int] = args.command
    return command(args, settings)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="payments",
        description="A payment service on Restate that charges each payment id at most once.",
    )
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    up = commands.add_parser(
        "up",
        help="run restate-server and the service, restarting either if it dies",
        description="Run restate-server and the service until Ctrl-C or SIGTERM.",
    )
    up.add_argument("--data-dir", type=Path, help="where state and logs live (PAYMENTS_DATA_DIR)")
    up.add_argument("--host", help="address everything binds to (PAYMENTS_HOST)")
    for name in ("ingress", "admin", "service", "node"):
        up.add_argument(f"--{name}-port", type=int, help=f"{name} port (PAYMENTS_{name.upper()}_PORT)")
    up.set_defaults(command=_up)

    def client_command(name: str, help_text: str, run: _ClientCall) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("--ingress-port", type=int, help="ingress port of the stack (PAYMENTS_INGRESS_PORT)")
        sub.add_argument("--host", help="host of the stack (PAYMENTS_HOST)")
        sub.set_defaults(command=lambda args, settings: _call(settings, lambda c: run(c, args)))
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
    return parser


_ClientCall = Callable[[PaymentsClient, argparse.Namespace], Awaitable[pydantic.BaseModel]]


def _up(_args: argparse.Namespace, settings: Settings) -> int:
    print_welcome(settings)
    try:
        asyncio.run(Stack(settings).run())
    except StackError as error:
        print(f"payments: {error}", file=sys.stderr)
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
    print(
        f"""\
Ingress:    {ingress}
Restate UI: {settings.admin_url}/ui/
Data:       {settings.data_dir.resolve()}

Try it:
  {make_payment}
  curl -X POST {short}/payments/my-payment-id/cancelPayment
""",
        flush=True,
    )


def _call(settings: Settings, run: Callable[[PaymentsClient], Awaitable[pydantic.BaseModel]]) -> int:
    async def call() -> pydantic.BaseModel:
        async with PaymentsClient(settings.ingress_url) as client:
            return await run(client)

    try:
        answer = asyncio.run(call())
    except NotRunningError:
        print(
            f"payments: the stack is not running at {settings.ingress_url} (start it with `make run`)",
            file=sys.stderr,
        )
        return 1
    except ServiceError as error:
        print(f"payments: {error.status} {error.message}", file=sys.stderr)
        return 1
    print(answer.model_dump_json(indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
