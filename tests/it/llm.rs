//! The language model path, against a real HTTP server speaking the OpenAI API on loopback
//! that checks what it receives: the planning agent reads a free-text goal through a typed tool
//! call, a malformed or schema-violating reply is asked again and then given up on for the
//! offline path, 429 is retried after Retry-After, a timeout and a spent token budget fall back
//! offline, exchanges are recorded and replayed, and `llm check` says who answers.

use serde_json::Value;
use tests::{agentctl_with, shared, FakeOpenAi, Scripted};

const GOAL: &str = "we need the dentists moved over first";
const READING: &str =
    r#"{"tables": ["dispatch_doctor"], "everything": false, "except": [], "only": false}"#;

fn plan(
    source: &str,
    target: &str,
    server: Option<&FakeOpenAi>,
    extra: &[&str],
    env: &[(&str, &str)],
) -> tests::Output {
    let mut args = vec!["--source", source, "--target", target];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["plan", "--goal", GOAL, "--format", "json"]);
    let mut vars: Vec<(&str, &str)> =
        vec![("OPENAI_API_KEY", "sk-test-secret-key"), ("AGENTCTL_MODEL", "test-model-x")];
    if let Some(s) = server {
        vars.push(("OPENAI_BASE_URL", &s.url));
    }
    vars.extend_from_slice(env);
    agentctl_with(&args, &vars)
}

fn entities(out: &tests::Output) -> Vec<String> {
    let doc: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"));
    doc["plan"]["waves"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|w| w.as_array().unwrap())
        .map(|e| e["table"]["name"].as_str().unwrap().to_owned())
        .collect()
}

fn trail(db: &str, sql_filter: &str) -> String {
    shared().psql(
        db,
        &format!(
            "SELECT string_agg(summary || ' ' || detail, E'\\n') FROM \
        agentctl.audit_events WHERE {sql_filter}"
        ),
    )
}

#[test]
fn the_planning_agent_reads_a_free_text_goal_through_a_typed_tool_call() {
    let pg = shared();
    let (source, target, _) = pg.reference_pair("0.005");
    let db = target.rsplit('/').next().unwrap().to_owned();
    // Offline, the words are not table names.
    let offline =
        agentctl_with(&["--source", &source, "--target", &target, "plan", "--goal", GOAL], &[]);
    assert_eq!(offline.code, 2, "{offline:?}");
    assert!(offline.stderr.contains("no table matches"), "{}", offline.stderr);

    let server = FakeOpenAi::start(vec![
        Scripted::tool_call("plan_request", READING),
        Scripted::text("Check the doctors' offices afterwards."),
    ]);
    let out = plan(&source, &target, Some(&server), &[], &[]);
    assert_eq!(out.code, 0, "{out:?}");
    let explanation = serde_json::from_str::<Value>(&out.stdout).unwrap()["explanation"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        explanation.contains(
            "What to watch, in the model's words: Check the doctors' offices afterwards."
        ),
        "{explanation}"
    );
    let planned = entities(&out);
    assert!(
        planned.contains(&"dispatch_doctor".to_owned())
            && planned.contains(&"dispatch_office".to_owned()),
        "{planned:?}"
    );
    // What the server received: our model, the one tool with the schema of our type, the goal.
    let requests = server.requests();
    assert_eq!(requests.len(), 2, "the reading, then the risk narrative");
    assert!(
        requests[1].1["tools"].is_null()
            && requests[1].1["messages"][1]["content"]
                .as_str()
                .unwrap()
                .contains("will_be_refused")
    );
    let req = &requests[0].1;
    assert_eq!(req["model"], "test-model-x");
    assert_eq!(req["tools"][0]["function"]["name"], "plan_request");
    assert_eq!(req["tool_choice"]["function"]["name"], "plan_request");
    let props = &req["tools"][0]["function"]["parameters"]["properties"];
    assert_eq!(props["tables"]["type"], "array", "{props}");
    assert_eq!(props["only"]["type"], "boolean", "{props}");
    assert_eq!(req["messages"][1]["content"], GOAL);
    assert!(
        req["messages"][0]["content"].as_str().unwrap().contains("dispatch_doctor"),
        "the system prompt lists the tables"
    );
    // The call is in the trail, with the key redacted; the reading is a recorded decision.
    let llm = trail(&db, "kind = 'llm'");
    assert!(
        llm.contains("plan_request: test-model answered") && llm.contains("\"prompt_tokens\":100"),
        "{llm}"
    );
    assert!(
        !trail(&db, "true").contains("sk-test-secret-key"),
        "the API key never reaches the trail"
    );
    // Tokens per run, in the report.
    let run_id =
        serde_json::from_str::<Value>(&out.stdout).unwrap()["run_id"].as_str().unwrap().to_owned();
    let report = agentctl_with(&["--target", &target, "report", &run_id, "--format", "json"], &[]);
    let usage = serde_json::from_str::<Value>(&report.stdout)
        .unwrap_or_else(|e| panic!("{e}: {report:?}"))["llm"]
        .clone();
    assert_eq!(
        usage,
        serde_json::json!({"calls": 2, "prompt_tokens": 110, "completion_tokens": 22, "cost_usd": null})
    );
    // With a price, each call's cost is in the trail and the run's in the report.
    let server = FakeOpenAi::start(vec![
        Scripted::tool_call("plan_request", READING),
        Scripted::text("Fine."),
    ]);
    let priced = plan(&source, &target, Some(&server), &[], &[("AGENTCTL_LLM_PRICE", "1.0,10.0")]);
    let run_id = serde_json::from_str::<Value>(&priced.stdout).unwrap()["run_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let report = agentctl_with(&["--target", &target, "report", &run_id, "--format", "json"], &[]);
    let cost =
        serde_json::from_str::<Value>(&report.stdout).unwrap()["llm"]["cost_usd"].as_f64().unwrap();
    assert!((cost - (110.0 * 1.0 + 22.0 * 10.0) / 1e6).abs() < 1e-12, "{cost}");
    assert!(
        trail(&db, "kind = 'decision' AND agent = 'planning'")
            .contains("read \"we need the dentists moved over first\" as \"dispatch_doctor\""),
        "the reading is a decision"
    );
}

#[test]
fn a_malformed_reply_is_asked_again_and_a_wrong_one_falls_back_offline() {
    let pg = shared();
    let (source, target, _) = pg.reference_pair("0.005");
    let db = target.rsplit('/').next().unwrap().to_owned();

    let server = FakeOpenAi::start(vec![
        Scripted::tool_call("plan_request", "{\"tables\": [\"dispatch_doc"),
        Scripted::tool_call("plan_request", READING),
        Scripted::text("Fine."),
    ]);
    let out = plan(&source, &target, Some(&server), &[], &[]);
    assert_eq!(out.code, 0, "{out:?}");
    let requests = server.requests();
    assert_eq!(requests.len(), 3, "asked once more, then the narrative");
    let second = requests[1].1["messages"].to_string();
    assert!(second.contains("not valid") && second.contains("Call plan_request again"), "{second}");

    // A reply that never fits the schema: asked twice more, then the offline path, which says why.
    let server = FakeOpenAi::start(vec![Scripted::tool_call(
        "plan_request",
        r#"{"tables": "dispatch_doctor"}"#,
    )]);
    let out = plan(&source, &target, Some(&server), &[], &[]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("no table matches"), "{}", out.stderr);
    assert_eq!(server.requests().len(), 3);
    assert!(
        trail(&db, "kind = 'decision'").contains("without the model"),
        "the fallback is recorded with its reason"
    );

    // A reading that names a table that does not exist is rejected by the planner, never run.
    let server = FakeOpenAi::start(vec![Scripted::tool_call(
        "plan_request",
        r#"{"tables": ["dispatch_dentist"], "everything": false, "except": [], "only": false}"#,
    )]);
    let out = plan(&source, &target, Some(&server), &[], &[]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(trail(&db, "kind = 'decision'").contains("rejected the model's reading"));
}

#[test]
fn rate_limits_wait_for_retry_after_and_timeouts_and_budgets_fall_back() {
    let pg = shared();
    let (source, target, _) = pg.reference_pair("0.005");
    let db = target.rsplit('/').next().unwrap().to_owned();

    let server = FakeOpenAi::start(vec![
        Scripted::rate_limited(2),
        Scripted::tool_call("plan_request", READING),
        Scripted::text("Fine."),
    ]);
    let out = plan(&source, &target, Some(&server), &[], &[]);
    assert_eq!(out.code, 0, "{out:?}");
    let requests = server.requests();
    assert_eq!(requests.len(), 3);
    let waited = requests[1].0.duration_since(requests[0].0);
    assert!(
        waited >= std::time::Duration::from_millis(1900),
        "waited {waited:?} after Retry-After: 2"
    );

    let slow = Scripted {
        delay: std::time::Duration::from_secs(4),
        ..Scripted::tool_call("plan_request", READING)
    };
    let server = FakeOpenAi::start(vec![slow]);
    let started = std::time::Instant::now();
    let out = plan(&source, &target, Some(&server), &[], &[("AGENTCTL_LLM_TIMEOUT", "1")]);
    assert_eq!(
        out.code, 2,
        "falls back offline, where the goal is not understood (bad usage): {out:?}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
    assert!(trail(&db, "kind = 'llm'").contains("no answer"), "the timeout is recorded");

    // The first reply spends the budget; the re-ask is not sent, and the run says why.
    let server = FakeOpenAi::start(vec![
        Scripted::tool_call("plan_request", "{broken"),
        Scripted::tool_call("plan_request", READING),
    ]);
    let out = plan(&source, &target, Some(&server), &["--max-tokens-total", "100"], &[]);
    assert_eq!(out.code, 2, "{out:?}");
    assert_eq!(server.requests().len(), 1);
    assert!(trail(&db, "kind = 'decision'").contains("token budget is spent"));
}

#[test]
fn exchanges_recorded_once_replay_offline_to_the_same_plan_and_llm_check_says_who_answers() {
    let pg = shared();
    let (source, target, _) = pg.reference_pair("0.005");
    let dir = tempfile::tempdir().unwrap();
    let dir_arg = dir.path().to_str().unwrap().to_owned();

    let server = FakeOpenAi::start(vec![
        Scripted::tool_call("plan_request", READING),
        Scripted::text("Watch the offices."),
    ]);
    let recorded = plan(&source, &target, Some(&server), &["--llm-record", &dir_arg], &[]);
    assert_eq!(recorded.code, 0, "{recorded:?}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2, "the reading and the narrative");
    // No server at all now: the answer comes from the recording.
    let replayed = plan(&source, &target, None, &["--llm-replay", &dir_arg], &[]);
    assert_eq!(replayed.code, 0, "{replayed:?}");
    let field =
        |o: &tests::Output, f: &str| serde_json::from_str::<Value>(&o.stdout).unwrap()[f].clone();
    assert_eq!(field(&recorded, "hash"), field(&replayed, "hash"));
    assert_eq!(field(&recorded, "explanation"), field(&replayed, "explanation"));
    // An endpoint that echoes the key: the recording masks it, as the audit trail does.
    let echo = FakeOpenAi::start(vec![
        Scripted::tool_call("plan_request", READING),
        Scripted::text("Authorization: Bearer sk-test-secret-key"),
    ]);
    let echoed = tempfile::tempdir().unwrap();
    let out = plan(
        &source,
        &target,
        Some(&echo),
        &["--llm-record", echoed.path().to_str().unwrap()],
        &[],
    );
    assert_eq!(out.code, 0, "{out:?}");
    for file in std::fs::read_dir(echoed.path()).unwrap() {
        let text = std::fs::read_to_string(file.unwrap().path()).unwrap();
        assert!(!text.contains("sk-test-secret-key"), "{text}");
    }

    let server = FakeOpenAi::start(vec![Scripted::text("OK")]);
    let check = agentctl_with(
        &["llm", "check"],
        &[
            ("OPENAI_BASE_URL", &server.url),
            ("AGENTCTL_MODEL", "test-model-x"),
            ("OPENAI_API_KEY", "k"),
        ],
    );
    assert_eq!(check.code, 0, "{check:?}");
    assert!(
        check.stdout.contains(&format!("test-model-x at {} answers", server.url))
            && check.stdout.contains("OK"),
        "{}",
        check.stdout
    );
    let sent = &server.headers()[0];
    assert!(sent.contains(&("authorization".into(), "Bearer k".into())), "{sent:?}");
    // Azure OpenAI's endpoint layout: the key goes in `api-key` too.
    let azure = FakeOpenAi::start(vec![Scripted::text("OK")]);
    let base = format!("{}/openai/v1", azure.url.trim_end_matches("/v1"));
    let check = agentctl_with(
        &["llm", "check"],
        &[("OPENAI_BASE_URL", &base), ("OPENAI_API_KEY", "azure-key")],
    );
    assert_eq!(check.code, 0, "{check:?}");
    assert!(
        azure.headers()[0].contains(&("api-key".into(), "azure-key".into())),
        "{:?}",
        azure.headers()
    );
    let none = agentctl_with(&["llm", "check"], &[("OPENAI_API_KEY", ""), ("OPENAI_BASE_URL", "")]);
    assert_eq!(none.code, 0, "{none:?}");
    assert!(none.stdout.contains("no language model is configured"), "{}", none.stdout);
}

#[test]
fn the_model_proposes_a_source_for_a_column_nothing_feeds_and_the_mapper_checks_it() {
    let pg = shared();
    let (source, target, _) = pg.reference_pair("0.005");
    let db = target.rsplit('/').next().unwrap().to_owned();
    pg.psql(&db, "ALTER TABLE offices ADD COLUMN display_name text NOT NULL");
    let run = |server: &FakeOpenAi| {
        agentctl_with(
            &[
                "--source", &source, "--target", &target, "run", "--goal", "offices", "--yes",
                "--format", "json",
            ],
            &[("OPENAI_BASE_URL", &server.url), ("OPENAI_API_KEY", "k")],
        )
    };
    let offline = agentctl_with(
        &["--source", &source, "--target", &target, "plan", "--goal", "offices"],
        &[],
    );
    assert_eq!(offline.code, 2, "{offline:?}");
    assert!(
        offline.stderr.contains("offices.display_name: is NOT NULL without a default"),
        "{}",
        offline.stderr
    );

    // A proposal naming a column the legacy table does not have is refused by the mapper.
    let server = FakeOpenAi::start(vec![Scripted::tool_call(
        "column_mapping",
        r#"{"from": "nickname", "transforms": [], "why": "a guess"}"#,
    )]);
    let refused = run(&server);
    assert_eq!(refused.code, 2, "{refused:?}");
    assert!(trail(&db, "kind = 'decision' AND agent = 'data_mapping'")
        .contains("rejected the model's proposals"));
    assert_eq!(pg.psql(&db, "SELECT count(*) FROM offices"), "0");

    let server = FakeOpenAi::start(vec![
        Scripted::tool_call(
            "column_mapping",
            r#"{"from": "name", "transforms": ["trim"], "why": "an office is shown by its name"}"#,
        ),
        Scripted::text("Nothing to watch."),
    ]);
    let out = run(&server);
    assert_eq!(out.code, 0, "{out:?}");
    let prompt = server.requests()[0].1["messages"][0]["content"].as_str().unwrap().to_owned();
    assert!(
        prompt.contains("Legacy table dispatch_office: id integer, name")
            && prompt.contains("offices.display_name text"),
        "{prompt}"
    );
    assert_eq!(
        pg.psql(&db, "SELECT count(*) FROM offices WHERE display_name = name"),
        pg.psql(&db, "SELECT count(*) FROM offices")
    );
    assert_ne!(pg.psql(&db, "SELECT count(*) FROM offices"), "0");
    assert!(trail(&db, "kind = 'decision' AND agent = 'data_mapping'")
        .contains("took the model's proposal for offices.display_name: name"));
}
