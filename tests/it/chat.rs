//! `agentctl chat` driven through stdin, as a script would: an operator migrates an entity in
//! plain words, confirms, asks why rows failed and gets the real reasons, looks at one, and
//! takes the work back.

use std::io::Write;
use std::process::{Command, Stdio};

use tests::shared;

/// A whole scripted conversation: every line, then the end of stdin.
fn converse(source: &str, target: &str, lines: &[&str]) -> (i32, String) {
    let mut talk = Conversation::start(source, target, &[]);
    for line in lines {
        talk.say(line);
    }
    talk.end()
}

/// A conversation held line by line: what agentctl says is read as it comes, so the next line
/// can wait for an answer.
struct Conversation {
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    said: std::sync::mpsc::Receiver<String>,
    transcript: String,
}

impl Conversation {
    fn start(source: &str, target: &str, env: &[(&str, &str)]) -> Conversation {
        use std::io::BufRead;
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(tests::agentctl_bin())
            .args(["--source", source, "--target", target, "chat"])
            .current_dir(dir.path())
            .env_remove("OPENAI_API_KEY")
            .env_remove("OPENAI_BASE_URL")
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, said) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let stdin = child.stdin.take();
        Conversation { child, stdin, said, transcript: String::new() }
    }

    fn say(&mut self, line: &str) {
        writeln!(self.stdin.as_mut().unwrap(), "{line}").unwrap();
    }

    /// Reads what agentctl says until a line contains `text`; returns what was said meanwhile.
    fn until(&mut self, text: &str) -> String {
        let mut part = String::new();
        loop {
            match self.said.recv_timeout(std::time::Duration::from_secs(120)) {
                Ok(line) => {
                    part.push_str(&line);
                    part.push('\n');
                    self.transcript.push_str(&line);
                    self.transcript.push('\n');
                    if line.contains(text) {
                        return part;
                    }
                }
                Err(_) => panic!("agentctl never said {text:?}; it said:\n{}", self.transcript),
            }
        }
    }

    /// Closes stdin (Ctrl-D) and waits for the goodbye.
    fn end(mut self) -> (i32, String) {
        drop(self.stdin.take());
        // The transcript holds every line, these last ones too.
        self.until("Goodbye.");
        let code = self.child.wait().unwrap().code().unwrap_or(-1);
        (code, self.transcript)
    }
}

#[test]
fn an_operator_migrates_asks_why_rows_failed_and_undoes_it_in_plain_words() {
    let pg = shared();
    let (source, target, _) = pg.reference_pair("0.01");
    let db = target.rsplit('/').next().unwrap().to_owned();

    // Declining changes nothing.
    let (code, said) =
        converse(&source, &target, &["migrate the orders and everything they need", "no", "exit"]);
    assert_eq!(code, 0, "{said}");
    assert!(
        said.contains("Type yes to go ahead") && said.contains("nothing was changed"),
        "{said}"
    );
    assert_eq!(pg.psql(&db, "SELECT count(*) FROM orders"), "0");

    let mut talk = Conversation::start(&source, &target, &[]);
    talk.say("migrate the orders and everything they need");
    talk.until("Type yes to go ahead");
    talk.say("yes");
    let run = talk.until("Done, and checked");
    assert!(run.contains("... orders:"), "progress shows inline: {run}");
    talk.say("how is it going?");
    let migrated = pg.psql(&db, "SELECT count(*) FROM orders");
    assert_ne!(migrated, "0");
    talk.until(&format!("orders: done — {migrated} of"));
    talk.say("why did some orders fail?");
    // The real reasons, from the rejected rows.
    let reasons = pg.psql(
        &db,
        "SELECT string_agg(DISTINCT reason, E'\\n') FROM agentctl.rejected_rows \
            WHERE source_table = 'dispatch_order'",
    );
    assert!(!reasons.is_empty());
    // One line a reason.
    let told: String = reasons.lines().map(|_| talk.until("were not moved")).collect();
    for reason in reasons.lines() {
        assert!(told.contains(reason), "the reason {reason:?} is told: {told}");
    }
    talk.say("show me a failed order");
    let shown = pg.psql(
        &db,
        "SELECT legacy_key FROM agentctl.rejected_rows WHERE source_table = \
        'dispatch_order' ORDER BY length(legacy_key), legacy_key LIMIT 1",
    );
    talk.until(&format!("Row {shown} of dispatch_order was not moved"));
    talk.say("what did the planning agent decide and why?");
    talk.until("dispatch_order is in wave");
    let (code, said) = talk.end();
    assert_eq!(code, 0, "{said}");

    let (code, said) = converse(&source, &target, &["undo the orders", "yes", "bye"]);
    assert_eq!(code, 0, "{said}");
    assert!(said.contains(&format!("orders: {migrated} rows deleted")), "{said}");
    assert_eq!(pg.psql(&db, "SELECT count(*) FROM orders"), "0");
    // Undoing doctors that patients still point at: offered as a question in plain words.
    let (code, said) = converse(&source, &target, &["undo the doctors", "yes", "yes", "bye"]);
    assert_eq!(code, 0, "{said}");
    assert!(
        said.contains(
            "The patients in the new system still point at these doctors, so I deleted \
            nothing. Undo the patients too?"
        ),
        "{said}"
    );
    assert!(!said.contains("--all"), "no flags for an office manager: {said}");
    assert!(said.contains("  patients: ") && said.contains("  doctors: "), "{said}");
    assert_eq!(
        pg.psql(&db, "SELECT count(*) FROM doctors")
            + &pg.psql(&db, "SELECT count(*) FROM patients"),
        "00"
    );
    let approvals = pg.psql(
        &db,
        "SELECT count(*) FROM agentctl.audit_events WHERE kind = 'decision' AND \
            summary LIKE 'approved plan % in the chat'",
    );
    assert_eq!(approvals, "1", "the yes is in the audit trail");
}

#[test]
fn the_operator_can_ask_how_it_goes_while_a_migration_runs() {
    let pg = shared();
    let (source, target, _) = pg.reference_pair("0.02");
    let mut talk = Conversation::start(&source, &target, &[("BATCH_SIZE", "100")]);
    talk.say("migrate everything");
    talk.until("Type yes to go ahead");
    talk.say("yes");
    talk.until("... ");
    talk.say("how is it going?");
    talk.say("undo the offices");
    let meanwhile = talk.until("Done, and checked");
    // The status was answered before the run ended: not every one of its 25 entities was done
    // yet (between two entities none may be `running` at that instant, so count the done ones).
    let status = meanwhile
        .split("> how is it going?")
        .nth(1)
        .expect("the question was answered during the run");
    let done = status.lines().filter(|l| l.contains(": done — ")).count();
    assert!(
        status.contains(" rows moved, ") && done < 25,
        "a status while it runs ({done} of 25 done): {meanwhile}"
    );
    assert!(
        meanwhile.contains("A migration is running; that can wait"),
        "nothing else changes data meanwhile: {meanwhile}"
    );
    let (code, said) = talk.end();
    assert_eq!(code, 0, "{said}");
}

#[test]
fn with_a_model_the_guidance_agent_understands_what_the_parser_does_not() {
    let pg = shared();
    let (source, target, _) = pg.reference_pair("0.005");
    let server = tests::FakeOpenAi::start(vec![
        tests::Scripted::tool_call(
            "operator_intent",
            r#"{"intent": "migrate", "goal": "doctors"}"#,
        ),
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
    writeln!(
        child.stdin.as_mut().unwrap(),
        "could you bring across the physicians\nno\nwhat should I tell my team before the \
            weekend\nexit"
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert!(
        said.contains("Step 3: dispatch_doctor") && said.contains("Type yes to go ahead"),
        "{said}"
    );
    assert!(said.contains("What to watch, in the model's words: Offices come first."), "{said}");
    // A question no intent covers is answered in words, streamed.
    assert!(said.contains("Nothing has moved yet."), "{said}");
    let requests = server.requests();
    assert_eq!(
        requests.len(),
        4,
        "the two lines the parser did not understand, the narrative, the answer"
    );
    assert_eq!(requests[3].1["stream"], true);
    assert!(
        requests[3].1["messages"][0]["content"]
            .as_str()
            .unwrap()
            .contains("nothing has been migrated yet"),
        "the facts go with it"
    );
    let req = &requests[0].1;
    assert_eq!(req["tools"][0]["function"]["name"], "operator_intent");
    assert!(
        req["messages"][0]["content"].as_str().unwrap().contains("doctors"),
        "the system prompt lists the tables"
    );
}

#[test]
fn a_lost_database_is_reported_and_the_conversation_stays_usable() {
    // The target on a cluster of its own, to take away mid-conversation.
    let target_pg = tests::PgCluster::start().unwrap();
    let source = shared().create_db("legacy");
    let target = target_pg.create_db("modern");
    let generated = tests::agentctl(&[
        "--source", &source, "--target", &target, "dataset", "generate", "--scale", "0.005",
    ]);
    assert_eq!(generated.code, 0, "{generated:?}");
    let mut talk = Conversation::start(&source, &target, &[]);
    talk.say("how is it going?");
    talk.until("Nothing has been migrated yet.");
    drop(target_pg);
    talk.say("how is it going?");
    let lost = talk.until("Sorry, that did not work");
    let line = lost.lines().last().unwrap();
    assert!(
        line.contains("reading the progress") || line.contains("is the database reachable"),
        "says what failed: {lost}"
    );
    talk.say("help");
    talk.until("You can say, for example:");
    // Without the database the run cannot be recorded as ended; the conversation still says
    // goodbye, and the process is not waited for.
    drop(talk.stdin.take());
    talk.until("Goodbye.");
    let _ = talk.child.kill();
}

#[test]
fn an_operator_asks_what_changed_in_the_old_system_and_syncs_it_in_plain_words() {
    let pg = shared();
    let (source, target, _) = pg.reference_pair("0.002");
    let run = tests::agentctl(&[
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
    let (s, t) = (
        source.rsplit('/').next().unwrap().to_owned(),
        target.rsplit('/').next().unwrap().to_owned(),
    );
    let key = pg.psql(&t, "SELECT min(legacy_id) FROM patients");
    pg.psql(&s, &format!("UPDATE dispatch_patient SET first_name = 'Renamed' WHERE id = {key}"));

    let mut talk = Conversation::start(&source, &target, &[]);
    talk.say("what changed since the last sync?");
    let changes = talk.until("patients: 0 new, 1 changed");
    assert!(!changes.contains("Type yes"), "asking changes nothing: {changes}");
    talk.say("sync the patients");
    talk.until("Type yes to go ahead");
    talk.say("no");
    talk.until("nothing was changed");
    assert_ne!(
        pg.psql(&t, &format!("SELECT first_name FROM patients WHERE legacy_id = {key}")),
        "Renamed"
    );
    talk.say("sync the patients");
    talk.until("Type yes to go ahead");
    talk.say("yes");
    talk.until("Done: 0 added, 1 updated");
    talk.say("anything new in the old system?");
    talk.until("Nothing changed in the old system");
    // Kept in step from now on: a sync job, after a yes.
    talk.say("sync the patients every night");
    talk.until("Type yes to go ahead");
    talk.say("yes");
    talk.until("Done: patients is kept in step");
    let (code, said) = talk.end();
    assert_eq!(code, 0, "{said}");
    assert_eq!(
        pg.psql(&t, &format!("SELECT first_name FROM patients WHERE legacy_id = {key}")),
        "Renamed"
    );
    assert_eq!(
        pg.psql(&t, "SELECT name || ' ' || goal || ' ' || cron FROM agentctl.synchronization_jobs"),
        "chat-patients patients 0 2 * * *"
    );
}

/// While another agentctl writes to the target, the chat changes nothing: after the operator's
/// yes it says who holds the target, and the conversation goes on.
#[test]
fn the_chat_changes_nothing_while_another_run_writes() {
    let pg = shared();
    let (source, target, _) = pg.reference_pair("0.02");
    let db = target.rsplit('/').next().unwrap().to_owned();
    let mut run = tests::spawn_run(&source, &target);
    assert!(
        tests::wait_until(std::time::Duration::from_secs(180), || tests::committed(pg, &db) >= 5),
        "the run got under way"
    );
    let (code, transcript) = converse(&source, &target, &["migrate the offices", "yes", "exit"]);
    assert_eq!(code, 0, "{transcript}");
    assert!(
        transcript
            .contains("I cannot change anything now: another agentctl writes to this target (run "),
        "{transcript}"
    );
    assert!(run.wait().unwrap().success(), "the run that held the target finished");
    assert_eq!(pg.psql(&db, "SELECT count(*) FROM agentctl.runs WHERE command = 'run'"), "1");
}

/// An office manager's plain questions after a migration (`tests/corpus/chat/office-manager.txt`,
/// misspellings included), answered offline: none gets "I'm not sure", and the figures are the
/// databases' own, counted here.
#[test]
fn an_office_managers_plain_questions_are_answered_with_the_databases_figures() {
    let pg = shared();
    let (source, target, _) = pg.reference_pair("0.005");
    let out = tests::agentctl(&[
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
    let (s, t) = (
        source.rsplit('/').next().unwrap().to_owned(),
        target.rsplit('/').next().unwrap().to_owned(),
    );
    let questions = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/chat/office-manager.txt"),
    )
    .unwrap();
    let questions: Vec<&str> = questions.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(questions.len() >= 30, "at least 30 questions");
    let (code, said) = converse(&source, &target, &questions);
    assert_eq!(code, 0, "{said}");
    for unsure in ["I'm not sure", "I did not understand"] {
        assert!(!said.contains(unsure), "every question is understood: {said}");
    }
    let count = |db: &str, sql: &str| pg.psql(db, sql);
    let (patients, doctors) = (
        count(&s, "SELECT count(*) FROM dispatch_patient"),
        count(&s, "SELECT count(*) FROM dispatch_doctor"),
    );
    for answer in [
        format!(
            "The old database has {patients} patients (table dispatch_patient); the new one has \
                {} (table patients).",
            count(&t, "SELECT count(*) FROM patients")
        ),
        format!(
            "The old database has {doctors} doctors (table dispatch_doctor); the new one has {} \
                (table doctors).",
            count(&t, "SELECT count(*) FROM doctors")
        ),
    ] {
        assert_eq!(
            said.matches(&answer).count(),
            if answer.contains("patients") { 2 } else { 1 },
            "{answer}\n{said}"
        );
    }
    let tables = count(&s, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'");
    assert!(
        said.contains(&format!(
            "The old database ({}) holds {tables} tables",
            source.rsplit('@').next().unwrap()
        )),
        "{said}"
    );
    // The target was empty: every row in it was migrated.
    let migrated: i64 = count(&t, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        .lines()
        .map(|table| {
            count(&t, &format!("SELECT count(*) FROM \"{table}\"")).parse::<i64>().unwrap()
        })
        .sum();
    let rejected: i64 = count(&t, "SELECT count(*) FROM agentctl.rejected_rows").parse().unwrap();
    assert_eq!(
        said.matches(&format!(
            "succeeded: {migrated} rows moved, {rejected} set aside with their reasons"
        ))
        .count(),
        3,
        "{said}"
    );
    assert_eq!(
        said.matches(&format!(
            "Yes. Of the {} rows of the old system, {migrated} are in the new one and {rejected} \
                were set aside",
            migrated + rejected
        ))
        .count(),
        3,
        "{said}"
    );
    // Why orders failed, twice (once misspelled): each reason with the rows the target holds for
    // it.
    for line in count(
        &t,
        "SELECT count(*) || ' rows of dispatch_order were not moved: ' || \
        min(reason) FROM agentctl.rejected_rows WHERE source_table = 'dispatch_order' GROUP BY \
        rule",
    )
    .lines()
    {
        let (n, rest) = line.split_once(' ').unwrap();
        let said_line = format!("{n} {rest}");
        assert_eq!(
            said.matches(said_line.split(" (for example").next().unwrap()).count(),
            2,
            "{said_line}\n{said}"
        );
    }
    assert!(said.contains("I know no table called unicorns"), "{said}");
}
