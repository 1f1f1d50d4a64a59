-- The load baseline's arrays are stored out of line as they are: hashes do not compress, and
-- trying to compress every bucket's keys cost a load more CPU than the bytes it saved.
ALTER TABLE agentctl.load_baseline ALTER COLUMN keys SET STORAGE EXTERNAL;
ALTER TABLE agentctl.load_baseline ALTER COLUMN hashes SET STORAGE EXTERNAL;

-- A unique key on legacy_id can be set aside for an empty table's load, too.
COMMENT ON COLUMN agentctl.suspended_constraints.kind IS 'constraint (a foreign key), index (a plain index) or unique (the legacy_id key)';
