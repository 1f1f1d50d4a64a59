//! The Docker sandbox against the real engine: every isolation it promises, tried by code that
//! attempts to break it, and the containers' lifecycle (pool, outside kills, reaping).

use std::time::Duration;

use sandbox::{Config, Error, Job, Lang, Limit, Limits, Sandbox};

/// A sandbox with the given limits and no pool (each test makes what it uses).
async fn sandbox_with(limits: Limits) -> Option<Sandbox> {
    let image = tests::sandbox_image()?;
    Some(
        Sandbox::connect(Config { image, limits, pool_size: 0, ..Config::default() })
            .await
            .expect("the sandbox connects"),
    )
}

async fn run(sandbox: &Sandbox, lang: Lang, code: &str) -> sandbox::Outcome {
    let outcome = sandbox.run(&Job::new(lang, code)).await.expect("the job runs");
    eprintln!(
        "exit {:?} limits {:?}\nstdout: {}\nstderr: {}",
        outcome.exit_code, outcome.limits_hit, outcome.stdout, outcome.stderr
    );
    outcome
}

#[tokio::test]
async fn code_runs_unprivileged_with_its_inputs_and_returns_its_files() {
    let Some(sandbox) = sandbox_with(Limits::default()).await else { return };
    let mut job = Job::new(
        Lang::Python,
        r#"
import json, sys
rows = json.load(open("rows.json"))
extra = sys.stdin.read()
status = dict(l.split(":\t", 1) for l in open("/proc/self/status").read().splitlines() if ":\t" in l)
print(json.dumps({"uid": status["Uid"].split()[0], "cap_eff": status["CapEff"].strip(),
                  "no_new_privs": status["NoNewPrivs"].strip(), "rows": len(rows), "stdin": extra}))
with open("out/upper.json", "w") as f:
    json.dump([r["name"].upper() for r in rows], f)
print("a warning", file=sys.stderr)
"#,
    );
    job.files.push(("rows.json".into(), br#"[{"name": "ada"}, {"name": "grace"}]"#.to_vec()));
    job.stdin = b"from stdin".to_vec();
    let outcome = sandbox.run(&job).await.unwrap();
    assert!(outcome.success(), "{outcome:?}");
    let report: serde_json::Value = serde_json::from_str(outcome.stdout.trim()).unwrap();
    assert_eq!(report["uid"], "10001", "not root");
    assert_eq!(report["cap_eff"], "0000000000000000", "no capabilities");
    assert_eq!(report["no_new_privs"], "1");
    assert_eq!(report["rows"], 2);
    assert_eq!(report["stdin"], "from stdin");
    assert_eq!(outcome.stderr.trim(), "a warning");
    assert_eq!(outcome.files, vec![("upper.json".to_owned(), br#"["ADA", "GRACE"]"#.to_vec())]);
    assert!(outcome.limits_hit.is_empty());
    sandbox.shutdown().await;
}

#[tokio::test]
async fn network_access_is_refused() {
    let Some(sandbox) = sandbox_with(Limits::default()).await else { return };
    let outcome = run(
        &sandbox,
        Lang::Python,
        r#"
import socket, os
for host, port in [("1.1.1.1", 53), ("172.17.0.1", 2375), ("deb.debian.org", 80)]:
    try:
        socket.create_connection((host, port), timeout=2)
        print("CONNECTED", host)
    except OSError as e:
        print("refused", host, type(e).__name__)
print("interfaces", sorted(os.listdir("/sys/class/net")))
"#,
    )
    .await;
    assert!(outcome.success());
    assert!(!outcome.stdout.contains("CONNECTED"), "{}", outcome.stdout);
    assert_eq!(outcome.stdout.matches("refused").count(), 3);
    assert!(outcome.stdout.contains("interfaces ['lo']"), "only loopback: {}", outcome.stdout);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn a_fork_bomb_is_contained_by_the_pids_limit() {
    let Some(sandbox) =
        sandbox_with(Limits { timeout: Duration::from_secs(5), ..Limits::default() }).await
    else {
        return;
    };
    let outcome =
        run(&sandbox, Lang::Sh, "bomb() { bomb | bomb & }; bomb; sleep 3; echo survived").await;
    // The shell could not fork past the limit; whatever it managed, the run ended and the
    // engine took the container down with every process in it.
    assert!(
        outcome.stderr.contains("fork")
            || outcome.stderr.contains("Resource temporarily unavailable")
            || outcome.limits_hit.contains(&Limit::Timeout),
        "{outcome:?}"
    );
    // The next run is unaffected.
    let after = run(&sandbox, Lang::Sh, "echo fine").await;
    assert_eq!(after.stdout.trim(), "fine");
    sandbox.shutdown().await;
}

#[tokio::test]
async fn a_memory_hog_is_killed_and_the_limit_reported() {
    let Some(sandbox) = sandbox_with(Limits { memory: 64 << 20, ..Limits::default() }).await else {
        return;
    };
    let outcome = run(
        &sandbox,
        Lang::Python,
        "chunks = []\nwhile True:\n    chunks.append(bytearray(8 << 20))",
    )
    .await;
    assert_eq!(outcome.exit_code, Some(137), "SIGKILL from the kernel");
    assert_eq!(outcome.limits_hit, vec![Limit::Memory]);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn writing_outside_the_work_dir_is_refused() {
    let Some(sandbox) = sandbox_with(Limits::default()).await else { return };
    let outcome = run(
        &sandbox,
        Lang::Python,
        r#"
for path in ["/etc/agentctl", "/tmp/agentctl", "/agentctl", "/usr/bin/agentctl", "/work/../agentctl", "/work/inside"]:
    try:
        open(path, "w").write("x")
        print("WROTE", path)
    except OSError as e:
        print("refused", path, e.strerror)
"#,
    )
    .await;
    let wrote: Vec<&str> = outcome.stdout.lines().filter(|l| l.starts_with("WROTE")).collect();
    assert_eq!(wrote, ["WROTE /work/inside"], "{}", outcome.stdout);
    assert!(outcome.stdout.contains("Read-only file system"), "{}", outcome.stdout);
    sandbox.shutdown().await;
}

#[tokio::test]
async fn the_cpu_quota_holds_two_busy_processes_to_half_a_core() {
    let Some(sandbox) = sandbox_with(Limits { cpus: 0.5, ..Limits::default() }).await else {
        return;
    };
    // Two processes spin for 2 s of wall clock; unthrottled on this 2-core machine they would
    // use about 4 s of CPU between them.
    let outcome = run(
        &sandbox,
        Lang::Python,
        r#"
import os, time, resource
def spin():
    end = time.monotonic() + 2
    while time.monotonic() < end:
        pass
children = []
for _ in range(2):
    pid = os.fork()
    if pid == 0:
        spin()
        os._exit(0)
    children.append(pid)
for pid in children:
    os.waitpid(pid, 0)
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print(round(usage.ru_utime + usage.ru_stime, 2))
"#,
    )
    .await;
    assert!(outcome.success(), "{outcome:?}");
    let cpu: f64 = outcome.stdout.trim().parse().unwrap();
    assert!(cpu < 1.5, "half a core for 2 s is about 1 s of CPU, got {cpu} s");
    sandbox.shutdown().await;
}

#[tokio::test]
async fn the_work_dir_is_size_limited() {
    let Some(sandbox) = sandbox_with(Limits { work_dir: 16 << 20, ..Limits::default() }).await
    else {
        return;
    };
    let outcome = run(
        &sandbox,
        Lang::Python,
        "try:\n    open('big', 'wb').write(b'x' * (64 << 20))\n    print('WROTE')\nexcept OSError \
            as e:\n    print('refused', e.strerror)",
    )
    .await;
    assert_eq!(outcome.stdout.trim(), "refused No space left on device");
    sandbox.shutdown().await;
}

#[tokio::test]
async fn an_infinite_loop_is_killed_at_the_timeout() {
    let Some(sandbox) =
        sandbox_with(Limits { timeout: Duration::from_secs(2), ..Limits::default() }).await
    else {
        return;
    };
    let outcome =
        run(&sandbox, Lang::Python, "print('started', flush=True)\nwhile True:\n    pass").await;
    assert_eq!(outcome.limits_hit, vec![Limit::Timeout]);
    assert_eq!(outcome.exit_code, None);
    assert_eq!(outcome.stdout.trim(), "started", "what came before the kill is kept");
    assert!(outcome.duration >= Duration::from_secs(2));
    sandbox.shutdown().await;
}

#[tokio::test]
async fn output_past_the_caps_is_truncated_and_flagged() {
    let limits = Limits {
        output: 1 << 20,
        files: 4 << 20,
        timeout: Duration::from_secs(60),
        ..Limits::default()
    };
    let Some(sandbox) = sandbox_with(limits).await else { return };
    let outcome = run(
        &sandbox,
        Lang::Python,
        r#"
import sys
line = b"y" * 1023 + b"\n"
for _ in range(100 * 1024):
    sys.stdout.buffer.write(line)
for name in ["a.bin", "b.bin"]:
    open("out/" + name, "wb").write(b"z" * (3 << 20))
"#,
    )
    .await;
    assert!(outcome.success());
    assert_eq!(outcome.stdout_bytes, 100 << 20, "all 100 MiB were counted");
    assert_eq!(outcome.stdout.len(), 1 << 20, "1 MiB was kept");
    assert!(outcome.stdout_truncated && !outcome.stderr_truncated);
    assert_eq!(outcome.files.len(), 1, "the second 3 MiB file does not fit the 4 MiB cap");
    assert!(
        outcome.limits_hit.contains(&Limit::Output) && outcome.limits_hit.contains(&Limit::Files),
        "{:?}",
        outcome.limits_hit
    );
    sandbox.shutdown().await;
}

#[tokio::test]
async fn eight_runs_at_once_do_not_interfere() {
    let image = match tests::sandbox_image() {
        Some(image) => image,
        None => return,
    };
    let sandbox =
        Sandbox::connect(Config { image, pool_size: 4, ..Config::default() }).await.unwrap();
    assert!(sandbox.warm(Duration::from_secs(60)).await, "the pool fills");
    let runs = (0..8).map(|i| {
        let sandbox = sandbox.clone();
        async move {
            let mut job = Job::new(
                Lang::Python,
                "import sys, time\nn = \
                    int(open('n.txt').read())\ntime.sleep(0.5)\nopen('out/n.txt', \
                    'w').write(str(n * n))\nprint(n)",
            );
            job.files.push(("n.txt".into(), i.to_string().into_bytes()));
            (i, sandbox.run(&job).await.unwrap())
        }
    });
    for (i, outcome) in futures::future::join_all(runs).await {
        assert!(outcome.success(), "{outcome:?}");
        assert_eq!(outcome.stdout.trim(), i.to_string());
        assert_eq!(outcome.files, vec![("n.txt".to_owned(), (i * i).to_string().into_bytes())]);
    }
    sandbox.shutdown().await;
}

/// The container (its full id) whose process has this exact command line, seen from the host.
fn container_running(cmdline: &str) -> Option<String> {
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) else { continue };
        if String::from_utf8_lossy(&cmd).replace('\0', " ").trim() != cmdline {
            continue;
        }
        let cgroup = std::fs::read_to_string(entry.path().join("cgroup")).unwrap_or_default();
        let id = cgroup
            .lines()
            .find_map(|l| l.split("/docker/").nth(1))
            .map(|rest| rest.chars().take(64).collect::<String>());
        if id.is_some() {
            return id;
        }
    }
    None
}

fn docker(args: &[&str]) -> String {
    let out =
        std::process::Command::new("docker").args(args).output().expect("the docker CLI runs");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

// Multi-threaded: the test polls the host synchronously while the run goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_killed_from_outside_is_a_clear_error_and_the_next_run_works() {
    let Some(sandbox) =
        sandbox_with(Limits { timeout: Duration::from_secs(60), ..Limits::default() }).await
    else {
        return;
    };
    let running = {
        let sandbox = sandbox.clone();
        tokio::spawn(async move { sandbox.run(&Job::new(Lang::Sh, "sleep 41.25")).await })
    };
    let mut id = None;
    assert!(
        tests::wait_until(Duration::from_secs(30), || {
            id = container_running("sleep 41.25");
            id.is_some()
        }),
        "the job's process shows up on the host"
    );
    docker(&["kill", id.as_deref().unwrap()]);
    match running.await.unwrap() {
        Err(Error::ContainerGone { id: gone }) => assert!(id.unwrap().starts_with(&gone)),
        other => panic!("expected ContainerGone, got {other:?}"),
    }
    assert_eq!(run(&sandbox, Lang::Sh, "echo fine").await.stdout.trim(), "fine");
    sandbox.shutdown().await;
}

#[tokio::test]
async fn containers_left_by_a_killed_agentctl_are_reaped() {
    let Some(image) = tests::sandbox_image() else { return };
    let dir = tempfile::tempdir().unwrap();
    let code = dir.path().join("wait.sh");
    std::fs::write(&code, "sleep 42.75").unwrap();
    let mut child = std::process::Command::new(tests::agentctl_bin())
        .args(["sandbox", "run", "--lang", "sh", "--timeout", "120"])
        .arg(&code)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut id = None;
    assert!(
        tests::wait_until(Duration::from_secs(30), || {
            id = container_running("sleep 42.75");
            id.is_some()
        }),
        "the child's job shows up on the host"
    );
    let id = id.unwrap();
    child.kill().unwrap(); // SIGKILL: agentctl cannot clean up
    child.wait().unwrap();
    // The container outlives its owner, unless a sandbox another test of this binary connects
    // in the meantime reaps it first (every connect reaps the containers of dead owners).
    let outlived = docker(&["inspect", "-f", "{{.State.Running}}", &id]) == "true";
    let sandbox =
        Sandbox::connect(Config { image, pool_size: 0, ..Config::default() }).await.unwrap();
    assert!(
        tests::wait_until(Duration::from_secs(10), || docker(&[
            "ps",
            "-aq",
            "--no-trunc",
            "--filter",
            &format!("id={id}")
        ])
        .is_empty()),
        "{}",
        if outlived {
            "connecting removed the orphan"
        } else {
            "the orphan another connect began to reap is gone"
        }
    );
    sandbox.shutdown().await;
}

/// The time limit holds inside the container: code left looping by a killed agentctl is
/// stopped there at the limit, not when the container's lifetime ends.
#[test]
fn a_loop_left_by_a_killed_agentctl_stops_at_the_time_limit() {
    if tests::sandbox_image().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let code = dir.path().join("spin.sh");
    std::fs::write(&code, "exec python3 -c 'while True: pass' spin-marker-8817").unwrap();
    let mut child = std::process::Command::new(tests::agentctl_bin())
        .args(["sandbox", "run", "--lang", "sh", "--timeout", "3"])
        .arg(&code)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let spinning = || container_running("python3 -c while True: pass spin-marker-8817");
    assert!(
        tests::wait_until(Duration::from_secs(30), || spinning().is_some()),
        "the loop runs in a container"
    );
    child.kill().unwrap(); // SIGKILL: agentctl cannot stop the code
    child.wait().unwrap();
    assert!(
        tests::wait_until(Duration::from_secs(15), || spinning().is_none()),
        "the loop is stopped at the limit, inside the container"
    );
}

#[tokio::test]
async fn the_pool_serves_warm_containers_and_refills() {
    let Some(image) = tests::sandbox_image() else { return };
    let sandbox =
        Sandbox::connect(Config { image, pool_size: 2, ..Config::default() }).await.unwrap();
    assert!(sandbox.warm(Duration::from_secs(60)).await);
    assert_eq!(sandbox.ready(), 2);
    assert_eq!(run(&sandbox, Lang::Sh, "echo warm").await.stdout.trim(), "warm");
    assert!(sandbox.warm(Duration::from_secs(60)).await, "the pool refills after a run");
    sandbox.shutdown().await;
    assert_eq!(sandbox.ready(), 0);
}

#[test]
fn without_a_docker_engine_the_sandbox_commands_say_so_in_one_line() {
    let missing = [("DOCKER_HOST", "unix:///nonexistent/docker.sock")];
    let out = tests::agentctl_with(&["sandbox", "run", "--lang", "sh", "-"], &missing);
    assert_eq!(out.code, 1, "{out:?}");
    let line = out.stderr.trim();
    assert!(
        line.starts_with(
            "agentctl: Docker engine not reachable at unix:///nonexistent/docker.sock"
        ),
        "{line}"
    );
    assert_eq!(line.lines().count(), 1);
    let status = tests::agentctl_with(&["sandbox", "status"], &missing);
    assert_eq!(status.code, 1);
    assert!(status.stdout.contains("engine: Docker engine not reachable"), "{status:?}");
}

#[test]
fn a_python_transform_is_tried_on_samples_then_applied_to_every_row_and_validated() {
    if tests::sandbox_image().is_none() {
        return;
    }
    let pg = tests::shared();
    let (source, target) = pg.chinook_pair();
    let (src_db, dst_db) = (source.rsplit('/').next().unwrap(), target.rsplit('/').next().unwrap());
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("transforms")).unwrap();
    std::fs::write(
        dir.path().join("transforms/normalize_phone.py"),
        "import re\n\ndef transform(value):\n    if value is None:\n        return None\n    \
            print('seen', value)  # goes to stderr, not into the answers\n    return '+' + \
            re.sub(r'\\D', '', value)\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("transforms/no_videos.py"),
        "def transform(value):\n    if value == '1.99':\n        raise ValueError('video tracks \
            are not sold any more')\n    return value\n",
    )
    .unwrap();
    let mapping = dir.path().join("mapping.toml");
    std::fs::write(
        &mapping,
        "[entities.customer.columns]\nphone = { from = \"phone\", transform = { python = \"transforms/normalize_phone.py\" } }\n\n\
         [entities.invoice_line.columns]\nunit_price = { from = \"unit_price\", transform = { \
             python = \"transforms/no_videos.py\" } }\n",
    )
    .unwrap();
    let mapping = mapping.to_str().unwrap();
    let args = |extra: &[&'static str]| -> Vec<String> {
        let mut args: Vec<String> =
            ["--source", &source, "--target", &target].iter().map(|s| s.to_string()).collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        args.extend(["--mapping".to_owned(), mapping.to_owned()]);
        args
    };
    let run = |extra: &[&'static str]| {
        let args = args(extra);
        tests::agentctl(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };

    // Before the run, the operator sees each script on sample rows.
    let plan = run(&["plan", "--goal", "migrate everything"]);
    assert_eq!(plan.code, 0, "{plan:?}");
    assert!(
        plan.stdout.contains(
            "customer.phone through transforms/normalize_phone.py (tried in the \
            sandbox on 5 sample rows):"
        ),
        "{}",
        plan.stdout
    );
    let first_phone = pg.psql(src_db, "SELECT phone FROM customer ORDER BY customer_id LIMIT 1");
    let first_digits: String = first_phone.chars().filter(char::is_ascii_digit).collect();
    assert!(
        plan.stdout.contains(&format!("{first_phone:?} -> \"+{first_digits}\"")),
        "{}",
        plan.stdout
    );

    // The scripts are part of the plan: an edited script is another plan.
    let hash = |text: &str| {
        text.lines().find_map(|l| l.trim().strip_prefix("plan hash: ")).map(str::to_owned).unwrap()
    };
    let before = hash(&plan.stdout);
    let no_videos = dir.path().join("transforms/no_videos.py");
    let original = std::fs::read_to_string(&no_videos).unwrap();
    std::fs::write(&no_videos, format!("{original}# edited\n")).unwrap();
    assert_ne!(hash(&run(&["plan", "--goal", "migrate everything"]).stdout), before);
    std::fs::write(&no_videos, original).unwrap();
    assert_eq!(hash(&run(&["plan", "--goal", "migrate everything"]).stdout), before);

    let out = run(&["run", "--goal", "migrate everything", "--yes", "--format", "json"]);
    assert_eq!(out.code, 0, "validation passed with the scripts applied again: {out:?}");
    let doc: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let entity = |name: &str| {
        doc["entities"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["target"]["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} in {doc}"))
    };
    let videos: i64 = pg
        .psql(src_db, "SELECT count(*) FROM invoice_line WHERE unit_price = 1.99")
        .parse()
        .unwrap();
    assert!(videos > 0);
    let lines = entity("invoice_line");
    assert_eq!(lines["rejected"].as_i64(), Some(videos), "{lines}");
    assert_eq!(lines["migrated"].as_i64().unwrap() + videos, lines["rows_read"].as_i64().unwrap());
    assert_eq!(
        pg.psql(
            dst_db,
            "SELECT count(*) FROM agentctl.rejected_rows WHERE source_table LIKE \
            '%invoice_line' AND reason LIKE '%no_videos.py raised ValueError: video tracks are \
            not sold any more'"
        ),
        videos.to_string()
    );
    // Every migrated phone is the script's answer for its source row.
    let expected = pg.psql(
        src_db,
        "SELECT string_agg('+' || regexp_replace(phone, '\\D', '', 'g'), ',' \
            ORDER BY customer_id) FROM customer",
    );
    let migrated =
        pg.psql(dst_db, "SELECT string_agg(phone, ',' ORDER BY legacy_id::int) FROM customer");
    assert_eq!(migrated, expected);
    // Each script's start and each sample run are in the audit trail, with the code's hash.
    let started: i64 = pg
        .psql(
            dst_db,
            "SELECT count(*) FROM agentctl.audit_events WHERE kind = 'tool' AND summary \
            LIKE 'run_code: started transforms/%' AND detail LIKE '%code_sha256%'",
        )
        .parse()
        .unwrap();
    assert!(started >= 2, "{started}");

    // Undoing it needs no sandbox: the scripts are not run to delete what was written.
    let undo = tests::agentctl_with(
        &[
            "--source",
            &source,
            "--target",
            &target,
            "rollback",
            "--all",
            "--yes",
            "--mapping",
            mapping,
        ],
        &[("DOCKER_HOST", "unix:///nonexistent/docker.sock")],
    );
    assert_eq!(undo.code, 0, "{undo:?}");
    assert_eq!(pg.psql(dst_db, "SELECT count(*) FROM customer"), "0");
}

#[test]
fn profiling_runs_a_script_or_the_models_code_on_sample_rows_and_falls_back_without_docker() {
    if tests::sandbox_image().is_none() {
        return;
    }
    let pg = tests::shared();
    let source = pg.chinook();
    let target = pg.create_db("profile_control");
    let db = target.rsplit('/').next().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("countries.py");
    std::fs::write(
        &script,
        "import sys, json, collections\nc = collections.Counter(json.loads(l)['country'] for l in \
            sys.stdin)\nfor k, n in sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))[:2]:\n    \
            print(k, n)\n",
    )
    .unwrap();
    let script = script.to_str().unwrap();
    let top_two = pg.psql(
        source.rsplit('/').next().unwrap(),
        "SELECT string_agg(country || ' ' || n, E'\\n') FROM (SELECT country, count(*) n FROM \
            customer GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 2) t",
    );

    // The operator's own script, on every customer.
    let out = tests::agentctl(&[
        "--source", &source, "--target", &target, "profile", "customer", "--script", script,
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains("Ran on 59 sample rows of customer in the sandbox:"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.trim_end().ends_with(&top_two), "{}\nexpected {top_two}", out.stdout);
    let audited = pg.psql(
        db,
        "SELECT count(*) FROM agentctl.audit_events WHERE kind = 'tool' AND \
        summary LIKE 'run_code (profile customer): exited 0%' AND detail LIKE \
        '%\"code_sha256\"%' AND detail LIKE '%\"stdin_bytes\"%'",
    );
    assert_eq!(audited, "1");

    // A question: the model writes the code through the run_code tool, the sandbox runs it.
    let code = serde_json::json!({"lang": "python", "code": "import sys\nprint('customers:', \
        sum(1 for _ in sys.stdin))"})
    .to_string();
    let server = tests::FakeOpenAi::start(vec![tests::Scripted::tool_call("run_code", &code)]);
    let asked = tests::agentctl_with(
        &[
            "--source",
            &source,
            "--target",
            &target,
            "profile",
            "customer",
            "--ask",
            "how many customers are there?",
            "--sample",
            "10",
        ],
        &[
            ("OPENAI_BASE_URL", &server.url),
            ("OPENAI_API_KEY", "k"),
            ("AGENTCTL_MODEL", "test-model"),
        ],
    );
    assert_eq!(asked.code, 0, "{asked:?}");
    assert!(
        asked.stdout.contains("The model wrote this python code:")
            && asked.stdout.contains("customers: 10"),
        "{}",
        asked.stdout
    );
    let request = &server.requests()[0].1;
    assert_eq!(request["tools"][0]["function"]["name"], "run_code");
    assert!(
        request["tools"][0]["function"]["parameters"]["properties"]["code"].is_object(),
        "the tool's JSON schema"
    );

    // Without a Docker engine: the database's statistics, and why.
    let away = tests::agentctl_with(
        &["--source", &source, "--target", &target, "profile", "customer", "--script", script],
        &[("DOCKER_HOST", "unix:///nonexistent/docker.sock")],
    );
    assert_eq!(away.code, 0, "{away:?}");
    assert!(
        away.stdout.contains(
            "The sandbox could not run the code (Docker engine not reachable at \
            unix:///nonexistent/docker.sock"
        ),
        "{}",
        away.stdout
    );
    assert!(
        away.stdout.contains("country"),
        "the built-in statistics list the columns: {}",
        away.stdout
    );
}

#[test]
fn a_transform_that_cannot_run_stops_the_plan_with_one_line() {
    let pg = tests::shared();
    let (source, target) = pg.chinook_pair();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("broken.py"), "def transform(value)\n    return value\n")
        .unwrap();
    let mapping = dir.path().join("mapping.toml");
    std::fs::write(
        &mapping,
        "[entities.customer.columns]\nphone = { from = \"phone\", transform \
        = { python = \"broken.py\" } }\n",
    )
    .unwrap();
    let plan = |env: &[(&str, &str)]| {
        tests::agentctl_with(
            &[
                "--source",
                &source,
                "--target",
                &target,
                "plan",
                "--goal",
                "customer",
                "--mapping",
                mapping.to_str().unwrap(),
            ],
            env,
        )
    };
    // No Docker engine: the script cannot be tried, so nothing is planned on it.
    let away = plan(&[("DOCKER_HOST", "unix:///nonexistent/docker.sock")]);
    assert_eq!(away.code, 1, "{away:?}");
    assert_eq!(away.stderr.trim().lines().count(), 1, "{}", away.stderr);
    assert!(
        away.stderr.contains("a custom transform cannot run")
            && away.stderr.contains("Docker engine not reachable"),
        "{}",
        away.stderr
    );
    if tests::sandbox_image().is_none() {
        return;
    }
    // A script that does not load: its own error, in one line.
    let broken = plan(&[]);
    assert_eq!(broken.code, 1, "{broken:?}");
    assert!(
        broken.stderr.contains("broken.py") && broken.stderr.contains("SyntaxError"),
        "{}",
        broken.stderr
    );
    // A missing script is named with the mapping file.
    std::fs::remove_file(dir.path().join("broken.py")).unwrap();
    let missing = plan(&[]);
    assert_eq!(missing.code, 2, "{missing:?}");
    assert!(
        missing.stderr.contains("customer.phone: transform script")
            && missing.stderr.contains("broken.py"),
        "{}",
        missing.stderr
    );
}

#[test]
fn in_the_chat_an_operator_profiles_a_table_and_a_model_answers_by_code() {
    use std::io::Write;
    if tests::sandbox_image().is_none() {
        return;
    }
    let pg = tests::shared();
    let source = pg.chinook();
    let target = pg.create_db("chat_profile");
    let chat = |lines: &str, env: &[(&str, &str)]| {
        let mut child = std::process::Command::new(tests::agentctl_bin())
            .args(["--source", &source, "--target", &target, "chat"])
            .env_remove("OPENAI_API_KEY")
            .env_remove("OPENAI_BASE_URL")
            .envs(env.iter().copied())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        writeln!(child.stdin.as_mut().unwrap(), "{lines}").unwrap();
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0));
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    };
    // Offline: the database's statistics for the table.
    let said = chat("profile customer\nexit", &[]);
    assert!(
        said.contains("customer (59 rows sampled; statistics from ANALYZE):")
            && said.contains("support_rep_id"),
        "{said}"
    );

    // With a model: it reads the question, writes code through run_code, the sandbox runs it.
    let code = serde_json::json!({"lang": "python", "code": "import sys, \
        json\nprint(len({json.loads(l)['country'] for l in sys.stdin}), 'countries')"});
    let server = tests::FakeOpenAi::start(vec![
        tests::Scripted::tool_call(
            "operator_intent",
            r#"{"intent": "profile", "table": "customer", "question": "how many countries are our customers in?"}"#,
        ),
        tests::Scripted::tool_call("run_code", &code.to_string()),
    ]);
    let said = chat(
        "in how many countries are our customers?\nexit",
        &[("OPENAI_BASE_URL", &server.url), ("OPENAI_API_KEY", "k")],
    );
    let countries =
        pg.psql(source.rsplit('/').next().unwrap(), "SELECT count(DISTINCT country) FROM customer");
    assert!(said.contains("The model wrote this python code:"), "{said}");
    assert!(said.contains(&format!("{countries} countries")), "{said}");
}

#[test]
fn a_transform_script_is_moved_to_a_new_container_before_its_container_expires() {
    if tests::sandbox_image().is_none() {
        return;
    }
    let pg = tests::shared();
    let (source, target) = pg.chinook_pair();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("slow.py"),
        "import time\n\ndef transform(value):\n    time.sleep(0.05)\n    return value\n",
    )
    .unwrap();
    let mapping = dir.path().join("mapping.toml");
    std::fs::write(
        &mapping,
        "[entities.customer.columns]\nphone = { from = \"phone\", transform \
        = { python = \"slow.py\" } }\n",
    )
    .unwrap();
    // Containers live 6 s, so a script is replaced after 3 s; the execution agent's 30 batches
    // of 2 customers take longer than that.
    let out = tests::agentctl_with(
        &[
            "--source",
            &source,
            "--target",
            &target,
            "run",
            "--goal",
            "customer",
            "--yes",
            "--mapping",
            mapping.to_str().unwrap(),
        ],
        &[("AGENTCTL_SANDBOX_LIFETIME", "6"), ("BATCH_SIZE", "2")],
    );
    assert_eq!(out.code, 0, "{out:?}");
    let db = target.rsplit('/').next().unwrap();
    let started: i64 = pg
        .psql(
            db,
            "SELECT count(*) FROM agentctl.audit_events WHERE agent = 'execution' AND \
            summary LIKE 'run_code: started slow.py%'",
        )
        .parse()
        .unwrap();
    assert!(
        started >= 2,
        "the execution agent's script was replaced between batches ({started} started)"
    );
    assert_eq!(pg.psql(db, "SELECT count(*) FROM customer"), "59");
}
