"""A payment service on Restate that charges each payment id at most once.

The public surface: :class:`PaymentsClient` to call a running service, the answer shapes it
returns and the errors it raises, and :class:`Settings` for configuration. ``payments up`` runs the
service itself.
"""

from payments.client import NotRunningError, PaymentsClient, ServiceError
from payments.config import Settings
from payments.service.answers import BalanceAnswer, DepositAnswer, PaymentAnswer
from payments.service.validation import InvalidInputError

__all__ = [
    "BalanceAnswer",
    "DepositAnswer",
    "InvalidInputError",
    "NotRunningError",
    "PaymentAnswer",
    "PaymentsClient",
    "ServiceError",
    "Settings",
]
