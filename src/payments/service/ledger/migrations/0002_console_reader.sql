-- The operator console's view of the ledger: a role that can read the ledger's tables and nothing
-- else, and an index for its charts of recent transfers.
--
-- payments_console logs in with a password (`payments up` sets the embedded server's; on a server
-- of your own an operator does: docs/deployment.md). A role made here is read-only by default in
-- every transaction too, on top of having no right to write. A migrator that cannot create it goes
-- on with a warning here (migration 0005 then needs one that can create roles).

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'payments_console') THEN
        CREATE ROLE payments_console LOGIN NOINHERIT CONNECTION LIMIT 20;
        ALTER ROLE payments_console SET default_transaction_read_only = on;
        ALTER ROLE payments_console SET statement_timeout = '10s';
    END IF;
EXCEPTION
    -- Another database of the same cluster created it meanwhile: roles belong to the cluster.
    WHEN duplicate_object OR unique_violation THEN NULL;
    WHEN insufficient_privilege THEN
        RAISE WARNING 'role payments_console not created (%): the console cannot read the ledger until'
            ' an administrator creates it (docs/deployment.md)', SQLERRM;
END
$$;

-- Only what the tables' owner may always grant: connecting to the database and using the schema
-- are everyone's rights unless an administrator took them away.
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'payments_console') THEN
        GRANT SELECT ON ledger_accounts, ledger_transfers, ledger_entries TO payments_console;
    END IF;
END
$$;

CREATE INDEX IF NOT EXISTS ledger_transfers_created ON ledger_transfers (created_at);
