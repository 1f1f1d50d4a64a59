-- agentctl's control schema, part 17: what the last sync did with a row, found by its key.
--
-- A validation asks, of the source rows it finds missing or recorded as rejected, whether the
-- last sync held them for an operator (`Target::held_reasons`): by source table and legacy key,
-- across every analysis, the latest applied first. The primary key leads with the analysis, so
-- without this index each validation read the whole table, which grows with every sync.
CREATE INDEX data_differentials_by_key
    ON agentctl.data_differentials (source_table, legacy_key, applied_at DESC);
