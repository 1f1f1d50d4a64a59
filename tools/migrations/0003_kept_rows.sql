-- A row of the target that existed before agentctl (matched by legacy_id) keeps its UUID and
-- is recorded too, but as not created: rollback never touches it.
ALTER TABLE agentctl.migration_mappings ADD COLUMN created boolean NOT NULL DEFAULT true;
