//! The one way agentctl writes a name into SQL: quoted, always (reserved words, mixed case,
//! spaces, quotes, dots and unicode included), as PostgreSQL's `quote_ident` would with every
//! name treated as needing it; and a text value, as a literal.

use crate::domain::TableName;

/// A SQL identifier, quoted: `"name"`, with any `"` in it doubled.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A SQL string literal: `'text'`, with any `'` in it doubled (standard conforming strings,
/// which every session `pg::connect` opens has on).
pub fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
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

/// That the UUID `id` (a SQL expression) is the `id` of no row of any of `parents`: a foreign
/// key's one parent, or every parent of a generic reference (a derived UUID is in the table it
/// was derived for, or in none). With no parents, every value is absent.
pub fn in_none_of(parents: &[TableName], id: &str) -> String {
    if parents.is_empty() {
        return "true".to_owned();
    }
    let absent: Vec<String> = parents
        .iter()
        .map(|p| format!("NOT EXISTS (SELECT 1 FROM {} p WHERE p.id = {id})", quoted(p)))
        .collect();
    absent.join(" AND ")
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

    #[test]
    fn a_value_in_none_of_its_parents_is_absent_from_each() {
        let parents = [TableName::new("public", "page"), TableName::new("docs", "doc")];
        assert_eq!(
            in_none_of(&parents, "c.\"object_id\""),
            "NOT EXISTS (SELECT 1 FROM \"public\".\"page\" p WHERE p.id = c.\"object_id\") AND \
             NOT EXISTS (SELECT 1 FROM \"docs\".\"doc\" p WHERE p.id = c.\"object_id\")"
        );
        assert_eq!(in_none_of(&[], "x"), "true");
    }
}
