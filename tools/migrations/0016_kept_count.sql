-- agentctl's control schema, part 16: rows kept from before agentctl, counted as a load goes.
--
-- A row of the source whose legacy key the target already held under a UUID of its own (it was
-- there before agentctl) is kept as it is and never overwritten. The load counted it with the
-- migrated rows, so a run without validation reported it as migrated although nothing compared
-- it with its source row. The checkpoint now counts those rows too: `migrated` still holds every
-- row present in the target, `kept` says how many of them agentctl did not write.
ALTER TABLE agentctl.migration_checkpoints ADD COLUMN kept bigint NOT NULL DEFAULT 0;
