-- agentctl's control schema, part 5: differential migration and synchronization.

-- What agentctl last wrote to each target row it keeps in step: a hash of the row's mapped
-- columns as the target holds them (typed, so a value that only looks different hashes the
-- same). A row whose hash is no longer this one was changed in the target.
--
-- The end of an entity's load records the whole table in load_baseline, a few thousand keys
-- and hashes a row (grouped by a hash of the key), which costs a fraction of an index entry a
-- row; every differential write, resolution or delete records its rows in sync_baseline, which
-- overrides it (a NULL hash: agentctl deleted the row, no baseline).
CREATE TABLE agentctl.load_baseline (
    target_table  text NOT NULL,
    bucket        integer NOT NULL,
    keys          text[] NOT NULL,
    hashes        bigint[] NOT NULL,
    PRIMARY KEY (target_table, bucket)
);

CREATE TABLE agentctl.sync_baseline (
    target_table  text NOT NULL,
    legacy_key    text COLLATE "C" NOT NULL,
    hash          bigint,
    PRIMARY KEY (target_table, legacy_key)
);

-- The bucket of load_baseline a legacy key is kept in.
CREATE FUNCTION agentctl.baseline_bucket(k text) RETURNS integer LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT hashtext(k) & 1023 $$;

-- What agentctl last wrote to a row: its own record, else the load's.
CREATE FUNCTION agentctl.baseline_of(tbl text, k text) RETURNS bigint LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN o.legacy_key IS NOT NULL THEN o.hash
        ELSE (SELECT l.hashes[array_position(l.keys, k)] FROM agentctl.load_baseline l
              WHERE l.target_table = tbl AND l.bucket = agentctl.baseline_bucket(k)) END
    FROM (SELECT 1) AS one LEFT JOIN agentctl.sync_baseline o ON o.target_table = tbl AND o.legacy_key = k
$$;

-- One row per entity and analysis (`agentctl diff analyze`, or the analysis a sync makes).
CREATE TABLE agentctl.diff_analyses (
    analysis_id     uuid NOT NULL,
    -- The run that analysed (a chat or a sync job may analyse several times in one run).
    run_id          uuid NOT NULL REFERENCES agentctl.runs (run_id),
    source_table    text NOT NULL,
    target_table    text NOT NULL,
    -- The mapped target columns, with their types, in the order `data_differentials.values` has.
    columns         jsonb NOT NULL,
    source_rows     bigint NOT NULL,
    in_step         bigint NOT NULL,
    inserts         bigint NOT NULL,
    updates         bigint NOT NULL,
    deletes         bigint NOT NULL,
    conflicts       bigint NOT NULL,
    target_changed  bigint NOT NULL,
    rejected        bigint NOT NULL,
    seconds         double precision NOT NULL,
    analyzed_at     timestamptz NOT NULL DEFAULT now(),
    -- The run that applied it (every row has its outcome); NULL while it is pending.
    applied_run     uuid,
    -- full (every source row) or fast (the rows stamped since the watermark).
    mode            text NOT NULL,
    -- The latest updated_at read, as the source prints it, where the table has one.
    watermark       text,
    -- Whether updated_at moved with every change found (NULL: not known).
    trusted         boolean,
    PRIMARY KEY (analysis_id, source_table)
);

-- Every row an analysis found out of step, and what became of it.
CREATE TABLE agentctl.data_differentials (
    analysis_id    uuid NOT NULL,
    source_table   text NOT NULL,
    legacy_key     text COLLATE "C" NOT NULL,
    -- insert | update | delete | conflict | target_changed | rejected
    kind           text NOT NULL,
    target_id      uuid,
    -- The mapped row (insert, update, conflict), in the order of diff_analyses.columns.
    values         text[],
    -- The target row's hash when analysed: a write is skipped as stale if it changed since.
    target_hash    bigint,
    expected_hash  bigint,
    -- Why (rejected), or what applying did beyond the kind.
    reason         text,
    applied_run    uuid,
    applied_at     timestamptz,
    -- applied | rejected | held | kept_target | stale | skipped
    outcome        text,
    PRIMARY KEY (analysis_id, source_table, legacy_key),
    FOREIGN KEY (analysis_id, source_table) REFERENCES agentctl.diff_analyses (analysis_id, source_table)
);
CREATE INDEX data_differentials_pending ON agentctl.data_differentials (analysis_id, source_table) WHERE applied_at IS NULL;

-- Rows changed on both sides since the last sync, resolved by the entity's policy or held for
-- an operator; the overwritten (or kept) target values stay here.
CREATE TABLE agentctl.sync_conflicts (
    conflict_id    bigserial PRIMARY KEY,
    source_table   text NOT NULL,
    target_table   text NOT NULL,
    legacy_key     text COLLATE "C" NOT NULL,
    target_id      uuid NOT NULL,
    -- source-wins | target-wins | manual
    policy         text NOT NULL,
    -- overwritten (source won) | kept_target | open (held) | resolved_source | resolved_target
    status         text NOT NULL,
    columns        jsonb NOT NULL,
    source_values  text[] NOT NULL,
    -- The target row as text when the conflict was met, column by column.
    target_values  jsonb NOT NULL,
    -- The synced columns whose values differ (compared typed).
    differing      text[] NOT NULL,
    analysis_id    uuid NOT NULL,
    applied_run    uuid,
    detected_at    timestamptz NOT NULL DEFAULT now(),
    resolved_at    timestamptz,
    resolved_by    text
);
CREATE UNIQUE INDEX sync_conflicts_open ON agentctl.sync_conflicts (target_table, legacy_key) WHERE status = 'open';

-- Scheduled synchronizations. A daemon takes a due job by setting a lease (owner and expiry)
-- and renews it while the job runs; a lease that expired belongs to a daemon that died.
CREATE TABLE agentctl.synchronization_jobs (
    name              text PRIMARY KEY,
    goal              text NOT NULL,
    every_seconds     integer CHECK (every_seconds > 0),
    cron              text,
    enabled           boolean NOT NULL DEFAULT true,
    created_at        timestamptz NOT NULL DEFAULT now(),
    next_run_at       timestamptz NOT NULL,
    lease_owner       text,
    lease_expires_at  timestamptz,
    CHECK ((every_seconds IS NULL) <> (cron IS NULL))
);

CREATE TABLE agentctl.sync_run_history (
    history_id   bigserial PRIMARY KEY,
    job_name     text NOT NULL REFERENCES agentctl.synchronization_jobs (name) ON DELETE CASCADE,
    run_id       uuid,
    owner        text NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    ended_at     timestamptz,
    inserted     bigint NOT NULL DEFAULT 0,
    updated      bigint NOT NULL DEFAULT 0,
    deleted      bigint NOT NULL DEFAULT 0,
    conflicted   bigint NOT NULL DEFAULT 0,
    rejected     bigint NOT NULL DEFAULT 0,
    -- running | succeeded | failed | abandoned (its daemon died; found when the lease expired)
    outcome      text NOT NULL DEFAULT 'running',
    detail       text
);
CREATE INDEX sync_run_history_job ON agentctl.sync_run_history (job_name, started_at DESC);
