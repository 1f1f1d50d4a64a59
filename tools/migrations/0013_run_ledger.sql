-- agentctl's control schema, part 13: the runs of a target chained to one another.
--
-- Each run's chain of events starts from nothing, so a run removed whole (its record and its
-- events) or a run's trail rebuilt after it ended left no broken link. The ledger records every
-- run's start and the head its chain ended at, each entry chained to the one before: removing a
-- run, or rewriting its trail, no longer matches the ledger. Append-only, like the events.
CREATE TABLE agentctl.run_ledger (
    seq         bigint PRIMARY KEY CHECK (seq > 0),
    at          timestamptz NOT NULL DEFAULT now(),
    run_id      uuid NOT NULL,
    -- started | ended
    entry       text NOT NULL,
    event_count bigint NOT NULL,
    head_hash   text NOT NULL,
    prev_hash   text NOT NULL,
    hash        text NOT NULL
);

CREATE TRIGGER run_ledger_append_only
    BEFORE UPDATE OR DELETE ON agentctl.run_ledger
    FOR EACH ROW EXECUTE FUNCTION agentctl.audit_events_append_only();

CREATE TRIGGER run_ledger_no_truncate
    BEFORE TRUNCATE ON agentctl.run_ledger
    FOR EACH STATEMENT EXECUTE FUNCTION agentctl.audit_events_append_only();

-- One function guards both tables; its message names the table it guards.
CREATE OR REPLACE FUNCTION agentctl.audit_events_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'agentctl.% is append-only: % is not allowed', TG_TABLE_NAME, TG_OP;
END;
$$;
