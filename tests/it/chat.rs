//! `agentctl chat` driven through stdin, as a script would: an operator migrates an entity in
//! plain words, confirms, asks why rows failed and gets the real reasons, looks at one, and
//! takes the work back.

use std::io::Write;
use std::process::{Command, Stdio};

use tests::shared;

fn converse(source: &str, target: &str, lines: &[&str]) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(tests::agentctl_bin())
        .args(["--source", source, "--target", target, "chat"])
        .current_dir(dir.path())
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for line in lines {
        writeln!(stdin, "{line}").unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

#[test]
fn an_operator_migrates_asks_why_rows_failed_and_undoes_it_in_plain_words() {
    let pg = shared();
    let (source, target, _) = pg.reference_pair("0.01");
    let db = target.rsplit('/').next().unwrap().to_owned();

    // Declining changes nothing.
    let (code, said) = converse(&source, &target, &["migrate the orders and everything they need", "no", "exit"]);
    assert_eq!(code, 0, "{said}");
    assert!(said.contains("Type yes to go ahead") && said.contains("nothing was changed"), "{said}");
    assert_eq!(pg.psql(&db, "SELECT count(*) FROM orders"), "0");

    let (code, said) = converse(
        &source,
        &target,
        &[
            "migrate the orders and everything they need",
            "yes",
            "how is it going?",
            "why did some orders fail?",
            "show me a failed order",
            "what did the planning agent decide and why?",
        ],
    );
    assert_eq!(code, 0, "{said}");
    let migrated = pg.psql(&db, "SELECT count(*) FROM orders");
    assert_ne!(migrated, "0");
    assert!(said.contains("Done, and checked"), "{said}");
    assert!(said.contains(&format!("orders: done — {migrated} of")), "{said}");
    // The real reasons, from the rejected rows.
    let reasons =
        pg.psql(&db, "SELECT string_agg(DISTINCT reason, E'\\n') FROM agentctl.rejected_rows WHERE source_table = 'dispatch_order'");
    assert!(!reasons.is_empty());
    for reason in reasons.lines() {
        assert!(said.contains(reason), "the reason {reason:?} is told: {said}");
    }
    let shown = pg.psql(&db, "SELECT legacy_key FROM agentctl.rejected_rows WHERE source_table = 'dispatch_order' ORDER BY length(legacy_key), legacy_key LIMIT 1");
    assert!(said.contains(&format!("Row {shown} of dispatch_order was not moved")), "{said}");
    assert!(said.contains("dispatch_order is in wave"), "the planning agent's reasons: {said}");
    assert!(said.contains("Goodbye."), "stdin's end ends the conversation");

    let (code, said) = converse(&source, &target, &["undo the orders", "yes", "bye"]);
    assert_eq!(code, 0, "{said}");
    assert!(said.contains(&format!("orders: {migrated} rows deleted")), "{said}");
    assert_eq!(pg.psql(&db, "SELECT count(*) FROM orders"), "0");
    let approvals =
        pg.psql(&db, "SELECT count(*) FROM agentctl.audit_events WHERE kind = 'decision' AND summary LIKE 'approved plan % in the chat'");
    assert_eq!(approvals, "1", "the yes is in the audit trail");
}

#[test]
fn with_a_model_the_guidance_agent_understands_what_the_parser_does_not() {
    let pg = shared();
    let (source, target, _) = pg.reference_pair("0.005");
    let server = tests::FakeOpenAi::start(vec![
        tests::Scripted::tool_call("operator_intent", r#"{"intent": "migrate", "goal": "doctors"}"#),
        tests::Scripted::text("Offices come first."),
        tests::Scripted::tool_call("operator_intent", r#"{"intent": "unknown"}"#),
        tests::Scripted::stream(&["Nothing ", "has moved ", "yet."]),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(tests::agentctl_bin())
        .args(["--source", &source, "--target", &target, "chat"])
        .current_dir(dir.path())
        .env("OPENAI_BASE_URL", &server.url)
        .env("OPENAI_API_KEY", "k")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.as_mut().unwrap(), "could you bring across the physicians\nno\nwill my data be safe over the weekend\nexit")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert!(said.contains("Step 3: dispatch_doctor") && said.contains("Type yes to go ahead"), "{said}");
    assert!(said.contains("What to watch, in the model's words: Offices come first."), "{said}");
    // A question no intent covers is answered in words, streamed.
    assert!(said.contains("Nothing has moved yet."), "{said}");
    let requests = server.requests();
    assert_eq!(requests.len(), 4, "the two lines the parser did not understand, the narrative, the answer");
    assert_eq!(requests[3].1["stream"], true);
    assert!(requests[3].1["messages"][0]["content"].as_str().unwrap().contains("nothing has been migrated yet"), "the facts go with it");
    let req = &requests[0].1;
    assert_eq!(req["tools"][0]["function"]["name"], "operator_intent");
    assert!(req["messages"][0]["content"].as_str().unwrap().contains("doctors"), "the system prompt lists the tables");
}
