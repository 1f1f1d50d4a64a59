-- agentctl's control schema, part 7: an enum or domain column hashed by its own hash function.
--
-- Until now a row hash took every enum and domain column as its text, which cost the load
-- baseline a third of its time (the text of a timestamp and of an enum label made for every
-- row). From here on they are hashed typed: an enum by its own hash function, a domain by its
-- base type's, as every other column. A baseline recorded before keeps its hashes, marked
-- scheme 1, and `diff` compares such a record with the row hashed the old way.
ALTER TABLE agentctl.load_baseline ADD COLUMN scheme smallint NOT NULL DEFAULT 1;
ALTER TABLE agentctl.sync_baseline ADD COLUMN scheme smallint NOT NULL DEFAULT 1;
ALTER TABLE agentctl.load_baseline ALTER COLUMN scheme SET DEFAULT 2;
ALTER TABLE agentctl.sync_baseline ALTER COLUMN scheme SET DEFAULT 2;

-- What agentctl last wrote to a row, and the scheme it was hashed in: its own record, else the
-- load's; no row when there is neither.
DROP FUNCTION agentctl.baseline_of(text, text);
CREATE FUNCTION agentctl.baseline_record(tbl text, k text, OUT hash bigint, OUT scheme smallint) LANGUAGE sql STABLE AS $$
    SELECT o.hash, o.scheme FROM agentctl.sync_baseline o WHERE o.target_table = tbl AND o.legacy_key = k
    UNION ALL
    SELECT l.hashes[array_position(l.keys, k)], l.scheme FROM agentctl.load_baseline l
    WHERE l.target_table = tbl AND l.bucket = agentctl.baseline_bucket(k)
      AND array_position(l.keys, k) IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM agentctl.sync_baseline o WHERE o.target_table = tbl AND o.legacy_key = k)
$$;
