"""The rules of payments and balances: pure logic, no Restate, no HTTP, no I/O."""
