//! The reference dataset: deterministic, its faults exactly as reported (checked with SQL of
//! its own, not with the generator's bookkeeping), and a target schema that holds up.

use std::collections::BTreeMap;

use serde_json::Value;
use tests::{agentctl, shared, PgCluster};

const SCALE: &str = "0.02";

/// Generates the dataset into a new database; returns its name and the JSON report.
fn generate(pg: &PgCluster, seed: &str) -> (String, Value) {
    let url = pg.create_db("legacy");
    let out = agentctl(&[
        "--source", &url, "dataset", "generate", "--scale", SCALE, "--seed", seed, "--format",
        "json",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    (url.rsplit('/').next().unwrap().to_owned(), serde_json::from_str(&out.stdout).unwrap())
}

fn faults(report: &Value, table: &str) -> BTreeMap<String, i64> {
    let t = report["tables"].as_array().unwrap().iter().find(|t| t["table"] == table).unwrap();
    t["faults"].as_object().unwrap().iter().map(|(k, v)| (k.clone(), v.as_i64().unwrap())).collect()
}

fn count(pg: &PgCluster, db: &str, sql: &str) -> i64 {
    pg.psql(db, sql).parse().unwrap_or_else(|_| panic!("not a count: {sql}"))
}

#[test]
fn the_same_seed_loads_the_same_data() {
    let pg = shared();
    let (a, ra) = generate(pg, "11");
    let (b, rb) = generate(pg, "11");
    assert_eq!(ra["checksum"], rb["checksum"]);
    // The databases agree too, not just the generator's bytes.
    let digest = |db: &str| {
        pg.psql(db, "SELECT md5(string_agg(t::text, '|' ORDER BY t.id)) FROM dispatch_task t")
            + &pg.psql(
                db,
                "SELECT md5(string_agg(t::text, '|' ORDER BY t.id)) FROM dispatch_offer t",
            )
    };
    assert_eq!(digest(&a), digest(&b));
    let (_, rc) = generate(pg, "12");
    assert_ne!(ra["checksum"], rc["checksum"]);
}

#[test]
fn injected_faults_are_exactly_the_reported_ones() {
    let pg = shared();
    let (db, report) = generate(pg, "5");
    let rows: i64 = report["rows"].as_i64().unwrap();
    let in_db: i64 = report["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| count(pg, &db, &format!("SELECT count(*) FROM {}", t["table"].as_str().unwrap())))
        .sum();
    assert_eq!(in_db, rows);

    let f = faults(&report, "dispatch_order");
    assert_eq!(
        count(
            pg,
            &db,
            "SELECT count(*) FROM dispatch_order o WHERE NOT EXISTS (SELECT 1 FROM \
                dispatch_patient p WHERE p.id = o.patient_id)"
        ),
        f["orphan_fk"]
    );
    assert_eq!(
        count(pg, &db, "SELECT count(*) FROM dispatch_order WHERE total_cents < 0"),
        f["negative_amount"]
    );
    assert_eq!(
        count(
            pg,
            &db,
            "SELECT count(*) FROM dispatch_order WHERE lower(trim(status)) NOT IN \
                ('new','in_progress','shipped','delivered','cancelled')"
        ),
        f["invalid_enum"]
    );

    let f = faults(&report, "dispatch_offer");
    assert_eq!(
        count(
            pg,
            &db,
            "SELECT count(*) - count(DISTINCT (doctor_id, product_id)) FROM dispatch_offer"
        ),
        f["duplicate_unique"]
    );

    let f = faults(&report, "dispatch_case_state");
    assert_eq!(
        count(pg, &db, "SELECT count(*) FROM dispatch_case_state WHERE changed_at IS NULL"),
        f["null_required"]
    );
    assert_eq!(
        count(
            pg,
            &db,
            "SELECT count(*) FROM dispatch_case_state WHERE lower(state) NOT IN \
            ('submitted','planning','review','approved','manufacturing','shipped','closed')"
        ),
        f["invalid_enum"]
    );
    assert_eq!(
        count(
            pg,
            &db,
            "SELECT count(*) FROM dispatch_case_state s WHERE NOT EXISTS (SELECT 1 FROM \
                dispatch_case c WHERE c.id = s.case_id)"
        ),
        f["orphan_fk"]
    );

    let f = faults(&report, "dispatch_task");
    assert_eq!(
        count(pg, &db, "SELECT count(*) FROM dispatch_task WHERE title IS NULL"),
        f["null_required"]
    );
    assert_eq!(
        count(
            pg,
            &db,
            "SELECT count(*) FROM dispatch_task t WHERE NOT EXISTS (SELECT 1 FROM \
            dispatch_case c WHERE c.id = t.case_id)"
        ),
        f["orphan_fk"]
    );
    // Subtasks only point at tasks that exist.
    assert_eq!(
        count(
            pg,
            &db,
            "SELECT count(*) FROM dispatch_task t WHERE parent_task_id IS NOT \
        NULL AND NOT EXISTS (SELECT 1 FROM dispatch_task p WHERE p.id = t.parent_task_id)"
        ),
        0
    );

    let f = faults(&report, "auth_user");
    assert_eq!(
        count(
            pg,
            &db,
            "SELECT count(*) - count(DISTINCT lower(email)) FROM auth_user WHERE email \
            ~ '^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$'"
        ),
        f["email_case_collision"]
    );
    assert_eq!(
        count(
            pg,
            &db,
            "SELECT count(*) FROM auth_user WHERE email !~ '^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$'"
        ),
        f["malformed_email"]
    );

    let f = faults(&report, "dispatch_discount");
    assert_eq!(
        count(
            pg,
            &db,
            "SELECT count(*) FROM dispatch_discount WHERE offer_id IS NULL AND doctor_id IS NULL"
        ),
        f["null_required"]
    );
    assert_eq!(
        count(pg, &db, "SELECT count(*) FROM dispatch_discount WHERE valid_to <= valid_from"),
        f["date_out_of_range"]
    );
    assert_eq!(
        count(
            pg,
            &db,
            "SELECT count(*) FROM dispatch_discount WHERE percent < 0 OR amount_cents < 0"
        ),
        f["negative_amount"]
    );

    // Clean rows reference only parents that exist: no orphan beyond the reported ones.
    let f = faults(&report, "dispatch_system_message");
    assert_eq!(
        count(
            pg,
            &db,
            "SELECT count(*) FROM dispatch_system_message m WHERE NOT EXISTS (SELECT 1 \
            FROM dispatch_profile p WHERE p.id = m.recipient_id)"
        ),
        f["orphan_fk"]
    );
}

#[test]
fn the_target_schema_is_uuid_keyed_with_legacy_ids_and_metadata() {
    let pg = shared();
    let target = pg.create_db("modern");
    let source = pg.create_db("legacy");
    let out = agentctl(&[
        "--source", &source, "--target", &target, "dataset", "generate", "--scale", "0.001",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("the modern target schema is in place"), "{}", out.stdout);
    let db = target.rsplit('/').next().unwrap();
    let tables = pg.psql(db, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'");
    assert_eq!(tables, "25");
    let lacking = pg.psql(
        db,
        "SELECT string_agg(t.tablename, ',') FROM pg_tables t WHERE t.schemaname = 'public' AND NOT (
           EXISTS (SELECT 1 FROM information_schema.columns c WHERE c.table_name = t.tablename AND c.column_name = 'id' AND c.data_type = 'uuid')
           AND EXISTS (SELECT 1 FROM information_schema.columns c WHERE c.table_name = t.tablename AND c.column_name = 'legacy_id')
           AND EXISTS (SELECT 1 FROM information_schema.columns c WHERE c.table_name = t.tablename AND c.column_name = 'metadata' AND c.data_type = 'jsonb'))",
    );
    assert_eq!(lacking, "", "tables without uuid id, legacy_id or metadata");
    // The constraints that decide rejections are really there.
    pg.psql(
        db,
        "INSERT INTO technician_roles (id, legacy_id, name, level, is_active) VALUES \
        (gen_random_uuid(), 1, 'a', 3, true)",
    );
    let out = pg
        .psql_command(db)
        .args(["-v", "ON_ERROR_STOP=1", "-c"])
        .arg(
            "INSERT INTO technician_roles (id, legacy_id, name, level, is_active) VALUES \
            (gen_random_uuid(), 2, 'b', 11, true)",
        )
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("technician_roles_level_check"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Generating again over existing tables needs --replace.
    let out = agentctl(&["--source", &source, "dataset", "generate", "--scale", "0.001"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("pass --replace"), "{}", out.stderr);
}

#[test]
fn the_fault_report_needs_no_database_and_refuses_bad_profiles() {
    let out = agentctl(&["dataset", "faults", "--scale", "1.0", "--format", "json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let report: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(report["rows"], 3_477_321);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("faults.toml");
    std::fs::write(&file, "[dispatch_product]\norphan_fk = 0.1\n").unwrap();
    let out = agentctl(&["dataset", "faults", "--faults", file.to_str().unwrap()]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains("dispatch_product `orphan_fk`, which that table cannot carry"),
        "{}",
        out.stderr
    );
}

#[test]
fn the_demo_says_what_to_install_when_postgresql_is_missing() {
    let out = tests::agentctl_with(
        &["demo", "--data-dir", "/var/tmp/agentctl-demo-never"],
        &[("PG_BIN", "/nonexistent/bin")],
    );
    assert_eq!(out.code, 2, "{out:?}");
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(out.stderr.contains("apt-get install postgresql-15"), "{}", out.stderr);
    assert!(!std::path::Path::new("/var/tmp/agentctl-demo-never").exists());
}

/// Stops the demo's server however the test ends.
struct StopDemo(std::path::PathBuf);

impl Drop for StopDemo {
    fn drop(&mut self) {
        if let Ok((cluster, _)) = tools::cluster::DaemonCluster::open(&self.0) {
            let _ = cluster.stop();
        }
    }
}

#[test]
fn the_demo_runs_on_its_own_cluster_and_reuses_it() {
    let root = tempfile::Builder::new().prefix("agentctl-demo").tempdir_in("/var/tmp").unwrap();
    let dir = root.path().join("demo");
    let _stop = StopDemo(dir.clone());
    let dir_arg = dir.to_str().unwrap();
    let out = agentctl(&["demo", "--scale", "0.001", "--data-dir", dir_arg]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("PostgreSQL created"), "{}", out.stdout);
    assert!(out.stdout.contains("generating the reference dataset"), "{}", out.stdout);
    assert!(out.stdout.contains("Plan for \"migrate everything\""), "{}", out.stdout);
    assert!(out.stdout.contains("psql -h 127.0.0.1 -p"), "{}", out.stdout);
    assert!(out.stdout.contains("every source row is accounted for"), "{}", out.stdout);

    // An operator restarts the server by hand from another directory: pg_ctl starts it again
    // with the command line the demo gave it (postmaster.opts), which must not depend on where
    // the demo ran.
    let bin = tools::cluster::bin_dir().unwrap();
    let log = dir.join("restart.log");
    let restarted =
        tools::cluster::command(&bin.join("pg_ctl"), tools::cluster::server_user().unwrap())
            .arg("-D")
            .arg(dir.join("data"))
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", "60", "restart"])
            .current_dir("/")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
    assert!(
        restarted.success(),
        "pg_ctl restart from /: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );

    let out = agentctl(&["demo", "--scale", "0.001", "--data-dir", dir_arg]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains("PostgreSQL reused") && out.stdout.contains("already loaded"),
        "{}",
        out.stdout
    );
}
