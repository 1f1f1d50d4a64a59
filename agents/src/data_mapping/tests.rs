use runtime::domain::SchemaReport;
use runtime::mapping::{Feed, MappingFile, Unmapped};

use super::build;
use crate::fake::{legacy, modern, name};

#[test]
fn tables_and_references_are_inferred_by_name() {
    let set = build(&legacy(), &modern(), &MappingFile::default()).expect("the mapping builds");
    let technicians = set.spec(&name("dispatch_technician")).expect("technicians are mapped");
    assert_eq!(technicians.target, name("technicians"));
    let feed = |column: &str| {
        technicians.columns.iter().find(|c| c.target == column).map(|c| c.feed.clone())
    };
    assert_eq!(feed("id"), Some(Feed::Key));
    assert_eq!(feed("legacy_id"), Some(Feed::LegacyKey));
    assert!(
        matches!(feed("role_id"), Some(Feed::Reference { parent, .. }) if parent == name("dispatch_role")),
        "the foreign key becomes a reference to the parent's UUID: {:?}",
        feed("role_id")
    );
    assert_eq!(set.spec(&name("dispatch_role")).map(|s| s.target.clone()), Some(name("roles")));
    assert!(set.unmapped.is_empty(), "{:?}", set.unmapped);
}

#[test]
fn a_file_can_skip_a_table_and_a_bad_rule_is_named_where_it_is() {
    let file = MappingFile::parse(
        "[entities.dispatch_technician]\nskip = \"kept in the old system\"\n",
        "memory.toml",
    )
    .expect("the file parses");
    let set = build(&legacy(), &modern(), &file).expect("the mapping builds");
    assert_eq!(
        set.unmapped,
        vec![(
            name("dispatch_technician"),
            Unmapped::Skipped { reason: "kept in the old system".into() }
        )]
    );

    let file = MappingFile::parse(
        "[entities.dispatch_role.columns]\nname = { from = \"title\" }\n",
        "memory.toml",
    )
    .expect("the file parses");
    let problems = build(&legacy(), &modern(), &file).expect_err("no column feeds it");
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(
        problems[0].to_string(),
        "roles.name: the mapping file reads `title`, which the source does not have"
    );
    assert!(MappingFile::parse("[entities.x]\nnonsense = 1\n", "memory.toml")
        .unwrap_err()
        .0
        .starts_with("memory.toml: "));
}

#[test]
fn a_required_column_nothing_feeds_is_a_problem_a_model_may_answer() {
    let mut target = modern();
    let roles = target.tables.iter_mut().find(|t| t.name.name == "roles").unwrap();
    roles.columns.push(crate::fake::column("code", "text", "text", false));
    let problems =
        build(&legacy(), &target, &MappingFile::default()).expect_err("code is NOT NULL and unfed");
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].unfed, "{:?}", problems[0]);
    assert_eq!(problems[0].column.as_deref(), Some("code"));
}

#[test]
fn a_data_column_named_id_is_fed_into_source_id_and_a_key_named_id_is_not() {
    use crate::fake::{column, int, table, uuid};
    // Partitioned tables are keyed on (id, partition column): `id` is data, and a generated
    // target keeps it as source_id.
    let mut shipment =
        table("shipment", vec![int("id", false), column("region", "text", "text", false)], vec![]);
    shipment.primary_key = vec!["id".into(), "region".into()];
    let source = SchemaReport { tables: vec![shipment], ..SchemaReport::default() };
    let target_table = |name: &str| {
        table(
            name,
            vec![
                uuid("id", false),
                column("legacy_id", "text", "text", false),
                int("source_id", false),
                column("region", "text", "text", false),
            ],
            vec![],
        )
    };
    let target = SchemaReport { tables: vec![target_table("shipment")], ..SchemaReport::default() };
    let set = build(&source, &target, &MappingFile::default()).expect("the mapping builds");
    let spec = set.spec(&name("shipment")).expect("shipment is mapped");
    let feed = spec.columns.iter().find(|c| c.target == "source_id").map(|c| c.feed.clone());
    assert_eq!(feed, Some(Feed::Column { column: "id".into() }));

    // Where `id` is the whole primary key it is legacy_id: a source_id of the target means
    // something else, and nothing of the source feeds it.
    let keyed =
        table("shipment", vec![int("id", false), column("region", "text", "text", false)], vec![]);
    let source = SchemaReport { tables: vec![keyed], ..SchemaReport::default() };
    let problems =
        build(&source, &target, &MappingFile::default()).expect_err("source_id is unfed");
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].column.as_deref(), Some("source_id"));
}

#[test]
fn a_rule_header_is_what_toml_reads_back_as_the_table() {
    use runtime::domain::{Table, TableName};
    let table = |schema: &str, name: &str| Table {
        name: TableName::new(schema, name),
        ..legacy().tables[0].clone()
    };
    let source = SchemaReport {
        tables: vec![
            table("public", "item"),
            table("sales", "item"),
            table("sales", "store"),
            table("public", "Line \"Items\".v2"),
        ],
        ..SchemaReport::default()
    };
    let header =
        |schema: &str, name: &str| super::rule_header(&TableName::new(schema, name), &source);
    assert_eq!(header("sales", "store"), "[entities.store]");
    assert_eq!(header("sales", "item"), "[entities.\"sales.item\"]");
    assert_eq!(header("public", "Line \"Items\".v2"), r#"[entities."Line \"Items\".v2"]"#);
    // Each reads back as the key the mapping file looks the table up by.
    for (schema, name, key) in
        [("sales", "item", "sales.item"), ("public", "Line \"Items\".v2", "Line \"Items\".v2")]
    {
        let text = format!("{}\nleave = []\n", header(schema, name));
        let file = MappingFile::parse(&text, "memory.toml").expect("the header parses");
        assert!(file.entities.contains_key(key), "{text}: {:?}", file.entities.keys());
    }
}

#[test]
fn a_name_two_schemas_share_finds_neither_table_but_its_schema_finds_each() {
    use runtime::domain::{Table, TableName};
    let table = |schema: &str| Table {
        name: TableName::new(schema, "orders"),
        ..legacy().tables[0].clone()
    };
    let source =
        SchemaReport { tables: vec![table("b"), table("public")], ..SchemaReport::default() };
    assert!(source.find("orders").is_none());
    assert_eq!(
        source.find("public.orders").map(|t| t.name.qualified()),
        Some("public.orders".into())
    );
    assert_eq!(source.find("b.orders").map(|t| t.name.qualified()), Some("b.orders".into()));
    assert_eq!(
        source.shared("orders").as_deref(),
        Some("`orders` names 2 tables (b.orders, public.orders): write its schema, `b.orders`")
    );
    let one = SchemaReport { tables: vec![table("b")], ..SchemaReport::default() };
    assert_eq!(one.find("orders").map(|t| t.name.qualified()), Some("b.orders".into()));
    assert!(one.shared("orders").is_none());
}
