-- agentctl's control schema, part 10: no autovacuum work on control columns and tables that
-- buys nothing.
--
-- Autovacuum analyzes a table whose rows changed, and a load rewrites load_baseline's records
-- of every table it loads. Its statistics on the key and hash arrays counted every element of
-- a 30,000-row sample in hash tables: 1.2 to 1.8 s of a core (against 20 ms without them), which
-- often fell inside a run and took a core from it. Nothing looks these arrays up by their
-- statistics (a record is found by its table and bucket), and nothing looks rejected rows up
-- by their reason or source row. With a statistics target of 0, ANALYZE leaves these columns
-- out; the tables' row counts and their other columns are still analyzed.
ALTER TABLE agentctl.load_baseline
    ALTER COLUMN keys SET STATISTICS 0,
    ALTER COLUMN int_keys SET STATISTICS 0,
    ALTER COLUMN hashes SET STATISTICS 0;
ALTER TABLE agentctl.rejected_rows
    ALTER COLUMN reason SET STATISTICS 0,
    ALTER COLUMN source_row SET STATISTICS 0;

-- A load also inserts about 180 MB of out-of-line arrays at scale 1.0, which made autovacuum
-- scan the whole TOAST table in the middle of the run, only to mark its pages all-visible for
-- index-only scans that never read it. Vacuums after deletes (a table loaded again) and the
-- ones that prevent wraparound still run.
ALTER TABLE agentctl.load_baseline SET (autovacuum_vacuum_insert_threshold = -1, toast.autovacuum_vacuum_insert_threshold = -1);

-- An empty target table's autovacuum is switched off while agentctl fills it, recorded here to
-- be switched back on with its constraints (name `(autovacuum)`).
COMMENT ON COLUMN agentctl.suspended_constraints.kind IS 'constraint (a foreign key), index (a plain index), unique (the legacy_id key) or autovacuum (an empty table''s, off for its load)';
