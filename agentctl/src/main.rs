//! The `agentctl` binary: parse the command line, run the command, map the outcome to an exit
//! code with one line on stderr.

use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() {
    restore_sigpipe();
    let opt = agentctl::cli::Opt::parse();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_env("AGENTCTL_LOG").unwrap_or_else(|_| EnvFilter::new("warn")))
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("agentctl: could not start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = match runtime.block_on(agentctl::run(opt)) {
        Ok(()) => 0,
        Err(exit) => {
            eprintln!("agentctl: {exit}");
            exit.code
        }
    };
    // Let background tasks see the end without holding the process open.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    std::process::exit(code);
}

/// Rust ignores SIGPIPE, so `agentctl status | head` would panic on the closed pipe. Like every
/// Unix filter, agentctl should just stop: restore the default disposition.
#[allow(unsafe_code)]
fn restore_sigpipe() {
    // SAFETY: called first thing in main, before any thread exists; SIG_DFL is a valid handler.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
