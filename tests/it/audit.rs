//! The audit trail: complete, verifiable, tamper-evident, and free of secrets.

use agentctl::session::{Connections, Session, SessionOptions};
use serde_json::{json, Value};
use tests::{agentctl, shared, PgCluster};

/// A target database holding the trail of one `plan` run over Chinook; returns its URL, its
/// name and the run id.
fn planned_run(pg: &PgCluster) -> (String, String, String) {
    let (source, target) = pg.chinook_pair();
    let out = agentctl(&[
        "--source",
        &source,
        "--target",
        &target,
        "plan",
        "--goal",
        "migrate tracks",
        "--format",
        "json",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    let doc: Value =
        serde_json::from_str(&out.stdout).expect("plan --format json prints one JSON document");
    let db = target.rsplit('/').next().unwrap().to_owned();
    (target, db, doc["run_id"].as_str().unwrap().to_owned())
}

fn verify(target: &str, run: &str) -> tests::Output {
    agentctl(&["--target", target, "audit", "verify", run])
}

/// Edits the trail as someone with superuser rights would: around the append-only trigger.
fn tamper(pg: &PgCluster, db: &str, sql: &str) {
    pg.psql(
        db,
        &format!(
            "BEGIN; ALTER TABLE agentctl.audit_events DISABLE TRIGGER USER; {sql}; ALTER \
            TABLE agentctl.audit_events ENABLE TRIGGER USER; COMMIT;"
        ),
    );
}

#[test]
fn a_plan_leaves_a_complete_trail_that_verifies() {
    let pg = shared();
    let (target, db, run) = planned_run(pg);
    let out = verify(&target, &run);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains(&format!("run {run}: intact")), "{}", out.stdout);

    // Messages both ways, the planner's decision with its rationale, and the catalog tool call.
    let kinds = pg.psql(
        &db,
        &format!(
            "SELECT string_agg(DISTINCT agent || ':' || kind, ' ' ORDER \
        BY agent || ':' || kind) FROM agentctl.audit_events WHERE run_id = '{run}'"
        ),
    );
    for expected in [
        "operator:message",
        "orchestrator:message",
        "planning:decision",
        "schema_analysis:tool",
        "schema_analysis:message",
        "schema_analysis:decision",
        "data_mapping:decision",
        "operator:run",
        "guidance:decision",
    ] {
        assert!(kinds.contains(expected), "missing {expected} in {kinds}");
    }
    let out = agentctl(&[
        "--target",
        &target,
        "audit",
        "show",
        &run[..8],
        "--agent",
        "planning",
        "--kind",
        "decision",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("planned 5 entities in 3 waves"), "{}", out.stdout);
    assert!(
        out.stdout.contains("why: album is included because track references it"),
        "{}",
        out.stdout
    );

    // Every message carries run id, sequence number, sender, receiver and correlation id.
    let meta = pg.psql(
        &db,
        &format!(
            "SELECT detail FROM agentctl.audit_events WHERE run_id = '{run}' \
            AND kind = 'message' ORDER BY seq LIMIT 1"
        ),
    );
    let meta: Value = serde_json::from_str(&meta).unwrap();
    assert_eq!(meta["meta"]["run_id"], json!(run));
    for key in ["seq", "sender", "receiver", "correlation_id"] {
        assert!(!meta["meta"][key].is_null(), "message meta lacks {key}: {meta}");
    }

    let out = agentctl(&["--target", &target, "audit", "list", "--format", "json"]);
    let runs: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(runs[0]["run_id"], json!(run));
    assert_eq!(runs[0]["outcome"], json!("planned"));

    let out = agentctl(&["--target", &target, "audit", "export", &run]);
    let lines: Vec<Value> =
        out.stdout.lines().map(|l| serde_json::from_str(l).expect("each line is JSON")).collect();
    assert_eq!(
        lines.len().to_string(),
        pg.psql(&db, &format!("SELECT count(*) FROM agentctl.audit_events WHERE run_id = '{run}'"))
    );
    let out = agentctl(&["--target", &target, "audit", "export", &run, "--format", "html"]);
    assert!(
        out.stdout.starts_with("<!doctype html>") && out.stdout.contains("intact: "),
        "{}",
        &out.stdout[..200.min(out.stdout.len())]
    );
}

/// The audit page of a migration with rejections, read in a real browser with JavaScript off:
/// its first screen is the summary (goal, plan, approval, outcome, rows, validation, model,
/// chain), every event is on the page grouped by phase, and the rejections stand out.
#[test]
fn the_audit_page_reads_in_a_browser_with_javascript_off() {
    let Some(chromium) = tests::chromium() else { return };
    let pg = shared();
    let (source, target, _) = pg.reference_pair("0.005");
    let out = agentctl(&[
        "--source",
        &source,
        "--target",
        &target,
        "run",
        "--goal",
        "migrate everything",
        "--yes",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    let db = target.rsplit('/').next().unwrap();
    let run = pg.psql(db, "SELECT run_id FROM agentctl.runs WHERE command = 'run'");
    let html = agentctl(&["--target", &target, "audit", "export", &run, "--format", "html"]);
    assert_eq!(html.code, 0, "{html:?}");
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("audit.html");
    std::fs::write(&page, &html.stdout).unwrap();
    let url = format!("file://{}", page.display());
    let browse = |args: &[&str]| {
        let out = std::process::Command::new(&chromium)
            .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-javascript"])
            .args(args)
            .arg(&url)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let dom = browse(&["--dump-dom"]);
    let approval = pg.psql(
        db,
        &format!(
            "SELECT summary FROM agentctl.audit_events WHERE run_id = '{run}' \
            AND summary LIKE 'approved plan %'"
        ),
    );
    let rejected =
        pg.psql(db, &format!("SELECT count(*) FROM agentctl.rejected_rows WHERE run_id = '{run}'"));
    for said in [
        "<th>Goal</th><td class=\"\">migrate everything</td>".to_owned(),
        format!("<th>Approval</th><td class=\"\">{approval} by "),
        "<th>Outcome</th><td class=\"good\">succeeded</td>".to_owned(),
        format!(" migrated and {rejected} rejected of "),
        "every row accounted for".to_owned(),
        "<th>Audit chain</th><td class=\"good mono\">intact: ".to_owned(),
        "<tr class=\"reject\">".to_owned(),
    ] {
        assert!(dom.contains(&said), "the page says {said}");
    }
    // The summary comes before the timeline, and every event is in the timeline.
    assert!(dom.find("Audit chain").unwrap() < dom.find("Timeline, by phase").unwrap());
    let events =
        pg.psql(db, &format!("SELECT count(*) FROM agentctl.audit_events WHERE run_id = '{run}'"));
    assert_eq!(
        dom.matches(" data-agent=").count().to_string(),
        events,
        "every event is rendered in the HTML"
    );
    for phase in ["Analysis", "Mapping", "Planning", "Approval", "Execution", "Validation"] {
        assert!(dom.contains(&format!("<summary>{phase} <span")), "the {phase} phase");
    }
    // A screenshot of the first screen: a page was drawn.
    let shot = dir.path().join("audit.png");
    browse(&[&format!("--screenshot={}", shot.display()), "--window-size=1280,1000"]);
    assert!(std::fs::metadata(&shot).unwrap().len() > 20_000, "the screenshot shows a page");
}

#[test]
fn the_trail_is_append_only_for_ordinary_statements() {
    let pg = shared();
    let (_, db, run) = planned_run(pg);
    let out = pg
        .psql_command(&db)
        .args(["-v", "ON_ERROR_STOP=1", "-c"])
        .arg(format!("UPDATE agentctl.audit_events SET summary = 'x' WHERE run_id = '{run}'"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("append-only"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn an_edited_event_is_named() {
    let pg = shared();
    let (target, db, run) = planned_run(pg);
    tamper(
        pg,
        &db,
        &format!(
            "UPDATE agentctl.audit_events SET summary = summary || ' (edited)' \
        WHERE run_id = '{run}' AND seq = 5"
        ),
    );
    let out = verify(&target, &run);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stdout.contains("TAMPERED at event #5: its contents do not match its hash"),
        "{}",
        out.stdout
    );
    assert!(out.stderr.contains("does not verify"), "{}", out.stderr);
}

#[test]
fn a_deleted_event_is_named() {
    let pg = shared();
    let (target, db, run) = planned_run(pg);
    tamper(
        pg,
        &db,
        &format!("DELETE FROM agentctl.audit_events WHERE run_id = '{run}' AND seq = 4"),
    );
    let out = verify(&target, &run);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stdout.contains("TAMPERED at event #4: expected event #4 here"), "{}", out.stdout);
}

#[test]
fn reordered_events_are_named() {
    let pg = shared();
    let (target, db, run) = planned_run(pg);
    // Swap #2 and #3 through a free sequence number.
    tamper(
        pg,
        &db,
        &format!(
            "UPDATE agentctl.audit_events SET seq = 1000000 WHERE run_id = '{run}' AND seq = 2; \
             UPDATE agentctl.audit_events SET seq = 2 WHERE run_id = '{run}' AND seq = 3; \
             UPDATE agentctl.audit_events SET seq = 3 WHERE run_id = '{run}' AND seq = 1000000"
        ),
    );
    let out = verify(&target, &run);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stdout.contains("TAMPERED at event #2"), "{}", out.stdout);
}

#[test]
fn a_removed_tail_is_named() {
    let pg = shared();
    let (target, db, run) = planned_run(pg);
    let count: i64 = pg
        .psql(&db, &format!("SELECT count(*) FROM agentctl.audit_events WHERE run_id = '{run}'"))
        .parse()
        .unwrap();
    tamper(
        pg,
        &db,
        &format!(
            "DELETE FROM agentctl.audit_events WHERE run_id = '{run}' AND seq > {}",
            count - 2
        ),
    );
    let out = verify(&target, &run);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stdout.contains(&format!(
            "TAMPERED at event #{}: the run recorded {count} events",
            count - 1
        )),
        "{}",
        out.stdout
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_never_reach_the_trail() {
    let pg = shared();
    let secret = "Sup3r-Secret-Pw";
    // Trust authentication ignores the password, so the URL connects and still carries it.
    let source = pg.chinook().replace("postgres@", &format!("postgres:{secret}@"));
    let target = pg.create_db("target").replace("postgres@", &format!("postgres:{secret}@"));
    let config = tests::config(&source, &target);
    let conns = Connections::open(&config, true).await.unwrap();
    let session = Session::start(
        &conns,
        "plan",
        Some("migrate tracks"),
        conns.tools().unwrap(),
        SessionOptions::from_config(&config),
    )
    .await
    .unwrap();
    session.operator_decision(
        format!("connected with {secret}"),
        format!("retrying with PGPASSWORD={secret} after postgres://app:other-pw@db/x failed"),
        json!({"password": "plain", "api_key": "sk-abcdefghijklmnopqrstuv", "url": target}),
    );
    let (store, run_id) = (session.store.clone(), session.run_id);
    session.finish("succeeded", None).await.unwrap();

    let events = store.events(run_id, &Default::default()).await.unwrap();
    let all: String = events.iter().map(|e| format!("{} {}\n", e.summary, e.detail)).collect();
    for leak in [secret, "other-pw", "plain", "sk-abcdefghijklmnopqrstuv"] {
        assert!(!all.contains(leak), "`{leak}` reached the trail:\n{all}");
    }
    assert!(all.contains("connected with ***"), "{all}");
}

/// A trail cut at its end, with the run's head rewritten to match, verifies on its own; the
/// head `run` printed, kept elsewhere, tells it.
#[test]
fn a_trail_cut_at_its_end_is_told_by_the_head_kept_elsewhere() {
    let pg = shared();
    let (source, target) = pg.chinook_pair();
    let out = agentctl(&[
        "--source",
        &source,
        "--target",
        &target,
        "run",
        "--goal",
        "migrate artists",
        "--yes",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    let line = out
        .stdout
        .lines()
        .find(|l| l.starts_with("Audit trail head: "))
        .unwrap_or_else(|| panic!("the head is printed: {}", out.stdout));
    let head =
        line.trim_start_matches("Audit trail head: ").split_whitespace().next().unwrap().to_owned();
    let db = target.rsplit('/').next().unwrap();
    let run = pg.psql(db, "SELECT run_id FROM agentctl.runs WHERE command = 'run'");
    let ok = agentctl(&["--target", &target, "audit", "verify", &run, "--expect-head", &head]);
    assert_eq!(ok.code, 0, "{ok:?}");

    // A run that wrote nothing but its trail (a plan), removed whole, is named by the run
    // ledger; with its ledger entries removed too, by the ledger's head kept elsewhere.
    let plan =
        agentctl(&["--source", &source, "--target", &target, "plan", "--goal", "migrate artists"]);
    assert_eq!(plan.code, 0, "{plan:?}");
    let all = agentctl(&["--target", &target, "audit", "verify"]);
    assert_eq!(all.code, 0, "{all:?}");
    let ledger_head = all
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("run ledger: intact, "))
        .and_then(|l| l.split("head ").nth(1))
        .unwrap()
        .to_owned();
    let planned = pg.psql(db, "SELECT run_id FROM agentctl.runs WHERE command = 'plan'");
    let remove = |also: &str| {
        pg.psql(
            db,
            &format!(
                "BEGIN; SET session_replication_role = replica; DELETE FROM agentctl.audit_events WHERE run_id = '{planned}';
                 DELETE FROM agentctl.runs WHERE run_id = '{planned}'; {also} COMMIT;"
            ),
        )
    };
    remove("");
    let all = agentctl(&["--target", &target, "audit", "verify"]);
    assert_eq!(all.code, 1, "{all:?}");
    assert!(
        all.stdout.contains(&format!("run {planned}: REMOVED: named by agentctl.run_ledger")),
        "{}",
        all.stdout
    );
    remove(&format!("DELETE FROM agentctl.run_ledger WHERE run_id = '{planned}';"));
    assert_eq!(
        agentctl(&["--target", &target, "audit", "verify"]).code,
        0,
        "on its own, the ledger cut at its end is consistent"
    );
    let kept = agentctl(&["--target", &target, "audit", "verify", "--expect-head", &ledger_head]);
    assert_eq!(kept.code, 1, "{kept:?}");
    assert!(
        kept.stderr.contains(&format!("not at the head {ledger_head} you kept")),
        "{}",
        kept.stderr
    );

    tamper(
        pg,
        db,
        &format!(
            "DELETE FROM agentctl.audit_events WHERE run_id = '{run}' AND seq = \
        (SELECT max(seq) FROM agentctl.audit_events WHERE run_id = '{run}')"
        ),
    );
    pg.psql(
        db,
        &format!(
            "UPDATE agentctl.runs SET event_count = event_count - 1,
               head_hash = (SELECT hash FROM agentctl.audit_events WHERE run_id = '{run}' ORDER BY seq DESC LIMIT 1) WHERE run_id = '{run}'"
        ),
    );
    // On its own the cut trail is consistent; the ledger recorded where it ended.
    let alone = verify(&target, &run);
    assert_eq!(alone.code, 1, "{alone:?}");
    assert!(
        alone.stdout.contains("its trail no longer passes through the head it was ended at"),
        "{}",
        alone.stdout
    );
    let cut = agentctl(&["--target", &target, "audit", "verify", &run, "--expect-head", &head]);
    assert_eq!(cut.code, 1, "{cut:?}");
    assert!(
        cut.stderr
            .contains(&format!("not at the head {head} you kept: it was rewritten or cut since")),
        "{}",
        cut.stderr
    );
    // Removed whole (its record and events, around the keys that name it), the run is missed
    // by the rows it wrote.
    let other = &run;
    pg.psql(
        db,
        &format!(
            "BEGIN; SET session_replication_role = replica; ALTER TABLE agentctl.audit_events DISABLE TRIGGER USER;
             DELETE FROM agentctl.audit_events WHERE run_id = '{other}'; DELETE FROM agentctl.runs WHERE run_id = '{other}';
             ALTER TABLE agentctl.audit_events ENABLE TRIGGER USER; COMMIT;"
        ),
    );
    let all = agentctl(&["--target", &target, "audit", "verify"]);
    assert_eq!(all.code, 1, "{all:?}");
    assert!(all.stdout.contains(&format!("run {other}: REMOVED")), "{}", all.stdout);
}
