use expect_test::{expect, Expect};
use runtime::domain::{Column, ForeignKey, SchemaReport, Table, TableName, TypeKind};

use runtime::mapping::MappingSet;

use super::{plan, render, resolve_goal, rounded, Stored};

/// `(fk column, parent table, nullable)`.
type Fk<'a> = (&'a str, &'a str, bool);

/// A small dispatch-like schema: `(table, rows, foreign keys)`.
fn schema(spec: &[(&str, i64, &[Fk<'_>])]) -> SchemaReport {
    SchemaReport {
        database: "localhost:5432/legacy".into(),
        tables: spec
            .iter()
            .map(|(name, rows, fks)| Table {
                name: TableName::new("public", *name),
                columns: std::iter::once(int_column("id", false))
                    .chain(fks.iter().map(|(col, _, nullable)| int_column(col, *nullable)))
                    .collect(),
                primary_key: vec!["id".into()],
                foreign_keys: fks
                    .iter()
                    .map(|(col, parent, _)| ForeignKey {
                        name: format!("{name}_{col}_fkey"),
                        columns: vec![(*col).into()],
                        references: TableName::new("public", *parent),
                        referenced_columns: vec!["id".into()],
                        on_delete: "no action".into(),
                        deferrable: false,
                        deferred: false,
                        validated: true,
                    })
                    .collect(),
                estimated_rows: *rows,
                kind: "table".into(),
                partitions: vec![],
                partitioning: None,
                unique: vec![],
                checks: vec![],
                exclusions: vec![],
                inherits: None,
                indexes: vec![],
                triggers: vec![],
                exact_rows: None,
                avg_row_bytes: 40,
                bytes: 0,
                comment: None,
            })
            .collect(),
        ..SchemaReport::default()
    }
}

fn int_column(name: &str, nullable: bool) -> Column {
    Column {
        name: name.into(),
        data_type: "integer".into(),
        type_name: "int4".into(),
        type_kind: TypeKind::Base,
        max_length: None,
        nullable,
        default: None,
        identity: None,
        generated: None,
        collation: None,
        comment: None,
        stats: None,
    }
}

fn dispatch() -> SchemaReport {
    schema(&[
        ("dispatch_office", 120, &[]),
        ("auth_user", 900, &[]),
        (
            "dispatch_profile",
            900,
            &[("user_id", "auth_user", false), ("office_id", "dispatch_office", true)],
        ),
        (
            "dispatch_doctor",
            400,
            &[("office_id", "dispatch_office", false), ("profile_id", "dispatch_profile", false)],
        ),
        (
            "dispatch_patient",
            5000,
            &[("doctor_id", "dispatch_doctor", false), ("office_id", "dispatch_office", false)],
        ),
        (
            "dispatch_task",
            7000,
            &[("parent_task_id", "dispatch_task", true), ("assignee_id", "dispatch_profile", true)],
        ),
        ("technician_roles", 31, &[]),
    ])
}

fn check(goal: &str, only: bool, report: &SchemaReport, expect: Expect) {
    let actual = match plan(goal, only, report, None, None) {
        Ok(p) => {
            let mut s = render(&p);
            for r in &p.rationale {
                s.push_str(&format!("  - {r}\n"));
            }
            s
        }
        Err(e) => format!("error: {e}\n"),
    };
    expect.assert_eq(&actual);
}

#[test]
fn a_single_table_without_parents() {
    check(
        "migrate technician_roles",
        false,
        &dispatch(),
        expect![[r#"
            Plan for "migrate technician_roles" (1 entities, about 31 rows)
              wave 1:
                technician_roles                                     ~       31 rows  batch 20000
              rollback order: technician_roles
              plan hash: 23bc8daa8cf1b377da8cdfe0719a8dce05cd5cc43519c69c92df0f5531970e17
              - Batch sizes aim at about 4 MiB per batch from the width of each table's rows: technician_roles 20000.
        "#]],
    );
}

#[test]
fn parents_are_added_and_ordered_in_waves() {
    check(
        "migrate the doctors",
        false,
        &dispatch(),
        expect![[r#"
            Plan for "migrate the doctors" (4 entities, about 2320 rows)
              wave 1:
                auth_user                                            ~      900 rows  batch 20000  (needed by dispatch_profile)
                dispatch_office                                      ~      120 rows  batch 20000  (needed by dispatch_doctor, dispatch_profile)
              wave 2:
                dispatch_profile                                     ~      900 rows  batch 20000  (needed by dispatch_doctor)
              wave 3:
                dispatch_doctor                                      ~      400 rows  batch 20000
              rollback order: dispatch_doctor, dispatch_profile, dispatch_office, auth_user
              plan hash: 2d0914ae9c1bf765460600f316b225e0c78b7bd44f60c68180715438305096c2
              - auth_user is included because dispatch_profile references it (plan with --only to leave it out).
              - dispatch_office is included because dispatch_doctor, dispatch_profile reference it (plan with --only to leave it out).
              - dispatch_profile is included because dispatch_doctor references it (plan with --only to leave it out).
              - dispatch_profile is in wave 2 because it references auth_user, dispatch_office.
              - dispatch_doctor is in wave 3 because it references dispatch_office, dispatch_profile.
              - Batch sizes aim at about 4 MiB per batch from the width of each table's rows: auth_user 20000, dispatch_office 20000, dispatch_profile 20000, dispatch_doctor 20000.
        "#]],
    );
}

#[test]
fn only_leaves_parents_out() {
    check(
        "migrate doctors",
        true,
        &dispatch(),
        expect![[r#"
            Plan for "migrate doctors" (1 entities, about 400 rows)
              wave 1:
                dispatch_doctor                                      ~      400 rows  batch 20000
              rollback order: dispatch_doctor
              plan hash: 5f8b662944b008f0e4c534d49fbcce95aada8f792aae1bd40e6dc523d0dd004e
              - Batch sizes aim at about 4 MiB per batch from the width of each table's rows: dispatch_doctor 20000.
        "#]],
    );
}

#[test]
fn self_references_are_deferred() {
    check(
        "Migrate TASKS",
        false,
        &dispatch(),
        expect![[r#"
            Plan for "Migrate TASKS" (4 entities, about 8920 rows)
              wave 1:
                auth_user                                            ~      900 rows  batch 20000  (needed by dispatch_profile)
                dispatch_office                                      ~      120 rows  batch 20000  (needed by dispatch_profile)
              wave 2:
                dispatch_profile                                     ~      900 rows  batch 20000  (needed by dispatch_task)
              wave 3:
                dispatch_task                                        ~     7000 rows  batch 20000  [second pass: dispatch_task_parent_task_id_fkey]
              rollback order: dispatch_task, dispatch_profile, dispatch_office, auth_user
              plan hash: 702595c6ab5e8848cf6d984d559349c575d7e245517881a3e6a7a0df56e92294
              - auth_user is included because dispatch_profile references it (plan with --only to leave it out).
              - dispatch_office is included because dispatch_profile references it (plan with --only to leave it out).
              - dispatch_profile is included because dispatch_task references it (plan with --only to leave it out).
              - dispatch_task.parent_task_id references dispatch_task itself: its rows go in with that reference empty, then a second pass fills it.
              - dispatch_profile is in wave 2 because it references auth_user, dispatch_office.
              - dispatch_task is in wave 3 because it references dispatch_profile.
              - Batch sizes aim at about 4 MiB per batch from the width of each table's rows: auth_user 20000, dispatch_office 20000, dispatch_profile 20000, dispatch_task 20000.
        "#]],
    );
}

#[test]
fn a_cycle_is_broken_at_a_nullable_reference() {
    let report = schema(&[("a", 1, &[("b_id", "b", false)]), ("b", 1, &[("a_id", "a", true)])]);
    check(
        "migrate a",
        false,
        &report,
        expect![[r#"
            Plan for "migrate a" (2 entities, about 2 rows)
              wave 1:
                b                                                    ~        1 rows  batch 20000  (needed by a)  [second pass: b_a_id_fkey]
              wave 2:
                a                                                    ~        1 rows  batch 20000
              rollback order: a, b
              plan hash: b1dd69c7a251ccb9b8e514ef129c369a5830a19a73fe5f15defb5e867fbf13c2
              - b is included because a references it (plan with --only to leave it out).
              - b and a reference each other: b goes first, its b_a_id_fkey written as it is and proven once a is in (the key is put back after the last load).
              - a is in wave 2 because it references b.
              - Batch sizes aim at about 4 MiB per batch from the width of each table's rows: b 20000, a 20000.
        "#]],
    );
    let report = schema(&[("a", 1, &[("b_id", "b", false)]), ("b", 1, &[("a_id", "a", false)])]);
    check(
        "migrate a",
        false,
        &report,
        expect![[r#"
        error: a, b reference each other in a cycle, and none of those references can be left empty for a second pass
    "#]],
    );
}

#[test]
fn unknown_entities_get_suggestions() {
    check(
        "migrate doctorz",
        false,
        &dispatch(),
        expect![[r#"
        error: no table matches `doctorz` in localhost:5432/legacy; did you mean dispatch_doctor?
    "#]],
    );
    check(
        "migrate",
        false,
        &dispatch(),
        expect![[r#"
        error: the goal names no entity; say which tables to migrate, or "everything"
    "#]],
    );
}

#[test]
fn goal_spellings_resolve_to_the_same_tables() {
    let report = dispatch();
    let names = |goal: &str| {
        resolve_goal(goal, &report, None)
            .unwrap()
            .tables
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    assert_eq!(names("migrate dispatch_office"), "dispatch_office");
    assert_eq!(names("offices"), "dispatch_office");
    assert_eq!(
        names("Office, patients and technician-roles"),
        "dispatch_office,dispatch_patient,technician_roles"
    );
    assert_eq!(names("public.auth_user"), "auth_user");
    assert_eq!(names("migrate technician roles and auth users"), "technician_roles,auth_user");
    assert_eq!(names("migrate everything").split(',').count(), 7);
}

#[test]
fn the_hash_changes_when_the_plan_does() {
    let report = dispatch();
    let a = plan("migrate doctors", false, &report, None, None).unwrap();
    let b = plan("migrate doctors", true, &report, None, None).unwrap();
    assert_eq!(a.hash(), plan("migrate doctors", false, &report, None, None).unwrap().hash());
    assert_ne!(a.hash(), b.hash());
    // Fresh statistics (autovacuum analyzed the tables) change no approval.
    let mut analyzed = report.clone();
    for t in &mut analyzed.tables {
        t.estimated_rows += 1_000;
        t.avg_row_bytes *= 40;
    }
    let c = plan("migrate doctors", false, &analyzed, None, None).unwrap();
    assert_ne!(
        c.entities().map(|e| e.batch_size).collect::<Vec<_>>(),
        a.entities().map(|e| e.batch_size).collect::<Vec<_>>()
    );
    assert_eq!(a.hash(), c.hash());
    // A different forecast does.
    let mut forecast = a.clone();
    forecast.waves[0][0].forecast = Some(Default::default());
    assert_ne!(a.hash(), forecast.hash());
}

#[test]
fn a_column_that_keeps_less_than_its_source_is_said_to_round() {
    let column = |data_type: &str, type_name: &str| Column {
        data_type: data_type.into(),
        type_name: type_name.into(),
        ..int_column("c", true)
    };
    let cases = [
        (("numeric(12,4)", "numeric"), ("numeric(10,2)", "numeric"), Some("2 decimals")),
        (("numeric", "numeric"), ("numeric(10,2)", "numeric"), Some("2 decimals")),
        (("numeric(12,2)", "numeric"), ("numeric(14,2)", "numeric"), None),
        (("double precision", "float8"), ("numeric(10,0)", "numeric"), Some("0 decimals")),
        (("integer", "int4"), ("numeric(10,0)", "numeric"), None),
        (("numeric(12,2)", "numeric"), ("numeric", "numeric"), None),
        (
            ("timestamp without time zone", "timestamp"),
            ("timestamp(0) without time zone", "timestamp"),
            Some("whole seconds"),
        ),
        (
            ("timestamp(3) with time zone", "timestamptz"),
            ("timestamp(6) without time zone", "timestamp"),
            None,
        ),
        (
            ("time(6) without time zone", "time"),
            ("time(3) without time zone", "time"),
            Some("3 digits of a second"),
        ),
        (("time without time zone", "time"), ("timestamp(0) without time zone", "timestamp"), None),
        (("double precision", "float8"), ("real", "float4"), Some("about 6 significant digits")),
    ];
    for ((from, from_name), (to, to_name), kept) in cases {
        let (from_column, to_column) = (column(from, from_name), column(to, to_name));
        assert_eq!(
            rounded(&Stored::of(&from_column), &Stored::of(&to_column)).as_deref(),
            kept,
            "{from} into {to}"
        );
    }
    // A domain rounds as its base type does.
    let domain = |base: &str| Column {
        type_kind: TypeKind::Domain { base: base.into() },
        ..column("price", "price")
    };
    let cases = [
        (("numeric(12,4)", "numeric"), "numeric(10,2)", Some("2 decimals")),
        (("numeric(12,2)", "numeric"), "numeric(14,4)", None),
        (
            ("timestamp with time zone", "timestamptz"),
            "timestamp(0) with time zone",
            Some("whole seconds"),
        ),
        (("timestamp(0) with time zone", "timestamptz"), "timestamp(3) with time zone", None),
        (("double precision", "float8"), "real", Some("about 6 significant digits")),
        (("text", "text"), "character varying(10)", None),
    ];
    for ((from, from_name), base, kept) in cases {
        let (from_column, to_column) = (column(from, from_name), domain(base));
        let to = Stored::of(&to_column);
        assert_eq!(to.spelled(&to_column), format!("price (a domain over {base})"));
        assert_eq!(rounded(&Stored::of(&from_column), &to).as_deref(), kept, "{from} into {base}");
    }
}

#[test]
fn a_generic_reference_is_found_by_object_id_or_object_pk() {
    let text = |name: &str| Column {
        data_type: "character varying(255)".into(),
        type_name: "varchar".into(),
        ..int_column(name, false)
    };
    let mut source = schema(&[
        ("django_content_type", 1, &[]),
        ("guardian_userobjectpermission", 1, &[("content_type_id", "django_content_type", false)]),
        ("django_admin_log", 1, &[("content_type_id", "django_content_type", true)]),
        ("plain", 1, &[("content_type_id", "django_content_type", true)]),
    ]);
    source.tables[1].columns.push(text("object_pk"));
    source.tables[2].columns.push(text("object_id"));
    let found: Vec<String> = source.loose_references().iter().map(|l| l.to_string()).collect();
    expect![[r#"
        [
            "guardian_userobjectpermission.object_pk is a generic reference (its table named by content_type_id): no foreign key declares it, so it keeps the old keys, which each target row keeps as legacy_id (to rewrite it, declare it in the mapping file: generic = { object_pk = { by = \"content_type_id\" } })",
            "django_admin_log.object_id is a generic reference (its table named by content_type_id): no foreign key declares it, so it keeps the old keys, which each target row keeps as legacy_id (to rewrite it, declare it in the mapping file: generic = { object_id = { by = \"content_type_id\" } })",
        ]
    "#]]
    .assert_debug_eq(&found);
}

#[test]
fn an_array_of_keys_named_after_a_table_is_said_to_keep_the_old_keys() {
    let column = |name: &str, data_type: &str, type_name: &str| Column {
        data_type: data_type.into(),
        type_name: type_name.into(),
        ..int_column(name, true)
    };
    let mut source = schema(&[("tag", 1, &[]), ("post", 1, &[])]);
    source.tables[1].columns.extend([
        column("tag_ids", "integer[]", "_int4"),
        column("note_ids", "integer[]", "_int4"),
        column("tag_names_ids", "text", "text"),
    ]);
    let found: Vec<String> = source.loose_references().iter().map(|l| l.to_string()).collect();
    expect![[r#"
        [
            "post.tag_ids looks like an array of keys of tag: no foreign key can declare it and agentctl does not rewrite it, so it keeps the old keys, which each target row keeps as legacy_id",
        ]
    "#]]
    .assert_debug_eq(&found);
}

/// A mapping of every table of `report` onto itself, `generic` declaring a generic reference
/// `(table, column, parents)` on one of them.
fn generic_mapping(report: &SchemaReport, generic: (&str, &str, &[&str])) -> MappingSet {
    use runtime::mapping::{ColumnMapping, Feed, MappingSpec};
    let (table, column, parents) = generic;
    let specs = report
        .tables
        .iter()
        .map(|t| {
            let mut columns = vec![ColumnMapping {
                target: "id".into(),
                feed: Feed::Key,
                transforms: vec![],
                rationale: String::new(),
            }];
            if t.name.name == table {
                columns.push(ColumnMapping {
                    target: column.into(),
                    feed: Feed::Generic {
                        column: column.into(),
                        by: "kind".into(),
                        parents: parents
                            .iter()
                            .map(|p| ((*p).to_owned(), TableName::new("public", *p)))
                            .collect(),
                    },
                    transforms: vec![],
                    rationale: String::new(),
                });
            }
            MappingSpec {
                source: t.name.clone(),
                target: t.name.clone(),
                key: vec!["id".into()],
                joins: vec![],
                columns,
                dropped: vec![],
                sync: Default::default(),
            }
        })
        .collect();
    MappingSet {
        keys: runtime::mapping::Keys {
            namespace: uuid::Uuid::nil(),
            layout: runtime::mapping::UuidLayout::Ordered,
        },
        specs,
        unmapped: vec![],
        groups: Default::default(),
        previews: vec![],
        declared: Default::default(),
        generic: Default::default(),
    }
}

#[test]
fn a_generic_reference_loads_after_the_tables_it_can_name() {
    let report = schema(&[("note", 1, &[]), ("page", 1, &[]), ("doc", 1, &[])]);
    let mappings = generic_mapping(&report, ("note", "object_id", &["page", "doc", "note"]));
    let p = plan("migrate note", false, &report, Some(&mappings), None).unwrap();
    let waves: Vec<Vec<String>> =
        p.waves.iter().map(|w| w.iter().map(|e| e.table.name.clone()).collect()).collect();
    assert_eq!(waves, [vec!["doc", "page"], vec!["note"]]);
    let said = "note.object_id is a generic reference: each row is checked, before it is \
        written, against the table its kind names (but note itself, whose rows are not \
        all in yet: once they are, a row pointing at no row is removed and rejected).";
    assert!(p.rationale.iter().any(|r| r == said), "{:#?}", p.rationale);
    assert!(p.waves.iter().flatten().all(|e| e.deferred_foreign_keys.is_empty()));
}

#[test]
fn a_cycle_through_a_generic_reference_is_broken_there() {
    // page references note by a key no row may leave empty; note names page generically.
    let report = schema(&[("note", 1, &[]), ("page", 1, &[("note_id", "note", false)])]);
    let mappings = generic_mapping(&report, ("note", "object_id", &["page"]));
    let p = plan("migrate everything", false, &report, Some(&mappings), None).unwrap();
    let order: Vec<(&str, Vec<String>, Vec<String>)> = p
        .waves
        .iter()
        .flatten()
        .map(|e| {
            let later = e.later_parents.iter().map(|t| t.name.clone()).collect();
            (e.table.name.as_str(), later, e.deferred_foreign_keys.clone())
        })
        .collect();
    assert_eq!(order, [("note", vec!["page".to_owned()], vec![]), ("page", vec![], vec![])]);
    assert!(
        p.rationale.iter().any(|r| r.contains("its generic reference object_id to page")),
        "{:#?}",
        p.rationale
    );
}

#[test]
fn a_table_whose_mapping_has_problems_stops_only_the_plans_that_need_it() {
    use runtime::mapping::{Problem, Unmapped};
    // b references a; c stands alone; a's mapping has a problem.
    let report = schema(&[("a", 1, &[]), ("b", 1, &[("a_id", "a", false)]), ("c", 1, &[])]);
    let mut mappings = generic_mapping(&report, ("c", "x", &[]));
    mappings.specs.retain(|s| s.source.name != "a");
    let problem = Problem {
        table: "a".into(),
        source: Some("public.a".into()),
        column: Some("code".into()),
        message: "is NOT NULL without a default, and nothing in the source feeds it".into(),
        unfed: true,
    };
    mappings.unmapped.push((
        TableName::new("public", "a"),
        Unmapped::Problems { target: Some(TableName::new("public", "a")), problems: vec![problem] },
    ));
    let said = "1 mapping problem(s) in the tables the goal needs: a.code: is NOT NULL without a \
        default, and nothing in the source feeds it";
    for goal in ["migrate a", "migrate b", "migrate everything"] {
        let e = plan(goal, false, &report, Some(&mappings), None).unwrap_err();
        assert!(e.to_string().starts_with(said), "{goal}: {e}");
    }
    let p = plan("migrate c", false, &report, Some(&mappings), None).unwrap();
    let left: Vec<(String, String)> =
        p.left_out.iter().map(|l| (l.table.name.clone(), l.reason.clone())).collect();
    assert!(
        left.contains(&(
            "a".into(),
            "its mapping has problems: a.code: is NOT NULL without a default, and nothing in the \
                source feeds it"
                .into()
        )),
        "{left:?}"
    );
    // With --only, b goes without its parent, as any --only plan does.
    assert!(plan("migrate b", true, &report, Some(&mappings), None).is_ok());
}
