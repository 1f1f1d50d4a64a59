//! The command-line contract: one clear line and the documented exit code for bad input, and
//! one JSON document for `--format json`.

use serde_json::Value;
use tests::{agentctl, shared};

#[test]
fn a_missing_database_is_a_configuration_error() {
    let out = agentctl(&["plan", "--goal", "migrate everything"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert_eq!(
        out.stderr.trim(),
        "agentctl: no target database configured: pass --target, or set TARGET_DATABASE_URL (or \
            TARGET_DB_HOST, TARGET_DB_NAME, ...) in the environment or .env"
    );
}

#[test]
fn an_unreachable_database_names_which_one_and_why() {
    let pg = shared();
    let target = pg.create_db("target");
    let out = agentctl(&[
        "--source",
        "postgres://postgres:pw@127.0.0.1:1/legacy",
        "--target",
        &target,
        "plan",
        "--goal",
        "x",
    ]);
    assert_eq!(out.code, 2, "{out:?}");
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(
        out.stderr.starts_with(
            "agentctl: connecting to the source database at 127.0.0.1:1/legacy: connection refused"
        ),
        "{}",
        out.stderr
    );
    let out = agentctl(&["--target", &pg.url("no_such_db"), "audit", "list"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains("target database")
            && out.stderr.contains("\"no_such_db\" does not exist"),
        "{}",
        out.stderr
    );
}

#[test]
fn bad_settings_in_the_env_file_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let env = dir.path().join("agentctl.env");
    std::fs::write(&env, "TARGET_DATABASE_URL=postgres://u@h/db\nBATCH_SIZE=many\n").unwrap();
    let out = agentctl(&["--env-file", env.to_str().unwrap(), "audit", "list"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains(r#"BATCH_SIZE="many" from "#)
            && out.stderr.contains("expected a whole number"),
        "{}",
        out.stderr
    );
}

#[test]
fn plan_orders_chinook_parents_first_and_prints_json() {
    let pg = shared();
    let (source, target) = pg.chinook_pair();
    let out = agentctl(&[
        "--source",
        &source,
        "--target",
        &target,
        "plan",
        "--goal",
        "migrate invoice lines",
        "--format",
        "json",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    let doc: Value = serde_json::from_str(&out.stdout).unwrap();
    let waves: Vec<Vec<&str>> = doc["plan"]["waves"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            w.as_array().unwrap().iter().map(|e| e["table"]["name"].as_str().unwrap()).collect()
        })
        .collect();
    // invoice_line needs invoice and track; invoice needs customer, which needs employee (whose
    // reports_to self-reference is deferred); track needs album, genre, media_type; album needs
    // artist.
    assert_eq!(
        waves,
        vec![
            vec!["artist", "employee", "genre", "media_type"],
            vec!["album", "customer"],
            vec!["invoice", "track"],
            vec!["invoice_line"]
        ]
    );
    assert_eq!(doc["hash"].as_str().unwrap().len(), 64);
}

#[test]
fn an_unknown_entity_suggests_the_closest_names() {
    let pg = shared();
    let (source, target) = pg.chinook_pair();
    // Bad usage (exit 2), as the README's contract says, for `plan` and for `run`.
    for command in ["plan", "run"] {
        let out = agentctl(
            &[
                "--source",
                &source,
                "--target",
                &target,
                command,
                "--goal",
                "migrate trakcs",
                "--yes",
            ][..if command == "plan" { 7 } else { 8 }],
        );
        assert_eq!(out.code, 2, "{out:?}");
        assert!(
            out.stderr.contains("no table matches `trakcs`")
                && out.stderr.contains("did you mean track"),
            "{}",
            out.stderr
        );
    }
}

/// A first look at a legacy database needs no target: `analyze` reads the source alone.
#[test]
fn the_source_is_analyzed_without_a_target() {
    let pg = shared();
    let source = pg.chinook();
    let out = tests::agentctl_with(&["--source", &source, "analyze"], &[]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains("(11 tables)") && out.stdout.contains("invoice_line"),
        "{}",
        out.stdout
    );
    assert!(out.stderr.contains("no target database is configured"), "{}", out.stderr);
}

/// A target without the modern schema is told how to make one, once, as bad configuration.
#[test]
fn a_target_without_a_schema_is_told_how_to_make_one() {
    let pg = shared();
    let source = pg.chinook();
    let target = pg.create_db("empty_target");
    let out = agentctl(&[
        "--source",
        &source,
        "--target",
        &target,
        "plan",
        "--goal",
        "migrate everything",
    ]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains(
            "has no tables to migrate into: create its schema first (`agentctl \
            schema generate --from-source --apply`"
        ),
        "{}",
        out.stderr
    );
}

#[test]
fn run_refuses_without_approval_when_nobody_can_be_asked() {
    let pg = shared();
    let (source, target) = pg.chinook_pair();
    let out =
        agentctl(&["--source", &source, "--target", &target, "run", "--goal", "migrate genres"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains("refusing to run plan") && out.stderr.contains("--yes"),
        "{}",
        out.stderr
    );
    let db = target.rsplit('/').next().unwrap();
    assert_eq!(pg.psql(db, "SELECT outcome FROM agentctl.runs WHERE command = 'run'"), "failed");
    assert!(
        pg.psql(
            db,
            "SELECT count(*) FROM agentctl.audit_events WHERE summary LIKE '%was not approved%'"
        ) == "1"
    );
}

#[test]
fn an_approval_holds_only_for_the_plan_it_was_given_for() {
    let pg = shared();
    let (source, target) = pg.chinook_pair();
    let out = agentctl(&[
        "--source",
        &source,
        "--target",
        &target,
        "run",
        "--goal",
        "migrate genres",
        "--approve",
        "0123456789abcdef",
    ]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr
            .contains("the plan changed since it was approved (approved 0123456789abcdef, now "),
        "{}",
        out.stderr
    );
    let plan = agentctl(&[
        "--source",
        &source,
        "--target",
        &target,
        "plan",
        "--goal",
        "migrate genres",
        "--format",
        "json",
    ]);
    let hash =
        serde_json::from_str::<Value>(&plan.stdout).unwrap()["hash"].as_str().unwrap().to_owned();
    let out = agentctl(&[
        "--source",
        &source,
        "--target",
        &target,
        "run",
        "--goal",
        "migrate genres",
        "--approve",
        &hash[..12],
    ]);
    assert!(!out.stderr.contains("changed since"), "{}", out.stderr);
    let db = target.rsplit('/').next().unwrap();
    assert_eq!(
        pg.psql(
            db,
            "SELECT count(*) FROM agentctl.audit_events WHERE summary LIKE \
        'approved plan % by its hash'"
        ),
        "1"
    );
}

#[test]
fn a_closed_pipe_ends_output_quietly() {
    // `agentctl dataset faults | head -1`: the reader goes away after one line.
    let mut child = std::process::Command::new(tests::agentctl_bin())
        .args(["dataset", "faults", "--scale", "1.0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// `bench` regenerates the reference dataset in the source and empties the target: pointed at
/// databases that hold anything else, it refuses before it touches them, and it never drops a
/// database of its clone's name that it did not make.
#[test]
fn bench_refuses_databases_it_would_overwrite() {
    let pg = shared();
    let (source, target) = (pg.create_db("bench_real_legacy"), pg.create_db("bench_real_modern"));
    let (s, t) = (source.rsplit('/').next().unwrap(), target.rsplit('/').next().unwrap());
    let bench = || {
        agentctl(&[
            "--source", &source, "--target", &target, "bench", "migrate", "--scale", "0.005",
            "--rounds", "1",
        ])
    };
    pg.psql(
        s,
        "CREATE TABLE dispatch_doctor (id int PRIMARY KEY); INSERT INTO dispatch_doctor VALUES (7)",
    );
    let out = bench();
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr
            .contains("the source holds 1 table(s) it did not generate (public.dispatch_doctor)"),
        "{}",
        out.stderr
    );
    pg.psql(s, "DROP TABLE dispatch_doctor");
    pg.psql(t, "CREATE TABLE ledger (id int); INSERT INTO ledger VALUES (1)");
    let out = bench();
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("the target holds 1 table(s)"), "{}", out.stderr);
    assert_eq!(pg.psql(t, "SELECT count(*) FROM ledger"), "1");
    pg.psql(t, "DROP TABLE ledger");
    if tests::on_path("pgcopydb").is_some() {
        let clone = format!("{t}_pgcopydb");
        pg.psql("postgres", &format!("CREATE DATABASE {clone}"));
        pg.psql(&clone, "CREATE TABLE kept (id int)");
        let out = bench();
        assert_ne!(out.code, 0, "{out:?}");
        assert!(out.stderr.contains("was not made by agentctl"), "{}", out.stderr);
        assert_eq!(pg.psql(&clone, "SELECT count(*) FROM kept"), "0", "still there");
    }
}

#[test]
fn bench_migrate_takes_turns_and_reports_the_round_of_median_ratio() {
    let pg = shared();
    let (source, target) = (pg.create_db("bench_legacy"), pg.create_db("bench_modern"));
    let out = agentctl(&[
        "--source", &source, "--target", &target, "bench", "migrate", "--scale", "0.005",
        "--rounds", "3", "--format", "json",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    let doc: Value = serde_json::from_str(&out.stdout).unwrap();
    let mut ratios: Vec<f64> =
        doc["rounds"].as_array().unwrap().iter().map(|r| r["ratio"].as_f64().unwrap()).collect();
    assert_eq!(ratios.len(), 3, "{doc}");
    ratios.sort_by(f64::total_cmp);
    assert_eq!(
        doc["ratio"].as_f64(),
        Some(ratios[1]),
        "the median round stands for the run: {doc}"
    );
    let agentctl = &doc["agentctl"];
    assert_eq!(
        (&agentctl["migrated"], &agentctl["rejected"]),
        (&agentctl["expected_migrated"], &agentctl["expected_rejected"]),
        "{doc}"
    );
    assert_eq!(doc["validation"]["passed"], true, "{doc}");
    // What the run cost the whole machine: at least agentctl's own CPU, the servers' beside it.
    let machine = agentctl["machine_cpu_seconds"].as_f64().unwrap_or_default();
    // (Both are counted in ticks of 10 ms: a tenth of a second either way.)
    assert!(machine > 0.0 && machine + 0.1 >= agentctl["cpu_seconds"].as_f64().unwrap(), "{doc}");
    // The validated run's too, and the databases' share of each: the machine's CPU less
    // agentctl's, which no work of agentctl's own takes away.
    let validated = doc["validated_run_machine_cpu_seconds"].as_f64().unwrap_or_default();
    let validated_cpu = doc["validated_run_cpu_seconds"].as_f64().unwrap_or_default();
    assert!(validated > 0.0 && validated + 0.1 >= validated_cpu, "{doc}");
    let servers = &doc["servers_cpu_seconds"];
    for (share, whole, own) in [
        (&servers["without_validation"], machine, agentctl["cpu_seconds"].as_f64().unwrap()),
        (&servers["validated"], validated, validated_cpu),
    ] {
        let share = share.as_f64().unwrap_or(-1.0);
        assert!(share > 0.0 && (share - (whole - own)).abs() < 1e-6, "{doc}");
    }
    // Beside pgcopydb, the tool users pick instead, when it is installed (CI installs it); the
    // bench says plainly when it is not.
    match tests::on_path("pgcopydb").is_some() {
        true => {
            let p = &doc["pgcopydb"];
            assert!(p["seconds"].as_f64().is_some_and(|s| s > 0.0), "{doc}");
            assert!(p["machine_cpu_seconds"].as_f64().is_some_and(|s| s > 0.0), "{doc}");
            assert_eq!(p["rounds"].as_array().map(Vec::len), Some(3), "{doc}");
            let (without, with) = (
                p["ratio_without_validation"].as_f64().unwrap(),
                p["ratio_with_validation"].as_f64().unwrap(),
            );
            assert!(without > 0.0 && with > 0.0, "{doc}");
            // Had agentctl cost nothing, the databases' share alone, spread over the cores.
            let floor = &p["ratio_if_agentctl_cost_nothing"];
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
            let seconds = p["seconds"].as_f64().unwrap();
            for (ratio, share) in [
                (&floor["without_validation"], &servers["without_validation"]),
                (&floor["validated"], &servers["validated"]),
            ] {
                let expected = share.as_f64().unwrap() / cores / seconds;
                assert!((ratio.as_f64().unwrap() - expected).abs() < 1e-9, "{doc}");
            }
            // pgcopydb makes the source's foreign keys as they are: the reference dataset's are
            // NOT VALID (it holds orphans), so the clone checks none of them.
            assert_eq!(
                (p["foreign_keys"].as_i64(), p["foreign_keys_validated"].as_i64()),
                (Some(37), Some(0)),
                "{doc}"
            );
        }
        false => assert!(
            doc["pgcopydb"].is_null() && out.stderr.contains("pgcopydb is not installed"),
            "{out:?}"
        ),
    }
}
