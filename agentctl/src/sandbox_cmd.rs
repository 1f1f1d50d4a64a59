//! `agentctl sandbox build|status|run`: the Docker sandbox for operators and scripts.

use std::io::Read;

use sandbox::{Job, Limits, Outcome, Sandbox};
use serde_json::json;

use crate::cli::{Format, SandboxCmd, SandboxRunOpts};
use crate::exit::Exit;
use crate::print_json;

pub async fn sandbox(cmd: SandboxCmd) -> Result<(), Exit> {
    match cmd {
        SandboxCmd::Build { format } => {
            let say = |line: &str| eprintln!("agentctl: {line}");
            let built = sandbox::image::build(&say).await.map_err(Exit::failed)?;
            match format {
                Format::Json => print_json(&built),
                Format::Text if built.reused => println!("{} is built already", built.image),
                Format::Text => {
                    println!("built {} on {} in {:.1} s", built.image, built.base.as_deref().unwrap_or("its base"), built.seconds)
                }
            }
            Ok(())
        }
        SandboxCmd::Status { format } => {
            let status = Sandbox::status(&sandbox::image::tag()).await;
            match format {
                Format::Json => print_json(&status),
                Format::Text => {
                    match (&status.engine, &status.error) {
                        (Some(version), None) => println!("engine: Docker {version} at {}", status.endpoint),
                        (_, Some(error)) => println!("engine: {error}"),
                        (None, None) => println!("engine: at {} (version unknown)", status.endpoint),
                    }
                    let built = if status.image_present { "built" } else { "not built (run `agentctl sandbox build`)" };
                    println!("image: {} {built}", status.image);
                    println!("containers: {} ({} of live processes)", status.containers, status.containers_live);
                }
            }
            if status.error.is_some() {
                return Err(Exit::failed(
                    "the sandbox is not usable; agentctl works without it (custom transforms and scripts cannot run)",
                ));
            }
            Ok(())
        }
        SandboxCmd::Run(opts) => run(opts).await,
    }
}

async fn run(opts: SandboxRunOpts) -> Result<(), Exit> {
    let read = |path: &std::path::Path| std::fs::read(path).map_err(|e| Exit::config(format!("{}: {e}", path.display())));
    let code = if opts.file.as_os_str() == "-" {
        let mut code = String::new();
        std::io::stdin().read_to_string(&mut code).map_err(|e| Exit::config(format!("reading the code from stdin: {e}")))?;
        code
    } else {
        String::from_utf8(read(&opts.file)?).map_err(|_| Exit::config(format!("{}: not UTF-8 text", opts.file.display())))?
    };
    let mut job = Job::new(opts.lang, code);
    if let Some(path) = &opts.stdin {
        job.stdin = read(path)?;
    }
    for input in &opts.inputs {
        let (name, path) = input.split_once('=').ok_or_else(|| Exit::config(format!("--input {input}: expected NAME=PATH")))?;
        job.files.push((name.to_owned(), read(path.as_ref())?));
    }
    let limits = Limits { timeout: std::time::Duration::from_secs(opts.timeout), memory: opts.memory << 20, ..Limits::default() };
    let config = sandbox::Config { limits, pool_size: 0, ..sandbox::Config::default() };
    let sandbox = Sandbox::connect(config).await.map_err(Exit::failed)?;
    let outcome = sandbox.run(&job).await;
    sandbox.shutdown().await;
    let outcome = outcome.map_err(Exit::failed)?;
    if let Some(dir) = &opts.out {
        for (name, bytes) in &outcome.files {
            let path = dir.join(name);
            let written = path.parent().map_or(Ok(()), std::fs::create_dir_all).and_then(|()| std::fs::write(&path, bytes));
            written.map_err(|e| Exit::failed(format!("{}: {e}", path.display())))?;
        }
    }
    match opts.format {
        Format::Json => print_json(&json!({
            "exit_code": outcome.exit_code, "stdout": outcome.stdout, "stderr": outcome.stderr,
            "stdout_bytes": outcome.stdout_bytes, "stderr_bytes": outcome.stderr_bytes,
            "stdout_truncated": outcome.stdout_truncated, "stderr_truncated": outcome.stderr_truncated,
            "files": outcome.files.iter().map(|(name, bytes)| json!({"name": name, "bytes": bytes.len()})).collect::<Vec<_>>(),
            "duration_ms": outcome.duration.as_millis() as u64, "limits_hit": outcome.limits_hit,
        })),
        Format::Text => print_outcome(&outcome),
    }
    if outcome.success() {
        Ok(())
    } else {
        Err(Exit::failed(summary(&outcome)))
    }
}

fn print_outcome(outcome: &Outcome) {
    print!("{}", outcome.stdout);
    if !outcome.stdout.is_empty() && !outcome.stdout.ends_with('\n') {
        println!();
    }
    eprint!("{}", outcome.stderr);
    for (name, bytes) in &outcome.files {
        eprintln!("agentctl: file out/{name} ({} bytes)", bytes.len());
    }
    if outcome.success() {
        eprintln!("agentctl: {}", summary(outcome));
    }
}

/// One line: how it ended, how long it took, which limits it hit.
pub fn summary(outcome: &Outcome) -> String {
    let ended = match outcome.exit_code {
        Some(0) => "exited 0".to_owned(),
        Some(137) if outcome.limits_hit.contains(&sandbox::Limit::Memory) => "killed at the memory limit (exit 137)".to_owned(),
        Some(code) => format!("exited {code}"),
        None => "killed at the timeout".to_owned(),
    };
    let mut line = format!("{ended} after {} ms", outcome.duration.as_millis());
    if outcome.stdout_truncated {
        line.push_str(&format!("; stdout truncated ({} bytes written, the first kept)", outcome.stdout_bytes));
    }
    if outcome.stderr_truncated {
        line.push_str(&format!("; stderr truncated ({} bytes written, the first kept)", outcome.stderr_bytes));
    }
    if outcome.limits_hit.contains(&sandbox::Limit::Files) {
        line.push_str("; output files past the size cap were dropped");
    }
    line
}
