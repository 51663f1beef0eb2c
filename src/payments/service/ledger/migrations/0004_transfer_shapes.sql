-- The schema refuses a transfer whose kind and accounts do not fit the model, whoever sends it:
-- an opening comes from @openings under the id open:<account> (so there is one per account); a
-- deposit credits a customer from @deposits; a payment debits a customer to a payments shard; a
-- refund reverses exactly one posted payment (its accounts the other way round, its amount, its
-- payment id). The check costs nothing per payment; only a refund pays for a trigger's lookup.

-- The one statement of which accounts each kind moves money between: the table's CHECK and
-- `payments reconcile` (for a ledger whose constraint was dropped) both ask it.
CREATE FUNCTION ledger_transfer_fits(p_id text, p_kind text, p_debit text, p_credit text)
RETURNS boolean LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(CASE p_kind
        WHEN 'opening' THEN p_debit = '@openings' AND p_credit NOT LIKE '@%' AND p_id = 'open:' || p_credit
        WHEN 'deposit' THEN p_debit = '@deposits' AND p_credit NOT LIKE '@%'
        WHEN 'payment' THEN p_debit NOT LIKE '@%' AND p_credit LIKE '@payments:%'
        WHEN 'refund' THEN p_debit LIKE '@payments:%' AND p_credit NOT LIKE '@%'
    END, false)
$$;

ALTER TABLE ledger_transfers ADD CONSTRAINT ledger_transfer_fits
CHECK (ledger_transfer_fits(id, kind, debit_account, credit_account));

CREATE FUNCTION ledger_refund_fits() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM FROM ledger_transfers d
    WHERE d.id = NEW.refund_of AND d.kind = 'payment' AND d.status = 'posted'
        AND d.debit_account = NEW.credit_account AND d.credit_account = NEW.debit_account
        AND d.amount = NEW.amount AND d.payment_id = NEW.payment_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'refund % does not reverse the posted payment %', NEW.id, NEW.refund_of
            USING ERRCODE = 'LG400';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER ledger_refund_fits BEFORE INSERT ON ledger_transfers
FOR EACH ROW WHEN (NEW.kind = 'refund') EXECUTE FUNCTION ledger_refund_fits();
