-- agentctl's control schema, part 11: a load's baseline recorded batch by batch.
--
-- The end of each entity's load had the server hash every row it had just written, in one
-- statement over the whole table: about 3.5 s of server time a load of the reference database,
-- the largest single cost of a migration beyond moving its rows. A load into an empty table
-- with an integer legacy key now hashes each row in agentctl as it encodes it (the server's own
-- hash functions, from the binary values sent; the server hashes the few rows whose stored
-- value is not certain from them), and records them in the batch's own transaction: one record
-- a batch, holding its keys (sorted) and hashes, found by its range of keys [lo, hi]. The
-- hashes are the same (scheme 2), so `diff` reads both kinds alike. A table's records are all of one kind:
-- a load that records them at its end still replaces the whole table's.
ALTER TABLE agentctl.load_baseline ADD COLUMN lo bigint, ADD COLUMN hi bigint;
ALTER TABLE agentctl.load_baseline ADD CONSTRAINT load_baseline_range
    CHECK ((lo IS NULL) = (hi IS NULL) AND (lo IS NULL OR (int_keys IS NOT NULL AND lo <= hi)));
CREATE INDEX load_baseline_by_range ON agentctl.load_baseline (target_table, lo, hi) WHERE lo IS NOT NULL;

-- A batch's record takes a bucket number of its own, past the 1,024 hash buckets.
CREATE SEQUENCE agentctl.load_baseline_range AS integer START 1024;

-- What agentctl last wrote to a row, and the scheme it was hashed in: its own record, else the
-- load's, by hash bucket or by range of keys; no row when there is neither.
DROP FUNCTION agentctl.baseline_record(text, text, bigint);
CREATE FUNCTION agentctl.baseline_record(tbl text, k text, ik bigint, OUT hash bigint, OUT scheme smallint) LANGUAGE sql STABLE AS $$
    SELECT o.hash, o.scheme FROM agentctl.sync_baseline o WHERE o.target_table = tbl AND o.legacy_key = k
    UNION ALL
    SELECT l.hashes[coalesce(array_position(l.int_keys, ik), array_position(l.keys, k))], l.scheme
    FROM agentctl.load_baseline l
    WHERE l.target_table = tbl AND l.lo IS NULL
      AND ((ik IS NOT NULL AND l.bucket = agentctl.int_baseline_bucket(ik) AND array_position(l.int_keys, ik) IS NOT NULL)
        OR (l.bucket = agentctl.baseline_bucket(k) AND array_position(l.keys, k) IS NOT NULL))
      AND NOT EXISTS (SELECT 1 FROM agentctl.sync_baseline o WHERE o.target_table = tbl AND o.legacy_key = k)
    UNION ALL
    -- The one record whose range can hold the key (a load's ranges do not overlap), and the
    -- key's place in its sorted keys by binary search.
    SELECT l.hashes[p.i], l.scheme
    FROM (SELECT * FROM agentctl.load_baseline l
          WHERE ik IS NOT NULL AND l.target_table = tbl AND l.lo IS NOT NULL AND l.lo <= ik
          ORDER BY l.lo DESC LIMIT 1) l
    CROSS JOIN LATERAL (SELECT width_bucket(ik, l.int_keys) AS i) p
    WHERE l.hi >= ik AND l.int_keys[p.i] = ik
      AND NOT EXISTS (SELECT 1 FROM agentctl.sync_baseline o WHERE o.target_table = tbl AND o.legacy_key = k)
$$;
