-- Only the ledger's own functions can write the ledger. An administrator runs this migration (the
-- embedded server's superuser, or docs/deployment.md's on a server of your own); afterwards:
--   payments_owner    owns the tables and functions and cannot log in: nobody acts as it except
--                     through the four functions below, which run as their owner (SECURITY DEFINER)
--                     with a fixed search_path;
--   payments_service  the service's role: may call those four functions and read, nothing else: no
--                     table privilege to write, no superuser, no CREATE, no TEMPORARY;
--   payments_console  reads (migration 0002).
-- Passwords are set apart from migrations: `payments up` sets each role's for the embedded server.

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'payments_owner') THEN
        CREATE ROLE payments_owner NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'payments_service') THEN
        CREATE ROLE payments_service LOGIN NOINHERIT;
    END IF;
EXCEPTION
    -- Another database of the same cluster created them meanwhile: roles belong to the cluster.
    WHEN duplicate_object OR unique_violation THEN NULL;
END
$$;

DO $$
DECLARE
    f regprocedure;
BEGIN
    EXECUTE format('REVOKE CREATE, TEMPORARY ON DATABASE %I FROM PUBLIC', current_database());
    EXECUTE format('REVOKE CREATE ON SCHEMA %I FROM PUBLIC', current_schema());
    ALTER TABLE ledger_accounts OWNER TO payments_owner;
    ALTER TABLE ledger_transfers OWNER TO payments_owner;
    ALTER TABLE ledger_entries OWNER TO payments_owner;
    FOR f IN
        SELECT p.oid::regprocedure FROM pg_proc p
        WHERE p.pronamespace = current_schema()::regnamespace AND p.proname LIKE 'ledger\_%'
    LOOP
        EXECUTE format('ALTER FUNCTION %s OWNER TO payments_owner', f);
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f);
    END LOOP;
    FOR f IN VALUES
        ('ledger_open(text, bigint)'::regprocedure),
        ('ledger_withdraw(text, text, bigint, text, bigint)'),
        ('ledger_deposit(text, text, bigint, bigint, bigint)'),
        ('ledger_refund(text, text)')
    LOOP
        EXECUTE format(
            'ALTER FUNCTION %s SECURITY DEFINER SET search_path = pg_catalog, %I, pg_temp', f, current_schema());
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO payments_service', f);
    END LOOP;
END
$$;

-- The REVOKEs above are only warnings for an administrator who owns neither the schema nor the
-- database: a service that may create objects next to the ledger's could shadow a function the
-- owner's functions call, so the migration stops rather than leave that open.
DO $$
BEGIN
    IF has_schema_privilege('payments_service', current_schema(), 'CREATE')
        OR has_database_privilege('payments_service', current_database(), 'CREATE, TEMPORARY')
    THEN
        RAISE EXCEPTION 'payments_service may still create objects in schema % or database %: revoke'
            ' CREATE and TEMPORARY from PUBLIC as their owner, then migrate again',
            current_schema(), current_database();
    END IF;
END
$$;

GRANT SELECT ON ledger_accounts, ledger_transfers, ledger_entries, schema_migrations TO payments_service;
-- Reconcile asks ledger_transfer_fits, as either role (the console's exists unless 0002 could not make it).
GRANT EXECUTE ON FUNCTION ledger_transfer_fits(text, text, text, text) TO payments_service;
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'payments_console') THEN
        -- Again, for a console role an administrator made after migration 0002.
        GRANT SELECT ON ledger_accounts, ledger_transfers, ledger_entries TO payments_console;
        GRANT EXECUTE ON FUNCTION ledger_transfer_fits(text, text, text, text) TO payments_console;
    END IF;
END
$$;
