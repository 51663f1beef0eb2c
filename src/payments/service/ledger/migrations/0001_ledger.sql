-- The double-entry ledger: accounts with cached balances, immutable transfers and entries, and one
-- plpgsql function per write, so that each write is one round trip and one transaction.
--
-- Locking: a write locks the customer account first and the system account last (system ids start
-- with '@', which no customer id may contain). That fixed order rules out deadlocks, and taking the
-- hot system row last keeps it locked only for the final insert and the commit.

CREATE TABLE ledger_accounts (
    id text PRIMARY KEY,
    kind text NOT NULL CHECK (kind IN ('customer', 'system')),
    balance bigint NOT NULL DEFAULT 0,
    -- Cents of posted payments not yet refunded: a deposit must leave room for their refunds.
    refundable bigint NOT NULL DEFAULT 0 CHECK (refundable >= 0),
    opened_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT ledger_customer_never_negative CHECK (kind = 'system' OR balance >= 0),
    CONSTRAINT ledger_system_ids CHECK ((kind = 'system') = (id LIKE '@%'))
);

-- Where openings and deposits come from, and payments go to. Every payment updates a payments
-- account, so that row is spread over shards (ledger_payments_shard) to keep it from serialising
-- all payments; a refund takes its money back from the shard its debit went to.
INSERT INTO ledger_accounts (id, kind)
SELECT account, 'system'
FROM unnest(ARRAY['@openings', '@deposits']) AS account
UNION ALL
SELECT '@payments:' || shard, 'system' FROM generate_series(0, 7) AS shard;

CREATE TABLE ledger_transfers (
    id text PRIMARY KEY,  -- the idempotency key
    kind text NOT NULL CHECK (kind IN ('opening', 'deposit', 'payment', 'refund')),
    debit_account text NOT NULL REFERENCES ledger_accounts,
    credit_account text NOT NULL REFERENCES ledger_accounts,
    amount bigint NOT NULL CHECK (amount > 0),
    payment_id text,
    refund_of text UNIQUE REFERENCES ledger_transfers,
    status text NOT NULL CHECK (status IN ('posted', 'declined')),
    created_at timestamptz NOT NULL DEFAULT now(),
    CHECK (debit_account <> credit_account),
    CHECK ((kind = 'refund') = (refund_of IS NOT NULL)),
    CHECK ((kind IN ('payment', 'refund')) = (payment_id IS NOT NULL)),
    -- Only a payment can be declined (not enough funds); it is kept so that a retry answers the same.
    CHECK (status = 'posted' OR kind = 'payment')
);

CREATE INDEX ledger_transfers_payment ON ledger_transfers (payment_id, created_at)
WHERE payment_id IS NOT NULL;

CREATE TABLE ledger_entries (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    transfer_id text NOT NULL REFERENCES ledger_transfers,
    account_id text NOT NULL REFERENCES ledger_accounts,
    amount bigint NOT NULL CHECK (amount <> 0),
    balance_after bigint NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (transfer_id, account_id)
);

CREATE INDEX ledger_entries_account ON ledger_entries (account_id, id);

CREATE FUNCTION ledger_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% of % refused: the ledger is append-only', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'LG403';
END
$$;

CREATE TRIGGER ledger_transfers_immutable BEFORE UPDATE OR DELETE ON ledger_transfers
FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER ledger_transfers_kept BEFORE TRUNCATE ON ledger_transfers
FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER ledger_entries_immutable BEFORE UPDATE OR DELETE ON ledger_entries
FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER ledger_entries_kept BEFORE TRUNCATE ON ledger_entries
FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();
-- Accounts change (their cached balances) but are never removed.
CREATE TRIGGER ledger_accounts_kept BEFORE DELETE ON ledger_accounts
FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER ledger_accounts_not_truncated BEFORE TRUNCATE ON ledger_accounts
FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();

-- The payments shard a payment's money goes to; any spread will do, since the shard is recorded
-- in the transfer.
CREATE FUNCTION ledger_payments_shard(p_transfer text) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT '@payments:' || ((hashtext(p_transfer) & 2147483647) % 8)
$$;

-- The result of transfer p_transfer when it exists (known), for a repeated call: its status and
-- the customer's balance after it (NULL when declined). Raises LG409 when it exists with other
-- parameters than those given; a NULL parameter is not compared.
CREATE FUNCTION ledger_replay(
    p_transfer text, p_kind text, p_customer text, p_amount bigint, p_payment text, p_refund_of text,
    OUT known boolean, OUT status text, OUT customer text, OUT amount bigint, OUT refund_of text,
    OUT balance bigint
) LANGUAGE plpgsql STABLE AS $$
DECLARE
    t ledger_transfers;
BEGIN
    SELECT * INTO t FROM ledger_transfers WHERE id = p_transfer;
    known := t.id IS NOT NULL;
    IF NOT known THEN
        RETURN;
    END IF;
    customer := CASE WHEN t.kind = 'payment' THEN t.debit_account ELSE t.credit_account END;
    IF t.kind <> p_kind
        OR customer IS DISTINCT FROM coalesce(p_customer, customer)
        OR t.amount <> coalesce(p_amount, t.amount)
        OR t.payment_id IS DISTINCT FROM coalesce(p_payment, t.payment_id)
        OR t.refund_of IS DISTINCT FROM coalesce(p_refund_of, t.refund_of)
    THEN
        RAISE EXCEPTION 'transfer % exists with other parameters', p_transfer USING ERRCODE = 'LG409';
    END IF;
    status := t.status;
    amount := t.amount;
    refund_of := t.refund_of;
    SELECT e.balance_after INTO balance
    FROM ledger_entries e WHERE e.transfer_id = p_transfer AND e.account_id = customer;
END
$$;

-- Opens p_account when it does not exist yet: with an opening transfer of p_opening cents from
-- @openings (none when 0), or LG404 when p_opening is NULL.
CREATE FUNCTION ledger_ensure(p_account text, p_opening bigint) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM FROM ledger_accounts WHERE id = p_account;
    IF FOUND THEN
        RETURN;
    END IF;
    IF p_opening IS NULL THEN
        RAISE EXCEPTION 'account % not found', p_account USING ERRCODE = 'LG404';
    END IF;
    INSERT INTO ledger_accounts (id, kind) VALUES (p_account, 'customer') ON CONFLICT DO NOTHING;
    IF FOUND AND p_opening > 0
        AND ledger_post('open:' || p_account, 'opening', p_account, '@openings', p_opening, NULL, NULL, 0)
            IS NULL
    THEN
        RAISE EXCEPTION 'transfer open:% exists with other parameters', p_account USING ERRCODE = 'LG409';
    END IF;
END
$$;

-- Records a posted transfer between a customer and a system account and its two entries, and
-- updates both cached balances: p_change is what the customer's balance gains (negative when the
-- money leaves it), p_refundable what its refundable cents gain. Answers the customer's balance
-- after, or NULL, recording nothing, when the transfer id or the refunded debit is already taken.
-- The customer's row is updated first and the system's last (see the top of this file).
CREATE FUNCTION ledger_post(
    p_transfer text, p_kind text, p_customer text, p_system text, p_change bigint,
    p_payment text, p_refund_of text, p_refundable bigint
) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    v_customer_after bigint;
    v_system_after bigint;
BEGIN
    INSERT INTO ledger_transfers (id, kind, debit_account, credit_account, amount, payment_id, refund_of, status)
    VALUES (
        p_transfer, p_kind,
        CASE WHEN p_change < 0 THEN p_customer ELSE p_system END,
        CASE WHEN p_change < 0 THEN p_system ELSE p_customer END,
        abs(p_change), p_payment, p_refund_of, 'posted'
    )
    ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    UPDATE ledger_accounts SET balance = balance + p_change, refundable = refundable + p_refundable
    WHERE id = p_customer RETURNING balance INTO v_customer_after;
    INSERT INTO ledger_entries (transfer_id, account_id, amount, balance_after)
    VALUES (p_transfer, p_customer, p_change, v_customer_after);
    UPDATE ledger_accounts SET balance = balance - p_change
    WHERE id = p_system RETURNING balance INTO v_system_after;
    INSERT INTO ledger_entries (transfer_id, account_id, amount, balance_after)
    VALUES (p_transfer, p_system, -p_change, v_system_after);
    RETURN v_customer_after;
END
$$;

CREATE FUNCTION ledger_open(p_account text, p_opening bigint, OUT balance bigint)
LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    PERFORM ledger_ensure(p_account, p_opening);
    r := ledger_replay('open:' || p_account, 'opening', p_account, p_opening, NULL, NULL);
    IF r.known THEN
        balance := r.balance;
    ELSIF p_opening = 0 THEN
        balance := 0;  -- opened with nothing, so no opening transfer
    ELSE
        RAISE EXCEPTION 'account % was opened with another balance', p_account USING ERRCODE = 'LG409';
    END IF;
END
$$;

CREATE FUNCTION ledger_withdraw(
    p_transfer text, p_account text, p_amount bigint, p_payment text, p_opening bigint,
    OUT status text, OUT balance bigint
) LANGUAGE plpgsql AS $$
DECLARE
    r record;
    v_balance bigint;
BEGIN
    r := ledger_replay(p_transfer, 'payment', p_account, p_amount, p_payment, NULL);
    IF NOT r.known THEN
        PERFORM ledger_ensure(p_account, p_opening);
        SELECT a.balance INTO v_balance FROM ledger_accounts a WHERE a.id = p_account FOR UPDATE;
        IF v_balance >= p_amount THEN
            balance := ledger_post(
                p_transfer, 'payment', p_account, ledger_payments_shard(p_transfer), -p_amount,
                p_payment, NULL, p_amount
            );
            IF balance IS NOT NULL THEN
                status := 'posted';
                RETURN;
            END IF;
        ELSE
            INSERT INTO ledger_transfers (id, kind, debit_account, credit_account, amount, payment_id, status)
            VALUES (p_transfer, 'payment', p_account, ledger_payments_shard(p_transfer), p_amount, p_payment, 'declined')
            ON CONFLICT DO NOTHING;
            IF FOUND THEN
                status := 'declined';
                RETURN;
            END IF;
        END IF;
        -- Another call with this id committed while this one waited for the account.
        r := ledger_replay(p_transfer, 'payment', p_account, p_amount, p_payment, NULL);
    END IF;
    status := r.status;
    balance := r.balance;
END
$$;

CREATE FUNCTION ledger_deposit(
    p_transfer text, p_account text, p_amount bigint, p_opening bigint, p_max bigint, OUT balance bigint
) LANGUAGE plpgsql AS $$
DECLARE
    r record;
    a ledger_accounts;
BEGIN
    r := ledger_replay(p_transfer, 'deposit', p_account, p_amount, NULL, NULL);
    IF NOT r.known THEN
        PERFORM ledger_ensure(p_account, p_opening);
        SELECT * INTO a FROM ledger_accounts WHERE id = p_account FOR UPDATE;
        -- Another call with this id may have committed while this one waited for the account.
        r := ledger_replay(p_transfer, 'deposit', p_account, p_amount, NULL, NULL);
    END IF;
    IF r.known THEN
        balance := r.balance;
        RETURN;
    END IF;
    IF a.balance + a.refundable + p_amount > p_max THEN
        RAISE EXCEPTION 'amount: the balance% would exceed % cents',
            CASE WHEN a.refundable > 0 THEN format(' plus %s cents that cancels may refund', a.refundable) ELSE '' END,
            p_max
            USING ERRCODE = 'LG422';
    END IF;
    balance := ledger_post(p_transfer, 'deposit', p_account, '@deposits', p_amount, NULL, NULL, 0);
    IF balance IS NULL THEN
        r := ledger_replay(p_transfer, 'deposit', p_account, p_amount, NULL, NULL);
        balance := r.balance;
    END IF;
END
$$;

-- The refund of debit p_debit when there is one: under p_transfer, or under any id when the debit
-- was already refunded (a debit has at most one refund).
CREATE FUNCTION ledger_refund_of(
    p_transfer text, p_debit text, OUT transfer_id text, OUT customer text, OUT amount bigint, OUT balance bigint
) LANGUAGE plpgsql STABLE AS $$
DECLARE
    r record;
BEGIN
    transfer_id := p_transfer;
    r := ledger_replay(p_transfer, 'refund', NULL, NULL, NULL, p_debit);
    IF NOT r.known THEN
        SELECT id INTO transfer_id FROM ledger_transfers WHERE refund_of = p_debit;
        IF transfer_id IS NULL THEN
            RETURN;
        END IF;
        r := ledger_replay(transfer_id, 'refund', NULL, NULL, NULL, p_debit);
    END IF;
    customer := r.customer;
    amount := r.amount;
    balance := r.balance;
END
$$;

CREATE FUNCTION ledger_refund(
    p_transfer text, p_debit text, OUT transfer_id text, OUT customer text, OUT amount bigint, OUT balance bigint
) LANGUAGE plpgsql AS $$
DECLARE
    r record;
    d ledger_transfers;
BEGIN
    r := ledger_refund_of(p_transfer, p_debit);
    IF r.transfer_id IS NULL THEN
        SELECT * INTO d FROM ledger_transfers WHERE id = p_debit AND kind = 'payment' AND status = 'posted';
        IF d.id IS NULL THEN
            RAISE EXCEPTION 'no posted payment debit %', p_debit USING ERRCODE = 'LG410';
        END IF;
        PERFORM FROM ledger_accounts WHERE id = d.debit_account FOR UPDATE;
        -- Recorded now, or by another call meanwhile: either way, read back below.
        PERFORM ledger_post(
            p_transfer, 'refund', d.debit_account, d.credit_account, d.amount, d.payment_id, p_debit, -d.amount
        );
        r := ledger_refund_of(p_transfer, p_debit);
    END IF;
    transfer_id := r.transfer_id;
    customer := r.customer;
    amount := r.amount;
    balance := r.balance;
END
$$;
