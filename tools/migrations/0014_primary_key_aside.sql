-- agentctl's control schema, part 14.

-- An empty table's primary key on id is set aside for its load too, beside its legacy key, and
-- built after it (`suspend_keys`); recorded as kind 'primary', put back before anything else.
COMMENT ON COLUMN agentctl.suspended_constraints.kind IS 'primary (the primary key on id, an empty table''s, aside for its load), constraint (a foreign key), index (a plain index), unique (the legacy_id key) or autovacuum (an empty table''s, off for its load)';
