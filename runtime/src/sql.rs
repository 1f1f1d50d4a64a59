//! The one way agentctl writes a name into SQL: quoted, always (reserved words, mixed case,
//! spaces, quotes, dots and unicode included), as PostgreSQL's `quote_ident` would with every
//! name treated as needing it.

use crate::domain::TableName;

/// A SQL identifier, quoted: `"name"`, with any `"` in it doubled.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `"schema"."table"`, quoted.
pub fn quoted(t: &TableName) -> String {
    format!("{}.{}", ident(&t.schema), ident(&t.name))
}

/// Whether a target value differs from the one expected, both SQL expressions of one type,
/// by their text forms: every type has one, where not every type has an equality (`json`,
/// `xml`, `point` have none; `box` has one that compares areas), and a value's text is the
/// same in every session `pg::connect` opens.
pub fn differs(found: &str, expected: &str) -> String {
    format!("({found})::text IS DISTINCT FROM ({expected})::text")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_is_quoted_and_its_quotes_doubled() {
        assert_eq!(ident("default"), "\"default\"");
        assert_eq!(ident("Line \"Items\".v2 ✓"), "\"Line \"\"Items\"\".v2 ✓\"");
        assert_eq!(quoted(&TableName::new("Odd Schema", "user")), "\"Odd Schema\".\"user\"");
    }
}
