//! agentctl in a real terminal, driven as a person would: tmux types the keys and the test
//! reads the screen (`capture-pane`), then the terminal's mode with `stty`.

use std::process::Command;
use std::time::Duration;

use tests::shared;

/// A tmux server of its own, killed when the test ends.
struct Terminal {
    socket: String,
}

impl Terminal {
    fn start() -> Option<Terminal> {
        if Command::new("tmux").arg("-V").output().is_err() {
            tests::unavailable(
                "CI installs tmux: the terminal tests drive agentctl through it",
                "no tmux",
            );
            return None;
        }
        static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let t = Terminal { socket: format!("agentctl-test-{}-{n}", std::process::id()) };
        t.tmux(&[
            "new-session",
            "-d",
            "-s",
            "t",
            "-x",
            "200",
            "-y",
            "50",
            "bash --norc --noprofile",
        ]);
        Some(t)
    }

    fn tmux(&self, args: &[&str]) -> String {
        let out = Command::new("tmux").args(["-L", &self.socket]).args(args).output().unwrap();
        assert!(out.status.success(), "tmux {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Types a line and presses Enter.
    fn type_line(&self, line: &str) {
        self.tmux(&["send-keys", "-t", "t", "-l", line]);
        self.tmux(&["send-keys", "-t", "t", "Enter"]);
    }

    /// Signals, line editing and echo are on, as a shell leaves them.
    fn assert_modes_as_they_were(&self) {
        self.type_line(
            "clear; stty -a | tr ' ;' '\\n\\n' | grep -xE -- '-?(isig|icanon|echo)' | \
            tr '\\n' ' '; echo MO\"\"DES",
        );
        let screen = self.wait_for("MODES", Duration::from_secs(10));
        let modes = screen.lines().find(|l| l.ends_with("MODES")).unwrap_or_default();
        let modes: Vec<&str> = modes.split_whitespace().collect();
        for mode in ["isig", "icanon", "echo"] {
            assert!(modes.contains(&mode), "{mode} is on: {modes:?}");
        }
    }

    fn screen(&self) -> String {
        self.tmux(&["capture-pane", "-t", "t", "-p", "-J"])
    }

    fn wait_for(&self, what: &str, within: Duration) -> String {
        let found = tests::wait_until(within, || self.screen().contains(what));
        let screen = self.screen();
        assert!(found, "`{what}` never showed; the screen:\n{screen}");
        screen
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = Command::new("tmux").args(["-L", &self.socket, "kill-server"]).output();
    }
}

/// Ctrl-C during `run`: the progress bars go, and the last lines on the screen say what
/// happened and give the command that carries the run on, as a shell takes it; the terminal is
/// left as it was.
#[test]
fn ctrl_c_during_a_run_leaves_the_command_that_carries_it_on_as_the_last_lines() {
    let Some(term) = Terminal::start() else { return };
    let pg = shared();
    let (source, target, _) = pg.reference_pair("0.02");
    let bin = tests::agentctl_bin();
    term.type_line(&format!(
        "BATCH_SIZE=250 {} --source {source} --target {target} run --goal 'migrate everything' \
            --yes; echo EXITED $?",
        bin.display()
    ));
    term.wait_for("rows/s", Duration::from_secs(120));
    term.tmux(&["send-keys", "-t", "t", "C-c"]);
    let screen = term.wait_for("EXITED 130", Duration::from_secs(60));
    let lines: Vec<&str> = screen.lines().map(str::trim_end).filter(|l| !l.is_empty()).collect();
    let exited = lines.iter().position(|l| l.starts_with("EXITED")).unwrap();
    let last = lines[..exited].join("\n");
    let run = pg.psql(
        target.rsplit('/').next().unwrap(),
        "SELECT run_id FROM agentctl.runs WHERE command = 'run'",
    );
    // The command, with the databases named as they were given.
    let command = format!(
        "agentctl run --goal \"migrate everything\" --resume {run} --source \
        '{source}' --target '{target}'"
    );
    assert!(
        lines[exited - 1].contains(&command),
        "the line before the prompt carries the command:\n{screen}"
    );
    assert!(!lines[exited - 1].contains("rows/s"), "no progress bar is drawn over it:\n{last}");
    // Nothing the run did outlived it: every record reached the trail.
    assert!(!screen.contains("after the audit writer stopped"), "a record was lost:\n{screen}");
    // Pasted as printed, it finishes the run.
    term.type_line("clear");
    assert!(
        tests::wait_until(Duration::from_secs(10), || !term.screen().contains("EXITED")),
        "the screen was cleared"
    );
    term.type_line(&format!(
        "{}{}; echo EXITED $?",
        bin.display(),
        command.trim_start_matches("agentctl")
    ));
    term.wait_for("[y/N]", Duration::from_secs(120));
    term.type_line("y");
    term.wait_for("EXITED 0", Duration::from_secs(120));
    term.assert_modes_as_they_were();
}

/// Leaving the chat, by `exit` or by Ctrl-D, gives the terminal back as it was: the next Ctrl-C
/// in that shell still interrupts.
#[test]
fn leaving_the_chat_gives_the_terminal_back_as_it_was() {
    let Some(term) = Terminal::start() else { return };
    let pg = shared();
    let (source, target, _) = pg.reference_pair("0.005");
    let bin = tests::agentctl_bin();
    for leave in ["exit", "C-d"] {
        term.type_line("clear");
        assert!(
            tests::wait_until(Duration::from_secs(10), || !term.screen().contains("EXITED")),
            "the screen was cleared"
        );
        term.type_line(&format!(
            "{} --source {source} --target {target} chat; echo EXITED $?",
            bin.display()
        ));
        // The prompt, not the banner: rustyline takes the terminal when it shows the prompt,
        // and what was typed before that may be dropped.
        term.wait_for("] > ", Duration::from_secs(60));
        if leave == "exit" {
            term.type_line("exit");
        } else {
            term.tmux(&["send-keys", "-t", "t", "C-d"]);
        }
        term.wait_for("EXITED 0", Duration::from_secs(60));
        term.assert_modes_as_they_were();
    }
}
