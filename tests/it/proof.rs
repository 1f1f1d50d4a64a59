//! Proving a migration: validation that catches what was changed behind agentctl's back, the
//! report, a rollback that leaves the target as it was, and a run that outlives a restart of
//! the target server.

use serde_json::Value;
use tests::{agentctl, agentctl_on, agentctl_with, shared, PgCluster};

fn json(out: &tests::Output) -> Value {
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {out:?}"))
}

#[test]
fn validation_finds_changed_lost_and_extra_rows_and_rollback_leaves_the_target_as_it_was() {
    let pg = shared();
    let (source, target, report) = pg.reference_pair("0.005");
    let db = target.rsplit('/').next().unwrap().to_owned();
    let tables: Vec<String> = report["tables"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["expected_migrated"].is_i64())
        .map(|t| t["target"].as_str().unwrap().to_owned())
        .collect();
    // A row that was in the target before agentctl: it must outlive the rollback.
    pg.psql(
        &db,
        "INSERT INTO offices (id, legacy_id, name, is_active, created_at) VALUES \
            (gen_random_uuid(), 1, 'Kept', true, '2020-01-01')",
    );
    let counts = || -> Vec<String> {
        tables.iter().map(|t| pg.psql(&db, &format!("SELECT count(*) FROM {t}"))).collect()
    };
    let constraints = || {
        pg.psql(
            &db,
            "SELECT count(*) FROM pg_constraint WHERE connamespace = \
            'public'::regnamespace AND convalidated",
        )
    };
    let (before, before_constraints) = (counts(), constraints());

    let run = agentctl(&[
        "--source",
        &source,
        "--target",
        &target,
        "run",
        "--goal",
        "migrate everything",
        "--yes",
        "--format",
        "json",
    ]);
    // The kept row says it is office 1, with other values than the source's: agentctl never
    // overwrites it, and the run's validation fails on it, naming it.
    assert_eq!(run.code, 3, "{run:?}");
    let run_doc = json(&run);
    let entities = run_doc["entities"].as_array().unwrap();
    let failed: Vec<&Value> =
        entities.iter().filter(|e| e["validation"]["passed"] != true).collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    let difference = &failed[0]["validation"]["differences"][0];
    assert_eq!(difference["legacy_key"], "1", "{difference}");
    assert!(
        difference["column"].as_str().unwrap().ends_with(
            "(of a row that was in the target before agentctl, which never overwrites it)"
        ),
        "{difference}"
    );
    // A sync leaves it alone too, and says the target holds its own version of it.
    let analysis = agentctl(&[
        "--source", &source, "--target", &target, "diff", "analyze", "offices", "--format", "json",
    ]);
    assert_eq!(analysis.code, 0, "{analysis:?}");
    let offices = &json(&analysis)["analyses"][0];
    assert_eq!(
        (&offices["target_changed"], &offices["updates"]),
        (&1.into(), &0.into()),
        "{offices}"
    );
    // The operator brings the kept row in line, column by column as validation names them.
    for _ in 0..12 {
        let out = agentctl(&[
            "--source", &source, "--target", &target, "validate", "offices", "--format", "json",
        ]);
        let doc = json(&out);
        let Some(d) = doc["entities"][0]["differences"].as_array().and_then(|d| d.first()) else {
            break;
        };
        let column = d["column"].as_str().unwrap().split(' ').next().unwrap();
        let value = d["expected"].as_str().map_or("NULL".into(), |v| format!("'{v}'"));
        pg.psql(
            &db,
            &format!(
                "UPDATE offices SET {column} = {value}::text::{ty} WHERE legacy_id = 1",
                ty = pg.psql(
                    &db,
                    &format!(
                        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute \
                        WHERE attrelid = 'offices'::regclass AND attname = '{column}'"
                    )
                )
            ),
        );
    }
    let money: Vec<&Value> =
        entities.iter().flat_map(|e| e["validation"]["money"].as_array().unwrap()).collect();
    assert!(
        !money.is_empty() && money.iter().all(|m| m["source_cents"] == m["target_cents"]),
        "{money:?}"
    );

    // On demand, everything passes, and the accounting covers every source row. (ANALYZE
    // first: the planner's statistics change nothing of what a row maps to.)
    pg.psql(&db, "ANALYZE");
    let ok = agentctl(&["--source", &source, "--target", &target, "validate", "--format", "json"]);
    assert_eq!(ok.code, 0, "{ok:?}");
    let doc = json(&ok);
    assert_eq!(doc["passed"], true);
    let sum = |d: &Value, f: &str| {
        d["entities"].as_array().unwrap().iter().map(|e| e[f].as_i64().unwrap()).sum::<i64>()
    };
    let read: i64 = entities.iter().map(|e| e["rows_read"].as_i64().unwrap()).sum();
    assert_eq!(sum(&doc, "source_rows"), read);
    assert_eq!(sum(&doc, "migrated") + sum(&doc, "rejected") + sum(&doc, "kept"), read);
    assert_eq!(sum(&doc, "kept"), 1, "the office that was there before");
    // Tables loaded empty are proven by the load's record of each page, in the run and on
    // demand (another process, the same seal); offices, which held a row before, is mapped.
    let by_record = |d: &Value, table: &str| {
        let e = d["entities"].as_array().unwrap().iter().find(|e| e["target"]["name"] == table);
        let e = e.unwrap_or_else(|| panic!("{table} is validated"));
        let e = if e["validation"].is_object() { &e["validation"] } else { e };
        (e["rows_by_record"].as_i64().unwrap(), e["source_rows"].as_i64().unwrap())
    };
    for d in [&run_doc, &doc] {
        let (proven, rows) = by_record(d, "system_messages");
        assert!(
            rows > 10_000 && proven == rows,
            "every page proven by its record: {proven}/{rows}"
        );
        assert_eq!(by_record(d, "offices").0, 0, "a table that held a row is mapped");
    }

    // Behind agentctl's back: an amount edited, a text edited, a row deleted, a reference
    // pointed at nothing.
    let key = |sql: &str| pg.psql(&db, sql);
    let op = key("SELECT min(legacy_id) FROM operations");
    let patient = key("SELECT min(legacy_id) FROM patients");
    let attachment = key("SELECT min(legacy_id) FROM message_attachments");
    pg.psql(&db, &format!("UPDATE operations SET amount = amount + 1 WHERE legacy_id = {op}"));
    pg.psql(
        &db,
        &format!("UPDATE patients SET last_name = last_name || 'x' WHERE legacy_id = {patient}"),
    );
    pg.psql(&db, &format!("DELETE FROM message_attachments WHERE legacy_id = {attachment}"));
    // And in the first and last of system_messages' pages (several, compared two at a time):
    // both are found, listed in key order. The last one's sender is taken away too: its
    // reference's links, counted in the target under a validated foreign key, are one short.
    let (first, last) = (
        key("SELECT min(legacy_id) FROM system_messages"),
        key("SELECT max(legacy_id) FROM system_messages WHERE sender_id IS NOT NULL"),
    );
    assert!(
        key("SELECT count(*) FROM system_messages").parse::<i64>().unwrap() > 10_000,
        "more than two pages to compare"
    );
    pg.psql(
        &db,
        &format!(
            "UPDATE system_messages SET subject = subject || 'x' WHERE legacy_id IN \
        ({first}, {last})"
        ),
    );
    pg.psql(&db, &format!("UPDATE system_messages SET sender_id = NULL WHERE legacy_id = {last}"));
    // And, in three more tables, the first two rows trading their creation times: every value
    // is still in the table, each on the other row, which the page's sum of row hashes must
    // not take for the same rows (a plain sum missed most such trades).
    let traded: Vec<(&str, String, String)> = ["doctors", "jaws", "tasks"]
        .into_iter()
        .map(|table| {
            let pair = key(&format!(
                "SELECT string_agg(legacy_id::text, ',' ORDER BY legacy_id) FROM (SELECT \
                    legacy_id FROM {table} ORDER BY legacy_id LIMIT 2) d"
            ));
            let (a, b) = pair.split_once(',').unwrap();
            pg.psql(
                &db,
                &format!(
                    "UPDATE {table} d SET created_at = o.created_at FROM {table} o \
                    WHERE (d.legacy_id, o.legacy_id) IN (({a}, {b}), ({b}, {a}))"
                ),
            );
            let distinct = key(&format!(
                "SELECT count(DISTINCT created_at) FROM {table} WHERE legacy_id IN ({a}, {b})"
            ));
            assert_eq!(distinct, "2", "the two rows of {table} had different times to trade");
            (table, a.to_owned(), b.to_owned())
        })
        .collect();
    // And one source row changed since the load: its page no longer matches the load's record,
    // so it is mapped again and compared with what the target holds.
    let second = key("SELECT min(legacy_id) FROM system_messages WHERE legacy_id > 1");
    let source_db = source.rsplit('/').next().unwrap().to_owned();
    pg.psql(
        &source_db,
        &format!("UPDATE dispatch_system_message SET subject = 'moved' WHERE id = {second}"),
    );
    let bad = agentctl(&[
        "--source",
        &source,
        "--target",
        &target,
        "validate",
        "operations",
        "patients",
        "message attachments",
        "system messages",
        "doctors",
        "jaws",
        "tasks",
    ]);
    assert_eq!(bad.code, 3, "{bad:?}");
    for (table, a, b) in &traded {
        assert!(
            bad.stderr
                .contains(&format!("{table}: 2 rows differ from their source (keys {a}, {b})")),
            "both rows of {table} that traded values are named: {}",
            bad.stderr
        );
    }
    for k in [&op, &patient, &attachment] {
        assert!(
            bad.stderr.contains(&format!("keys {k}")),
            "the differing key {k} is named: {}",
            bad.stderr
        );
    }
    assert!(
        bad.stderr.contains(&format!("keys {first}, {second}, {last})")),
        "both system_messages keys, in order: {}",
        bad.stderr
    );
    assert!(
        format!("{}{}", bad.stdout, bad.stderr).contains("links of sender_id to"),
        "the lost link is counted: {bad:?}"
    );
    // Which side changed, by the load's record of each page: the source's page of `second`
    // (the load wrote system_messages in one batch, so its target's edits are on that page
    // too), and the target's rows of the three other tables, whose source reads as it was.
    for said in [
        "the old database changed after the load read it (1 page read otherwise now): `agentctl \
            diff analyze` lists its changes and `agentctl diff migrate` carries them over",
        "the new database changed after the load wrote it (6 pages whose rows are not what the \
            load wrote, the old rows read as they were): something other than agentctl wrote to \
            it",
    ] {
        assert!(bad.stderr.contains(said), "{said}: {}", bad.stderr);
    }
    assert!(
        bad.stderr.trim_end().ends_with("then run `agentctl validate` again"),
        "{}",
        bad.stderr
    );
    assert!(
        bad.stdout.contains("money amount") && bad.stdout.contains("DIFFERENT"),
        "{}",
        bad.stdout
    );
    let stored = pg.psql(&db, "SELECT string_agg(target_table || '=' || passed, ',' ORDER BY target_table) FROM agentctl.migration_validation_reports
                               WHERE run_id = (SELECT run_id FROM agentctl.runs WHERE command = 'validate' ORDER BY started_at DESC LIMIT 1)");
    assert_eq!(
        stored,
        "doctors=false,jaws=false,message_attachments=false,operations=false,patients=false,\
            system_messages=false,tasks=false"
    );
    // Only the pages changed behind agentctl's back went unproven by the record.
    let again = json(&agentctl(&[
        "--source", &source, "--target", &target, "validate", "--format", "json",
    ]));
    let (proven, rows) = by_record(&again, "system_messages");
    let changed: i64 = key(&format!(
        "SELECT sum(page_rows) FROM agentctl.load_baseline WHERE target_table = 'system_messages' \
            AND page_hash IS NOT NULL AND ({first} BETWEEN lo AND hi OR {second} BETWEEN lo AND hi \
            OR {last} BETWEEN lo AND hi)"
    ))
    .parse()
    .unwrap();
    assert!(
        changed > 0 && proven == rows - changed,
        "{proven} of {rows} proven, {changed} changed"
    );
    let untouched = by_record(&again, "cases");
    assert!(untouched.0 > 0 && untouched.0 == untouched.1, "{untouched:?}");

    // The report of the run: the table operators know, and rejections grouped by reason.
    let md = agentctl(&["--target", &target, "report", "--format", "md"]);
    assert_eq!(md.code, 0, "{md:?}");
    assert!(
        md.stdout.contains("| entity | migrated / source |")
            && md.stdout.contains("## Rejections by reason"),
        "{}",
        md.stdout
    );
    // For a terminal, by default: the same table with aligned columns, and no Markdown.
    let text = agentctl(&["--target", &target, "report"]);
    assert_eq!(text.code, 0, "{text:?}");
    let header = [
        "entity",
        "migrated",
        "/",
        "source",
        "success",
        "rejected",
        "money",
        "preserved",
        "validation",
        "seconds",
        "rows/s",
    ];
    assert!(
        text.stdout.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == header),
        "{}",
        text.stdout
    );
    assert!(text.stdout.contains("\nRejections by reason\n"), "{}", text.stdout);
    for markdown in ["**", "| ---", "## "] {
        assert!(!text.stdout.contains(markdown), "no `{markdown}` on a terminal: {}", text.stdout);
    }
    let rep = json(&agentctl(&["--target", &target, "report", "--format", "json"]));
    assert_eq!(rep["totals"]["accounted"], true);
    let generator_rejects: i64 = report["tables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["expected_rejected"].as_i64())
        .sum();
    assert_eq!(rep["totals"]["rejected"].as_i64().unwrap(), generator_rejects);
    let grouped: i64 =
        rep["rejections"].as_array().unwrap().iter().map(|g| g["count"].as_i64().unwrap()).sum();
    assert_eq!(grouped, generator_rejects);

    // Parents cannot go while their migrated children stay; nothing is deleted.
    let after_run = counts();
    let refused = agentctl(&[
        "--source",
        &source,
        "--target",
        &target,
        "rollback",
        "--entities",
        "offices",
        "--yes",
    ]);
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(
        refused.stderr.contains("cannot roll back offices")
            && refused.stderr.contains("still reference them"),
        "{}",
        refused.stderr
    );
    assert_eq!(counts(), after_run);
    // Without --yes and without a terminal, nothing happens.
    let unconfirmed = agentctl(&["--source", &source, "--target", &target, "rollback", "--all"]);
    assert_eq!(unconfirmed.code, 2, "{unconfirmed:?}");

    let all = agentctl_with(
        &[
            "--source", &source, "--target", &target, "rollback", "--all", "--yes", "--format",
            "json",
        ],
        &[],
    );
    assert_eq!(all.code, 0, "{all:?}");
    assert_eq!(counts(), before, "the target is as it was: the kept office and nothing else");
    assert_eq!(constraints(), before_constraints);
    assert_eq!(
        pg.psql(&db, "SELECT name FROM offices"),
        pg.psql(&source_db, "SELECT name FROM dispatch_office WHERE id = 1"),
        "the kept office, as the operator brought it in line"
    );
    let events = pg.psql(
        &db,
        "SELECT count(*) FROM agentctl.audit_events e JOIN agentctl.runs r \
        USING (run_id) WHERE r.command = 'rollback' AND e.summary LIKE 'rolled back%'",
    );
    assert_eq!(events, "1", "the rollback is in the audit trail");
}

/// A table that references itself, larger than one delete statement's share, with no index on
/// the reference; and a table agentctl never migrated whose rows point at it with
/// `ON DELETE CASCADE`. The rollback must refuse while those rows exist (the cascade would have
/// deleted them) and, once they are gone, delete every row, the self-reference whole.
/// A psql session on `db` that begins a transaction, runs `sql` in it and leaves it open until
/// its stdin is dropped.
fn in_transaction(
    pg: &PgCluster,
    db: &str,
    sql: &str,
) -> (std::process::Child, std::process::ChildStdin) {
    use std::io::Write as _;
    let mut session = pg
        .psql_command(db)
        .arg("-q")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = session.stdin.take().unwrap();
    stdin.write_all(format!("BEGIN;\n{sql}\n").as_bytes()).unwrap();
    stdin.flush().unwrap();
    (session, stdin)
}

#[test]
fn rollback_neither_cascades_into_rows_it_did_not_create_nor_trips_over_a_self_reference() {
    let pg = shared();
    let (source, target) = pg.generated_pair(
        "selfref",
        "CREATE TABLE node (id serial PRIMARY KEY, parent_id int REFERENCES node (id), name text NOT NULL);
         INSERT INTO node (parent_id, name)
             SELECT CASE WHEN g > 1 THEN g / 2 END, 'n' || g FROM generate_series(1, 60000) g;",
    );
    let db = target.rsplit('/').next().unwrap().to_owned();
    let run = agentctl_on(&source, &target, &["run", "--goal", "migrate everything", "--yes"]);
    assert_eq!(run.code, 0, "{run:?}");
    pg.psql(
        &db,
        "CREATE TABLE note (id serial PRIMARY KEY, node_id uuid REFERENCES node (id) ON DELETE CASCADE);
         INSERT INTO note (node_id) SELECT id FROM node WHERE legacy_id <= 3;",
    );
    let rollback = || agentctl_on(&source, &target, &["rollback", "--all", "--yes"]);
    let refused = rollback();
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(
        refused.stderr.contains("cannot roll back node: rows of note still reference them"),
        "{}",
        refused.stderr
    );
    let counts =
        || pg.psql(&db, "SELECT (SELECT count(*) FROM node) || ' ' || (SELECT count(*) FROM note)");
    assert_eq!(counts(), "60000 3", "nothing was deleted, the notes included");

    pg.psql(&db, "DELETE FROM note");
    // A session reading note in a transaction it leaves open: the rollback waits a bounded
    // time for it, names it, and changes nothing.
    let (mut reader, stdin) = in_transaction(pg, &db, "SELECT count(*) FROM note;");
    let holding = || {
        pg.psql(&db, "SELECT count(*) FROM pg_locks WHERE relation = 'note'::regclass AND granted")
    };
    assert!(tests::wait_until(std::time::Duration::from_secs(30), || holding() != "0"));
    let waited = rollback();
    drop(stdin);
    reader.wait().unwrap();
    assert_eq!(waited.code, 1, "{waited:?}");
    assert!(
        waited
            .stderr
            .contains("rollback waited 10 s for tables other sessions are using (note: pid ")
            && waited.stderr.contains(
                "idle in transaction, `SELECT count(*) FROM note;`); nothing was deleted"
            ),
        "{}",
        waited.stderr
    );
    assert_eq!(counts(), "60000 0", "nothing was deleted");

    // A load interrupted with node's foreign key set aside (as a killed run leaves it), and a
    // session writing node in a transaction it leaves open: putting the key back before the
    // rollback waits as boundedly as the rollback's own locks, names the session, and deletes
    // nothing.
    pg.psql(
        &db,
        "INSERT INTO agentctl.suspended_constraints (target_table, name, kind, definition, validated, run_id)
             SELECT 'node', conname, 'constraint', pg_get_constraintdef(oid), convalidated, gen_random_uuid()
             FROM pg_constraint WHERE conrelid = 'node'::regclass AND contype = 'f';
         ALTER TABLE node DROP CONSTRAINT node_parent_id_fkey;",
    );
    let (mut writer, stdin) =
        in_transaction(pg, &db, "UPDATE node SET name = name WHERE legacy_id = 1;");
    let writing = || {
        pg.psql(
            &db,
            "SELECT count(*) FROM pg_locks WHERE relation = 'node'::regclass AND granted \
             AND mode = 'RowExclusiveLock'",
        )
    };
    assert!(tests::wait_until(std::time::Duration::from_secs(30), || writing() != "0"));
    // The session ends once the rollback is done, or after 30 s if the rollback waits for it
    // without bound (then it puts the key back, deletes, and the test fails on its success).
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let ender = std::thread::spawn(move || {
        let _ = done_rx.recv_timeout(std::time::Duration::from_secs(30));
        drop(stdin);
        writer.wait().unwrap();
    });
    let waited = rollback();
    done_tx.send(()).ok();
    ender.join().unwrap();
    assert_eq!(waited.code, 1, "{waited:?}");
    assert!(
        waited
            .stderr
            .contains("rollback waited 10 s for tables other sessions are using (node: pid ")
            && waited.stderr.contains(
                "idle in transaction, `UPDATE node SET name = name WHERE legacy_id = 1;`); \
                 nothing was deleted"
            ),
        "{}",
        waited.stderr
    );
    assert_eq!(counts(), "60000 0", "nothing was deleted");
    assert_eq!(
        pg.psql(&db, "SELECT string_agg(name, ',') FROM agentctl.suspended_constraints"),
        "node_parent_id_fkey",
        "the key is still on the record, to be put back"
    );
    let done = rollback();
    assert_eq!(done.code, 0, "{done:?}");
    assert_eq!(counts(), "0 0");
    let keys = pg.psql(
        &db,
        "SELECT string_agg(conrelid::regclass || ' ' || pg_get_constraintdef(oid), '; ' ORDER BY 1) \
         FROM pg_constraint WHERE contype = 'f' AND connamespace = 'public'::regnamespace",
    );
    assert_eq!(
        keys,
        "node FOREIGN KEY (parent_id) REFERENCES node(id); \
         note FOREIGN KEY (node_id) REFERENCES node(id) ON DELETE CASCADE",
        "the keys are back as they were"
    );
}

#[test]
fn a_run_outlives_a_restart_of_the_target_server() {
    // The target on a cluster of its own, so restarting it leaves the source alone.
    let target_pg = PgCluster::start().unwrap();
    let source = shared().create_db("legacy");
    let target = target_pg.create_db("modern");
    let generated = agentctl(&[
        "--source", &source, "--target", &target, "dataset", "generate", "--scale", "0.02",
        "--format", "json",
    ]);
    assert_eq!(generated.code, 0, "{generated:?}");
    let report = json(&generated);
    let db = target.rsplit('/').next().unwrap().to_owned();
    let committed = |pg: &PgCluster| -> i64 {
        pg.try_psql(&db, "SELECT coalesce(sum(batches), 0) FROM agentctl.migration_checkpoints")
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    let mut child = std::process::Command::new(tests::agentctl_bin())
        .args([
            "--source",
            &source,
            "--target",
            &target,
            "run",
            "--goal",
            "migrate everything",
            "--yes",
            "--format",
            "json",
        ])
        .env("BATCH_SIZE", "250")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        tests::wait_until(std::time::Duration::from_secs(180), || committed(&target_pg) >= 20),
        "the run got under way"
    );
    let started_at = |pg: &PgCluster| pg.psql(&db, "SELECT pg_postmaster_start_time()");
    let before = started_at(&target_pg);
    let target_pg = target_pg.restart().unwrap();
    assert_ne!(started_at(&target_pg), before, "the target server restarted");
    assert!(
        child.try_wait().unwrap().is_none(),
        "the run was still going when the server came back"
    );
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let sum = |f: &str| {
        doc["entities"].as_array().unwrap().iter().map(|e| e[f].as_i64().unwrap()).sum::<i64>()
    };
    let expected = |f: &str| {
        report["tables"].as_array().unwrap().iter().filter_map(|t| t[f].as_i64()).sum::<i64>()
    };
    assert_eq!(
        (sum("migrated"), sum("rejected")),
        (expected("expected_migrated"), expected("expected_rejected"))
    );
    assert!(doc["entities"].as_array().unwrap().iter().all(|e| e["validation"]["passed"] == true));
    assert_eq!(target_pg.psql(&db, "SELECT count(*) FROM agentctl.suspended_constraints"), "0");
}
