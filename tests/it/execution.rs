//! Migrations that run: every source row migrated or rejected with its reason, the forecast
//! kept, and a repeated run adding nothing.

use serde_json::Value;
use tests::{agentctl, shared};

fn sum(doc: &Value, field: &str) -> i64 {
    doc["entities"].as_array().unwrap().iter().map(|e| e[field].as_i64().unwrap()).sum()
}

#[test]
fn a_run_migrates_what_the_forecast_said_and_records_every_rejection() {
    let pg = shared();
    let (source, target, report) = pg.reference_pair("0.02");
    let plan = agentctl(&["--source", &source, "--target", &target, "plan", "--goal", "migrate everything", "--format", "json"]);
    let expected: Value = serde_json::from_str::<Value>(&plan.stdout).unwrap()["expected"].clone();

    let out = agentctl(&["--source", &source, "--target", &target, "run", "--goal", "migrate everything", "--yes", "--format", "json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let doc: Value = serde_json::from_str(&out.stdout).unwrap();
    let (read, migrated, rejected) = (sum(&doc, "rows_read"), sum(&doc, "migrated"), sum(&doc, "rejected"));
    assert_eq!(read, migrated + rejected);
    assert_eq!((migrated, rejected), (expected["migrated"].as_i64().unwrap(), expected["rejected"].as_i64().unwrap()));
    let generator_rejects: i64 = report["tables"].as_array().unwrap().iter().filter_map(|t| t["expected_rejected"].as_i64()).sum();
    assert_eq!(rejected, generator_rejects);

    let db = target.rsplit('/').next().unwrap();
    let count = |sql: &str| -> i64 { pg.psql(db, sql).parse().unwrap() };
    assert_eq!(count("SELECT count(*) FROM agentctl.rejected_rows"), rejected);
    assert_eq!(count("SELECT count(*) FROM agentctl.rejected_rows WHERE reason = '' OR source_row = '{}'::jsonb"), 0);
    assert_eq!(count("SELECT count(*) FROM agentctl.migration_mappings"), migrated);
    let in_target = || -> i64 {
        let tables = report["tables"].as_array().unwrap().iter().filter(|t| t["expected_migrated"].is_i64());
        tables.map(|t| count(&format!("SELECT count(*) FROM {}", t["target"].as_str().unwrap()))).sum()
    };
    assert_eq!(in_target(), migrated);
    // Subtasks point at their parents once the second pass is done.
    assert!(count("SELECT count(*) FROM tasks WHERE parent_task_id IS NOT NULL") > 0);
    // Every migrated row's UUID is the one the mapping derives: the record and the rows agree.
    assert_eq!(
        count("SELECT count(*) FROM offers o JOIN agentctl.migration_mappings m ON m.id = o.id AND m.legacy_id = o.legacy_id::text"),
        count("SELECT count(*) FROM offers")
    );

    // A second run of the same goal writes no row twice.
    let again = agentctl(&["--source", &source, "--target", &target, "run", "--goal", "migrate everything", "--yes", "--format", "json"]);
    assert_eq!(again.code, 0, "{again:?}");
    assert_eq!(in_target(), migrated);
}
