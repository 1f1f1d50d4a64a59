-- agentctl's control schema, part 12: a validation's references counted on both sides.
--
-- Each reference of a mapping (a target column holding a parent's UUID) with how many
-- migrated source rows set it and how many target rows point at a row of the parent.
ALTER TABLE agentctl.migration_validation_reports ADD COLUMN links jsonb NOT NULL DEFAULT '[]';
