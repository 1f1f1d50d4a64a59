//! The `agentctl` binary: parse the command line, run the command, map the outcome to an exit
//! code with one line on stderr.

use clap::Parser;
use tracing_subscriber::EnvFilter;

/// A page's values live in one buffer (`runtime::text_rows`), but keys, rejects, JSON and the
/// drivers still make many small, short-lived allocations across the runtime's threads;
/// mimalloc serves them for a fraction of glibc's cost (bench/RESULTS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Freed pages go back to the system after 25 ms and arenas are committed as used, not ahead:
/// with mimalloc's defaults, validating 3.47M rows peaked at 205 MB; returning pages at once,
/// 136–152 MB; after 25 ms, 162–178 MB, and the migration's page buffers are reused instead of
/// faulted in afresh a batch (execution phase 15.1–15.4 s → 14.4–14.8 s, bench/RESULTS.md).
/// And no transparent huge pages: mimalloc asks for them on its arenas (the first before
/// `main`), and memory touched in 2 MiB steps held a run without validation at 144–155 MB,
/// 209 MB with 4 entities at once; in 4 KiB pages, 107–114 MB and 167 MB, for about 2 % more
/// of agentctl's CPU (bench/RESULTS.md, machine O).
#[allow(unsafe_code)]
fn return_freed_memory() {
    // `mi_option_e` in the mimalloc v3 header libmimalloc-sys 0.1.49 builds (the crate names
    // none of these): mi_option_arena_eager_commit = 4, mi_option_purge_delay = 15,
    // mi_option_allow_thp = 43.
    const ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
    const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    const ALLOW_THP: libmimalloc_sys::mi_option_t = 43;
    // SAFETY: mi_option_set only stores a value, but not atomically with other option calls;
    // this runs first in main, before any other thread of ours exists. PR_SET_THP_DISABLE
    // takes plain integers and changes only how this process's future page faults are served
    // (an older kernel without it returns an error, which changes nothing).
    unsafe {
        libmimalloc_sys::mi_option_set(PURGE_DELAY, 25);
        libmimalloc_sys::mi_option_set(ARENA_EAGER_COMMIT, 0);
        libmimalloc_sys::mi_option_set(ALLOW_THP, 0);
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

fn main() {
    return_freed_memory();
    restore_sigpipe();
    let opt = agentctl::cli::Opt::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("AGENTCTL_LOG").unwrap_or_else(|_| EnvFilter::new("warn")),
        )
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
