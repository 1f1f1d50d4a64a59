-- agentctl's control schema, part 8: the rejected rows of a source table, whatever the run.
--
-- Validation and every differential analysis ask, table by table, which legacy keys any run
-- rejected and why. Without an index that was a scan of every rejected row of every run (with
-- its source row), one a table: it grew with the target's history (a validation of the
-- reference database spent 2.4 s in it after 41 runs).
CREATE INDEX rejected_rows_by_source ON agentctl.rejected_rows (source_table, legacy_key) INCLUDE (rule);
