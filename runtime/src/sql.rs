//! The one way agentctl writes a name into SQL: quoted, always (reserved words, mixed case,
//! spaces, quotes, dots and unicode included), as PostgreSQL's `quote_ident` would with every
//! name treated as needing it; a text value, as a literal; and a column compared with a parent's
//! UUID, as one.

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

/// `expr` as a UUID, to compare with a parent's `id`: itself where its column holds UUIDs
/// (`is_uuid`), else its text read as one where the text is a hyphenated UUID, and NULL (it
/// names no row) where not. A generic reference lives in a text column (Django's `object_id`
/// and `object_pk`), and comparing it with a uuid as it is, is an error.
pub fn as_uuid(expr: &str, is_uuid: bool) -> String {
    match is_uuid {
        true => expr.to_owned(),
        false => format!(
            "(CASE WHEN {expr}::text ~* '^[0-9a-f]{{8}}-[0-9a-f]{{4}}-[0-9a-f]{{4}}-[0-9a-f]{{4}}-[0-9a-f]{{12}}$' \
                THEN {expr}::text::uuid END)"
        ),
    }
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
    fn a_column_of_text_is_read_as_a_uuid_only_where_it_has_the_form() {
        assert_eq!(as_uuid("c.\"id\"", true), "c.\"id\"");
        let text = as_uuid("c.\"object_pk\"", false);
        assert!(text.starts_with("(CASE WHEN c.\"object_pk\"::text ~* '^[0-9a-f]{8}-"), "{text}");
        assert!(text.ends_with("THEN c.\"object_pk\"::text::uuid END)"), "{text}");
    }

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
