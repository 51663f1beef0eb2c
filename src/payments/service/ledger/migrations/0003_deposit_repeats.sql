-- A deposit's transfer id is its idempotency key for ever (README, "Deposits and their keys"): a
-- deposit sent again under an id the ledger holds records nothing and says so, with the balance as it
-- is now rather than right after the first deposit, which a client would take for the current one.

DROP FUNCTION ledger_deposit(text, text, bigint, bigint, bigint);

CREATE FUNCTION ledger_deposit(
    p_transfer text, p_account text, p_amount bigint, p_opening bigint, p_max bigint,
    OUT balance bigint, OUT repeated boolean
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
    repeated := r.known;
    IF repeated THEN
        SELECT ledger_accounts.balance INTO balance FROM ledger_accounts WHERE id = p_account;
        RETURN;
    END IF;
    IF a.balance + a.refundable + p_amount > p_max THEN
        RAISE EXCEPTION 'amount: the balance% would exceed % cents',
            CASE WHEN a.refundable > 0 THEN format(' plus %s cents that cancels may refund', a.refundable) ELSE '' END,
            p_max
            USING ERRCODE = 'LG422';
    END IF;
    balance := ledger_post(p_transfer, 'deposit', p_account, '@deposits', p_amount, NULL, NULL, 0);
    -- Taken meanwhile: only by a transfer on another account, since this one's row is locked.
    IF balance IS NULL THEN
        RAISE EXCEPTION 'transfer % exists with other parameters', p_transfer USING ERRCODE = 'LG409';
    END IF;
END
$$;
