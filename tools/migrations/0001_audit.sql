-- agentctl's control schema, part 1: runs and their hash-chained audit trail.
-- Applied by agentctl itself (sqlx migrations); the migration table lives in this schema too.

CREATE TABLE agentctl.runs (
    run_id       uuid PRIMARY KEY,
    command      text NOT NULL,
    goal         text,
    started_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz,
    -- running | succeeded | failed | cancelled | validation_failed
    outcome      text NOT NULL DEFAULT 'running',
    outcome_detail text,
    -- The chain's head as the writer left it: verification compares the events against it.
    event_count  bigint NOT NULL DEFAULT 0,
    head_hash    text NOT NULL DEFAULT '0000000000000000000000000000000000000000000000000000000000000000'
);

CREATE TABLE agentctl.audit_events (
    run_id         uuid NOT NULL REFERENCES agentctl.runs (run_id),
    seq            bigint NOT NULL CHECK (seq > 0),
    at             timestamptz NOT NULL,
    agent          text NOT NULL,
    kind           text NOT NULL,
    correlation_id uuid,
    summary        text NOT NULL,
    -- Canonical JSON text: exactly the bytes that were hashed (jsonb would reformat them).
    detail         text NOT NULL,
    prev_hash      text NOT NULL,
    hash           text NOT NULL,
    PRIMARY KEY (run_id, seq)
);

CREATE INDEX audit_events_agent_kind ON agentctl.audit_events (run_id, agent, kind);

-- Append-only: ordinary sessions cannot change or remove an event. (A superuser can still
-- disable this; the hash chain is what detects that.)
CREATE FUNCTION agentctl.audit_events_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'agentctl.audit_events is append-only: % is not allowed', TG_OP;
END;
$$;

CREATE TRIGGER audit_events_append_only
    BEFORE UPDATE OR DELETE ON agentctl.audit_events
    FOR EACH ROW EXECUTE FUNCTION agentctl.audit_events_append_only();

CREATE TRIGGER audit_events_no_truncate
    BEFORE TRUNCATE ON agentctl.audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION agentctl.audit_events_append_only();
