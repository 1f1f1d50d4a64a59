-- agentctl's control schema, part 15: what a batch's record says of its source page.
--
-- A load recorded batch by batch now also keeps, with each batch's keys and hashes, a
-- fingerprint of the source page the batch was mapped from (its rows as read, sealed with the
-- mapping that read them), how many rows that page had, and the totals of its money columns
-- over the rows written, in whole cents. A validation that reads the same page again, unchanged
-- under the same mapping, proves the page by this record (the target's rows hashed by the
-- server against the recorded hashes) instead of mapping every row a second time; any page
-- that differs in any way is compared row by row, as before.
ALTER TABLE agentctl.load_baseline
    ADD COLUMN page_hash bigint,
    ADD COLUMN page_rows integer,
    ADD COLUMN money bigint[];
