"""Tooling around the product: the chaos storm, the benchmark and the launcher tests use."""
