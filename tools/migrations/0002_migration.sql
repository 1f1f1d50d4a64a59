-- agentctl's control schema, part 2: what a migration wrote, and where it stands.

-- One row per entity of a run: its state and its accounting.
CREATE TABLE agentctl.migration_control (
    run_id        uuid NOT NULL REFERENCES agentctl.runs (run_id),
    source_table  text NOT NULL,
    target_table  text NOT NULL,
    -- pending | running | done | failed
    state         text NOT NULL DEFAULT 'pending',
    source_rows   bigint,
    started_at    timestamptz,
    finished_at   timestamptz,
    detail        text,
    PRIMARY KEY (run_id, source_table)
);

-- Committed in the same transaction as the batch it describes: where to resume.
CREATE TABLE agentctl.migration_checkpoints (
    run_id        uuid NOT NULL REFERENCES agentctl.runs (run_id),
    source_table  text NOT NULL,
    last_key      text[] NOT NULL,
    rows_read     bigint NOT NULL,
    migrated      bigint NOT NULL,
    rejected      bigint NOT NULL,
    batches       bigint NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, source_table)
);

-- Every row that did not go in, with the reason in plain words and the source row itself.
CREATE TABLE agentctl.rejected_rows (
    run_id        uuid NOT NULL REFERENCES agentctl.runs (run_id),
    source_table  text NOT NULL,
    legacy_key    text NOT NULL,
    column_name   text,
    rule          text NOT NULL,
    reason        text NOT NULL,
    source_row    jsonb NOT NULL,
    rejected_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, source_table, legacy_key)
);

-- The documented record of every row agentctl created: legacy key to UUID.
CREATE TABLE agentctl.migration_mappings (
    source_table  text NOT NULL,
    legacy_id     text NOT NULL,
    target_table  text NOT NULL,
    id            uuid NOT NULL,
    run_id        uuid NOT NULL,
    PRIMARY KEY (source_table, legacy_id)
);
CREATE INDEX migration_mappings_target ON agentctl.migration_mappings (target_table, id);

-- References filled in a second pass (self-references, cycles): child, column, parent.
CREATE TABLE agentctl.deferred_references (
    run_id        uuid NOT NULL,
    target_table  text NOT NULL,
    column_name   text NOT NULL,
    child_id      uuid NOT NULL,
    parent_id     uuid NOT NULL,
    PRIMARY KEY (run_id, target_table, column_name, child_id)
);
