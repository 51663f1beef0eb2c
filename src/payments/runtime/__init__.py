"""What runs the product: the supervisor behind ``payments up``, restate-server's setup, keys, health."""
