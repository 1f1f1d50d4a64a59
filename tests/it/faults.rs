//! A fault of the system is never a bad row: a write the target refuses for a reason that is
//! not the rows' own (a missing privilege, a full disk) stops the entity with the cause, records
//! no row as rejected, and `--resume` finishes the work once the cause is gone. Real clusters,
//! real grants, a real full file system.

use std::path::PathBuf;
use std::process::Command;

use tests::{agentctl, agentctl_on, committed, shared, spawn_run, PgCluster};

fn db_of(url: &str) -> &str {
    url.rsplit('/').next().unwrap()
}

/// A source of `rows` rows of about 200 bytes each, with a target generated from it.
fn pair(pg: &PgCluster, prefix: &str, rows: u32) -> (String, String) {
    let source = pg.create_db(prefix);
    pg.psql(
        db_of(&source),
        &format!(
            "CREATE TABLE author (id int PRIMARY KEY, name text NOT NULL);
             CREATE TABLE note (id int PRIMARY KEY, author_id int NOT NULL REFERENCES author (id), body text NOT NULL);
             INSERT INTO author SELECT i, 'author ' || i FROM generate_series(1, 50) i;
             INSERT INTO note SELECT i, 1 + i % 50, repeat(md5(i::text), 6) FROM generate_series(1, {rows}) i;"
        ),
    );
    let target = pg.create_db(&format!("{prefix}_target"));
    let out = agentctl(&[
        "--source",
        &source,
        "--target",
        &target,
        "schema",
        "generate",
        "--from-source",
        "--apply",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    (source, target)
}

/// A role that may log in, made once for the whole cluster (roles are not a database's).
fn login_role(pg: &PgCluster, name: &str) {
    pg.psql(
        "postgres",
        &format!(
            "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{name}') THEN \
                CREATE ROLE {name} LOGIN; END IF; END $$;"
        ),
    );
}

fn run_id(pg: &PgCluster, target: &str) -> String {
    pg.psql(
        db_of(target),
        "SELECT run_id FROM agentctl.runs WHERE command = 'run' ORDER BY started_at DESC LIMIT 1",
    )
}

/// A target database whose encoding cannot hold every character (LATIN1 here, with a € in the
/// source) is refused before anything is created in it: a run stopped at the first such value
/// before, unable to write it or to record its row as rejected.
#[test]
fn a_target_that_cannot_hold_every_character_is_refused_before_anything_changes() {
    let pg = shared();
    let source = pg.create_db("latin_source");
    pg.psql(
        db_of(&source),
        "CREATE TABLE price (id int PRIMARY KEY, label text NOT NULL);
         INSERT INTO price VALUES (1, 'cheap'), (2, '5 €');",
    );
    let t = "latin1_target";
    pg.psql(
        "postgres",
        &format!(
            "CREATE DATABASE {t} ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"
        ),
    );
    let target = pg.url(t);
    for args in [
        &["schema", "generate", "--from-source", "--apply"][..],
        &["run", "--goal", "migrate everything", "--yes"],
    ] {
        let out = agentctl_on(&source, &target, args);
        assert_eq!(out.code, 1, "{args:?}: {out:?}");
        assert!(
            out.stderr.contains(&format!(
                "the target database {t} stores text as LATIN1, which cannot hold every character \
                 a source may"
            )) && out.stderr.contains("nothing was changed"),
            "{args:?}: {}",
            out.stderr
        );
    }
    assert_eq!(
        pg.psql(t, "SELECT count(*) FROM pg_namespace WHERE nspname IN ('agentctl', 'public') AND EXISTS (SELECT 1 FROM pg_class WHERE relnamespace = pg_namespace.oid)"),
        "0",
        "nothing was created in the target"
    );
}

/// A role that may read and write but not INSERT into `note`, nor own the tables: the run
/// names every problem at once before it changes anything, rejects nothing, and once the
/// grants are there it runs to the end.
#[test]
fn missing_privileges_are_named_before_anything_changes() {
    let pg = shared();
    let (source, target) = pair(pg, "grant", 3_000);
    let t = db_of(&target);
    login_role(pg, "loader");
    pg.psql(
        t,
        &format!(
            "GRANT CONNECT, CREATE ON DATABASE {t} TO loader;
             GRANT USAGE ON SCHEMA public TO loader;
             GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO loader;
             REVOKE INSERT ON note FROM loader;"
        ),
    );
    let as_loader = target.replace("postgres@", "loader@");
    let run = |extra: &[&str]| {
        let mut args = vec![
            "--source",
            &source,
            "--target",
            &as_loader,
            "run",
            "--goal",
            "migrate everything",
            "--yes",
        ];
        args.extend_from_slice(extra);
        agentctl(&args)
    };
    // The control schema `schema generate` made as postgres.
    let out = run(&[]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains(
            "the target's agentctl schema belongs to postgres, and loader may not use it"
        ),
        "{}",
        out.stderr
    );
    pg.psql(
        t,
        "GRANT ALL ON SCHEMA agentctl TO loader; GRANT ALL ON ALL TABLES IN SCHEMA agentctl TO loader;
         GRANT ALL ON ALL SEQUENCES IN SCHEMA agentctl TO loader;",
    );
    // Every problem of the load at once, before anything is set aside or written.
    let out = run(&[]);
    assert_eq!(out.code, 1, "{out:?}");
    for said in [
        "nothing was changed; the load could not do what it must",
        "note: loader lacks INSERT on it (GRANT INSERT ON \"public\".\"note\" TO loader)",
        "author: owned by postgres, not loader, so its foreign keys and indexes cannot be set \
            aside for the load",
    ] {
        assert!(out.stderr.contains(said), "{said}: {}", out.stderr);
    }
    assert_eq!(
        pg.psql(t, "SELECT count(*) FROM agentctl.suspended_constraints"),
        "0",
        "nothing set aside"
    );
    assert_eq!(pg.psql(t, "SELECT count(*) FROM author"), "0", "nothing written");
    assert_eq!(pg.psql(t, "SELECT count(*) FROM agentctl.rejected_rows"), "0");

    pg.psql(t, "GRANT INSERT ON note TO loader");
    let out = run(&["--keep-constraints"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(pg.psql(t, "SELECT count(*) FROM note"), "3000");
    assert_eq!(pg.psql(t, "SELECT count(*) FROM agentctl.rejected_rows"), "0");
}

/// A file system that can be filled, and grown again: a small tmpfs (root only).
struct SmallDisk {
    dir: PathBuf,
}

impl SmallDisk {
    fn mount(megabytes: u32) -> Option<SmallDisk> {
        #[allow(unsafe_code)]
        // SAFETY: getuid has no preconditions.
        let root = unsafe { libc::getuid() } == 0;
        if !root {
            tests::unavailable(
                "CI runs as root: the full-disk test mounts a tmpfs",
                "mounting a small tmpfs for the full-disk test needs root",
            );
            return None;
        }
        let dir = tempfile::Builder::new().prefix("agentctl-disk").tempdir().unwrap().keep();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}M"), "tmpfs"])
            .arg(&dir)
            .status()
            .unwrap();
        assert!(ok.success(), "mount a tmpfs");
        let ok = Command::new("chown").arg("postgres").arg(&dir).status().unwrap();
        assert!(ok.success(), "chown the tmpfs to postgres");
        Some(SmallDisk { dir })
    }

    fn grow(&self, megabytes: u32) {
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,size={megabytes}M")])
            .arg(&self.dir)
            .status()
            .unwrap();
        assert!(ok.success(), "grow the tmpfs");
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// A target table on a tablespace that fills up mid-load: the run stops with the cause, no row
/// is rejected, the rows before the fault stay (their batches committed), and once there is
/// room `--resume` finishes with every row once.
#[test]
fn a_full_disk_stops_the_load_rejects_no_row_and_the_run_resumes() {
    let Some(disk) = SmallDisk::mount(2) else { return };
    let pg = shared();
    let (source, target) = pair(pg, "fulldisk", 30_000);
    let t = db_of(&target);
    let space = format!("small_{}", t);
    pg.psql("postgres", &format!("CREATE TABLESPACE {space} LOCATION '{}'", disk.dir.display()));
    pg.psql(t, &format!("ALTER TABLE note SET TABLESPACE {space}"));
    let run = |extra: &[&str]| {
        let mut args = vec![
            "--source",
            &source,
            "--target",
            &target,
            "run",
            "--goal",
            "migrate everything",
            "--yes",
        ];
        args.extend_from_slice(extra);
        agentctl(&args)
    };
    let out = run(&[]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr
            .contains("note: the target refused the batch for a reason that is not the rows' own"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("53100"), "the cause, a full disk: {}", out.stderr);
    assert_eq!(
        pg.psql(t, "SELECT count(*) FROM agentctl.rejected_rows"),
        "0",
        "no row is rejected for a full disk"
    );
    assert_eq!(pg.psql(t, "SELECT count(*) FROM author"), "50", "the table before the fault is in");

    disk.grow(64);
    let run_id = run_id(pg, &target);
    let out = run(&["--resume", &run_id]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(pg.psql(t, "SELECT count(*) FROM note"), "30000");
    assert_eq!(pg.psql(t, "SELECT count(*) FROM agentctl.rejected_rows"), "0");
    assert_eq!(
        pg.psql(t, "SELECT count(*) FROM agentctl.suspended_constraints"),
        "0",
        "nothing is left set aside"
    );
    // Leave the tablespace empty for the next test run on this cluster.
    pg.psql(t, "ALTER TABLE note SET TABLESPACE pg_default");
    pg.psql("postgres", &format!("DROP TABLESPACE {space}"));
}

/// One run writes to a target at a time: a second one, started while the first loads, is told
/// which run holds the target and since when (exit 2), and writes nothing; the first finishes
/// with every row once. Killed, a run is shown as interrupted with the command that carries it
/// on, and lets go of the target at once.
#[test]
fn a_second_writer_is_refused_and_a_killed_run_is_shown_interrupted() {
    let pg = shared();
    let (source, target, _) = pg.reference_pair("0.02");
    let t = db_of(&target).to_owned();
    let mut first = spawn_run(&source, &target);
    assert!(
        tests::wait_until(std::time::Duration::from_secs(180), || committed(pg, &t) >= 5),
        "the first run got under way"
    );
    let run = pg.psql(&t, "SELECT run_id FROM agentctl.runs WHERE command = 'run'");
    let second = agentctl(&[
        "--source",
        &source,
        "--target",
        &target,
        "run",
        "--goal",
        "migrate everything",
        "--yes",
    ]);
    assert_eq!(second.code, 2, "{second:?}");
    assert!(
        second
            .stderr
            .contains(&format!("another agentctl writes to this target (run {run}, since ")),
        "{}",
        second.stderr
    );
    assert_eq!(
        pg.psql(&t, "SELECT count(*) FROM agentctl.runs WHERE command = 'run'"),
        "1",
        "the second run recorded nothing"
    );

    first.kill().unwrap();
    first.wait().unwrap();
    let list = agentctl(&["--target", &target, "audit", "list"]);
    assert_eq!(list.code, 0, "{list:?}");
    let resume = format!("agentctl run --goal \"migrate everything\" --resume {run}");
    assert!(
        list.stdout.contains("interrupted") && list.stdout.contains(&resume),
        "{}",
        list.stdout
    );
    let status = agentctl(&["--target", &target, "status"]);
    assert!(status.stdout.contains(&resume), "{}", status.stdout);
    assert!(
        !status.stdout.contains(" running "),
        "no entity of a run whose program is gone is shown running: {}",
        status.stdout
    );
    // The chat says so first, and again when asked how it goes.
    let mut chat = Command::new(tests::agentctl_bin())
        .args(["--source", &source, "--target", &target, "chat"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(chat.stdin.as_mut().unwrap(), b"how is it going?\n").unwrap();
    let said = chat.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&said.stdout);
    assert_eq!(said.matches("The last migration stopped before it finished").count(), 2, "{said}");
    assert!(said.contains(&format!("To finish it, run: {resume}")), "{said}");
    assert!(
        !said.contains(": running —"),
        "no entity of a run whose program is gone is shown running: {said}"
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
        "--resume",
        &run,
    ]);
    assert_eq!(out.code, 0, "the killed run let go of the target: {out:?}");
    assert_eq!(pg.psql(&t, "SELECT count(*) FROM agentctl.suspended_constraints"), "0");
    let list = agentctl(&["--target", &target, "audit", "list"]);
    assert!(!list.stdout.contains("interrupted"), "{}", list.stdout);
}

/// A restart of the target while the plan is being made (its forecast reading every source
/// row), the server down for longer than a connection is waited for, is outlived as one during
/// the load is: the plan is made, and its trail, kept while the target was away, is whole.
#[test]
fn planning_outlives_a_restart_of_the_target() {
    let target_pg = PgCluster::start().unwrap();
    let source = shared().create_db("legacy");
    let target = target_pg.create_db("modern");
    let generated = agentctl(&[
        "--source", &source, "--target", &target, "dataset", "generate", "--scale", "0.2",
    ]);
    assert_eq!(generated.code, 0, "{generated:?}");
    let db = db_of(&target).to_owned();
    let mut child = Command::new(tests::agentctl_bin())
        .args(["--source", &source, "--target", &target, "plan", "--goal", "migrate everything"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let forecasting = |pg: &PgCluster| {
        pg.try_psql(
            &db,
            "SELECT count(*) FROM agentctl.audit_events e JOIN agentctl.runs r USING (run_id)
             WHERE r.command = 'plan' AND e.summary LIKE '%asked the schema analysis agent to forecast'",
        )
        .is_some_and(|n| n == "1")
    };
    assert!(
        tests::wait_until(std::time::Duration::from_secs(120), || forecasting(&target_pg)),
        "the plan got to its forecast"
    );
    let started_at = |pg: &PgCluster| pg.psql(&db, "SELECT pg_postmaster_start_time()");
    let before = started_at(&target_pg);
    let target_pg = target_pg.restart_after(DOWN).unwrap();
    assert_ne!(started_at(&target_pg), before, "the target server restarted");
    assert!(
        child.try_wait().unwrap().is_none(),
        "the plan was still going when the server came back"
    );
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) =
        (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("I will copy"), "the plan is shown: {stdout}");
    let verified = agentctl(&["--target", &target, "audit", "verify"]);
    assert_eq!(verified.code, 0, "{verified:?}");
    let ends = target_pg.psql(
        &db,
        "SELECT count(*) FROM agentctl.audit_events e JOIN agentctl.runs r USING (run_id) WHERE \
            r.command = 'plan' AND e.summary = 'run ended: planned'",
    );
    assert_eq!(ends, "1", "the trail is whole to its end");
}

/// How long the restarted servers below stay down: longer than a connection is waited for
/// (15 s), so that outliving it takes trying again, not only waiting.
const DOWN: std::time::Duration = std::time::Duration::from_secs(17);

/// The catalog reads at the start of every plan outlive their server going away for a while:
/// each read is tried again while the server restarts, and the report is read whole.
#[tokio::test(flavor = "multi_thread")]
async fn a_catalog_read_outlives_a_restart_of_its_server() {
    use runtime::ports::Catalog;
    let pg = PgCluster::start().unwrap();
    let url = pg.create_db("catalog");
    pg.psql(db_of(&url), "CREATE TABLE t (id int PRIMARY KEY, name text)");
    let db =
        runtime::config::DbUrl::parse(runtime::config::DbRole::Target, &url, "the test").unwrap();
    let catalog = tools::catalog::PgCatalog::new(
        tools::pg::connect(&db, 2).await.unwrap(),
        "the restarted server",
    );
    assert_eq!(catalog.introspect(false).await.unwrap().tables.len(), 1);
    let port = pg.port;
    let restarting = std::thread::spawn(move || pg.restart_after(DOWN));
    let down = || std::net::TcpStream::connect(("127.0.0.1", port)).is_err();
    assert!(tests::wait_until(std::time::Duration::from_secs(30), down), "the server went down");
    let report = catalog.introspect(false).await;
    let pg = restarting.join().unwrap().unwrap();
    assert_eq!(
        report.map(|r| r.tables.len()),
        Ok(1),
        "read while the server was down, then again once it was back"
    );
    drop(pg);
}

/// A grant taken away while a table loads (after the preflight found it): the batch it refuses
/// is not written, no row is rejected for it, the run stops with the cause, and once the grant
/// is back `--resume` finishes the table with every row once.
#[test]
fn a_grant_revoked_mid_load_stops_the_run_rejects_no_row_and_the_run_resumes() {
    let pg = shared();
    let (source, target) = pair(pg, "revoked", 30_000);
    let t = db_of(&target).to_owned();
    login_role(pg, "reloader");
    pg.psql(
        &t,
        &format!(
            "GRANT CONNECT, CREATE ON DATABASE {t} TO reloader; GRANT USAGE ON SCHEMA public TO reloader;
             GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO reloader;
             GRANT ALL ON SCHEMA agentctl TO reloader; GRANT ALL ON ALL TABLES IN SCHEMA agentctl TO reloader;
             GRANT ALL ON ALL SEQUENCES IN SCHEMA agentctl TO reloader;"
        ),
    );
    let as_loader = target.replace("postgres@", "reloader@");
    let args = [
        "--source",
        &source,
        "--target",
        &as_loader,
        "run",
        "--goal",
        "migrate everything",
        "--yes",
        "--keep-constraints",
    ];
    let child = Command::new(tests::agentctl_bin())
        .args(args)
        .env("BATCH_SIZE", "250")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let notes = || {
        pg.try_psql(&t, "SELECT count(*) FROM note")
            .and_then(|n| n.parse::<i64>().ok())
            .unwrap_or(0)
    };
    assert!(
        tests::wait_until(std::time::Duration::from_secs(120), || notes() >= 2_500),
        "note got under way"
    );
    pg.psql(&t, "REVOKE INSERT ON note FROM reloader");
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr
            .contains("note: the target refused the batch for a reason that is not the rows' own"),
        "{stderr}"
    );
    assert!(stderr.contains("42501"), "the cause, a missing privilege: {stderr}");
    assert!(!stderr.contains("does not balance"), "{stderr}");
    assert_eq!(
        pg.psql(&t, "SELECT count(*) FROM agentctl.rejected_rows"),
        "0",
        "no row is rejected for a missing grant"
    );
    let loaded = notes();
    assert!(loaded < 30_000 && loaded % 250 == 0, "whole batches only: {loaded}");

    pg.psql(&t, "GRANT INSERT ON note TO reloader");
    let run_id = run_id(pg, &target);
    let resume = format!(
        "once the cause is fixed, carry it on with: agentctl run --goal \
        \"migrate everything\" --resume {run_id}"
    );
    assert!(stderr.contains(&resume), "{stderr}");
    let mut resumed = args.to_vec();
    resumed.extend_from_slice(&["--resume", &run_id]);
    let out = agentctl(&resumed);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(notes(), 30_000);
    assert_eq!(pg.psql(&t, "SELECT count(*) FROM agentctl.rejected_rows"), "0");
    let out = agentctl(&["--source", &source, "--target", &target, "validate"]);
    assert_eq!(out.code, 0, "{out:?}");
}

/// A read cut off in the middle of its COPY (its future dropped, as when a run stops or a
/// worker fails and is started again) does not hand its connection, mid-protocol, to the next
/// read of the pool: that read once failed with "expected CopyOutResponse, got ReadyForQuery"
/// and stood in the run's error for the fault that stopped it.
#[tokio::test(flavor = "multi_thread")]
async fn a_read_cut_off_mid_copy_leaves_no_broken_connection_to_the_next() {
    use runtime::ports::Rows;
    let pg = shared();
    let url = pg.create_db("cut_off");
    pg.psql(
        db_of(&url),
        "CREATE TABLE big AS SELECT g AS id, repeat('x', 200) AS body FROM generate_series(1, 100000) g",
    );
    let db =
        runtime::config::DbUrl::parse(runtime::config::DbRole::Source, &url, "the test").unwrap();
    // One connection: the second read gets the one the first was cut off on, if it is kept.
    let rows = tools::rows::PgRows::new(tools::pg::connect(&db, 1).await.unwrap());
    let scan = runtime::domain::Scan::plain(
        runtime::domain::TableName::new("public", "big"),
        vec!["id".into(), "body".into()],
        vec!["id".into()],
    );
    let under_way = tokio::sync::Notify::new();
    let mut seen = 0u64;
    let mut note = |_: &[Option<&str>]| {
        seen += 1;
        if seen == 1_000 {
            under_way.notify_one();
        }
    };
    tokio::select! {
        read = rows.scan(&scan, &mut note) => panic!("the read was to be cut off, it ended: {read:?}"),
        () = under_way.notified() => {}
    }
    let mut count = 0u64;
    let read = rows.scan(&scan, &mut |_: &[Option<&str>]| count += 1).await;
    assert_eq!(read.map_err(|e| e.to_string()), Ok(100_000));
    assert_eq!(count, 100_000);
}

/// A source table whose row-level security hides rows from the role agentctl reads as: the run
/// stops on it with the server's reason, instead of migrating, and validating, the rows it was
/// shown (a quarter of them here) as if they were all.
#[test]
fn rows_hidden_by_row_level_security_stop_the_run_instead_of_being_left_behind() {
    let pg = shared();
    let (source, target) = pair(pg, "rls", 1_000);
    let s = db_of(&source);
    login_role(pg, "tenant_reader");
    pg.psql(
        s,
        "GRANT SELECT ON ALL TABLES IN SCHEMA public TO tenant_reader;
         ALTER TABLE note ENABLE ROW LEVEL SECURITY;
         CREATE POLICY three_in_four ON note FOR SELECT USING (id % 4 <> 0);",
    );
    let as_reader = source.replace("postgres@", "tenant_reader@");
    let out = agentctl_on(&as_reader, &target, &["run", "--goal", "migrate everything", "--yes"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr
            .contains("query would be affected by row-level security policy for table \"note\""),
        "{}",
        out.stderr
    );
    let t = db_of(&target);
    assert_eq!(pg.psql(t, "SELECT count(*) FROM note"), "0", "none of the rows it was shown");
    assert_eq!(pg.psql(t, "SELECT count(*) FROM agentctl.rejected_rows"), "0");
}

/// A CHECK of the target that only the server can judge (`%` is not read by agentctl), refused
/// by one row in seven of a 20,000-row batch: the careful path finds each refused row, records
/// it with the server's reason and writes the rest. Each range it tried and kept used to hold a
/// lock until the commit; thousands of them ran the server out of shared memory for locks, and
/// the batch was retried from the start without end.
#[test]
fn a_batch_with_a_refused_row_in_every_few_is_written_in_one_pass() {
    let pg = shared();
    let (source, target) = pg.generated_pair(
        "refused_often",
        "CREATE TABLE item (id int PRIMARY KEY, n int NOT NULL);
         INSERT INTO item SELECT i, i FROM generate_series(1, 20000) i;",
    );
    let with = |args: &[&str]| agentctl_on(&source, &target, args);
    let t = db_of(&target);
    pg.psql(t, "ALTER TABLE item ADD CONSTRAINT not_three CHECK (n % 7 <> 3)");
    let out = with(&["run", "--goal", "migrate everything", "--yes"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(pg.psql(t, "SELECT count(*) FROM item"), "17143");
    assert_eq!(
        pg.psql(t, "SELECT count(*), count(DISTINCT legacy_key) FROM agentctl.rejected_rows"),
        "2857|2857"
    );
    assert_eq!(
        pg.psql(t, "SELECT DISTINCT reason FROM agentctl.rejected_rows"),
        "item: the target refused the row: new row for relation \"item\" violates check \
            constraint \"not_three\" (SQLSTATE 23514)"
    );
    assert_eq!(
        pg.psql(t, "SELECT count(*) FROM agentctl.rejected_rows WHERE legacy_key::int % 7 <> 3"),
        "0",
        "only the rows the CHECK refuses"
    );
}
