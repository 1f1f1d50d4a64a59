use std::collections::HashMap;

use runtime::domain::SchemaReport;
use runtime::mapping::{KeyDeriver, MappingFile, MappingSet};
use runtime::text_rows::TextRows;

use super::{amount, yes_no, ReferenceMemo, RowMapper};
use crate::data_mapping::build;
use crate::fake::{legacy, modern, name};

fn mapping() -> (MappingSet, SchemaReport) {
    let target = modern();
    let file = MappingFile::parse(
        "[entities.dispatch_role.columns]\nname = { from = \"name\", transforms = [\"trim\"] \
            }\nkind = { from = \"kind\", transforms = [\"lower\"] }\n",
        "memory.toml",
    )
    .unwrap();
    (build(&legacy(), &target, &file).expect("the mapping builds"), target)
}

fn mapper(source: &str) -> RowMapper {
    let (set, target) = mapping();
    let spec = set.spec(&name(source)).unwrap();
    RowMapper::new(spec, target.table(&spec.target).unwrap(), &target, set.keys)
        .expect("the mapper compiles")
}

/// The mapped row, or the rejection's rule and reason.
fn map(mapper: &RowMapper, row: &[Option<&str>]) -> Result<Vec<Option<String>>, (String, String)> {
    let mut out = TextRows::new(mapper.target_columns().len());
    mapper
        .map_into(row, &mut out, &mut ReferenceMemo::default())
        .map_err(|r| (r.rule, r.reason))?;
    Ok(out.row(0).map(|v| v.map(str::to_owned)).collect())
}

#[test]
fn a_row_maps_to_its_derived_uuid_its_legacy_key_and_its_transformed_values() {
    let roles = mapper("dispatch_role");
    assert_eq!(roles.target_columns(), ["id", "legacy_id", "name", "kind"]);
    let mapped =
        map(&roles, &[Some("7"), Some("  Dispatcher "), Some("OFFICE")]).expect("the row fits");
    let (set, _) = mapping();
    let id = KeyDeriver::new(set.keys.layout, set.keys.namespace, &name("dispatch_role"))
        .derive(&["7"])
        .to_string();
    assert_eq!(
        mapped,
        [Some(id.clone()), Some("7".into()), Some("Dispatcher".into()), Some("office".into())]
    );
    assert_eq!(roles.id(&[Some("7"), None, None]), id, "the same key always derives the same UUID");
}

#[test]
fn each_rule_of_the_target_that_one_row_can_break_rejects_it_with_the_reason() {
    let roles = mapper("dispatch_role");
    let rule = |row: &[Option<&str>]| map(&roles, row).expect_err("the row is refused").0;
    assert_eq!(rule(&[Some("1"), None, Some("field")]), "not_null:name");
    assert!(
        rule(&[Some("2"), Some("a name far too long"), Some("field")]).starts_with("length"),
        "{}",
        rule(&[Some("2"), Some("a name far too long"), Some("field")])
    );
    let (enum_rule, reason) =
        map(&roles, &[Some("3"), Some("Lead"), Some("remote")]).expect_err("not a label");
    assert!(enum_rule.starts_with("enum"), "{enum_rule}");
    assert!(reason.contains("remote"), "{reason}");

    let technicians = mapper("dispatch_technician");
    let (check, _) = map(&technicians, &[Some("1"), Some("A"), Some("3"), None])
        .expect_err("the CHECK refuses a one-letter name");
    assert_eq!(check, "check:technicians_name_check");
}

#[test]
fn a_reference_is_the_parents_uuid_or_the_one_the_parent_kept() {
    let (set, _) = mapping();
    let mut technicians = mapper("dispatch_technician");
    let role_id = technicians.target_columns().iter().position(|c| *c == "role_id").unwrap();
    let row = [Some("5"), Some("Ada"), Some("3"), Some("ada@example.org")];
    let derived = KeyDeriver::new(set.keys.layout, set.keys.namespace, &name("dispatch_role"))
        .derive(&["3"])
        .to_string();
    assert_eq!(map(&technicians, &row).unwrap()[role_id], Some(derived));
    let no_role = [Some("6"), Some("Bob"), None, Some("bob@example.org")];
    let (rule, _) = map(&technicians, &no_role).expect_err("no parent, no reference");
    assert_eq!(rule, "not_null:role_id", "a NULL reference stays NULL, which the column refuses");
    let kept = "00000000-0000-4000-8000-000000000003".to_owned();
    technicians
        .keep_parent_ids(name("dispatch_role"), HashMap::from([("3".to_owned(), kept.clone())]));
    assert_eq!(map(&technicians, &row).unwrap()[role_id], Some(kept));
}

#[test]
fn yes_no_words_read_in_any_case_and_nothing_else_does() {
    for (word, b) in
        [("1", "t"), (" TRUE ", "t"), ("Yes", "t"), ("y", "t"), ("F", "f"), ("no", "f")]
    {
        assert_eq!(yes_no(word), Some(b), "{word:?}");
    }
    // Letters whose lowercase is not ASCII, or is another letter (the Kelvin sign is `k`).
    for word in ["", "2", "tru", "yess", "ye\u{301}s", "\u{130}", "\u{212a}", "nö"] {
        assert_eq!(yes_no(word), None, "{word:?}");
    }
}

#[test]
fn cents_read_as_amounts() {
    assert_eq!(amount(-1250), "-12.50");
    assert_eq!(amount(7), "0.07");
    assert_eq!(amount(100_000), "1000.00");
}

#[test]
fn a_memo_of_references_gives_what_deriving_gives_and_only_for_integers_as_written() {
    for (key, read) in [("42", Some(42)), ("-7", Some(-7)), ("0", Some(0)), ("120", Some(120))] {
        assert_eq!(ReferenceMemo::integer(key), read, "{key}");
    }
    // Another text of the same number derives another UUID: none of these may share a slot.
    for key in ["042", "+42", " 42", "42 ", "-0", "", "-", "4e2", "1234567890123456789"] {
        assert_eq!(ReferenceMemo::integer(key), None, "{key}");
    }
    let ns = uuid::Uuid::from_u128(0x1234);
    let layouts = [runtime::mapping::UuidLayout::Ordered, runtime::mapping::UuidLayout::V5];
    for layout in layouts {
        let profiles = KeyDeriver::new(layout, ns, &name("dispatch_profile"));
        let cases = KeyDeriver::new(layout, ns, &name("dispatch_case"));
        let mut memo = ReferenceMemo::default();
        // Keys that share a slot (4,096 apart), come back, or are no integer as written.
        let keys = ["1", "4097", "1", "01", "-4095", "7", "4097", " 7", "abc", "7"];
        for _ in 0..2 {
            for key in keys {
                assert_eq!(memo.derive(0, &profiles, key), profiles.derive(&[key]), "{key}");
                assert_eq!(memo.derive(3, &cases, key), cases.derive(&[key]), "{key}");
            }
        }
    }
}

#[test]
fn a_memo_handed_to_another_mapper_starts_over() {
    let (technicians, roles) = (mapper("dispatch_technician"), mapper("dispatch_role"));
    let mut memo = ReferenceMemo::default();
    let row = [Some("5"), Some("Ada"), Some("3"), Some("ada@example.org")];
    let mut out = TextRows::new(technicians.target_columns().len());
    technicians.map_into(&row, &mut out, &mut memo).expect("the row fits");
    assert!(memo.columns.iter().any(|slots| !slots.is_empty()), "role 3's UUID is kept");
    // Another mapper's columns are other references: nothing of the first may answer them.
    let mut out = TextRows::new(roles.target_columns().len());
    roles.map_into(&[Some("7"), Some("Lead"), Some("office")], &mut out, &mut memo).unwrap();
    assert!(memo.columns.is_empty());
    assert_eq!(memo.mapper, roles.id);
}

/// A mapper from a table of text columns onto one of each type the checks read.
fn readings() -> RowMapper {
    use crate::fake::{column, int, table, uuid};
    use runtime::domain::Check;
    // The same types on both sides, so that values go as they are (no transform).
    let typed = || {
        vec![
            column("at", "timestamp(0) without time zone", "timestamp", true),
            column("day", "date", "date", true),
            column("amount", "numeric(5,2)", "numeric", true),
            column("flag", "boolean", "bool", true),
            column("ref", "uuid", "uuid", true),
            column("code", "character varying(3)", "varchar", true),
            int("count", true),
            column("big", "bigint", "int8", true),
        ]
    };
    let legacy = SchemaReport {
        database: "memory/legacy".into(),
        tables: vec![table("dispatch_reading", [vec![int("id", false)], typed()].concat(), vec![])],
        ..SchemaReport::default()
    };
    let mut readings = table(
        "readings",
        [vec![uuid("id", false), int("legacy_id", true)], typed()].concat(),
        vec![],
    );
    for (name, expression) in [
        ("readings_day_check", "(day <> '0044-03-15'::date)"),
        ("readings_at_check", "(at < '2024-01-01 00:00:01'::timestamp without time zone)"),
        ("readings_amount_check", "(amount > (0)::numeric)"),
    ] {
        readings.checks.push(Check { name: name.into(), expression: expression.into() });
    }
    let target = SchemaReport {
        database: "memory/modern".into(),
        tables: vec![readings],
        ..SchemaReport::default()
    };
    let set = build(&legacy, &target, &MappingFile::parse("", "memory.toml").unwrap())
        .expect("the mapping builds");
    let spec = set.spec(&name("dispatch_reading")).unwrap();
    RowMapper::new(spec, target.table(&spec.target).unwrap(), &target, set.keys)
        .expect("the mapper compiles")
}

#[test]
fn a_value_the_server_reads_is_never_refused_for_a_form_the_checks_do_not_read() {
    let mapper = readings();
    let scanned = mapper.spec().source_columns();
    let with = |column: &str, value: &str| {
        let mut row: Vec<Option<&str>> = scanned.iter().map(|_| None).collect();
        row[0] = Some("1");
        row[scanned.iter().position(|n| n == "amount").unwrap()] = Some("1.00");
        row[scanned.iter().position(|n| n == column).unwrap()] = Some(value);
        map(&mapper, &row).map(|_| ()).map_err(|(rule, _)| rule)
    };
    for (column, value) in [
        ("at", "infinity"),
        ("at", "-infinity"),
        ("at", "0044-03-15 12:00:00 BC"),
        ("at", "12020-01-01 00:00:00"),
        ("at", "Jan 8 1999 04:05:06"),
        // Rounded by timestamp(0) to 00:00:01, which the CHECK refuses: the server's to say.
        ("at", "2024-01-01 00:00:00.6"),
        ("day", "0044-03-15 BC"),
        ("day", "infinity"),
        ("amount", "NaN"),
        ("amount", "1_0.5"),
        ("flag", "tr"),
        ("flag", " Of "),
        ("flag", "YE"),
        ("ref", "{a0eebc99-9c0b4ef8-bb6d6bb9-bd380a11}"),
        ("code", "abc   "),
        ("count", "0x1F"),
        ("count", "+42"),
        ("count", "-2147483648"),
        // The greatest bigint, a common "no end" mark.
        ("big", "9223372036854775807"),
    ] {
        assert_eq!(with(column, value), Ok(()), "{column} = `{value}`");
    }
    for (column, value, rule) in [
        ("at", "2024-13-01 10:00:00", "type:at"),
        ("at", "2024-01-01 00:00:01", "check:readings_at_check"),
        ("day", "0044-03-15", "check:readings_day_check"),
        ("amount", "1000", "overflow:amount"),
        ("amount", "-1", "check:readings_amount_check"),
        ("flag", "o", "type:flag"),
        ("ref", "a0eebc99", "type:ref"),
        ("code", "abcd ", "length:code"),
        ("count", "4.5", "type:count"),
        ("count", "3000000000", "type:count"),
        ("count", "2147483648", "type:count"),
        ("big", "9223372036854775808", "type:big"),
    ] {
        assert_eq!(with(column, value), Err(rule.to_owned()), "{column} = `{value}`");
    }
}
