"""The package's public names: what a user imports from ``payments``, and nothing by accident."""

from __future__ import annotations

import pkgutil

import payments

PUBLIC = {
    "BalanceAnswer",
    "DepositAnswer",
    "InvalidInputError",
    "NotRunningError",
    "PaymentAnswer",
    "PaymentsClient",
    "ServiceError",
    "Settings",
}


def test_the_public_names_are_exactly_these() -> None:
    assert set(payments.__all__) == PUBLIC


def test_every_public_name_is_the_project_own() -> None:
    for name in payments.__all__:
        assert getattr(payments, name).__module__.startswith("payments."), name


def test_nothing_else_public_is_reexported() -> None:
    public = {name for name in vars(payments) if not name.startswith("_")}

    # Submodules become attributes once anything imports them: public modules, not re-exported names.
    assert public - PUBLIC <= {module.name for module in pkgutil.iter_modules(payments.__path__)}
