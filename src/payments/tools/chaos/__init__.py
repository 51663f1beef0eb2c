"""``payments chaos``: a storm of calls while processes are killed, then a check of every invariant."""
