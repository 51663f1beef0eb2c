"""``payments bench``: makePayment load at several concurrencies, next to a one-write ceiling."""
