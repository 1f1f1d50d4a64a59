//! Prompt templates, kept as files under `prompts/templates/` and compiled in, and the small
//! renderer that fills them. Rendering is strict: a placeholder without a value, or a value no
//! placeholder uses, is an error, so a prompt never goes out half-filled or silently stale.
//!
//! Placeholders are `{{name}}`; `{{{{` writes a literal `{{`.

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PromptError {
    #[error("prompt template `{template}` uses `{{{{{name}}}}}` but no value was given for it")]
    Missing { template: String, name: String },
    #[error("prompt template `{template}` was given `{name}`, which it does not use")]
    Unused { template: String, name: String },
    #[error("prompt template `{template}` has an unclosed `{{{{` at byte {at}")]
    Unclosed { template: String, at: usize },
}

/// A template: its name and its text.
pub type Template = (&'static str, &'static str);

/// The guidance agent's instructions for understanding an operator's request.
pub const INTENT: Template = ("intent", include_str!("../templates/intent.md"));
/// The planning agent's instructions for turning a free-text goal into tables.
pub const GOAL: Template = ("goal", include_str!("../templates/goal.md"));

/// The guidance agent's instructions for answering a question in words.
pub const ANSWER: Template = ("answer", include_str!("../templates/answer.md"));
/// The guidance agent's instructions for the plan's risk narrative.
pub const RISKS: Template = ("risks", include_str!("../templates/risks.md"));

/// The guidance agent's instructions for writing code that answers a question about a table.
pub const CODE: Template = ("code", include_str!("../templates/code.md"));

/// The data mapping agent's instructions for proposing a column's source.
pub const COLUMN: Template = ("column", include_str!("../templates/column.md"));

/// Fills a template with `values`, as [`render`] does.
pub fn fill(template: Template, values: &[(&str, &str)]) -> Result<String, PromptError> {
    render(template.0, template.1, &values.iter().map(|(k, v)| (*k, (*v).to_owned())).collect())
}

/// Fills `text` (the template called `name`, for errors) with `values`.
pub fn render(
    name: &str,
    text: &str,
    values: &BTreeMap<&str, String>,
) -> Result<String, PromptError> {
    let mut out = String::with_capacity(text.len());
    let mut used = std::collections::BTreeSet::new();
    let mut rest = text;
    let mut offset = 0;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        if let Some(tail) = after.strip_prefix("{{") {
            out.push_str("{{");
            offset += start + 4;
            rest = tail;
            continue;
        }
        let end = after
            .find("}}")
            .ok_or(PromptError::Unclosed { template: name.into(), at: offset + start })?;
        let key = after[..end].trim();
        let value = values
            .get(key)
            .ok_or_else(|| PromptError::Missing { template: name.into(), name: key.into() })?;
        out.push_str(value);
        used.insert(key);
        offset += start + 2 + end + 2;
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    if let Some(unused) = values.keys().find(|k| !used.contains(*k)) {
        return Err(PromptError::Unused { template: name.into(), name: (*unused).into() });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(pairs: &[(&'static str, &str)]) -> BTreeMap<&'static str, String> {
        pairs.iter().map(|(k, v)| (*k, (*v).to_owned())).collect()
    }

    #[test]
    fn fills_placeholders_and_keeps_escaped_braces() {
        let text = "Goal: {{goal}}\nTables: {{ tables }}\nJSON looks like {{{{\"a\": 1}}";
        let out = render(
            "t",
            text,
            &values(&[("goal", "migrate doctors"), ("tables", "dispatch_doctor")]),
        )
        .unwrap();
        assert_eq!(
            out,
            "Goal: migrate doctors\nTables: dispatch_doctor\nJSON looks like {{\"a\": 1}}"
        );
    }

    #[test]
    fn missing_unused_and_unclosed_are_errors() {
        let e = render("plan", "{{goal}} {{tables}}", &values(&[("goal", "x")])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "prompt template `plan` uses `{{tables}}` but no value was given for it"
        );
        let e = render("plan", "{{goal}}", &values(&[("goal", "x"), ("extra", "y")])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "prompt template `plan` was given `extra`, which it does not use"
        );
        let e = render("plan", "ok {{goal", &values(&[])).unwrap_err();
        assert_eq!(e.to_string(), "prompt template `plan` has an unclosed `{{` at byte 3");
    }
}
