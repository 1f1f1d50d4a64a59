//! Configuration: which databases, how big a batch, how many retries, how long to wait.
//!
//! Resolved from, in order of precedence: command-line flags, the process environment, a `.env`
//! file in the working directory. Each database comes from its URL variable
//! (`SOURCE_DATABASE_URL`, `TARGET_DATABASE_URL`) or, for compatibility with the system
//! agentctl replaces, from the legacy `SOURCE_DB_HOST/PORT/USER/PASSWORD/NAME` family.
//! Resolution is a pure function over a variable map so every rule is unit-tested.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use url::Url;

/// Which side of the migration a database is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DbRole {
    Source,
    Target,
}

impl DbRole {
    pub fn as_str(self) -> &'static str {
        match self {
            DbRole::Source => "source",
            DbRole::Target => "target",
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            DbRole::Source => "SOURCE",
            DbRole::Target => "TARGET",
        }
    }

    fn flag(self) -> &'static str {
        match self {
            DbRole::Source => "--source",
            DbRole::Target => "--target",
        }
    }
}

impl fmt::Display for DbRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A database's connection URL. Its `Display` masks the password.
#[derive(Clone, PartialEq, Eq)]
pub struct DbUrl {
    pub role: DbRole,
    url: Url,
    /// Where the URL came from, for error messages: "--target", "TARGET_DATABASE_URL in .env".
    pub origin: String,
}

impl DbUrl {
    pub fn parse(
        role: DbRole,
        text: &str,
        origin: impl Into<String>,
    ) -> Result<DbUrl, ConfigError> {
        let origin = origin.into();
        let bad = |why: String| ConfigError::BadUrl { role, origin: origin.clone(), why };
        let url = Url::parse(text.trim()).map_err(|e| bad(e.to_string()))?;
        if !matches!(url.scheme(), "postgres" | "postgresql") {
            return Err(bad(format!(
                "scheme `{}` is not postgres:// or postgresql://",
                url.scheme()
            )));
        }
        if url.host_str().is_none_or(str::is_empty) && !url.query_pairs().any(|(k, _)| k == "host")
        {
            return Err(bad("it names no host".into()));
        }
        Ok(DbUrl { role, url, origin })
    }

    /// The URL with its password, for the driver only.
    pub fn expose(&self) -> &str {
        self.url.as_str()
    }

    pub fn password(&self) -> Option<String> {
        self.url.password().map(percent_decode)
    }

    pub fn database(&self) -> &str {
        self.url.path().trim_start_matches('/')
    }

    /// ` --target 'postgres://user:***@host/db'` when the operator gave this database as a flag
    /// (its password masked), so that a command printed for them connects the same way; empty
    /// when it came from the environment, which the next command reads too.
    pub fn as_given(&self) -> String {
        if self.origin == self.role.flag() {
            format!(" {} '{}'", self.role.flag(), self.to_string().replace('\'', "'\\''"))
        } else {
            String::new()
        }
    }

    /// `host:port/db`, the part an operator recognises.
    pub fn location(&self) -> String {
        format!(
            "{}:{}/{}",
            self.url.host_str().unwrap_or("localhost"),
            self.url.port().unwrap_or(5432),
            self.database()
        )
    }
}

impl fmt::Display for DbUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut shown = self.url.clone();
        if shown.password().is_some() {
            let _ = shown.set_password(Some("***"));
        }
        f.write_str(shown.as_str())
    }
}

impl fmt::Debug for DbUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DbUrl({}: {self})", self.role)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("no {role} database configured: pass {}, or set {}_DATABASE_URL (or {}_DB_HOST, \
        {}_DB_NAME, ...) in the environment or .env", .role.flag(), .role.prefix(), .role.prefix(), .role.prefix())]
    Missing { role: DbRole },
    #[error("the {role} database URL from {origin} is not usable: {why}")]
    BadUrl { role: DbRole, origin: String, why: String },
    #[error("{var}={value:?} from {origin} is not valid: {why}")]
    BadValue { var: String, value: String, origin: String, why: String },
    #[error("while reading {path}: {why}")]
    DotEnv { path: String, why: String },
}

/// Variables with where each came from.
#[derive(Clone, Debug, Default)]
pub struct Vars {
    vars: BTreeMap<String, (String, String)>,
}

impl Vars {
    /// The process environment over the `.env` file at `dotenv` (if it exists).
    pub fn load(dotenv: &Path) -> Result<Vars, ConfigError> {
        let mut vars = Vars::default();
        if dotenv.exists() {
            let path = dotenv.display().to_string();
            let iter = dotenvy::from_path_iter(dotenv)
                .map_err(|e| ConfigError::DotEnv { path: path.clone(), why: e.to_string() })?;
            for item in iter {
                let (k, v) = item
                    .map_err(|e| ConfigError::DotEnv { path: path.clone(), why: e.to_string() })?;
                vars.set(k, v, path.clone());
            }
        }
        for (k, v) in std::env::vars() {
            vars.set(k, v, "the environment");
        }
        Ok(vars)
    }

    pub fn set(
        &mut self,
        key: impl Into<String>,
        value: impl Into<String>,
        origin: impl Into<String>,
    ) {
        self.vars.insert(key.into(), (value.into(), origin.into()));
    }

    fn get(&self, key: &str) -> Option<(&str, &str)> {
        self.vars
            .get(key)
            .map(|(v, o)| (v.as_str(), o.as_str()))
            .filter(|(v, _)| !v.trim().is_empty())
    }

    fn number<T: std::str::FromStr>(
        &self,
        key: &str,
        default: T,
        valid: impl Fn(&T) -> bool,
        rule: &str,
    ) -> Result<T, ConfigError> {
        match self.get(key) {
            None => Ok(default),
            Some((v, origin)) => match v.trim().parse::<T>() {
                Ok(n) if valid(&n) => Ok(n),
                _ => Err(ConfigError::BadValue {
                    var: key.into(),
                    value: v.into(),
                    origin: origin.into(),
                    why: rule.into(),
                }),
            },
        }
    }
}

/// Database URLs given on the command line, which win over the environment.
#[derive(Clone, Debug, Default)]
pub struct DbFlags {
    pub source: Option<String>,
    pub target: Option<String>,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub source: Option<DbUrl>,
    pub target: Option<DbUrl>,
    /// Rows per batch (`BATCH_SIZE`); chosen from each table's row width when unset.
    pub batch_size: Option<usize>,
    /// How many times a transient failure is retried (`MAX_RETRY_ATTEMPTS`).
    pub max_retry_attempts: u32,
    /// The most a whole run may take (`MIGRATION_TIMEOUT`, seconds); none by default.
    pub migration_timeout: Option<Duration>,
    /// The most one request between agents may take (`AGENTCTL_REQUEST_TIMEOUT`, seconds).
    pub request_timeout: Duration,
    /// The language model, when one is configured.
    pub llm: LlmConfig,
}

/// Where the planning and guidance agents' language model is (`OPENAI_API_KEY`,
/// `OPENAI_BASE_URL`, `AGENTCTL_MODEL`, `AGENTCTL_LLM_TIMEOUT`; the rest from flags).
#[derive(Clone, Debug, Default)]
pub struct LlmConfig {
    pub api_key: Option<String>,
    pub base_url: Option<String>,
    pub model: Option<String>,
    pub timeout: Duration,
    pub max_tokens_total: Option<u64>,
    pub record: Option<std::path::PathBuf>,
    pub replay: Option<std::path::PathBuf>,
    /// `AGENTCTL_LLM_PRICE`: US dollars per million prompt and completion tokens, `0.15,0.60`.
    pub price: Option<(f64, f64)>,
}

impl Config {
    pub fn resolve(flags: &DbFlags, vars: &Vars) -> Result<Config, ConfigError> {
        Ok(Config {
            source: db_url(DbRole::Source, flags.source.as_deref(), vars)?,
            target: db_url(DbRole::Target, flags.target.as_deref(), vars)?,
            batch_size: match vars.number(
                "BATCH_SIZE",
                0usize,
                |n| (1..=1_000_000).contains(n),
                "expected a whole number from 1 to 1000000",
            )? {
                0 => None,
                n => Some(n),
            },
            max_retry_attempts: vars.number(
                "MAX_RETRY_ATTEMPTS",
                3,
                |n| *n <= 100,
                "expected a whole number from 0 to 100",
            )?,
            migration_timeout: match vars.number(
                "MIGRATION_TIMEOUT",
                0u64,
                |_| true,
                "expected a number of seconds",
            )? {
                0 => None,
                s => Some(Duration::from_secs(s)),
            },
            request_timeout: Duration::from_secs(vars.number(
                "AGENTCTL_REQUEST_TIMEOUT",
                300u64,
                |n| *n > 0,
                "expected a positive number of seconds",
            )?),
            llm: LlmConfig {
                api_key: vars
                    .get("OPENAI_API_KEY")
                    .map(|(v, _)| v.to_owned())
                    .filter(|v| !v.is_empty()),
                base_url: vars
                    .get("OPENAI_BASE_URL")
                    .map(|(v, _)| v.to_owned())
                    .filter(|v| !v.is_empty()),
                model: vars
                    .get("AGENTCTL_MODEL")
                    .map(|(v, _)| v.to_owned())
                    .filter(|v| !v.is_empty()),
                timeout: Duration::from_secs(vars.number(
                    "AGENTCTL_LLM_TIMEOUT",
                    60u64,
                    |n| *n > 0,
                    "expected a positive number of seconds",
                )?),
                price: match vars.get("AGENTCTL_LLM_PRICE") {
                    None => None,
                    Some((v, origin)) => Some(parse_price(v).ok_or_else(|| {
                        ConfigError::BadValue {
                            var: "AGENTCTL_LLM_PRICE".into(),
                            value: v.into(),
                            origin: origin.into(),
                            why: "expected two numbers, dollars per million prompt and completion \
                            tokens: 0.15,0.60"
                                .into(),
                        }
                    })?),
                },
                ..LlmConfig::default()
            },
        })
    }

    pub fn source(&self) -> Result<&DbUrl, ConfigError> {
        self.source.as_ref().ok_or(ConfigError::Missing { role: DbRole::Source })
    }

    /// The databases as the operator gave them on the command line, for commands printed for
    /// them to run next (see [`DbUrl::as_given`]).
    pub fn as_given(&self) -> String {
        [&self.source, &self.target].into_iter().flatten().map(DbUrl::as_given).collect()
    }

    pub fn target(&self) -> Result<&DbUrl, ConfigError> {
        self.target.as_ref().ok_or(ConfigError::Missing { role: DbRole::Target })
    }

    /// The secret values this configuration holds, for the audit trail's redactor.
    pub fn secrets(&self) -> Vec<String> {
        let mut secrets: Vec<String> = [&self.source, &self.target]
            .into_iter()
            .flatten()
            .filter_map(DbUrl::password)
            .collect();
        secrets.extend(self.llm.api_key.clone());
        secrets
    }
}

fn parse_price(v: &str) -> Option<(f64, f64)> {
    let (p, c) = v.split_once(',')?;
    let (p, c) = (p.trim().parse::<f64>().ok()?, c.trim().parse::<f64>().ok()?);
    (p >= 0.0 && c >= 0.0).then_some((p, c))
}

fn db_url(role: DbRole, flag: Option<&str>, vars: &Vars) -> Result<Option<DbUrl>, ConfigError> {
    if let Some(url) = flag {
        return DbUrl::parse(role, url, role.flag()).map(Some);
    }
    let p = role.prefix();
    if let Some((url, origin)) = vars.get(&format!("{p}_DATABASE_URL")) {
        return DbUrl::parse(role, url, format!("{p}_DATABASE_URL in {origin}")).map(Some);
    }
    let part = |name: &str| vars.get(&format!("{p}_DB_{name}"));
    let (host, name) = (part("HOST"), part("NAME"));
    if host.is_none() && name.is_none() {
        return Ok(None);
    }
    let origin =
        format!("{p}_DB_* in {}", host.or(name).map(|(_, o)| o).unwrap_or("the environment"));
    let missing = |what: &str| ConfigError::BadUrl {
        role,
        origin: origin.clone(),
        why: format!("{p}_DB_{what} is not set"),
    };
    let host = host.ok_or_else(|| missing("HOST"))?.0;
    let name = name.ok_or_else(|| missing("NAME"))?.0;
    let port = match part("PORT") {
        None => 5432,
        Some((v, o)) => v.trim().parse::<u16>().map_err(|_| ConfigError::BadValue {
            var: format!("{p}_DB_PORT"),
            value: v.into(),
            origin: o.into(),
            why: "expected a port number".into(),
        })?,
    };
    let mut url = Url::parse("postgres://localhost/").expect("a constant URL parses");
    url.set_host(Some(host.trim())).map_err(|e| ConfigError::BadUrl {
        role,
        origin: origin.clone(),
        why: format!("host: {e}"),
    })?;
    let _ = url.set_port(Some(port));
    let _ = url.set_username(part("USER").map(|(u, _)| u).unwrap_or("postgres"));
    if let Some((pw, _)) = part("PASSWORD") {
        let _ = url.set_password(Some(pw));
    }
    url.set_path(name.trim());
    DbUrl::parse(role, url.as_str(), origin).map(Some)
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vars {
        let mut v = Vars::default();
        for (k, val) in pairs {
            v.set(*k, *val, ".env");
        }
        v
    }

    #[test]
    fn flags_win_over_the_environment() {
        let flags = DbFlags { source: Some("postgres://a@h1/legacy".into()), target: None };
        let c = Config::resolve(
            &flags,
            &vars(&[
                ("SOURCE_DATABASE_URL", "postgres://b@h2/other"),
                ("TARGET_DATABASE_URL", "postgresql://t:pw@h3:6543/modern"),
            ]),
        )
        .unwrap();
        assert_eq!(c.source().unwrap().location(), "h1:5432/legacy");
        assert_eq!(c.target().unwrap().location(), "h3:6543/modern");
        assert_eq!(c.target().unwrap().to_string(), "postgresql://t:***@h3:6543/modern");
        assert_eq!(c.secrets(), vec!["pw".to_string()]);
    }

    #[test]
    fn legacy_variables_build_a_url_with_an_encoded_password() {
        let c = Config::resolve(
            &DbFlags::default(),
            &vars(&[
                ("SOURCE_DB_HOST", "db.internal"),
                ("SOURCE_DB_PORT", "5433"),
                ("SOURCE_DB_USER", "django"),
                ("SOURCE_DB_PASSWORD", "p@ss:w/rd"),
                ("SOURCE_DB_NAME", "dispatch"),
            ]),
        )
        .unwrap();
        let s = c.source().unwrap();
        assert_eq!(s.location(), "db.internal:5433/dispatch");
        assert_eq!(s.password().as_deref(), Some("p@ss:w/rd"));
        assert!(!s.to_string().contains("p@ss"), "{s}");
    }

    #[test]
    fn errors_name_the_database_and_the_fix() {
        let c = Config::resolve(&DbFlags::default(), &Vars::default()).unwrap();
        assert_eq!(
            c.target().unwrap_err().to_string(),
            "no target database configured: pass --target, or set TARGET_DATABASE_URL (or \
                TARGET_DB_HOST, TARGET_DB_NAME, ...) in the environment or .env"
        );
        let e =
            Config::resolve(&DbFlags::default(), &vars(&[("SOURCE_DB_HOST", "h")])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the source database URL from SOURCE_DB_* in .env is not \
            usable: SOURCE_DB_NAME is not set"
        );
        let e = Config::resolve(
            &DbFlags { source: None, target: Some("mysql://x@h/db".into()) },
            &Vars::default(),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "the target database URL from --target is not usable: scheme `mysql` is not \
                postgres:// or postgresql://"
        );
    }

    #[test]
    fn tuning_variables_are_checked() {
        let c = Config::resolve(
            &DbFlags::default(),
            &vars(&[
                ("BATCH_SIZE", "2500"),
                ("MAX_RETRY_ATTEMPTS", "5"),
                ("MIGRATION_TIMEOUT", "3600"),
            ]),
        )
        .unwrap();
        assert_eq!(
            (c.batch_size, c.max_retry_attempts, c.migration_timeout),
            (Some(2500), 5, Some(Duration::from_secs(3600)))
        );
        let e = Config::resolve(&DbFlags::default(), &vars(&[("BATCH_SIZE", "lots")])).unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"BATCH_SIZE="lots" from .env is not valid: expected a whole number from 1 to 1000000"#
        );
    }
}
