"""The operator console: read-only pages over the ledger and Restate, served by a process of its own.

It reads the ledger as the role ``payments_console``, which may only SELECT, and Restate through the
admin API's SQL; it imports none of the service's handlers, so it can neither move money nor change
a payment's state.
"""
