"""A payment service on Restate that charges each payment id at most once.

The public surface: :class:`PaymentsClient` to call a running service, the answer shapes it
returns, and :class:`Settings` for configuration. ``payments up`` runs the service itself.
"""

from payments.client import NotRunningError, PaymentsClient, ServiceError
from payments.config import Settings
from payments.service.answers import BalanceAnswer, PaymentAnswer

__all__ = [
    "BalanceAnswer",
    "NotRunningError",
    "PaymentAnswer",
    "PaymentsClient",
    "ServiceError",
    "Settings",
]
