//! Secret redaction: applied to every audit event before it is hashed and written, so a password
//! or API key never reaches the trail, not even in an error message that quotes a connection
//! string.
//!
//! Two layers: the exact secrets agentctl knows it holds (database passwords, the API key) are
//! replaced wherever they appear, and patterns that look like credentials (URL user info,
//! `password=...`, bearer tokens, `sk-...` keys, JSON keys named like secrets) are masked too.

use std::sync::LazyLock;

use regex::Regex;
use serde_json::Value;

pub const MASK: &str = "***";

static URL_PASSWORD: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?P<pre>[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s]*:)(?P<pw>[^@\s/]+)@").unwrap()
});
static KEY_VALUE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"(?i)(?P<key>\b[A-Za-z_]*(?:password|passwd|pwd|secret|token|api[_-]?key)\s*[=:]\s*)(?:"[^"]*"|'[^']*'|[^\s"'&;,]+)"#)
        .unwrap()
});
static BEARER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)(?P<pre>\bbearer\s+)[A-Za-z0-9._~+/=\-]+").unwrap());
static API_KEY: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\bsk-[A-Za-z0-9_\-]{8,}").unwrap());

/// Masks secrets in text and JSON.
#[derive(Clone, Debug, Default)]
pub struct Redactor {
    /// Exact secret values, longest first so that a secret containing another is masked whole.
    known: Vec<String>,
}

impl Redactor {
    /// `known` are secret values to mask wherever they appear. Values shorter than four
    /// characters are ignored: masking every "a" would destroy the trail and hide nothing.
    pub fn new<I, S>(known: I) -> Redactor
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut known: Vec<String> =
            known.into_iter().map(Into::into).filter(|s| s.len() >= 4).collect();
        known.sort_by_key(|s| std::cmp::Reverse(s.len()));
        known.dedup();
        Redactor { known }
    }

    pub fn text(&self, input: &str) -> String {
        let mut out = input.to_owned();
        for secret in &self.known {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), MASK);
            }
        }
        let out = URL_PASSWORD.replace_all(&out, format!("${{pre}}{MASK}@"));
        // A quoted value is masked up to its closing quote, so "pass word" leaks no half.
        let out = KEY_VALUE.replace_all(&out, |c: &regex::Captures<'_>| {
            let quote = match c[0][c["key"].len()..].chars().next() {
                Some(q @ ('"' | '\'')) => q.to_string(),
                _ => String::new(),
            };
            format!("{}{quote}{MASK}{quote}", &c["key"])
        });
        let out = BEARER.replace_all(&out, format!("${{pre}}{MASK}"));
        let out = API_KEY.replace_all(&out, format!("sk-{MASK}"));
        out.into_owned()
    }

    pub fn json(&self, value: &Value) -> Value {
        match value {
            Value::String(s) => Value::String(self.text(s)),
            Value::Array(items) => Value::Array(items.iter().map(|v| self.json(v)).collect()),
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| {
                        let v = if is_secret_key(k) && !v.is_null() {
                            Value::String(MASK.to_owned())
                        } else {
                            self.json(v)
                        };
                        (k.clone(), v)
                    })
                    .collect(),
            ),
            other => other.clone(),
        }
    }
}

fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase().replace('-', "_");
    ["password", "passwd", "secret", "token", "api_key", "apikey", "authorization"]
        .iter()
        .any(|s| k.contains(s))
        && !k.ends_with("_count")
        && !k.ends_with("tokens")
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::expect;
    use serde_json::json;

    #[test]
    fn masks_known_secrets_and_credential_patterns() {
        let r = Redactor::new(["hunter22", "ab"]);
        let text = r.text(
            "connect postgres://app:s3cr3t@db:5432/legacy failed; PGPASSWORD=hunter22 \
             password: 'x y' api_key=sk-abcdefghijklmnop Authorization: Bearer eyJhbGciOi.x-y \
             user ab said hunter22",
        );
        expect![[r#"connect postgres://app:***@db:5432/legacy failed; PGPASSWORD=*** password: '***' api_key=*** Authorization: Bearer *** user ab said ***"#]]
            .assert_eq(&text);
    }

    #[test]
    fn masks_secret_json_keys_but_keeps_counts() {
        let r = Redactor::new(Vec::<String>::new());
        let v = r.json(&json!({
            "url": "postgresql://u:pw@h/db",
            "nested": {"Api-Key": "abc", "prompt_tokens": 12, "token_count": 3},
            "list": ["password=abc"],
            "password": null
        }));
        expect![[r#"{"list":["password=***"],"nested":{"Api-Key":"***","prompt_tokens":12,"token_count":3},"password":null,"url":"postgresql://u:***@h/db"}"#]]
            .assert_eq(&v.to_string());
    }

    #[test]
    fn leaves_plain_text_alone() {
        let r = Redactor::new(["secretvalue"]);
        let plain = "migrated 31 rows of technician_roles in 12 ms";
        assert_eq!(r.text(plain), plain);
    }
}
