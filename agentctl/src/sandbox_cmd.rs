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
                    println!(
                        "built {} on {} in {:.1} s",
                        built.image,
                        built.base.as_deref().unwrap_or("its base"),
                        built.seconds
                    )
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
                        (Some(version), None) => {
                            println!("engine: Docker {version} at {}", status.endpoint)
                        }
                        (_, Some(error)) => println!("engine: {error}"),
                        (None, None) => {
                            println!("engine: at {} (version unknown)", status.endpoint)
                        }
                    }
                    let built = if status.image_present {
                        "built"
                    } else {
                        "not built (run `agentctl sandbox build`)"
                    };
                    println!("image: {} {built}", status.image);
                    println!(
                        "containers: {} ({} of live processes)",
                        status.containers, status.containers_live
                    );
                }
            }
            if status.error.is_some() {
                return Err(Exit::failed(
                    "the sandbox is not usable; agentctl works without it (custom transforms and \
                        scripts cannot run)",
                ));
            }
            Ok(())
        }
        SandboxCmd::Run(opts) => run(opts).await,
    }
}

async fn run(opts: SandboxRunOpts) -> Result<(), Exit> {
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|e| Exit::config(format!("{}: {e}", path.display())))
    };
    let code = if opts.file.as_os_str() == "-" {
        let mut code = String::new();
        std::io::stdin()
            .read_to_string(&mut code)
            .map_err(|e| Exit::config(format!("reading the code from stdin: {e}")))?;
        code
    } else {
        String::from_utf8(read(&opts.file)?)
            .map_err(|_| Exit::config(format!("{}: not UTF-8 text", opts.file.display())))?
    };
    let mut job = Job::new(opts.lang, code);
    if let Some(path) = &opts.stdin {
        job.stdin = read(path)?;
    }
    for input in &opts.inputs {
        let (name, path) = input
            .split_once('=')
            .ok_or_else(|| Exit::config(format!("--input {input}: expected NAME=PATH")))?;
        job.files.push((name.to_owned(), read(path.as_ref())?));
    }
    let limits = Limits {
        timeout: std::time::Duration::from_secs(opts.timeout),
        memory: opts.memory << 20,
        ..Limits::default()
    };
    let config = sandbox::Config { limits, pool_size: 0, ..sandbox::Config::default() };
    let sandbox = Sandbox::connect(config).await.map_err(Exit::failed)?;
    let outcome = sandbox.run(&job).await;
    sandbox.shutdown().await;
    let outcome = outcome.map_err(Exit::failed)?;
    if let Some(dir) = &opts.out {
        for (name, bytes) in &outcome.files {
            let path = dir.join(name);
            let written = path
                .parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|()| std::fs::write(&path, bytes));
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
        Some(137) if outcome.limits_hit.contains(&sandbox::Limit::Memory) => {
            "killed at the memory limit (exit 137)".to_owned()
        }
        Some(code) => format!("exited {code}"),
        None => "killed at the timeout".to_owned(),
    };
    let mut line = format!("{ended} after {} ms", outcome.duration.as_millis());
    if outcome.stdout_truncated {
        line.push_str(&format!(
            "; stdout truncated ({} bytes written, the first kept)",
            outcome.stdout_bytes
        ));
    }
    if outcome.stderr_truncated {
        line.push_str(&format!(
            "; stderr truncated ({} bytes written, the first kept)",
            outcome.stderr_bytes
        ));
    }
    if outcome.limits_hit.contains(&sandbox::Limit::Files) {
        line.push_str("; output files past the size cap were dropped");
    }
    line
}

/// `agentctl bench sandbox`: what a run costs from a cold container and from the pool, what 8
/// runs at once cost, and how fast a transform script takes values.
pub async fn bench(runs: usize, values: usize) -> Result<(), Exit> {
    use std::time::{Duration, Instant};
    let job = Job::new(sandbox::Lang::Python, "print(sum(range(1000)))");
    let percentiles = |mut ms: Vec<f64>| {
        ms.sort_by(f64::total_cmp);
        let at = |p: f64| ms[((ms.len() as f64 - 1.0) * p).round() as usize];
        (at(0.5), at(0.95))
    };
    let connect =
        |pool_size| Sandbox::connect(sandbox::Config { pool_size, ..sandbox::Config::default() });

    let cold = connect(0).await.map_err(Exit::failed)?;
    let mut cold_ms = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        let outcome = cold.run(&job).await.map_err(Exit::failed)?;
        cold_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        assert_ran(&outcome)?;
    }
    cold.shutdown().await;
    let (cold_p50, cold_p95) = percentiles(cold_ms);
    println!(
        "cold (create + start + run + collect): p50 {cold_p50:.0} ms, p95 {cold_p95:.0} ms \
        over {runs} runs"
    );

    let warm = connect(2).await.map_err(Exit::failed)?;
    let mut warm_ms = Vec::with_capacity(runs);
    for _ in 0..runs {
        // Measure a run that finds the pool full, as an agent between batches does.
        warm.warm(Duration::from_secs(60)).await;
        let started = Instant::now();
        let outcome = warm.run(&job).await.map_err(Exit::failed)?;
        warm_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        assert_ran(&outcome)?;
    }
    let (warm_p50, warm_p95) = percentiles(warm_ms);
    println!(
        "warm (from the pool of 2): p50 {warm_p50:.0} ms, p95 {warm_p95:.0} ms over {runs} runs"
    );

    let started = Instant::now();
    let outcomes = futures::future::join_all((0..8).map(|_| warm.run(&job))).await;
    let parallel = started.elapsed().as_secs_f64();
    for outcome in outcomes {
        assert_ran(&outcome.map_err(Exit::failed)?)?;
    }
    println!("8 runs at once: {:.2} s wall", parallel);

    let mut script = Job::new(sandbox::Lang::Python, agents::code::TRANSFORM_DRIVER);
    script.files.push((
        "transform.py".into(),
        b"def transform(value):\n    return value.strip().upper()\n".to_vec(),
    ));
    let mut stream = warm.open_stream(&script).await.map_err(Exit::failed)?;
    let batch: Vec<String> = (0..5_000).map(|i| format!("  value {i} ")).collect();
    let line = serde_json::to_vec(&batch).map_err(Exit::failed)?;
    let started = Instant::now();
    let mut sent = 0;
    while sent < values {
        stream.exchange(&line).await.map_err(Exit::failed)?;
        sent += batch.len();
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "transform script: {sent} values in {seconds:.2} s, {:.0} values/s (batches of 5,000)",
        sent as f64 / seconds
    );
    stream.close().await;
    warm.shutdown().await;
    Ok(())
}

fn assert_ran(outcome: &Outcome) -> Result<(), Exit> {
    if outcome.success() && outcome.stdout.trim() == "499500" {
        Ok(())
    } else {
        Err(Exit::failed(format!(
            "the benchmark's job did not run as expected: {}",
            summary(outcome)
        )))
    }
}
