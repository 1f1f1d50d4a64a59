-- agentctl's control schema, part 4.

-- Foreign keys and plain indexes agentctl sets aside while it loads a table (each row's
-- references are checked per batch instead), with the definition that puts them back. Taken
-- down and recorded in one transaction, so a crash never loses one: the entity's end, a resumed
-- run or `agentctl rollback` restores what is recorded here.
CREATE TABLE agentctl.suspended_constraints (
    target_table  text NOT NULL,
    name          text NOT NULL,
    -- constraint | index
    kind          text NOT NULL,
    definition    text NOT NULL,
    -- Whether a constraint was validated before (a NOT VALID one comes back NOT VALID).
    validated     boolean NOT NULL,
    run_id        uuid NOT NULL,
    suspended_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (target_table, name)
);

-- Rows agentctl creates carry the UUID derived from their legacy key, which is the record of
-- what it created; from here on migration_mappings keeps only the rows that were in the target
-- before agentctl (created = false), which keep their own UUID and which a rollback never
-- deletes.
DELETE FROM agentctl.migration_mappings WHERE created;

-- What the validation agent found, one row per entity and validation.
CREATE TABLE agentctl.migration_validation_reports (
    run_id          uuid NOT NULL REFERENCES agentctl.runs (run_id),
    source_table    text NOT NULL,
    target_table    text NOT NULL,
    passed          boolean NOT NULL,
    source_rows     bigint NOT NULL,
    migrated        bigint NOT NULL,
    rejected        bigint NOT NULL,
    target_rows     bigint NOT NULL,
    rows_compared   bigint NOT NULL,
    rows_differing  bigint NOT NULL,
    -- The first differing legacy keys, each with what differs.
    differences     jsonb NOT NULL,
    orphans         jsonb NOT NULL,
    money           jsonb NOT NULL,
    detail          text NOT NULL,
    seconds         double precision NOT NULL,
    validated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, source_table)
);
