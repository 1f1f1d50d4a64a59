//! Keeping a live source and the target in step after the migration: differential analysis
//! and apply on the reference data and on Chinook, conflicts under each policy, a deleted
//! parent with live children, and sync daemons that die or run side by side.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use tests::{agentctl, agentctl_bin, agentctl_on, shared, wait_until, PgCluster};

fn json(out: &tests::Output) -> Value {
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {out:?}"))
}

fn db(url: &str) -> String {
    url.rsplit('/').next().unwrap().to_owned()
}

/// A migrated reference pair: (source URL, target URL, source db, target db).
fn migrated(pg: &PgCluster, scale: &str) -> (String, String, String, String) {
    let (source, target, _) = pg.reference_pair(scale);
    let run = agentctl(&[
        "--source",
        &source,
        "--target",
        &target,
        "run",
        "--goal",
        "migrate everything",
        "--yes",
    ]);
    assert_eq!(run.code, 0, "{run:?}");
    let (s, t) = (db(&source), db(&target));
    (source, target, s, t)
}

/// Per entity of a `diff` JSON document: (analysis, applied).
/// `agentctl` on the pair with `args`, and `--mapping` when a mapping file is given.
fn with_mapping(source: &str, target: &str, mapping: Option<&str>, args: &[&str]) -> tests::Output {
    let mut all = args.to_vec();
    all.extend(mapping.iter().flat_map(|m| ["--mapping", m]));
    agentctl_on(source, target, &all)
}

fn entity<'a>(doc: &'a Value, target: &str) -> (Option<&'a Value>, Option<&'a Value>) {
    let analysis =
        doc["analyses"].as_array().unwrap().iter().find(|a| a["target"]["name"] == target);
    let applied = doc["applied"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["entity"]["name"] == target)
        .map(|a| &a["applied"]);
    (analysis, applied)
}

fn total(doc: &Value, field: &str) -> i64 {
    doc["analyses"].as_array().unwrap().iter().map(|a| a[field].as_i64().unwrap()).sum()
}

/// The legacy keys of the target's first three patients: to edit on both sides, in the target
/// only, in the source only.
fn first_patients(pg: &PgCluster, t: &str) -> [String; 3] {
    let keys: Vec<String> = pg
        .psql(
            t,
            "SELECT string_agg(legacy_id::text, ',' ORDER BY legacy_id) FROM (SELECT legacy_id \
                FROM patients ORDER BY legacy_id LIMIT 3) k",
        )
        .split(',')
        .map(str::to_owned)
        .collect();
    keys.try_into().expect("three patients")
}

/// Sets the first name of the first and third of `keys` in the source to `S{tag}`, and of the
/// first and second in the target to `T{tag}`.
fn edit_patients(
    pg: &PgCluster,
    (s, t): (&str, &str),
    tag: &str,
    [both, target_only, source_only]: &[String; 3],
) {
    pg.psql(
        s,
        &format!(
            "UPDATE dispatch_patient SET first_name = 'S{tag}' WHERE id IN ({both}, {source_only})"
        ),
    );
    pg.psql(
        t,
        &format!(
            "UPDATE patients SET first_name = 'T{tag}' WHERE legacy_id IN ({both}, {target_only})"
        ),
    );
}

#[test]
fn changes_of_every_kind_reach_the_reference_target_once_and_prove_out() {
    let pg = shared();
    let (source, target, s, t) = migrated(pg, "0.005");
    let changed =
        agentctl(&["--source", &source, "dataset", "change", "--rows", "600", "--format", "json"]);
    assert_eq!(changed.code, 0, "{changed:?}");
    // One more of each kind, known by key: an edit, a new patient with a new order of its own,
    // a deleted message.
    let migrated_patient = pg.psql(&t, "SELECT min(legacy_id) FROM patients");
    pg.psql(
        &s,
        &format!("UPDATE dispatch_patient SET first_name = 'Edited' WHERE id = {migrated_patient}"),
    );
    let new_patient = pg.psql(&s, "SELECT max(id) + 1000 FROM dispatch_patient");
    pg.psql(
        &s,
        &format!(
            "INSERT INTO dispatch_patient SELECT {new_patient}, doctor_id, office_id, 'New', 'Patient', birth_date, email, phone, gender, created_at
             FROM dispatch_patient WHERE id = {migrated_patient}"
        ),
    );
    let new_order = pg.psql(&s, "SELECT max(id) + 1000 FROM dispatch_order");
    let order_template = pg.psql(&t, "SELECT min(legacy_id) FROM orders");
    pg.psql(
        &s,
        &format!(
            "INSERT INTO dispatch_order SELECT {new_order}, {new_patient}, doctor_id, office_id, status, total_cents, currency, notes, created_at, updated_at
             FROM dispatch_order WHERE id = {order_template}"
        ),
    );
    let message = pg.psql(&t, "SELECT min(legacy_id) FROM system_messages");
    pg.psql(&s, &format!("DELETE FROM dispatch_system_message WHERE id = {message}"));

    // The analysis changes nothing and finds each kind.
    let before = pg.psql(&t, "SELECT count(*) FROM patients");
    let analysis = agentctl(&[
        "--source", &source, "--target", &target, "diff", "analyze", "--format", "json",
    ]);
    assert_eq!(analysis.code, 0, "{analysis:?}");
    let doc = json(&analysis);
    assert_eq!(pg.psql(&t, "SELECT count(*) FROM patients"), before, "analyze is a dry run");
    for kind in ["inserts", "updates", "deletes"] {
        assert!(total(&doc, kind) > 0, "{kind}: {doc}");
    }
    assert_eq!(total(&doc, "conflicts"), 0);
    let stored = pg.psql(
        &t,
        &format!(
            "SELECT count(*) FROM agentctl.data_differentials JOIN agentctl.diff_analyses USING \
                (analysis_id, source_table) WHERE run_id = '{}'",
            doc["run_id"].as_str().unwrap()
        ),
    );
    let out_of_step: i64 = ["inserts", "updates", "deletes", "conflicts", "rejected"]
        .iter()
        .map(|k| total(&doc, k))
        .sum();
    assert_eq!(
        stored.parse::<i64>().unwrap(),
        out_of_step,
        "every row out of step is in data_differentials"
    );

    // Applying it: each row once, parents first, deletes soft by default.
    let applied = agentctl(&[
        "--source", &source, "--target", &target, "diff", "migrate", "--format", "json",
    ]);
    assert_eq!(applied.code, 0, "{applied:?}");
    let doc = json(&applied);
    let sum = |f: &str| {
        doc["applied"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["applied"][f].as_i64().unwrap())
            .sum::<i64>()
    };
    assert_eq!(
        sum("inserted")
            + sum("updated")
            + sum("deleted")
            + sum("rejected")
            + sum("held")
            + sum("stale"),
        out_of_step,
        "{doc}"
    );
    assert_eq!(sum("stale"), 0);
    assert_eq!(
        pg.psql(
            &t,
            &format!("SELECT first_name FROM patients WHERE legacy_id = {migrated_patient}")
        ),
        "Edited"
    );
    assert_eq!(
        pg.psql(
            &t,
            &format!(
                "SELECT count(*) FROM orders o JOIN patients p ON p.id = \
            o.patient_id WHERE o.legacy_id = {new_order} AND p.legacy_id = {new_patient}"
            )
        ),
        "1",
        "the new order points at the new patient"
    );
    assert_eq!(
        pg.psql(
            &t,
            &format!(
                "SELECT deleted_at IS NOT NULL FROM system_messages WHERE legacy_id = {message}"
            )
        ),
        "t"
    );
    let (_, orders) = entity(&doc, "orders");
    assert!(orders.unwrap()["inserted"].as_i64().unwrap() > 0);
    // Every outcome recorded, in the same transactions as the writes.
    assert_eq!(
        pg.psql(&t, "SELECT count(*) FROM agentctl.data_differentials WHERE applied_at IS NULL"),
        "0"
    );
    let rejected = pg.psql(&t, "SELECT count(*) FROM agentctl.rejected_rows WHERE rule = 'sync'");
    assert_eq!(
        rejected.parse::<i64>().unwrap(),
        sum("rejected"),
        "each reject is recorded with its reason"
    );

    // In step: nothing left to do, applying again does nothing, and the proof passes.
    let again = json(&agentctl(&[
        "--source",
        &source,
        "--target",
        &target,
        "diff",
        "migrate",
        "--analyze",
        "--format",
        "json",
    ]));
    for kind in ["inserts", "updates", "deletes", "conflicts", "rejected"] {
        assert_eq!(total(&again, kind), 0, "{kind} after applying: {again}");
    }
    let proof = agentctl(&["--source", &source, "--target", &target, "diff", "validate"]);
    assert_eq!(proof.code, 0, "{proof:?}");
}

#[test]
fn conflicts_follow_each_entitys_policy_and_wait_for_an_operator_under_manual() {
    let pg = shared();
    let (source, target, s, t) = migrated(pg, "0.002");
    let keys = first_patients(pg, &t);
    let (both, target_only, source_only) = (&keys[0], &keys[1], &keys[2]);
    let edit = |tag: &str| edit_patients(pg, (&s, &t), tag, &keys);
    let first_name =
        |k: &str| pg.psql(&t, &format!("SELECT first_name FROM patients WHERE legacy_id = {k}"));
    let migrate = |mapping: Option<&str>| {
        let mut args = vec![
            "--source",
            &source,
            "--target",
            &target,
            "diff",
            "migrate",
            "patients",
            "--analyze",
            "--format",
            "json",
        ];
        if let Some(m) = mapping {
            args.extend(["--mapping", m]);
        }
        let out = agentctl(&args);
        assert_eq!(out.code, 0, "{out:?}");
        json(&out)
    };

    // source-wins (the default): the source's values, the target's kept in the record.
    edit("1");
    let doc = migrate(None);
    let (analysis, applied) = entity(&doc, "patients");
    let analysis = analysis.unwrap();
    assert_eq!(
        (
            analysis["conflicts"].as_i64(),
            analysis["updates"].as_i64(),
            analysis["target_changed"].as_i64()
        ),
        (Some(1), Some(1), Some(1))
    );
    assert_eq!(applied.unwrap()["conflicted"], 1);
    assert_eq!(
        (first_name(both), first_name(target_only), first_name(source_only)),
        ("S1".into(), "T1".into(), "S1".into())
    );
    let kept = pg.psql(
        &t,
        &format!(
            "SELECT target_values->>'first_name' || ' ' || status FROM \
            agentctl.sync_conflicts WHERE legacy_key = '{both}'"
        ),
    );
    assert_eq!(kept, "T1 overwritten", "the overwritten value is kept");

    // target-wins: the target's values stay; the next analysis does not call it a conflict again.
    let dir = tempfile::tempdir().unwrap();
    let policy = |conflicts: &str| {
        let path = dir.path().join(format!("{conflicts}.toml"));
        let base = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../mappings/dispatch.toml"
        ))
        .unwrap();
        std::fs::write(
            &path,
            format!("{base}\n[entities.dispatch_patient.sync]\nconflicts = \"{conflicts}\"\n"),
        )
        .unwrap();
        path.to_str().unwrap().to_owned()
    };
    let target_wins = policy("target-wins");
    edit("2");
    let doc = migrate(Some(&target_wins));
    assert_eq!(entity(&doc, "patients").1.unwrap()["conflicted"], 1);
    assert_eq!(first_name(both), "T2");
    let doc = migrate(Some(&target_wins));
    assert_eq!(
        entity(&doc, "patients").0.unwrap()["conflicts"],
        0,
        "settled: now the target's own change"
    );

    // manual: held, reported, and resolved by the operator either way.
    let manual = policy("manual");
    edit("3");
    let doc = migrate(Some(&manual));
    assert_eq!(entity(&doc, "patients").1.unwrap()["held"], 1);
    assert_eq!(first_name(both), "T3", "nothing written while held");
    let report = agentctl(&["--target", &target, "conflict", "report", "--format", "json"]);
    assert_eq!(report.code, 0, "{report:?}");
    let report = json(&report);
    let open = report["conflicts"].as_array().unwrap();
    assert_eq!(open.len(), 1, "{report}");
    assert_eq!(open[0]["differing"][0]["column"], "first_name");
    assert_eq!(
        (open[0]["differing"][0]["source"].as_str(), open[0]["differing"][0]["target"].as_str()),
        (Some("S3"), Some("T3"))
    );
    let id = open[0]["conflict"]["conflict_id"].as_i64().unwrap().to_string();
    let md = agentctl(&["--target", &target, "conflict", "report", "--format", "md"]);
    assert!(md.stdout.contains("| first_name | S3 | T3 |"), "{}", md.stdout);
    // On a terminal, by default: aligned columns, no Markdown.
    let text = agentctl(&["--target", &target, "conflict", "report"]);
    let row = |l: &str| l.split_whitespace().collect::<Vec<_>>() == ["first_name", "S3", "T3"];
    let markdown = |l: &str| l.contains('|') || l.starts_with("# ") || l.starts_with("## ");
    assert!(text.stdout.lines().any(row) && !text.stdout.lines().any(markdown), "{}", text.stdout);
    // A second analysis holds the same conflict, it does not pile up.
    migrate(Some(&manual));
    assert_eq!(
        pg.psql(&t, "SELECT count(*) FROM agentctl.sync_conflicts WHERE status = 'open'"),
        "1"
    );
    let resolved = agentctl(&[
        "--source", &source, "--target", &target, "conflict", "resolve", &id, "--take", "source",
    ]);
    assert_eq!(resolved.code, 0, "{resolved:?}");
    assert_eq!(first_name(both), "S3");
    let twice = agentctl(&[
        "--source", &source, "--target", &target, "conflict", "resolve", &id, "--take", "target",
    ]);
    assert_ne!(twice.code, 0);
    assert!(twice.stderr.contains("is not open"), "{twice:?}");
    let nothing = agentctl(&[
        "--source", &source, "--target", &target, "conflict", "resolve", "999999", "--take",
        "target",
    ]);
    assert!(nothing.stderr.contains("there is no conflict 999999"), "{nothing:?}");
    // --take target: the target's row stays, and it is not a conflict any more.
    edit("4");
    migrate(Some(&manual));
    let id = pg.psql(&t, "SELECT conflict_id FROM agentctl.sync_conflicts WHERE status = 'open'");
    let resolved = agentctl(&[
        "--source", &source, "--target", &target, "conflict", "resolve", &id, "--take", "target",
    ]);
    assert_eq!(resolved.code, 0, "{resolved:?}");
    assert_eq!(first_name(both), "T4");
    let doc = migrate(Some(&manual));
    assert_eq!(entity(&doc, "patients").0.unwrap()["conflicts"], 0);
    let trail = pg.psql(
        &t,
        "SELECT count(*) FROM agentctl.audit_events WHERE kind = 'decision' \
        AND summary LIKE 'conflict %took the%'",
    );
    assert_eq!(trail, "2", "each resolution is in the audit trail");
}

/// A load baseline recorded before enum and domain columns were hashed typed (scheme 1: as
/// their text) still tells a source change from a target change from both.
#[test]
fn a_baseline_hashed_the_old_way_still_tells_who_changed_a_row() {
    let pg = shared();
    let (source, target, s, t) = migrated(pg, "0.002");
    // The baseline's columns: every mapped one but the keys, in the table's order.
    let columns = |part: &str| {
        pg.psql(
            &t,
            &format!(
                "SELECT string_agg({part}, ', ' ORDER BY a.attnum) FROM pg_attribute a JOIN pg_type y ON y.oid = a.atttypid
                 WHERE a.attrelid = 'patients'::regclass AND a.attnum > 0 AND NOT a.attisdropped
                   AND a.attname NOT IN ('id', 'legacy_id', 'deleted_at')"
            ),
        )
    };
    let typed = columns(
        "CASE y.typtype WHEN 'e' THEN format('(p.%I)::%s', a.attname, format_type(a.atttypid, NULL))
                        WHEN 'd' THEN format('(p.%I)::%s', a.attname, format_type(y.typbasetype, NULL))
                        ELSE format('p.%I', a.attname) END",
    );
    let text = columns(
        "CASE WHEN y.typtype IN ('e', 'd') THEN format('(p.%I)::text', a.attname) \
        ELSE format('p.%I', a.attname) END",
    );
    // patients.legacy_id is an integer: the load keeps its keys as integers, batch by batch,
    // each row hashed by agentctl as it was sent.
    let recorded = "(SELECT b.hash FROM agentctl.baseline_record('patients', p.legacy_id::text, \
        p.legacy_id::int8) b)";
    assert_eq!(
        pg.psql(
            &t,
            &format!(
                "SELECT count(*) FROM patients p WHERE {recorded} IS DISTINCT FROM \
            hash_record_extended(ROW({typed}), 0)"
            )
        ),
        "0",
        "the load recorded every row hashed typed, over these columns"
    );
    assert_ne!(
        pg.psql(
            &t,
            &format!(
                "SELECT count(*) FROM patients p WHERE hash_record_extended(ROW({typed}), 0) \
                <> hash_record_extended(ROW({text}), 0)"
            )
        ),
        "0"
    );
    // The record as an earlier version made it.
    pg.psql(
        &t,
        &format!(
            "UPDATE agentctl.load_baseline l SET scheme = 1, hashes = (
                 SELECT array_agg(hash_record_extended(ROW({text}), 0) ORDER BY o.n)
                 FROM unnest(l.int_keys) WITH ORDINALITY o(k, n) JOIN patients p ON p.legacy_id = o.k)
             WHERE l.target_table = 'patients'"
        ),
    );
    let keys = first_patients(pg, &t);
    edit_patients(pg, (&s, &t), "", &keys);
    let source_only = &keys[2];
    let out = agentctl(&[
        "--source",
        &source,
        "--target",
        &target,
        "diff",
        "migrate",
        "patients",
        "--analyze",
        "--format",
        "json",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    let doc = json(&out);
    let analysis = entity(&doc, "patients").0.unwrap();
    assert_eq!(
        (
            analysis["conflicts"].as_i64(),
            analysis["updates"].as_i64(),
            analysis["target_changed"].as_i64()
        ),
        (Some(1), Some(1), Some(1)),
        "{analysis}"
    );
    // What the sync wrote is recorded in the new scheme.
    assert_eq!(
        pg.psql(
            &t,
            &format!(
                "SELECT scheme FROM agentctl.sync_baseline WHERE target_table = \
            'patients' AND legacy_key = '{source_only}'"
            )
        ),
        "2"
    );
}

#[test]
fn a_parent_deleted_under_live_children_is_never_orphaned() {
    let pg = shared();
    let (source, target, s, t) = migrated(pg, "0.002");
    // A patient with orders in the target; the legacy deletes it without its children, the way
    // production hard-deleted parents (foreign keys not enforced).
    let parent = pg.psql(
        &t,
        "SELECT p.legacy_id FROM patients p JOIN orders o ON o.patient_id = \
        p.id GROUP BY 1 ORDER BY 1 LIMIT 1",
    );
    pg.psql(
        &s,
        &format!(
            "SET session_replication_role = replica; DELETE FROM dispatch_patient \
        WHERE id = {parent}"
        ),
    );
    let children = pg.psql(
        &t,
        &format!(
            "SELECT count(*) FROM orders o JOIN patients p ON p.id = \
            o.patient_id WHERE p.legacy_id = {parent}"
        ),
    );

    // Hard delete: refused while children point at it, with the reason.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hard.toml");
    let base =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../mappings/dispatch.toml"))
            .unwrap();
    std::fs::write(&path, format!("{base}\n[entities.dispatch_patient.sync]\ndelete = \"hard\"\n"))
        .unwrap();
    let hard = agentctl(&[
        "--source",
        &source,
        "--target",
        &target,
        "diff",
        "migrate",
        "patients",
        "--mapping",
        path.to_str().unwrap(),
    ]);
    assert_eq!(hard.code, 0, "{hard:?}");
    assert!(
        hard.stdout.contains(&format!("dispatch_patient {parent}: deleted from the source, but"))
            && hard.stdout.contains("rows of orders"),
        "{}",
        hard.stdout
    );
    assert_eq!(
        pg.psql(&t, &format!("SELECT count(*) FROM patients WHERE legacy_id = {parent}")),
        "1"
    );
    let reason = pg.psql(
        &t,
        &format!(
            "SELECT outcome || ': ' || reason FROM agentctl.data_differentials WHERE \
            legacy_key = '{parent}' AND kind = 'delete'"
        ),
    );
    assert!(reason.starts_with("held: deleted from the source, but"), "{reason}");

    // Soft delete (the default): marked deleted, the children still point at a row.
    let soft = agentctl(&[
        "--source",
        &source,
        "--target",
        &target,
        "diff",
        "migrate",
        "patients",
        "--analyze",
    ]);
    assert_eq!(soft.code, 0, "{soft:?}");
    assert!(soft.stdout.contains("still point at it (kept, not orphaned)"), "{}", soft.stdout);
    assert_eq!(
        pg.psql(
            &t,
            &format!("SELECT deleted_at IS NOT NULL FROM patients WHERE legacy_id = {parent}")
        ),
        "t"
    );
    assert_eq!(
        pg.psql(
            &t,
            &format!(
                "SELECT count(*) FROM orders o JOIN patients p ON p.id = \
            o.patient_id WHERE p.legacy_id = {parent}"
            )
        ),
        children
    );
    assert_eq!(
        pg.psql(
            &t,
            "SELECT count(*) FROM orders o WHERE NOT EXISTS (SELECT 1 FROM \
        patients p WHERE p.id = o.patient_id) AND o.patient_id IS NOT NULL"
        ),
        "0"
    );
}

#[test]
fn chinook_changes_of_every_kind_are_kept_in_step() {
    let pg = shared();
    let (source, target) = pg.chinook_pair();
    let run = agentctl(&[
        "--source",
        &source,
        "--target",
        &target,
        "run",
        "--goal",
        "migrate everything",
        "--yes",
    ]);
    assert_eq!(run.code, 0, "{run:?}");
    let (s, t) = (db(&source), db(&target));
    pg.psql(&s, "INSERT INTO artist (artist_id, name) VALUES (9001, 'New Artist')");
    pg.psql(&s, "INSERT INTO album (album_id, title, artist_id) VALUES (9001, 'New Album', 9001)");
    pg.psql(&s, "UPDATE track SET name = name || ' (live)' WHERE track_id <= 5");
    pg.psql(
        &s,
        "DELETE FROM playlist_track WHERE playlist_id = 1 AND track_id IN (SELECT \
        track_id FROM playlist_track WHERE playlist_id = 1 ORDER BY track_id LIMIT 4)",
    );
    pg.psql(&s, "DELETE FROM invoice_line WHERE invoice_line_id <= 3");
    let doc = json(&agentctl(&[
        "--source", &source, "--target", &target, "diff", "migrate", "--format", "json",
    ]));
    let (artist, _) = entity(&doc, "artist");
    assert_eq!(artist.unwrap()["inserts"], 1);
    assert_eq!(entity(&doc, "album").1.unwrap()["inserted"], 1);
    assert_eq!(entity(&doc, "track").1.unwrap()["updated"], 5);
    assert_eq!(entity(&doc, "playlist_track").1.unwrap()["deleted"], 4, "a composite key: {doc}");
    assert_eq!(entity(&doc, "invoice_line").1.unwrap()["deleted"], 3);
    assert_eq!(
        pg.psql(
            &t,
            "SELECT count(*) FROM album a JOIN artist r ON r.id = a.artist_id WHERE \
            a.legacy_id = 9001 AND r.legacy_id = 9001"
        ),
        "1"
    );
    assert_eq!(
        pg.psql(&t, "SELECT count(*) FROM track WHERE name LIKE '% (live)' AND legacy_id <= 5"),
        "5"
    );
    let proof = agentctl(&["--source", &source, "--target", &target, "diff", "validate"]);
    assert_eq!(proof.code, 0, "{proof:?}");
}

/// A `sync daemon` in the background.
fn daemon(source: &str, target: &str, lease: &str) -> Child {
    Command::new(agentctl_bin())
        .args([
            "--source", source, "--target", target, "sync", "daemon", "--poll", "0.2", "--lease",
            lease,
        ])
        .current_dir(std::env::temp_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the daemon starts")
}

fn stop(mut child: Child) {
    // SIGTERM, as a service manager stops it; it ends on its own.
    #[allow(unsafe_code)]
    // SAFETY: signalling our own child process.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let ended = wait_until(Duration::from_secs(30), || child.try_wait().ok().flatten().is_some());
    if !ended {
        let _ = child.kill();
    }
    assert!(ended, "the daemon stops on SIGTERM");
}

#[test]
fn a_killed_daemon_leaves_no_job_running_and_two_daemons_run_a_job_once() {
    let pg = shared();
    let (source, target, s, t) = migrated(pg, "0.002");
    let bad = agentctl(&[
        "--target",
        &target,
        "sync",
        "create-job",
        "--name",
        "x",
        "--entities",
        "patients",
        "--every",
        "15",
    ]);
    assert_eq!(bad.code, 2);
    assert!(bad.stderr.contains("--every 15: expected a number and a unit"), "{bad:?}");
    let created = agentctl(&[
        "--target",
        &target,
        "sync",
        "create-job",
        "--name",
        "patients",
        "--entities",
        "patients,orders",
        "--every",
        "1h",
    ]);
    assert_eq!(created.code, 0, "{created:?}");
    let dup = agentctl(&[
        "--target",
        &target,
        "sync",
        "create-job",
        "--name",
        "patients",
        "--entities",
        "patients",
        "--cron",
        "0 2 * * *",
    ]);
    assert!(dup.stderr.contains("exists already"), "{dup:?}");
    pg.psql(
        &s,
        "UPDATE dispatch_patient SET first_name = 'Synced' WHERE id = (SELECT min(id) \
        FROM dispatch_patient)",
    );
    let history = |sql: &str| {
        pg.psql(
            &t,
            &format!("SELECT {sql} FROM agentctl.sync_run_history WHERE job_name = 'patients'"),
        )
    };

    // Killed mid-job: the run it left is found and closed when the lease runs out.
    let first = daemon(&source, &target, "2");
    assert!(
        wait_until(Duration::from_secs(60), || history("count(*)") != "0"),
        "the daemon takes the due job"
    );
    let mut first = first;
    first.kill().unwrap();
    first.wait().unwrap();
    assert_eq!(history("string_agg(outcome, ',')"), "running");
    let second = daemon(&source, &target, "2");
    assert!(
        wait_until(Duration::from_secs(120), || history(
            "string_agg(outcome, ',' ORDER BY history_id)"
        ) == "abandoned,succeeded"),
        "{}",
        history("string_agg(outcome || coalesce(': ' || detail, ''), ' | ' ORDER BY history_id)")
    );
    stop(second);
    assert_eq!(
        pg.psql(
            &t,
            "SELECT first_name FROM patients WHERE legacy_id = (SELECT \
        min(legacy_id) FROM patients)"
        ),
        "Synced"
    );
    assert_eq!(
        pg.psql(
            &t,
            "SELECT lease_owner IS NULL AND next_run_at > now() + interval '50 minutes' \
            FROM agentctl.synchronization_jobs"
        ),
        "t"
    );
    let status =
        agentctl(&["--target", &target, "sync", "job-status", "patients", "--format", "json"]);
    let status = json(&status);
    assert_eq!(status["runs"][0]["outcome"], "succeeded");
    assert!(
        status["runs"][1]["detail"].as_str().unwrap().contains("stopped before the run ended"),
        "{status}"
    );

    // Two daemons, one due job: it runs once.
    pg.psql(&t, "UPDATE agentctl.synchronization_jobs SET next_run_at = now()");
    let (a, b) = (daemon(&source, &target, "30"), daemon(&source, &target, "30"));
    assert!(wait_until(Duration::from_secs(120), || history(
        "count(*) FILTER (WHERE outcome = 'succeeded')"
    ) == "2"));
    std::thread::sleep(Duration::from_secs(2));
    stop(a);
    stop(b);
    assert_eq!(
        history("count(*)"),
        "3",
        "{}",
        history("string_agg(owner || ' ' || outcome, ' | ')")
    );
    let listed = agentctl(&["--target", &target, "sync", "list-jobs"]);
    assert!(
        listed.stdout.contains("patients, orders")
            && listed.stdout.contains("every 1h")
            && listed.stdout.contains("succeeded"),
        "{listed:?}"
    );
    let now = agentctl(&["--source", &source, "--target", &target, "sync", "run-job", "patients"]);
    assert_eq!(now.code, 0, "{now:?}");
    assert_eq!(history("count(*)"), "4");

    // Paused: due, but no daemon runs it; `run-job` still does; resumed, it is scheduled again.
    assert_eq!(agentctl(&["--target", &target, "sync", "pause-job", "patients"]).code, 0);
    pg.psql(
        &t,
        "UPDATE agentctl.synchronization_jobs SET next_run_at = now() - interval '1 minute'",
    );
    let idle = daemon(&source, &target, "30");
    std::thread::sleep(Duration::from_secs(3));
    stop(idle);
    assert_eq!(history("count(*)"), "4", "a paused job is not run");
    assert!(agentctl(&["--target", &target, "sync", "list-jobs"])
        .stdout
        .contains("every 1h (paused)"));
    assert_eq!(agentctl(&["--target", &target, "sync", "resume-job", "patients"]).code, 0);
    assert_eq!(
        pg.psql(
            &t,
            "SELECT enabled AND next_run_at > now() + interval '50 minutes' FROM \
        agentctl.synchronization_jobs"
        ),
        "t"
    );
    let deleted = agentctl(&["--target", &target, "sync", "delete-job", "patients"]);
    assert_eq!(deleted.code, 0, "{deleted:?}");
    assert_eq!(pg.psql(&t, "SELECT count(*) FROM agentctl.sync_run_history"), "0");
    let gone = agentctl(&["--target", &target, "sync", "job-status", "patients"]);
    assert!(gone.stderr.contains("there is no sync job named patients"), "{gone:?}");
}

#[test]
fn a_trusted_updated_at_lets_an_analysis_read_only_changed_rows_and_a_late_parent_is_picked_up() {
    let pg = shared();
    let (source, target, s, t) = migrated(pg, "0.002");
    let orders: Vec<String> = pg
        .psql(
            &t,
            "SELECT string_agg(legacy_id::text, ',' ORDER BY legacy_id) FROM (SELECT legacy_id \
                FROM orders ORDER BY legacy_id LIMIT 4) k",
        )
        .split(',')
        .map(str::to_owned)
        .collect();
    let touch = |key: &str, stamp: bool| {
        let stamp = if stamp { ", updated_at = now()::timestamp" } else { "" };
        pg.psql(
            &s,
            &format!(
                "UPDATE dispatch_order SET notes = coalesce(notes, '') || ' \
            edited'{stamp} WHERE id = {key}"
            ),
        );
    };
    let analyze = |extra: &[&str]| {
        let mut args = vec![
            "--source", &source, "--target", &target, "diff", "analyze", "orders", "--format",
            "json",
        ];
        args.extend(extra);
        let out = agentctl(&args);
        assert_eq!(out.code, 0, "{out:?}");
        entity(&json(&out), "orders").0.unwrap().clone()
    };
    let apply = |goal: &str| {
        let out = agentctl(&[
            "--source",
            &source,
            "--target",
            &target,
            "diff",
            "migrate",
            goal,
            "--analyze",
            "--format",
            "json",
        ]);
        assert_eq!(out.code, 0, "{out:?}");
        json(&out)
    };
    // Two full analyses: the first sets the watermark, the second finds every change stamped
    // after it, so updated_at is trusted.
    touch(&orders[0], true);
    apply("orders");
    touch(&orders[1], true);
    apply("orders");
    let trusted = pg.psql(
        &t,
        "SELECT string_agg(mode || ':' || coalesce(trusted::text, '-'), ',' \
        ORDER BY analyzed_at) FROM agentctl.diff_analyses WHERE source_table = 'dispatch_order'",
    );
    assert_eq!(trusted, "full:-,full:true");
    // Fast: only the rows stamped since the watermark; an edit that kept its old stamp is not seen.
    touch(&orders[2], true);
    touch(&orders[3], false);
    let fast = analyze(&[]);
    assert_eq!(
        (fast["mode"].as_str(), fast["updates"].as_i64()),
        (Some("fast"), Some(1)),
        "{fast}"
    );
    let total: i64 = pg.psql(&s, "SELECT count(*) FROM dispatch_order").parse().unwrap();
    assert!(fast["source_rows"].as_i64().unwrap() < total, "{fast}");
    // A full analysis finds both, and that updated_at missed one: not trusted any more.
    let full = analyze(&["--full"]);
    assert_eq!(
        (full["mode"].as_str(), full["updates"].as_i64(), full["trusted"].as_bool()),
        (Some("full"), Some(2), Some(false)),
        "{full}"
    );
    assert_eq!(analyze(&[])["mode"], "full", "untrusted: every row again");

    // An order whose patient is new and not synced yet is rejected for the missing parent; once
    // the patient is in, the order goes in too.
    let patient = pg.psql(&s, "SELECT max(id) + 1 FROM dispatch_patient");
    let order = pg.psql(&s, "SELECT max(id) + 1 FROM dispatch_order");
    let template = pg.psql(&t, "SELECT min(legacy_id) FROM patients");
    pg.psql(
        &s,
        &format!(
            "INSERT INTO dispatch_patient SELECT {patient}, doctor_id, office_id, \
        first_name, last_name, birth_date, email, phone, gender, created_at FROM \
        dispatch_patient WHERE id = {template}"
        ),
    );
    pg.psql(
        &s,
        &format!(
            "INSERT INTO dispatch_order SELECT {order}, {patient}, doctor_id, \
        office_id, status, total_cents, currency, notes, created_at, now()::timestamp FROM \
        dispatch_order WHERE id = {}",
            orders[0]
        ),
    );
    let early = apply("orders");
    assert_eq!(entity(&early, "orders").1.unwrap()["rejected"], 1, "{early}");
    let reason = pg.psql(
        &t,
        &format!(
            "SELECT rule || ': ' || reason FROM agentctl.rejected_rows WHERE legacy_key = \
                '{order}' AND source_table = 'dispatch_order'"
        ),
    );
    assert!(
        reason.starts_with(
            "reference: orders.patient_id: the patients row it points at is not in the target"
        ),
        "{reason}"
    );
    let both = apply("patients, orders");
    assert_eq!(entity(&both, "patients").1.unwrap()["inserted"], 1, "{both}");
    assert_eq!(entity(&both, "orders").1.unwrap()["inserted"], 1, "{both}");
    assert_eq!(pg.psql(&t, &format!("SELECT count(*) FROM orders WHERE legacy_id = {order}")), "1");
}

/// A source whose application soft-deletes rows with a `deleted_at` of its own: the generated
/// target keeps it as data, and a row it marks is a live row, kept in step like any other (it
/// was taken for a row agentctl had soft-deleted, and its changes were never synced).
#[test]
fn a_sources_own_deleted_at_is_data_and_its_rows_are_kept_in_step() {
    let pg = shared();
    let (source, target) = pg.generated_pair(
        "own_deleted_at",
        "CREATE TABLE post (id int PRIMARY KEY, title text NOT NULL, deleted_at timestamptz);
         INSERT INTO post SELECT i, 'post ' || i, CASE WHEN i % 2 = 0 THEN '2020-01-01 00:00:00+00'::timestamptz END
         FROM generate_series(1, 50) i;",
    );
    let s = db(&source);
    let with = |args: &[&str]| agentctl_on(&source, &target, args);
    let run = with(&["run", "--goal", "migrate everything", "--yes"]);
    assert_eq!(run.code, 0, "{run:?}");
    pg.psql(&s, "UPDATE post SET deleted_at = NULL WHERE id = 2; UPDATE post SET title = 'edited' WHERE id = 4");
    let doc = json(&with(&["diff", "migrate", "--format", "json"]));
    assert_eq!(entity(&doc, "post").1.unwrap()["updated"], 2, "{doc}");
    assert_eq!(
        pg.psql(&db(&target), "SELECT legacy_id, deleted_at IS NULL, title FROM post WHERE legacy_id IN (2, 4) ORDER BY 1"),
        "2|t|post 2\n4|f|edited"
    );
    let proof = with(&["diff", "validate"]);
    assert_eq!(proof.code, 0, "{proof:?}");
}

/// A source whose unique rule is `DEFERRABLE INITIALLY DEFERRED` gets one in the generated target
/// too. ON CONFLICT refuses such a rule as its arbiter (the sync stopped on every change to the
/// table), so sync skips a key already there on the legacy key's own unique index. A swap of two
/// rows' positions, which only a deferred or end-of-statement check allows, is applied.
#[test]
fn a_table_with_a_deferred_unique_rule_is_kept_in_step() {
    let pg = shared();
    let (source, target) = pg.generated_pair(
        "deferred_unique",
        "CREATE TABLE slot (id int PRIMARY KEY, position int NOT NULL,
             CONSTRAINT slot_position UNIQUE (position) DEFERRABLE INITIALLY DEFERRED);
         INSERT INTO slot SELECT i, i FROM generate_series(1, 20) i;",
    );
    let s = db(&source);
    let with = |args: &[&str]| agentctl_on(&source, &target, args);
    let run = with(&["run", "--goal", "migrate everything", "--yes"]);
    assert_eq!(run.code, 0, "{run:?}");
    pg.psql(
        &s,
        "BEGIN; UPDATE slot SET position = 2 WHERE id = 1; UPDATE slot SET position = 1 WHERE id = 2; COMMIT;
         INSERT INTO slot VALUES (21, 21), (22, 22);",
    );
    let out = with(&["diff", "migrate", "--format", "json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let doc = json(&out);
    let slot = entity(&doc, "slot").1.unwrap();
    assert_eq!(
        (&slot["inserted"], &slot["updated"], &slot["rejected"]),
        (&2.into(), &2.into(), &0.into()),
        "{doc}"
    );
    assert_eq!(
        pg.psql(&db(&target), "SELECT string_agg(legacy_id || ':' || position, ',' ORDER BY legacy_id) FROM slot WHERE legacy_id IN (1, 2, 21, 22)"),
        "1:2,2:1,21:21,22:22"
    );
    let proof = with(&["diff", "validate"]);
    assert_eq!(proof.code, 0, "{proof:?}");
}

/// A row deleted and its unique value given to a new row in one transaction: the sync writes
/// before it deletes, so the new row is refused for the value the old one still holds. The
/// refusal is the order's, not the row's: once the deletes are done the refused writes are
/// tried again in the same sync, and the new row goes in (hard delete) with no reject left on
/// record. Under soft delete the old row keeps the value: the new row is then held, naming it,
/// not rejected as if it were at fault.
#[test]
fn a_unique_value_freed_by_a_deleted_row_is_taken_in_the_same_sync() {
    let pg = shared();
    let (_dir, hard) = hard_deletes("slot");
    for (delete, mapping) in [("hard", Some(hard.as_str())), ("soft", None)] {
        let (source, target) = pg.generated_pair(
            &format!("freed_unique_{delete}"),
            "CREATE TABLE slot (id int PRIMARY KEY, position int NOT NULL UNIQUE);
             INSERT INTO slot SELECT i, i FROM generate_series(1, 20) i;",
        );
        let (s, t) = (db(&source), db(&target));
        let with = |args: &[&str]| with_mapping(&source, &target, mapping, args);
        assert_eq!(with(&["run", "--goal", "migrate everything", "--yes"]).code, 0);
        pg.psql(
            &s,
            "BEGIN; DELETE FROM slot WHERE id = 5; INSERT INTO slot VALUES (25, 5); COMMIT;",
        );
        let out = with(&["diff", "migrate", "--format", "json"]);
        assert_eq!(out.code, 0, "{out:?}");
        let slot = entity(&json(&out), "slot").1.unwrap().clone();
        let count = |field: &str| slot[field].as_i64().unwrap();
        let in_target = pg.psql(&t, "SELECT count(*) FROM slot WHERE legacy_id = 25");
        let rejects = pg.psql(&t, "SELECT count(*) FROM agentctl.rejected_rows");
        let outcome = pg.psql(
            &t,
            "SELECT outcome FROM agentctl.data_differentials WHERE legacy_key = '25' \
                ORDER BY applied_at DESC LIMIT 1",
        );
        match delete {
            "hard" => {
                let done = (count("inserted"), count("deleted"), count("rejected"), count("held"));
                assert_eq!(done, (1, 1, 0, 0), "taken once row 5 is gone: {slot}");
                assert_eq!((in_target.as_str(), rejects.as_str()), ("1", "0"));
                assert_eq!(outcome, "applied");
                assert_eq!(with(&["diff", "validate"]).code, 0);
            }
            _ => {
                let done = (count("inserted"), count("rejected"), count("held"));
                assert_eq!(done, (0, 0, 1), "held while the soft-deleted row holds it: {slot}");
                assert_eq!((in_target.as_str(), rejects.as_str()), ("0", "0"));
                assert_eq!(outcome, "held");
                let proof = with(&["diff", "validate"]);
                assert_ne!(proof.code, 0, "{proof:?}");
                assert!(proof.stdout.contains("the last sync held it"), "{proof:?}");
            }
        }
    }
}

/// A conflict settled source-wins whose new value is freed by a row deleted in the same sync:
/// refused while that row holds it, written once the deletes are done, and recorded as one
/// conflict, not rejected as if the row were at fault.
#[test]
fn a_conflict_settled_source_wins_takes_a_unique_value_freed_in_the_same_sync() {
    let pg = shared();
    let (_dir, hard) = hard_deletes("slot");
    let (source, target) = pg.generated_pair(
        "freed_conflict",
        "CREATE TABLE slot (id int PRIMARY KEY, position int NOT NULL UNIQUE, note text);
         INSERT INTO slot SELECT i, i, 'n' FROM generate_series(1, 20) i;",
    );
    let (s, t) = (db(&source), db(&target));
    let with = |args: &[&str]| with_mapping(&source, &target, Some(hard.as_str()), args);
    assert_eq!(with(&["run", "--goal", "migrate everything", "--yes"]).code, 0);
    pg.psql(
        &s,
        "BEGIN; DELETE FROM slot WHERE id = 5; UPDATE slot SET position = 5 WHERE id = 6; COMMIT;",
    );
    pg.psql(&t, "UPDATE slot SET note = 'edited here' WHERE legacy_id = 6");
    let out = with(&["diff", "migrate", "--format", "json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let slot = entity(&json(&out), "slot").1.unwrap().clone();
    let count = |field: &str| slot[field].as_i64().unwrap();
    let done = (count("conflicted"), count("deleted"), count("rejected"), count("held"));
    assert_eq!(done, (1, 1, 0, 0), "written once row 5 is gone: {slot}");
    let retried = "1 writes refused before the deletes (by a unique rule, or for a parent not \
        written yet), tried again after them: 1 went in";
    assert!(slot["notes"].to_string().contains(retried), "refused at first: {slot}");
    let row = pg.psql(&t, "SELECT position || ' ' || note FROM slot WHERE legacy_id = 6");
    assert_eq!(row, "5 n", "the source's values, source-wins");
    let recorded = pg.psql(
        &t,
        "SELECT count(*) || ' ' || string_agg(status, ',') FROM agentctl.sync_conflicts \
            WHERE legacy_key = '6'",
    );
    assert_eq!(recorded, "1 overwritten", "one conflict, recorded once");
    assert_eq!(pg.psql(&t, "SELECT count(*) FROM agentctl.rejected_rows"), "0");
    assert_eq!(with(&["diff", "validate"]).code, 0);
}

/// A new row whose parent is new too, the parent refused until the sync's deletes free its
/// unique value: the child, rejected at first for a parent not in the target, goes in after
/// its parent in the same sync instead of waiting for the next one.
#[test]
fn a_new_child_of_a_parent_written_after_the_deletes_goes_in_in_the_same_sync() {
    let pg = shared();
    let (_dir, hard) = hard_deletes("slot");
    let (source, target) = pg.generated_pair(
        "freed_parent",
        "CREATE TABLE slot (id int PRIMARY KEY, position int NOT NULL UNIQUE);
         CREATE TABLE token (id int PRIMARY KEY, slot_id int NOT NULL REFERENCES slot (id));
         INSERT INTO slot SELECT i, i FROM generate_series(1, 20) i;
         INSERT INTO token SELECT i, i FROM generate_series(1, 4) i;",
    );
    let (s, t) = (db(&source), db(&target));
    let with = |args: &[&str]| with_mapping(&source, &target, Some(hard.as_str()), args);
    assert_eq!(with(&["run", "--goal", "migrate everything", "--yes"]).code, 0);
    pg.psql(
        &s,
        "BEGIN; DELETE FROM slot WHERE id = 5; INSERT INTO slot VALUES (25, 5);
         INSERT INTO token VALUES (100, 25); COMMIT;",
    );
    let out = with(&["diff", "migrate", "--format", "json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let doc = json(&out);
    let count = |entity_name: &str, field: &str| {
        entity(&doc, entity_name).1.unwrap()[field].as_i64().unwrap()
    };
    assert_eq!(
        (count("slot", "inserted"), count("slot", "deleted"), count("slot", "rejected")),
        (1, 1, 0),
        "{doc}"
    );
    assert_eq!((count("token", "inserted"), count("token", "rejected")), (1, 0), "{doc}");
    let token = entity(&doc, "token").1.unwrap().clone();
    assert!(
        token["notes"].to_string().contains("refused for now, tried again after the deletes"),
        "rejected at first for its parent: {token}"
    );
    let parent = pg.psql(
        &t,
        "SELECT s.legacy_id FROM token k JOIN slot s ON s.id = k.slot_id WHERE k.legacy_id = 100",
    );
    assert_eq!(parent, "25");
    assert_eq!(pg.psql(&t, "SELECT count(*) FROM agentctl.rejected_rows"), "0");
    assert_eq!(with(&["diff", "validate"]).code, 0);
}

/// A unique value freed by an update the sync writes in a later batch (5,000 rows a batch, in
/// key order): the new row that takes it is refused at first, by the row that still holds it,
/// and goes in once the sync's writes are done, in the same sync.
#[test]
fn a_unique_value_freed_by_a_later_batch_is_taken_in_the_same_sync() {
    let pg = shared();
    let (source, target) = pg.generated_pair(
        "freed_by_update",
        "CREATE TABLE seat (id int PRIMARY KEY, position int NOT NULL UNIQUE, note text);
         INSERT INTO seat SELECT i, i, 'n' FROM generate_series(1, 7000) i;",
    );
    let run = agentctl_on(&source, &target, &["run", "--goal", "migrate everything", "--yes"]);
    assert_eq!(run.code, 0, "{run:?}");
    // Keys in text order: 0 first, 7000 last, 6,002 rows apart.
    pg.psql(
        &db(&source),
        "BEGIN; UPDATE seat SET note = 'changed' WHERE id <= 6000;
         UPDATE seat SET position = 7001 WHERE id = 7000; INSERT INTO seat VALUES (0, 7000, 'new'); COMMIT;",
    );
    let out = agentctl_on(&source, &target, &["diff", "migrate", "--format", "json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let seat = entity(&json(&out), "seat").1.unwrap().clone();
    let count = |field: &str| seat[field].as_i64().unwrap();
    assert_eq!((count("inserted"), count("updated"), count("rejected")), (1, 6001, 0), "{seat}");
    let retried = "1 writes refused before the deletes (by a unique rule, or for a parent not \
        written yet), tried again after them: 1 went in";
    assert!(seat["notes"].to_string().contains(retried), "refused at first: {seat}");
    let t = db(&target);
    assert_eq!(pg.psql(&t, "SELECT position FROM seat WHERE legacy_id = 0"), "7000");
    assert_eq!(pg.psql(&t, "SELECT count(*) FROM agentctl.rejected_rows"), "0");
    let proof = agentctl_on(&source, &target, &["diff", "validate"]);
    assert_eq!(proof.code, 0, "{proof:?}");
}

/// A table written in the target by hand points at agentctl's rows through a key of two
/// columns, `ON DELETE CASCADE`: a hard delete of a row it points at is held with the reason,
/// never cascaded into the rows agentctl did not write.
#[test]
fn a_hard_delete_never_cascades_through_a_key_of_several_columns() {
    let pg = shared();
    let (_dir, hard) = hard_deletes("shelf");
    let (source, target) = pg.generated_pair(
        "cascade_pair",
        "CREATE TABLE shelf (id int PRIMARY KEY, aisle int NOT NULL, slot text NOT NULL, UNIQUE (aisle, slot));
         INSERT INTO shelf SELECT i, i, 's' || i FROM generate_series(1, 10) i;",
    );
    let with = |args: &[&str]| with_mapping(&source, &target, Some(hard.as_str()), args);
    assert_eq!(with(&["run", "--goal", "migrate everything", "--yes"]).code, 0);
    pg.psql(
        &db(&target),
        "CREATE TABLE label (id serial PRIMARY KEY, aisle int, slot text,
             FOREIGN KEY (aisle, slot) REFERENCES shelf (aisle, slot) ON DELETE CASCADE);
         INSERT INTO label (aisle, slot) VALUES (1, 's1'), (1, 's1');",
    );
    pg.psql(&db(&source), "DELETE FROM shelf WHERE id IN (1, 2)");
    let out = with(&["diff", "migrate", "--format", "json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let shelf = entity(&json(&out), "shelf").1.unwrap().clone();
    assert_eq!((shelf["deleted"].as_i64(), shelf["held"].as_i64()), (Some(1), Some(1)), "{shelf}");
    assert!(out.stdout.contains("2 rows of label still point at it"), "{}", out.stdout);
    let left = pg.psql(
        &db(&target),
        "SELECT (SELECT count(*) FROM label) || ' ' || (SELECT string_agg(legacy_id::text, ',' ORDER BY legacy_id) FROM shelf WHERE legacy_id <= 2)",
    );
    assert_eq!(left, "2 1");
}

/// A source column that no target column takes (added to the source after the migration):
/// refused by name before anything runs, in a plan, a validation and a sync alike, until the
/// mapping file leaves it on purpose, which the plan then says.
#[test]
fn a_source_column_nothing_takes_is_refused_until_left_on_purpose() {
    let pg = shared();
    let dir = tempfile::tempdir().unwrap();
    let leave = dir.path().join("leave.toml");
    std::fs::write(&leave, "[entities.item]\nleave = [\"price\"]\n").unwrap();
    let (source, target) = pg.generated_pair(
        "left_column",
        "CREATE TABLE item (id int PRIMARY KEY, name text NOT NULL);
         INSERT INTO item SELECT i, 'n' || i FROM generate_series(1, 10) i;",
    );
    let run = agentctl_on(&source, &target, &["run", "--goal", "migrate everything", "--yes"]);
    assert_eq!(run.code, 0, "{run:?}");
    pg.psql(
        &db(&source),
        "ALTER TABLE item ADD COLUMN price numeric(8, 2); UPDATE item SET price = id * 1.5",
    );
    let refused = "price: no column of item takes it, and item has no metadata column: its values \
        would be left behind";
    for args in [&["diff", "analyze"][..], &["plan", "--goal", "migrate everything"], &["validate"]]
    {
        let out = agentctl_on(&source, &target, args);
        assert_ne!(out.code, 0, "{args:?}: {out:?}");
        assert!(out.stderr.contains(refused), "{args:?}: {}", out.stderr);
    }
    let with = |args: &[&str]| with_mapping(&source, &target, Some(leave.to_str().unwrap()), args);
    let plan = with(&["plan", "--goal", "migrate everything"]);
    assert!(
        plan.stdout.contains("Left behind on purpose (the mapping file's leave): price of item."),
        "{plan:?}"
    );
    assert_eq!(with(&["diff", "analyze"]).code, 0);
}

/// A member deleted from the source stays in the target as deleted (soft delete), and keeps
/// its email, which a unique rule guards: a new member signing up with that email is not the
/// row's fault. It is held, naming the deleted row, and goes in at the sync after the deleted
/// row is removed.
#[test]
fn a_unique_value_kept_by_a_row_deleted_softly_holds_the_new_row_instead_of_rejecting_it() {
    let pg = shared();
    let (source, target) = pg.generated_pair(
        "softunique",
        "CREATE TABLE member (id integer PRIMARY KEY, email text NOT NULL UNIQUE, name text);
         INSERT INTO member VALUES (1, 'a@example.org', 'Ann'), (2, 'b@example.org', 'Bo');",
    );
    let (s, t) = (db(&source), db(&target));
    let run = agentctl_on(&source, &target, &["run", "--goal", "migrate everything", "--yes"]);
    assert_eq!(run.code, 0, "{run:?}");
    let sync = || {
        let out = agentctl_on(
            &source,
            &target,
            &["diff", "migrate", "member", "--analyze", "--format", "json"],
        );
        assert_eq!(out.code, 0, "{out:?}");
        entity(&json(&out), "member").1.unwrap().clone()
    };
    pg.psql(&s, "DELETE FROM member WHERE id = 2");
    assert_eq!(sync()["deleted"], 1);
    pg.psql(&s, "INSERT INTO member VALUES (3, 'b@example.org', 'Bea')");
    let held = sync();
    assert_eq!(
        (&held["held"], &held["rejected"], &held["inserted"]),
        (&1.into(), &0.into(), &0.into())
    );
    let reason = pg.psql(
        &t,
        "SELECT outcome || ': ' || reason FROM agentctl.data_differentials WHERE legacy_key = '3' \
            ORDER BY applied_at DESC LIMIT 1",
    );
    assert!(
        reason.starts_with(
            "held: member: its member_email_key value is held by row 2, which the \
            source deleted and the target keeps as deleted (soft delete)"
        ),
        "{reason}"
    );
    assert_eq!(pg.psql(&t, "SELECT count(*) FROM agentctl.rejected_rows"), "0");
    // Validation says the row is not there, and why: not lost, but waiting for the operator.
    let proof = agentctl_on(&source, &target, &["diff", "validate"]);
    assert_ne!(proof.code, 0, "{proof:?}");
    for said in [
        "neither: the last sync held it: member: its member_email_key value is held by row 2",
        "the last sync held 1 of the missing rows for an operator",
    ] {
        assert!(proof.stdout.contains(said) || proof.stderr.contains(said), "{said}: {proof:?}");
    }
    assert!(!proof.stderr.contains("if the old database changed"), "{proof:?}");
    // The operator removes the deleted row: the new member goes in at the next sync.
    pg.psql(&t, "DELETE FROM member WHERE legacy_id = 2");
    assert_eq!(sync()["inserted"], 1);
    assert_eq!(pg.psql(&t, "SELECT name FROM member WHERE email = 'b@example.org'"), "Bea");
}

/// A mapping file in a directory of its own (kept while the pair lives) that has `entity`'s
/// sync delete rows for real; its path.
fn hard_deletes(entity: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hard.toml");
    std::fs::write(&path, format!("[entities.{entity}]\nsync = {{ delete = \"hard\" }}\n"))
        .unwrap();
    let path = path.to_str().unwrap().to_owned();
    (dir, path)
}
