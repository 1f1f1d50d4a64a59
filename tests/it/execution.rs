//! Migrations that run: every source row migrated or rejected with its reason, the forecast
//! kept, and a repeated run adding nothing.

use serde_json::Value;
use tests::{agentctl, agentctl_on, committed, shared, spawn_run};

/// `run --goal "migrate everything"` started in the background with small batches, so it can be
/// caught between many commits.
fn resume(source: &str, target: &str, run: &str) -> tests::Output {
    agentctl(&[
        "--source",
        source,
        "--target",
        target,
        "run",
        "--goal",
        "migrate everything",
        "--yes",
        "--resume",
        run,
        "--format",
        "json",
    ])
}

fn sum(doc: &Value, field: &str) -> i64 {
    doc["entities"].as_array().unwrap().iter().map(|e| e[field].as_i64().unwrap()).sum()
}

#[test]
fn a_run_migrates_what_the_forecast_said_and_records_every_rejection() {
    let pg = shared();
    let (source, target, report) = pg.reference_pair("0.02");
    let db = target.rsplit('/').next().unwrap();
    let count = |sql: &str| -> i64 { pg.psql(db, sql).parse().unwrap() };
    let constraints = || {
        count(
            "SELECT count(*) FROM pg_constraint WHERE connamespace = 'public'::regnamespace AND \
            convalidated",
        )
    };
    let schema_constraints = constraints();
    let plan = agentctl(&[
        "--source",
        &source,
        "--target",
        &target,
        "plan",
        "--goal",
        "migrate everything",
        "--format",
        "json",
    ]);
    let expected: Value = serde_json::from_str::<Value>(&plan.stdout).unwrap()["expected"].clone();

    let out = agentctl(&[
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
    assert_eq!(out.code, 0, "{out:?}");
    let doc: Value = serde_json::from_str(&out.stdout).unwrap();
    let (read, migrated, rejected) =
        (sum(&doc, "rows_read"), sum(&doc, "migrated"), sum(&doc, "rejected"));
    assert_eq!(read, migrated + rejected);
    assert_eq!(
        (migrated, rejected),
        (expected["migrated"].as_i64().unwrap(), expected["rejected"].as_i64().unwrap())
    );
    let generator_rejects: i64 = report["tables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["expected_rejected"].as_i64())
        .sum();
    assert_eq!(rejected, generator_rejects);

    assert_eq!(count("SELECT count(*) FROM agentctl.rejected_rows"), rejected);
    assert_eq!(
        count(
            "SELECT count(*) FROM agentctl.rejected_rows WHERE reason = '' OR source_row \
        = '{}'::jsonb"
        ),
        0
    );
    // The foreign keys set aside for the load are all back, and validated; so are the primary
    // keys and unique legacy keys of the tables that loaded empty (all of them here).
    assert_eq!(count("SELECT count(*) FROM agentctl.suspended_constraints"), 0);
    assert_eq!(
        count(
            "SELECT count(*) FROM agentctl.audit_events WHERE summary LIKE 'loading % \
        without its primary key and unique legacy_id key'"
        ),
        25
    );
    assert_eq!(constraints(), schema_constraints);
    // Approved ahead, the run read no row before it began (the plan above did), and still
    // accounted for every rejected row (above).
    let events = |like: &str| {
        count(&format!(
            "SELECT count(*) FROM agentctl.audit_events e JOIN agentctl.runs r USING (run_id) \
                WHERE r.command = 'run' AND e.summary LIKE '{like}'"
        ))
    };
    assert_eq!(events("forecast 0 of 25 entities"), 1);
    assert_eq!(events("rows.scan: read % source rows through their mappings"), 0);
    // Nothing was in the target before: no row is recorded as kept.
    assert_eq!(count("SELECT count(*) FROM agentctl.migration_mappings"), 0);
    let in_target = || -> i64 {
        let tables =
            report["tables"].as_array().unwrap().iter().filter(|t| t["expected_migrated"].is_i64());
        tables
            .map(|t| count(&format!("SELECT count(*) FROM {}", t["target"].as_str().unwrap())))
            .sum()
    };
    assert_eq!(in_target(), migrated);
    // Subtasks point at their parents once the second pass is done.
    assert!(count("SELECT count(*) FROM tasks WHERE parent_task_id IS NOT NULL") > 0);

    // Another shell sees the same from the control tables.
    let status = agentctl(&["--target", &target, "status", "--format", "json"]);
    let status: Value = serde_json::from_str(&status.stdout).unwrap();
    let entities = status["entities"].as_array().unwrap();
    assert_eq!(entities.len(), 25);
    assert!(entities.iter().all(|e| e["state"] == "done"), "{entities:?}");
    assert_eq!(entities.iter().map(|e| e["migrated"].as_i64().unwrap()).sum::<i64>(), migrated);

    // A second run of the same goal writes no row twice.
    let again = agentctl(&[
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
    assert_eq!(again.code, 0, "{again:?}");
    assert_eq!(in_target(), migrated);
}

#[test]
fn a_run_killed_mid_migration_resumes_without_duplicates_or_loss() {
    let pg = shared();
    let (source, target, report) = pg.reference_pair("0.02");
    let db = target.rsplit('/').next().unwrap().to_owned();
    let constraints = || {
        pg.psql(
            &db,
            "SELECT count(*) FROM pg_constraint WHERE connamespace = \
            'public'::regnamespace AND convalidated",
        )
    };
    let schema_constraints = constraints();
    // The operator's own autovacuum setting of a table is left as it is.
    pg.psql(&db, "ALTER TABLE tasks SET (autovacuum_enabled = true)");
    let table_options = || {
        pg.psql(
            &db,
            "SELECT coalesce(string_agg(relname || ' ' || array_to_string(reloptions, ','), '; ' ORDER BY relname), '')
             FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relkind = 'r' AND reloptions IS NOT NULL",
        )
    };
    let mut child = spawn_run(&source, &target);
    // Wait until the migration is well under way, then kill -9 (a random point between batches).
    let under_way =
        tests::wait_until(std::time::Duration::from_secs(180), || committed(pg, &db) >= 20);
    let still_running = child.try_wait().unwrap().is_none();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        under_way && still_running,
        "the run was not caught mid-migration ({} batches)",
        committed(pg, &db)
    );
    // The largest table, loading when the run was killed, fills with its autovacuum off, on the
    // record.
    let off = table_options();
    assert!(off.contains("system_messages autovacuum_enabled=false"), "{off}");
    assert!(off.contains("tasks autovacuum_enabled=true"), "{off}");
    assert_eq!(
        pg.psql(
            &db,
            "SELECT string_agg(name, ',') FROM agentctl.suspended_constraints WHERE \
            target_table = 'system_messages' AND kind = 'autovacuum'"
        ),
        "(autovacuum)"
    );
    let run = pg.psql(&db, "SELECT run_id FROM agentctl.runs WHERE command = 'run'");
    assert_eq!(
        pg.psql(&db, &format!("SELECT outcome FROM agentctl.runs WHERE run_id = '{run}'")),
        "running"
    );

    let out = resume(&source, &target, &run[..8]);
    assert_eq!(out.code, 0, "{out:?}");
    let doc: Value = serde_json::from_str(&out.stdout).unwrap();
    let (migrated, rejected) = (sum(&doc, "migrated"), sum(&doc, "rejected"));
    let expected_rejects: i64 = report["tables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["expected_rejected"].as_i64())
        .sum();
    let expected_migrated: i64 = report["tables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["expected_migrated"].as_i64())
        .sum();
    assert_eq!((migrated, rejected), (expected_migrated, expected_rejects));
    // The table cut off mid-load is proven by the load's record of every page, those written
    // before the kill as much as those after: the resumed plan reads the table with its keys
    // set aside, and the seal does not depend on them.
    let messages = doc["entities"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["target"]["name"] == "system_messages");
    let proof = &messages.expect("system_messages is resumed")["validation"];
    assert!(
        proof["rows_by_record"].as_i64().unwrap() > 0
            && proof["rows_by_record"] == proof["source_rows"],
        "{proof}"
    );

    let count = |sql: &str| -> i64 { pg.psql(&db, sql).parse().unwrap() };
    let in_target: i64 = report["tables"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["expected_migrated"].is_i64())
        .map(|t| count(&format!("SELECT count(*) FROM {}", t["target"].as_str().unwrap())))
        .sum();
    assert_eq!(in_target, expected_migrated, "no row lost, none twice");
    assert_eq!(count("SELECT count(*) FROM agentctl.rejected_rows"), expected_rejects);
    // What the killed run had set aside is back.
    assert_eq!(count("SELECT count(*) FROM agentctl.suspended_constraints"), 0);
    assert_eq!(constraints(), schema_constraints);
    assert_eq!(table_options(), "tasks autovacuum_enabled=true", "autovacuum is back as it was");
    assert_eq!(
        pg.psql(&db, &format!("SELECT outcome FROM agentctl.runs WHERE run_id = '{run}'")),
        "succeeded"
    );
    // One run, one unbroken audit chain across the kill.
    let verify = agentctl(&["--target", &target, "audit", "verify", &run]);
    assert_eq!(verify.code, 0, "{verify:?}");
}

/// A batch only commits over the checkpoint it was read after. When the stored one moves under
/// a running entity (as when the server loses a batch it had said was committed, or another
/// process writes the entity), its next batch is undone and the entity starts again from what is
/// stored, and the run still ends with every row once.
#[test]
fn a_checkpoint_that_moved_under_a_running_entity_is_refused_and_the_entity_starts_again() {
    let pg = shared();
    let (source, target, report) = pg.reference_pair("0.02");
    let db = target.rsplit('/').next().unwrap().to_owned();
    let mut child = spawn_run(&source, &target);
    let of_messages = || {
        pg.try_psql(
            &db,
            "SELECT batches FROM agentctl.migration_checkpoints WHERE source_table = \
            'dispatch_system_message'",
        )
        .and_then(|n| n.parse::<i64>().ok())
        .unwrap_or(0)
    };
    let under_way = tests::wait_until(std::time::Duration::from_secs(180), || of_messages() >= 10);
    assert!(
        under_way && child.try_wait().unwrap().is_none(),
        "system_messages was not caught loading"
    );
    pg.psql(
        &db,
        "UPDATE agentctl.migration_checkpoints SET batches = batches + 1000 WHERE \
        source_table = 'dispatch_system_message'",
    );
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");

    let run = pg.psql(&db, "SELECT run_id FROM agentctl.runs WHERE command = 'run'");
    let refused = pg.psql(
        &db,
        &format!(
            "SELECT count(*) FROM agentctl.audit_events WHERE run_id = '{run}' AND summary LIKE 'system_messages: starting again%'
               AND detail LIKE '%no longer the one after batch%'"
        ),
    );
    assert_eq!(refused, "1", "the entity started again once, for the moved checkpoint");
    let expected = report["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["target"] == "system_messages")
        .unwrap()["expected_migrated"]
        .clone();
    assert_eq!(
        pg.psql(&db, "SELECT count(*) FROM system_messages"),
        expected.to_string(),
        "every row once"
    );
    assert_eq!(
        pg.psql(&db, "SELECT count(DISTINCT legacy_id) FROM system_messages"),
        expected.to_string()
    );
}

#[test]
fn rows_already_in_the_target_keep_their_uuid_and_children_point_at_it() {
    let pg = shared();
    let (source, target, report) = pg.reference_pair("0.005");
    let (src_db, db) = (
        source.rsplit('/').next().unwrap().to_owned(),
        target.rsplit('/').next().unwrap().to_owned(),
    );
    let kept = "11111111-2222-4333-8444-555555555555";
    pg.psql(
        &db,
        &format!(
            "INSERT INTO offices (id, legacy_id, name, is_active, created_at) VALUES ('{kept}', \
                1, 'Kept office', true, '2020-01-01')"
        ),
    );

    let out = agentctl(&[
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
    // The kept office holds other values than the source's office 1: the run's validation
    // fails on that row alone (agentctl never overwrites it), and on nothing else.
    assert_eq!(out.code, 3, "{out:?}");
    assert!(
        out.stderr.contains(
            "validation failed for 1 entities: offices: 1 rows differ from their source (keys 1)"
        ),
        "{}",
        out.stderr
    );
    assert!(
        !out.stderr.contains("diff migrate"),
        "a kept row is never overwritten, by a sync either: {}",
        out.stderr
    );
    let doc: Value = serde_json::from_str(&out.stdout).unwrap();
    let expected_rejects: i64 = report["tables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["expected_rejected"].as_i64())
        .sum();
    assert_eq!(
        sum(&doc, "rejected"),
        expected_rejects,
        "no child of the kept office was set aside"
    );
    // The kept office is counted as kept, not as migrated: agentctl did not write it.
    assert_eq!(sum(&doc, "kept"), 1, "{doc}");
    assert_eq!(sum(&doc, "migrated") + 1 + expected_rejects, sum(&doc, "rows_read"), "{doc}");
    // So does a run without validation, where nothing else would tell.
    let again = agentctl_on(
        &source,
        &target,
        &["run", "--goal", "migrate everything", "--yes", "--skip-validation"],
    );
    assert_eq!(again.code, 0, "{again:?}");
    assert!(
        again.stdout.contains(" migrated + 1 kept from before agentctl + "),
        "{}",
        again.stdout
    );
    // And the report of that run.
    let report = agentctl_on(&source, &target, &["report", "--format", "json"]);
    let totals: Value = serde_json::from_str::<Value>(&report.stdout).unwrap()["totals"].clone();
    assert_eq!(
        (totals["kept"].as_i64(), totals["accounted"].as_bool()),
        (Some(1), Some(true)),
        "{totals}"
    );

    // The kept row is untouched and keeps its UUID.
    assert_eq!(
        pg.psql(&db, "SELECT id::text || ' ' || name FROM offices WHERE legacy_id = 1"),
        format!("{kept} Kept office")
    );
    // Every migrated patient of legacy office 1 points at the kept UUID.
    let of_office_1 = pg.psql(
        &src_db,
        "SELECT string_agg(id::text, ',') FROM dispatch_patient WHERE office_id = 1",
    );
    assert!(!of_office_1.is_empty(), "the dataset gives office 1 patients");
    let migrated_of_1 =
        pg.psql(&db, &format!("SELECT count(*) FROM patients WHERE legacy_id IN ({of_office_1})"));
    let pointing_at_kept =
        pg.psql(&db, &format!("SELECT count(*) FROM patients WHERE office_id = '{kept}'"));
    assert_eq!(pointing_at_kept, migrated_of_1);
    assert_ne!(migrated_of_1, "0");
    // The record says which UUID, and that agentctl did not create the row.
    assert_eq!(
        pg.psql(
            &db,
            "SELECT id::text || ' ' || created FROM agentctl.migration_mappings WHERE \
                source_table = 'dispatch_office' AND legacy_id = '1'"
        ),
        format!("{kept} false")
    );
}

/// Rows that take a unique key another row already holds (offers: one per doctor and product)
/// are refused with the constraint named, the first of them kept, whether the statement skips
/// them (ON CONFLICT DO NOTHING) or, where the constraint is deferrable (even initially
/// deferred), the batch is split until each stands alone: the same rows either way.
#[test]
fn rows_sharing_a_unique_key_are_refused_alike_whether_skipped_or_split_out() {
    let pg = shared();
    let refused = |timing: &str| {
        let (source, target, report) = pg.reference_pair("0.01");
        let db = target.rsplit('/').next().unwrap().to_owned();
        if !timing.is_empty() {
            pg.psql(
                &db,
                &format!(
                    "ALTER TABLE offers DROP CONSTRAINT offers_doctor_id_product_id_key,
                         ADD CONSTRAINT offers_doctor_id_product_id_key UNIQUE (doctor_id, product_id) {timing}"
                ),
            );
        }
        let out = agentctl(&[
            "--source",
            &source,
            "--target",
            &target,
            "run",
            "--goal",
            "migrate offers",
            "--yes",
            "--format",
            "json",
        ]);
        assert_eq!(out.code, 0, "{out:?}");
        let expected = report["tables"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["table"] == "dispatch_offer")
            .unwrap()["expected_rejected"]
            .clone();
        let rows = pg.psql(
            &db,
            "SELECT count(*) || ' ' || string_agg(legacy_key || ':' || reason, ',' ORDER BY legacy_key) FROM agentctl.rejected_rows
             WHERE source_table = 'dispatch_offer'",
        );
        (expected, rows)
    };
    let (expected, skipped) = refused("");
    assert_eq!(
        skipped.split(' ').next().map(str::to_owned),
        expected.as_i64().map(|n| n.to_string()),
        "{skipped}"
    );
    assert!(
        skipped.contains(
            r#"duplicate key value violates unique constraint "offers_doctor_id_product_id_key""#
        ),
        "{skipped}"
    );
    assert_ne!(expected.as_i64(), Some(0), "the dataset gives offers duplicates");
    let (_, split) = refused("DEFERRABLE");
    assert_eq!(skipped, split);
    // Checked only at the commit, a duplicate would fail the whole batch: the load makes the
    // rule immediate, and the same rows are refused.
    let (_, deferred) = refused("DEFERRABLE INITIALLY DEFERRED");
    assert_eq!(skipped, deferred);
}

/// A subtask whose parent task is rejected points at no row once the table is in: it is
/// removed and rejected with its reason, and so is its own subtask after it; the foreign key of
/// the self-reference is back and validated. (Where nothing dangles, as in the reference
/// dataset, putting that key back first is the proof, and nothing is removed.)
#[test]
fn subtasks_of_a_rejected_task_are_removed_and_rejected_with_their_reason() {
    let pg = shared();
    let (source, target, _) = pg.reference_pair("0.01");
    let (s, t) = (source.rsplit('/').next().unwrap(), target.rsplit('/').next().unwrap());
    // Three tasks of one case, chained: the first has no title (rejected as it is mapped), the
    // second is its subtask, the third the second's.
    let ids = pg.psql(
        s,
        "SELECT string_agg(id::text, ',' ORDER BY id) FROM (SELECT id FROM dispatch_task WHERE title IS NOT NULL AND case_id IS NOT NULL
           AND parent_task_id IS NULL AND id NOT IN (SELECT parent_task_id FROM dispatch_task WHERE parent_task_id IS NOT NULL) ORDER BY id LIMIT 3) x",
    );
    let ids: Vec<&str> = ids.split(',').collect();
    pg.psql(s, &format!("UPDATE dispatch_task SET title = NULL WHERE id = {}", ids[0]));
    pg.psql(
        s,
        &format!("UPDATE dispatch_task SET parent_task_id = {} WHERE id = {}", ids[0], ids[1]),
    );
    pg.psql(
        s,
        &format!("UPDATE dispatch_task SET parent_task_id = {} WHERE id = {}", ids[1], ids[2]),
    );

    let out = agentctl(&[
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
    assert_eq!(out.code, 0, "{out:?}");
    let doc: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(sum(&doc, "rows_read"), sum(&doc, "migrated") + sum(&doc, "rejected"));
    let rejected = |id: &str| {
        pg.psql(
            t,
            &format!(
                "SELECT rule || ' ' || reason FROM agentctl.rejected_rows WHERE source_table = \
                    'dispatch_task' AND legacy_key = '{id}'"
            ),
        )
    };
    assert!(rejected(ids[0]).starts_with("not_null:title "), "{}", rejected(ids[0]));
    for id in &ids[1..] {
        assert_eq!(
            rejected(id),
            "reference:parent_task_id tasks.parent_task_id: the row it points at was not migrated"
        );
        assert_eq!(pg.psql(t, &format!("SELECT count(*) FROM tasks WHERE legacy_id = {id}")), "0");
    }
    let tasks = doc["entities"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["target"]["name"] == "tasks")
        .unwrap();
    assert_eq!(pg.psql(t, "SELECT count(*) FROM tasks"), tasks["migrated"].to_string());
    assert_eq!(
        pg.psql(
            t,
            "SELECT convalidated FROM pg_constraint WHERE conname = 'tasks_parent_task_id_fkey'"
        ),
        "t",
        "the self-reference's foreign key is back, validated"
    );
    assert_eq!(pg.psql(t, "SELECT count(*) FROM agentctl.suspended_constraints"), "0");
}

#[test]
fn chinook_and_employee_migrate_completely_into_generated_targets() {
    let pg = shared();
    let employee = pg.employee_pair();
    for ((source, target), rows, self_ref) in [
        (
            pg.chinook_pair(),
            15_607,
            Some("SELECT count(*) FROM employee WHERE reports_to IS NOT NULL"),
        ),
        (employee.clone(), 130_783, None),
    ] {
        let out = agentctl(&[
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
        assert_eq!(out.code, 0, "{out:?}");
        let doc: Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(
            (sum(&doc, "rows_read"), sum(&doc, "migrated"), sum(&doc, "rejected")),
            (rows, rows, 0),
            "{source}"
        );
        let db = target.rsplit('/').next().unwrap();
        assert_eq!(pg.psql(db, "SELECT count(*) FROM agentctl.suspended_constraints"), "0");
        if let Some(sql) = self_ref {
            let src_db = source.rsplit('/').next().unwrap();
            assert_eq!(
                pg.psql(db, sql),
                pg.psql(src_db, sql),
                "self-references filled in the second pass"
            );
        }
    }
    // Composite keys live on as text, whose load baseline is kept by text keys (integer ones by
    // integers): a row edited in the target only is told from one edited in the source only.
    let (source, target) = employee;
    let (s, t) = (source.rsplit('/').next().unwrap(), target.rsplit('/').next().unwrap());
    assert_eq!(
        pg.psql(
            t,
            "SELECT format_type(atttypid, NULL) FROM pg_attribute WHERE attrelid = \
            'dept_emp'::regclass AND attname = 'legacy_id'"
        ),
        "text"
    );
    assert_eq!(
        pg.psql(
            t,
            "SELECT (SELECT sum(cardinality(keys)) FROM agentctl.load_baseline WHERE target_table \
                = 'dept_emp') = count(*) FROM dept_emp"
        ),
        "t"
    );
    let target_only = pg.psql(t, "SELECT min(legacy_id) FROM dept_emp");
    pg.psql(
        t,
        &format!("UPDATE dept_emp SET to_date = to_date - 1 WHERE legacy_id = '{target_only}'"),
    );
    pg.psql(
        s,
        "UPDATE dept_emp SET to_date = to_date - 1 WHERE (emp_no, dept_no) = (SELECT \
        emp_no, dept_no FROM dept_emp ORDER BY emp_no DESC LIMIT 1)",
    );
    let out = agentctl(&[
        "--source", &source, "--target", &target, "diff", "analyze", "dept_emp", "--format", "json",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    let doc: Value = serde_json::from_str(&out.stdout).unwrap();
    let analysis = &doc["analyses"][0];
    assert_eq!(
        (
            analysis["target_changed"].as_i64(),
            analysis["updates"].as_i64(),
            analysis["conflicts"].as_i64()
        ),
        (Some(1), Some(1), Some(0)),
        "{doc}"
    );
}

#[test]
fn ctrl_c_stops_between_batches_exits_130_and_the_run_resumes_exactly() {
    let pg = shared();
    let (source, target, report) = pg.reference_pair("0.02");
    let db = target.rsplit('/').next().unwrap().to_owned();
    let child = spawn_run(&source, &target);
    assert!(
        tests::wait_until(std::time::Duration::from_secs(180), || committed(pg, &db) >= 20),
        "the run got under way"
    );
    #[allow(unsafe_code)]
    // SAFETY: signalling our own child, as Ctrl-C on its terminal would.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    let run = pg.psql(&db, "SELECT run_id FROM agentctl.runs WHERE command = 'run'");
    assert!(
        stderr.contains(&format!("agentctl run --goal \"migrate everything\" --resume {run}")),
        "says how to resume, as a shell takes it: {stderr}"
    );
    assert_eq!(
        pg.psql(&db, &format!("SELECT outcome FROM agentctl.runs WHERE run_id = '{run}'")),
        "cancelled"
    );

    let out = resume(&source, &target, &run);
    assert_eq!(out.code, 0, "{out:?}");
    let doc: Value = serde_json::from_str(&out.stdout).unwrap();
    let expected = |f: &str| {
        report["tables"].as_array().unwrap().iter().filter_map(|t| t[f].as_i64()).sum::<i64>()
    };
    assert_eq!(
        (sum(&doc, "migrated"), sum(&doc, "rejected")),
        (expected("expected_migrated"), expected("expected_rejected"))
    );
    assert!(
        doc["entities"].as_array().unwrap().iter().all(|e| e["validation"]["passed"] == true),
        "no duplicate, no loss: validated"
    );
    assert_eq!(pg.psql(&db, "SELECT count(*) FROM agentctl.suspended_constraints"), "0");
}

/// Every value the binary encoder accepts is stored exactly as its COPY text would be, and the
/// server refuses in binary what it refuses in text; what the encoder is unsure of it declines.
#[tokio::test(flavor = "multi_thread")]
async fn binary_copy_stores_what_copy_text_stores() {
    use sqlx::Connection;
    use tools::binary::{value_into, Wire};

    let pg = shared();
    let url = pg.create_db("binary");
    let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::raw_sql(
        "CREATE TYPE mood AS ENUM ('calm', 'busy');
         CREATE DOMAIN plausible_ts AS timestamptz CHECK (VALUE > '1900-01-01');
         SET TIME ZONE 'Europe/Paris';",
    )
    .execute(&mut c)
    .await
    .unwrap();
    let cases: &[(&str, Wire, &[&str])] = &[
        ("text", Wire::Text, &["plain", "tab\tand newline\n", "ünïcode ✓", ""]),
        ("varchar(5)", Wire::Text, &["short", "too long"]),
        ("character(3)", Wire::Text, &["EU", "USD", "EURO"]),
        ("mood", Wire::Text, &["calm", "angry"]),
        ("boolean", Wire::Bool, &["t", "FALSE", " yes ", "on", "0", "maybe"]),
        ("smallint", Wire::Int2, &["-32768", "32767", "32768", "+7", " 12 ", "1.5"]),
        ("integer", Wire::Int4, &["2147483647", "-2147483648", "2147483648", "007"]),
        ("bigint", Wire::Int8, &["9223372036854775807", "-9223372036854775808", "abc"]),
        ("real", Wire::Float4, &["3.14159", "1e38", "1e39", "-0", "NaN", "inf"]),
        (
            "double precision",
            Wire::Float8,
            &["0.1", "1e308", "1e309", "1e-320", "1e-400", "-Infinity", "2.2250738585072014e-308"],
        ),
        (
            "numeric(12,2)",
            Wire::Numeric,
            &[
                "0",
                "-0.00",
                "12.5",
                "12.345",
                "12.355",
                "9999999999.99",
                "99999999999.99",
                "0.004",
                "-1234567.1",
                "00012.1000",
                ".5",
                "5.",
            ],
        ),
        (
            "numeric",
            Wire::Numeric,
            &[
                "123456789012345678901234567890.000123",
                "-0.00000001",
                "10000",
                "100000000",
                "1e5",
                "NaN",
            ],
        ),
        (
            "date",
            Wire::Date,
            &[
                "2024-02-29",
                "2023-02-29",
                "0001-01-01",
                "9999-12-31",
                "1999-12-31",
                "2000-01-01 10:00",
            ],
        ),
        (
            "timestamp",
            Wire::Timestamp,
            &[
                "2024-03-31 02:30:00",
                "1969-07-20 20:17:40.5",
                "2000-01-01",
                "2000-01-01T00:00:00.000001",
                "2000-01-01 24:00:00",
                "2000-01-01 12:00+02",
            ],
        ),
        (
            "timestamptz",
            Wire::Timestamptz,
            &[
                "2024-03-31 02:30:00 UTC",
                "2024-10-27 01:30:00+01",
                "1900-01-01 00:00:00-05:30",
                "2024-06-01 12:00:00.123456Z",
                "2024-06-01 12:00:00",
                "2024-06-01 12:00:00 Europe/Paris",
                "2024-06-01 12:00:00.1234567+00",
            ],
        ),
        (
            "plausible_ts",
            Wire::Timestamptz,
            &["2024-01-01 00:00:00 UTC", "1800-01-01 00:00:00 UTC"],
        ),
        (
            "uuid",
            Wire::Uuid,
            &[
                "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
                "A0EEBC999C0B4EF8BB6D6BB9BD380A11",
                "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}",
                "urn:uuid:a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
                "nope",
            ],
        ),
        ("jsonb", Wire::Jsonb, &["{\"b\": 1, \"a\": [true, null]}", "[1,2", "\"x\""]),
        ("json", Wire::Json, &["{\"b\": 1,   \"a\": 2}", "{"]),
    ];
    let mut declined = Vec::new();
    for (i, (ty, wire, values)) in cases.iter().enumerate() {
        sqlx::raw_sql(&format!(
            "CREATE TABLE t{i}_text (n int, v {ty}); CREATE TABLE t{i}_binary (n int, v {ty});"
        ))
        .execute(&mut c)
        .await
        .unwrap();
        for (n, value) in values.iter().enumerate() {
            let escaped = value
                .replace('\\', "\\\\")
                .replace('\t', "\\t")
                .replace('\n', "\\n")
                .replace('\r', "\\r");
            let line = format!("{n}\t{escaped}\n").into_bytes();
            let by_text = copy(&mut c, &format!("COPY t{i}_text FROM STDIN"), line).await;
            let mut encoded = Vec::new();
            if value_into(*wire, value, &mut encoded).is_none() {
                declined.push(format!("{ty} {value}"));
                continue;
            }
            let mut buf = b"PGCOPY\n\xff\r\n\0".to_vec();
            buf.extend_from_slice(&[0; 8]);
            buf.extend_from_slice(&2i16.to_be_bytes());
            buf.extend_from_slice(&4i32.to_be_bytes());
            buf.extend_from_slice(&(n as i32).to_be_bytes());
            buf.extend_from_slice(&(encoded.len() as i32).to_be_bytes());
            buf.extend_from_slice(&encoded);
            buf.extend_from_slice(&(-1i16).to_be_bytes());
            let by_binary =
                copy(&mut c, &format!("COPY t{i}_binary FROM STDIN (FORMAT binary)"), buf).await;
            assert_eq!(
                by_text.is_ok(),
                by_binary.is_ok(),
                "{ty} `{value}`: text {by_text:?}, binary {by_binary:?}"
            );
        }
        let differing: Vec<(i32, Option<String>, Option<String>)> = sqlx::query_as(&format!(
            "SELECT b.n, t.v::text, b.v::text FROM t{i}_binary b LEFT JOIN t{i}_text t USING (n) \
                WHERE t.v::text IS DISTINCT FROM b.v::text OR t.n IS NULL"
        ))
        .fetch_all(&mut c)
        .await
        .unwrap();
        assert!(differing.is_empty(), "{ty}: stored differently from text: {differing:?}");
    }
    let expected: Vec<String> = [
        "boolean maybe",
        "smallint 32768",
        "smallint 1.5",
        "integer 2147483648",
        "bigint abc",
        "real 1e39",
        "double precision 1e309",
        "double precision 1e-400",
        "numeric 1e5",
        "numeric NaN",
        "date 2023-02-29",
        "date 2000-01-01 10:00",
        "timestamp 2000-01-01 24:00:00",
        "timestamp 2000-01-01 12:00+02",
        "timestamptz 2024-06-01 12:00:00",
        "timestamptz 2024-06-01 12:00:00 Europe/Paris",
        "timestamptz 2024-06-01 12:00:00.1234567+00",
        "uuid urn:uuid:a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        "uuid nope",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(declined, expected, "left to COPY text");
}

/// A load hashes the rows it sends as the server hashes what it stored (the sync baseline's
/// row hash): every value of every kind it hashes, each string length lookup3 treats apart;
/// where the stored value is not certain from the bytes sent it leaves the row to the server.
#[tokio::test(flavor = "multi_thread")]
async fn a_load_hashes_rows_as_the_server_hashes_them() {
    use sqlx::Connection;
    use tools::binary::{base_columns, encode, wires};
    use tools::diff::HashTypes;
    use tools::row_hash::column_hashes;

    let pg = shared();
    let url = pg.create_db("row_hash");
    let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::raw_sql(
        "CREATE TYPE mood AS ENUM ('calm', 'busy', 'ünïcode');
         CREATE DOMAIN money2 AS numeric(12,2) CHECK (VALUE >= -1e9);
         CREATE DOMAIN short_name AS varchar(4);
         CREATE DOMAIN feeling AS mood;
         CREATE DOMAIN doc AS json;
         CREATE DOMAIN coarse_ts AS timestamp(3);",
    )
    .execute(&mut c)
    .await
    .unwrap();
    let lengths: Vec<String> =
        (0..=25).map(|n| "é".repeat(n % 3) + &"x".repeat(n - n % 3)).collect();
    let lengths: Vec<&str> = lengths.iter().map(String::as_str).collect();
    let cases: &[(&str, &[&str])] = &[
        ("text", &lengths),
        ("text", &["ünïcode ✓", "tab\tand newline\n", "日本語のテキスト"]),
        ("varchar(4)", &["abcd", "ab  ", "abc  ", "ab", "éééé", "éééé  "]),
        ("short_name", &["abcd", "abcd "]),
        ("character(4)", &["EU", "USD ", "abcd", "ab    ", ""]),
        ("mood", &["calm", "busy", "ünïcode"]),
        ("feeling", &["busy"]),
        ("boolean", &["t", "f"]),
        ("smallint", &["-32768", "32767", "0", "-1"]),
        ("integer", &["2147483647", "-2147483648", "0", "-1", "65536"]),
        (
            "bigint",
            &["9223372036854775807", "-9223372036854775808", "-1", "4294967296", "-4294967297"],
        ),
        ("real", &["3.14159", "-0", "0", "1e38", "-inf", "NaN"]),
        ("double precision", &["0.1", "-0", "1e-320", "Infinity", "NaN"]),
        (
            "numeric(12,2)",
            &[
                "0",
                "-0.00",
                "12.5",
                "12.50",
                "12.345",
                "-1234567.1",
                "00012.1000",
                "10000",
                "0.01",
                "9999999999.99",
            ],
        ),
        ("money2", &["12.5", "12.555"]),
        (
            "numeric",
            &[
                "123456789012345678901234567890.000123",
                "-0.00000001",
                "10000",
                "100000000",
                "1.000",
                "0",
            ],
        ),
        ("date", &["2024-02-29", "0001-01-01", "9999-12-31", "1999-12-31", "2000-01-01"]),
        (
            "timestamp",
            &[
                "2024-03-31 02:30:00",
                "1969-07-20 20:17:40.5",
                "2000-01-01",
                "2000-01-01T00:00:00.000001",
            ],
        ),
        (
            "timestamptz",
            &["2024-03-31 02:30:00 UTC", "2024-10-27 01:30:00+01", "1900-01-01 00:00:00-05:30"],
        ),
        ("uuid", &["a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "00000000-0000-0000-0000-000000000000"]),
        (
            "jsonb",
            &[
                "{}",
                "[]",
                " { } ",
                "{\"a\": 1}",
                "[1]",
                "\"x\"",
                "null",
                "true",
                "-0",
                "{\"by\": 1661, \"ok\": true, \"note\": null, \"off\": false}",
                "{\"bb\": 1, \"a\": 2, \"ab\": 3, \"b\": {\"z\": [], \"y\": {}}, \"a\": 4}",
                "[1.50, -0.001, 123456789012345678901234567890, 0, [\"nested\", [true]], {\"k\": \
                    \"v\"}]",
                "{\"esc\": \"tab\\t quote\\\" slash\\/ \\u00e9 \\ud83d\\ude00\", \"ünï\": \"✓\"}",
                "{\"a\": 1e3}",
                "[2E-1]",
            ],
        ),
        ("json", &["{\"b\": 1,   \"a\": 2}", "[]", "3"]),
        ("doc", &["{\"a\": [1, 2]}"]),
        ("coarse_ts", &["2024-01-01 10:00:00.1234"]),
    ];
    let mut unsure = Vec::new();
    for (i, (ty, values)) in cases.iter().enumerate() {
        let table = runtime::domain::TableName::new("public", format!("h{i}"));
        sqlx::raw_sql(&format!("CREATE TABLE h{i} (n int, v {ty})")).execute(&mut c).await.unwrap();
        let columns: Vec<(String, String)> = sqlx::query_as(&format!(
            "SELECT attname::text, format_type(atttypid, atttypmod) FROM pg_attribute WHERE \
                attrelid = 'h{i}'::regclass AND attnum > 0 ORDER BY attnum"
        ))
        .fetch_all(&mut c)
        .await
        .unwrap();
        let base = base_columns(&mut c, &table).await.unwrap();
        let wires = wires(&base, &columns).expect("every case has a binary form");
        let hashing = column_hashes(&mut c, &base, &columns).await.unwrap();
        // Each value, then a NULL, which hashes as 0 in its place.
        let values: Vec<Option<&str>> = values.iter().copied().map(Some).chain([None]).collect();
        let numbers: Vec<String> = (0..values.len()).map(|n| n.to_string()).collect();
        let rows = numbers.iter().zip(&values).map(|(n, v)| [Some(n.as_str()), *v]);
        let hashing: Option<Vec<_>> = hashing.map(|h| h.into_iter().map(Some).collect());
        let mut buf = Vec::new();
        let hashes =
            encode(&wires, hashing.as_deref(), rows, &mut buf).expect("every value encodes");
        // A table with a column it cannot hash has every row hashed by the server.
        let hashes = if hashing.is_some() { hashes } else { vec![None; values.len()] };
        copy(&mut c, &format!("COPY h{i} FROM STDIN (FORMAT binary)"), buf)
            .await
            .unwrap_or_else(|e| panic!("{ty}: {e}"));
        let types = HashTypes::of(&mut c, columns.iter().map(|(_, t)| t.as_str())).await.unwrap();
        let by_server: Vec<(i32, i64)> = sqlx::query_as(&format!(
            "SELECT n, {} FROM h{i} h ORDER BY n",
            types.row_of(columns.iter().map(|(name, t)| (format!("h.{name}"), t.clone())))
        ))
        .fetch_all(&mut c)
        .await
        .unwrap();
        assert_eq!(
            (hashes.len(), by_server.len()),
            (values.len(), values.len()),
            "{ty}: one hash a row"
        );
        for ((n, server), ours) in by_server.iter().zip(&hashes) {
            let value = values[*n as usize].unwrap_or("NULL");
            match ours {
                Some(h) => assert_eq!(h, server, "{ty} `{value}`: hashed unlike the server"),
                None => unsure.push(format!("{ty} {value}")),
            }
        }
    }
    let expected = [
        "varchar(4) abc  ",
        "varchar(4) éééé  ",
        "short_name abcd ",
        "real NaN",
        "double precision NaN",
        "numeric(12,2) 12.345",
        "numeric(12,2) 00012.1000",
        "money2 12.555",
        "jsonb {\"a\": 1e3}",
        "jsonb [2E-1]",
        "coarse_ts 2024-01-01 10:00:00.1234",
        "coarse_ts NULL",
    ];
    assert_eq!(unsure, expected, "left to the server");
}

async fn copy(c: &mut sqlx::PgConnection, sql: &str, data: Vec<u8>) -> Result<u64, String> {
    let mut copy = c.copy_in_raw(sql).await.map_err(|e| e.to_string())?;
    copy.send(data).await.map_err(|e| e.to_string())?;
    copy.finish().await.map_err(|e| e.to_string())
}

/// A parent table is read whole for a child's reference checks only while it is small enough:
/// every id up to the limit, none beyond it (the child's batches then ask the server).
#[tokio::test(flavor = "multi_thread")]
async fn a_parent_is_read_whole_only_up_to_the_limit() {
    use runtime::domain::TableName;
    use runtime::ports::Verifier;

    let pg = shared();
    let url = pg.create_db("parent_ids");
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    sqlx::raw_sql(
        "CREATE TABLE parents (id uuid PRIMARY KEY); INSERT INTO parents SELECT \
        gen_random_uuid() FROM generate_series(1, 3)",
    )
    .execute(&pool)
    .await
    .unwrap();
    let stored: std::collections::BTreeSet<uuid::Uuid> =
        sqlx::query_scalar("SELECT id FROM parents")
            .fetch_all(&pool)
            .await
            .unwrap()
            .into_iter()
            .collect();
    let target = tools::target::PgTarget::new(pool, 0);
    let parents = TableName::new("public", "parents");
    let read = target.all_ids(&parents, 3).await.unwrap().expect("three ids fit a limit of three");
    assert_eq!(read.into_iter().collect::<std::collections::BTreeSet<_>>(), stored);
    assert_eq!(target.all_ids(&parents, 2).await.unwrap(), None);
    let missing = target.all_ids(&TableName::new("public", "nowhere"), 10).await.unwrap_err();
    assert!(
        missing
            .message
            .contains("reading the ids of nowhere: relation \"public.nowhere\" does not exist"),
        "{}",
        missing.message
    );
}

/// A trigger of the target's own that drops some rows as they are written: the plan says it
/// fires on every row, and the run fails on the accounting, naming it, instead of reporting
/// the rows it dropped as migrated.
#[test]
fn a_target_trigger_that_drops_rows_is_named_in_the_plan_and_fails_the_run() {
    let pg = shared();
    let (source, target) = pg.generated_pair(
        "dropping_trigger",
        "CREATE TABLE item (id serial PRIMARY KEY, qty int NOT NULL);
         INSERT INTO item (qty) SELECT g % 7 FROM generate_series(1, 700) g;",
    );
    pg.psql(
        target.rsplit('/').next().unwrap(),
        "CREATE FUNCTION skip_empty() RETURNS trigger LANGUAGE plpgsql AS
             $$ BEGIN IF NEW.qty = 0 THEN RETURN NULL; END IF; RETURN NEW; END $$;
         CREATE TRIGGER item_skip BEFORE INSERT ON item FOR EACH ROW EXECUTE FUNCTION skip_empty();",
    );
    let plan = agentctl_on(&source, &target, &["plan", "--goal", "migrate everything"]);
    assert!(
        plan.stdout.contains("Fires on every row loaded: trigger item_skip of item"),
        "{plan:?}"
    );
    let run = agentctl_on(&source, &target, &["run", "--goal", "migrate everything", "--yes"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains("700 read = 600 migrated + 0 rejected; 600 rows in")
            && run.stderr.contains("item has trigger item_skip"),
        "{}",
        run.stderr
    );
}
