//! A private PostgreSQL cluster made from the machine's own binaries: found, initialised,
//! started and stopped with `initdb` and `pg_ctl`. `agentctl demo` keeps one under a data
//! directory; the integration tests start throwaway ones with the same pieces.
//!
//! PostgreSQL refuses to run as root, so when agentctl runs as root the cluster belongs to,
//! and runs as, the `postgres` user.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::catalog::{ident, literal};
use runtime::error::ToolError;

/// Where the binaries are: `PG_BIN` when it is set (and then only there), else Debian's place
/// for version 15, else `pg_config --bindir`.
pub fn bin_dir() -> Result<PathBuf, ToolError> {
    const INSTALL: &str = "install PostgreSQL 15 (Debian/Ubuntu: apt-get install postgresql-15)";
    let has_server = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(dir) = std::env::var_os("PG_BIN").map(PathBuf::from) {
        return if has_server(&dir) {
            Ok(dir)
        } else {
            Err(ToolError::system(format!(
                "PG_BIN is {}, which holds no initdb and pg_ctl: point it at PostgreSQL's bin \
                    folder, or {INSTALL}",
                dir.display()
            )))
        };
    }
    let from_pg_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    [PathBuf::from("/usr/lib/postgresql/15/bin")]
        .into_iter()
        .chain(from_pg_config)
        .find(|d| has_server(d))
        .ok_or_else(|| {
            ToolError::system(format!(
                "PostgreSQL's server programs (initdb, pg_ctl) were not found: {INSTALL}, or set \
                PG_BIN to the folder that holds them"
            ))
        })
}

/// The uid and gid to run the server as: `postgres` when we are root, ourselves otherwise.
pub fn server_user() -> Result<Option<(u32, u32)>, ToolError> {
    let me = Command::new("id")
        .arg("-u")
        .output()
        .map_err(|e| ToolError::system(format!("running id: {e}")))?;
    if String::from_utf8_lossy(&me.stdout).trim() != "0" {
        return Ok(None);
    }
    let id = |flag: &str| -> Result<u32, ToolError> {
        let out = Command::new("id")
            .args([flag, "postgres"])
            .output()
            .map_err(|e| ToolError::system(format!("running id: {e}")))?;
        String::from_utf8_lossy(&out.stdout).trim().parse().map_err(|_| {
            ToolError::system(
                "running as root, PostgreSQL needs a `postgres` user to run as, and \
                there is none (install postgresql-15, which creates it)",
            )
        })
    };
    Ok(Some((id("-u")?, id("-g")?)))
}

/// A command that runs as the server's user.
pub fn command(program: &Path, user: Option<(u32, u32)>) -> Command {
    let mut cmd = Command::new(program);
    if let Some((uid, gid)) = user {
        cmd.uid(uid).gid(gid);
    }
    cmd
}

pub fn free_port() -> Result<u16, ToolError> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| ToolError::system(format!("finding a free port on 127.0.0.1: {e}")))
}

/// Runs `initdb` for a cluster in `dir/data` owned by `user`, trusting local connections.
pub fn initdb(bin: &Path, dir: &Path, user: Option<(u32, u32)>) -> Result<(), ToolError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| ToolError::system(format!("creating {}: {e}", dir.display())))?;
    if let Some((uid, gid)) = user {
        std::os::unix::fs::chown(dir, Some(uid), Some(gid)).map_err(|e| {
            ToolError::system(format!("handing {} to postgres: {e}", dir.display()))
        })?;
    }
    let out = command(&bin.join("initdb"), user)
        .args([
            "-D",
            "data",
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ])
        .current_dir(dir)
        .output()
        .map_err(|e| ToolError::system(format!("running initdb: {e}")))?;
    if !out.status.success() {
        return Err(ToolError::system(format!(
            "initdb in {} failed: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Server settings for a private cluster that is loaded in bulk: data that can be regenerated,
/// so WAL is kept minimal; durability (fsync) is left on.
pub const BULK_SETTINGS: &[(&str, &str)] = &[
    ("listen_addresses", "127.0.0.1"),
    ("wal_level", "minimal"),
    ("max_wal_senders", "0"),
    ("synchronous_commit", "off"),
    ("max_wal_size", "8GB"),
    ("shared_buffers", "512MB"),
    ("maintenance_work_mem", "256MB"),
    ("max_connections", "100"),
];

/// A cluster kept under a data directory, started as a daemon with `pg_ctl`.
pub struct DaemonCluster {
    pub dir: PathBuf,
    pub port: u16,
    bin: PathBuf,
    user: Option<(u32, u32)>,
}

impl DaemonCluster {
    /// Opens the cluster in `dir`, creating it first if there is none; starts it if it is not
    /// running. The port is chosen once and kept in `dir/port`.
    pub fn open(dir: &Path) -> Result<(DaemonCluster, bool), ToolError> {
        let bin = bin_dir()?;
        let user = server_user()?;
        let created = !dir.join("data/PG_VERSION").exists();
        if created {
            initdb(&bin, dir, user)?;
            let port = free_port()?;
            std::fs::write(dir.join("port"), port.to_string())
                .map_err(|e| ToolError::system(format!("writing {}/port: {e}", dir.display())))?;
        }
        // The server is started with the absolute data directory: pg_ctl keeps its command
        // line in postmaster.opts, and a `pg_ctl restart` run from any other directory (or
        // with a relative --data-dir) would otherwise look for `data` where it stands.
        let dir = &std::fs::canonicalize(dir)
            .map_err(|e| ToolError::system(format!("finding {}: {e}", dir.display())))?;
        let port: u16 = std::fs::read_to_string(dir.join("port"))
            .ok()
            .and_then(|p| p.trim().parse().ok())
            .ok_or_else(|| {
                ToolError::system(format!(
                    "{}/port is missing or unreadable; start again with --fresh",
                    dir.display()
                ))
            })?;
        let cluster = DaemonCluster { dir: dir.to_owned(), port, bin, user };
        if !cluster.running() {
            cluster.start()?;
        }
        Ok((cluster, created))
    }

    pub fn running(&self) -> bool {
        command(&self.bin.join("pg_ctl"), self.user)
            .arg("-D")
            .arg(self.data())
            .arg("status")
            .output()
            .is_ok_and(|o| o.status.success())
    }

    fn start(&self) -> Result<(), ToolError> {
        let mut opts = format!("-p {} -k {}", self.port, self.dir.display());
        for (k, v) in BULK_SETTINGS {
            opts.push_str(&format!(" -c {k}={v}"));
        }
        let out = command(&self.bin.join("pg_ctl"), self.user)
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.dir.join("postgres.log"))
            .args(["-w", "-t", "60", "-o", &opts, "start"])
            .output()
            .map_err(|e| ToolError::system(format!("running pg_ctl: {e}")))?;
        if !out.status.success() {
            let log = std::fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default();
            let last = log
                .lines()
                .rev()
                .find(|l| l.contains("FATAL") || l.contains("ERROR"))
                .unwrap_or("see postgres.log");
            return Err(ToolError::system(format!(
                "starting PostgreSQL in {} on port {} failed: {last}",
                self.dir.display(),
                self.port
            )));
        }
        Ok(())
    }

    pub fn stop(&self) -> Result<(), ToolError> {
        if !self.running() {
            return Ok(());
        }
        let out = command(&self.bin.join("pg_ctl"), self.user)
            .arg("-D")
            .arg(self.data())
            .args(["-m", "fast", "-w", "stop"])
            .output()
            .map_err(|e| ToolError::system(format!("running pg_ctl: {e}")))?;
        if !out.status.success() {
            return Err(ToolError::system(format!(
                "stopping PostgreSQL in {} failed: {}",
                self.dir.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(())
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// How an operator stops it by hand.
    pub fn stop_command(&self) -> String {
        let runner = if self.user.is_some() { "runuser -u postgres -- " } else { "" };
        format!("{runner}{} -D {} stop", self.bin.join("pg_ctl").display(), self.data().display())
    }
}

/// Creates database `name` through the cluster's `postgres` database unless it exists.
/// Drops a database, ending its sessions first.
pub async fn drop_database(admin: &crate::pg::Pool, name: &str) -> Result<(), ToolError> {
    sqlx::raw_sql(&format!(
        "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
        name.replace('"', "\"\"")
    ))
    .execute(admin)
    .await
    .map_err(crate::pg::while_doing(format!("dropping database {name}")))?;
    Ok(())
}

/// The foreign keys of the database at `db`, and how many of them are validated.
pub async fn foreign_keys(db: &runtime::config::DbUrl) -> Result<(i64, i64), ToolError> {
    let pool = crate::pg::connect(db, 1).await?;
    let counted = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE convalidated) FROM pg_constraint WHERE contype = 'f'",
    )
    .fetch_one(&pool)
    .await
    .map_err(crate::pg::while_doing(format!("counting the foreign keys of {}", db.location())));
    pool.close().await;
    counted
}

/// A database `name` made afresh and marked with the comment `mark`: one of that name that
/// is there already is dropped only when it carries the mark (made so before, by a run that
/// stopped before dropping it); any other is refused, untouched.
pub async fn scratch_database(
    admin: &crate::pg::Pool,
    name: &str,
    mark: &str,
) -> Result<(), ToolError> {
    let found: Option<Option<String>> = sqlx::query_scalar(
        "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = $1",
    )
    .bind(name)
    .fetch_optional(admin)
    .await
    .map_err(crate::pg::while_doing(format!("looking for database {name}")))?;
    if found.as_ref().is_some_and(|m| m.as_deref() != Some(mark)) {
        return Err(ToolError::system(format!(
            "database {name} is there already and was not made by agentctl: drop or rename it, \
                and run again"
        )));
    }
    drop_database(admin, name).await?;
    ensure_database(admin, name).await?;
    let comment = format!("COMMENT ON DATABASE {} IS {}", ident(name), literal(mark));
    sqlx::raw_sql(&comment)
        .execute(admin)
        .await
        .map_err(crate::pg::while_doing(format!("marking database {name}")))?;
    Ok(())
}

pub async fn ensure_database(admin: &crate::pg::Pool, name: &str) -> Result<(), ToolError> {
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(name)
            .fetch_one(admin)
            .await
            .map_err(crate::pg::while_doing(format!("looking for database {name}")))?;
    if !exists {
        sqlx::raw_sql(&format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\"")))
            .execute(admin)
            .await
            .map_err(crate::pg::while_doing(format!("creating database {name}")))?;
    }
    Ok(())
}
