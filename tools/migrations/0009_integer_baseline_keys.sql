-- agentctl's control schema, part 9: a load baseline keyed by integers where the legacy key is one.
--
-- The load baseline's statement spent a third of its time making every row's legacy key into
-- text, to bucket it and to keep it in `keys`. A table whose legacy key is an integer (smallint,
-- integer, bigint) now keeps its keys as integers in `int_keys`, bucketed by their own hash; any
-- other keeps them as text in `keys`, as before. A table's records are all of one kind: the
-- whole table is recorded again each time.
ALTER TABLE agentctl.load_baseline ALTER COLUMN keys DROP NOT NULL;
ALTER TABLE agentctl.load_baseline ADD COLUMN int_keys bigint[];
ALTER TABLE agentctl.load_baseline ALTER COLUMN int_keys SET STORAGE EXTERNAL;
ALTER TABLE agentctl.load_baseline ADD CONSTRAINT load_baseline_one_kind_of_key CHECK ((keys IS NULL) <> (int_keys IS NULL));

-- The bucket of load_baseline an integer legacy key is kept in.
CREATE FUNCTION agentctl.int_baseline_bucket(k bigint) RETURNS integer LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT hashint8(k) & 1023 $$;

-- What agentctl last wrote to a row, and the scheme it was hashed in: its own record, else the
-- load's; no row when there is neither. `ik` is the key as an integer when the table's legacy
-- key is one (NULL otherwise).
DROP FUNCTION agentctl.baseline_record(text, text);
CREATE FUNCTION agentctl.baseline_record(tbl text, k text, ik bigint, OUT hash bigint, OUT scheme smallint) LANGUAGE sql STABLE AS $$
    SELECT o.hash, o.scheme FROM agentctl.sync_baseline o WHERE o.target_table = tbl AND o.legacy_key = k
    UNION ALL
    SELECT l.hashes[coalesce(array_position(l.int_keys, ik), array_position(l.keys, k))], l.scheme
    FROM agentctl.load_baseline l
    WHERE l.target_table = tbl
      AND ((ik IS NOT NULL AND l.bucket = agentctl.int_baseline_bucket(ik) AND array_position(l.int_keys, ik) IS NOT NULL)
        OR (l.bucket = agentctl.baseline_bucket(k) AND array_position(l.keys, k) IS NOT NULL))
      AND NOT EXISTS (SELECT 1 FROM agentctl.sync_baseline o WHERE o.target_table = tbl AND o.legacy_key = k)
$$;
