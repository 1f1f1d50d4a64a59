//! Schema analysis, data mapping and planning on real databases: the reference one, Chinook
//! and Employee. Forecasts are compared with the generator's own accounting, orders with the
//! foreign keys, and rendered mappings and plans with reviewed snapshots.

use std::collections::HashMap;

use expect_test::expect;
use serde_json::Value;
use tests::{agentctl, agentctl_on, shared};

fn plan_json(source: &str, target: &str, goal: &str, extra: &[&str]) -> Value {
    let mut args =
        vec!["--source", source, "--target", target, "plan", "--goal", goal, "--format", "json"];
    args.extend_from_slice(extra);
    let out = agentctl(&args);
    assert_eq!(out.code, 0, "{out:?}");
    serde_json::from_str(&out.stdout).unwrap()
}

fn waves(plan: &Value) -> Vec<Vec<String>> {
    plan["plan"]["waves"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            w.as_array()
                .unwrap()
                .iter()
                .map(|e| e["table"]["name"].as_str().unwrap().to_owned())
                .collect()
        })
        .collect()
}

/// Every foreign key of a planned table points at a table of an earlier wave (or at itself).
fn assert_parents_first(source: &str, plan: &Value) {
    let out = agentctl(&["--source", source, "--target", source, "analyze", "--format", "json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let report: Value = serde_json::from_str(&out.stdout).unwrap();
    let wave_of: HashMap<String, usize> = waves(plan)
        .iter()
        .enumerate()
        .flat_map(|(i, w)| w.iter().map(move |t| (t.clone(), i)))
        .collect();
    for t in report["tables"].as_array().unwrap() {
        let name = t["name"]["name"].as_str().unwrap();
        let Some(&w) = wave_of.get(name) else { continue };
        for fk in t["foreign_keys"].as_array().unwrap() {
            let parent = fk["references"]["name"].as_str().unwrap();
            if parent == name {
                continue;
            }
            if let Some(&pw) = wave_of.get(parent) {
                assert!(pw < w, "{name} (wave {w}) comes before its parent {parent} (wave {pw})");
            }
        }
    }
}

#[test]
fn the_reference_forecast_matches_the_generators_accounting_exactly() {
    let pg = shared();
    let (source, target, report) = pg.reference_pair("0.05");
    let plan = plan_json(&source, &target, "migrate everything", &[]);
    let forecasts: HashMap<String, Value> = plan["plan"]["waves"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|w| w.as_array().unwrap().iter())
        .map(|e| (e["table"]["name"].as_str().unwrap().to_owned(), e["forecast"].clone()))
        .collect();
    let mut checked = 0;
    for t in report["tables"].as_array().unwrap() {
        let table = t["table"].as_str().unwrap();
        let Some(expected) = t["expected_rejected"].as_i64() else { continue };
        let f = &forecasts[table];
        assert_eq!(f["reject"].as_i64(), Some(expected), "{table}: forecast {f}");
        assert_eq!(f["migrate"], t["expected_migrated"], "{table}");
        assert_eq!(f["rows"], t["rows"], "{table}");
        checked += 1;
    }
    assert_eq!(checked, 25, "every entity but the merged auth_user");
    assert_parents_first(&source, &plan);
    // The self-reference of tasks is filled in a second pass, and said so.
    assert!(plan["plan"]["rationale"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r.as_str().unwrap().contains("parent_task_id references dispatch_task itself")));
}

#[test]
fn chinook_and_employee_plan_completely_with_generated_targets() {
    let pg = shared();
    for ((source, target), rows) in [(pg.chinook_pair(), 15_607), (pg.employee_pair(), 130_783)] {
        let plan = plan_json(&source, &target, "migrate everything", &[]);
        let entities: Vec<&Value> = plan["plan"]["waves"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|w| w.as_array().unwrap())
            .collect();
        let total: i64 = entities.iter().map(|e| e["forecast"]["rows"].as_i64().unwrap()).sum();
        let rejected: i64 =
            entities.iter().map(|e| e["forecast"]["reject"].as_i64().unwrap()).sum();
        assert_eq!((total, rejected), (rows, 0), "{source}");
        assert_parents_first(&source, &plan);
    }
}

#[test]
fn goals_in_plain_words() {
    let pg = shared();
    let (source, target, _) = pg.reference_pair("0.002");
    let check = |goal: &str, expected: &[&[&str]]| {
        let got = waves(&plan_json(&source, &target, goal, &[]));
        let expected: Vec<Vec<String>> =
            expected.iter().map(|w| w.iter().map(|s| (*s).to_owned()).collect()).collect();
        assert_eq!(got, expected, "{goal}");
    };
    check("migrate technician_roles", &[&["technician_roles"]]);
    for goal in ["migrate the doctors", "migrate core", "Doctors and everything they need"] {
        check(goal, &[&["dispatch_office"], &["dispatch_profile"], &["dispatch_doctor"]]);
    }
    check(
        "migrate orders with deps",
        &[
            &["dispatch_office"],
            &["dispatch_profile"],
            &["dispatch_doctor"],
            &["dispatch_patient"],
            &["dispatch_order"],
        ],
    );
    check("only the orders", &[&["dispatch_order"]]);
    check("technician roles, roles", &[&["dispatch_role", "technician_roles"]]);
    let all = waves(&plan_json(&source, &target, "everything except messages", &[])).concat();
    assert!(!all.iter().any(|t| t.contains("message")), "{all:?}");
    assert!(all.contains(&"dispatch_task".to_owned()));

    let out =
        agentctl(&["--source", &source, "--target", &target, "plan", "--goal", "migrate doktors"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains("no table matches `doktors`") && out.stderr.contains("did you mean"),
        "{}",
        out.stderr
    );
}

#[test]
fn mappings_render_as_reviewed() {
    let pg = shared();
    let (source, target, _) = pg.reference_pair("0.002");
    let show = |entity: &str| {
        let out = agentctl(&["--source", &source, "--target", &target, "mapping", "show", entity]);
        assert_eq!(out.code, 0, "{out:?}");
        out.stdout
    };
    expect![[r#"
        dispatch_doctor -> doctors (legacy key: id)
          id                 <- uuid(legacy key)
                                (derived from the legacy key)
          legacy_id          <- legacy key
                                (the legacy key, kept)
          office_id          <- uuid(dispatch_office: office_id)
                                (same name; the UUID of the dispatch_office row it points at)
          profile_id         <- uuid(dispatch_profile: profile_id)
                                (same name; the UUID of the dispatch_profile row it points at)
          license_number     <- license_no | trim
                                (set in the mapping file)
          specialty          <- specialty | trim
                                (same name; legacy padding trimmed)
          status             <- status | values(0=inactive, 1=active, 2=suspended)
                                (set in the mapping file)
          created_at         <- created_at | timestamptz(UTC)
                                (same name; local time read in the configured zone)
          metadata           <- {}
                                (no legacy column is left over)

    "#]]
    .assert_eq(&show("doctors"));
    expect![[r#"
        dispatch_profile -> profiles (legacy key: id)
          joins auth_user on dispatch_profile.user_id = auth_user.id
          id                 <- uuid(legacy key)
                                (derived from the legacy key)
          legacy_id          <- legacy key
                                (the legacy key, kept)
          legacy_user_id     <- auth_user.id
                                (set in the mapping file)
          username           <- auth_user.username | trim
                                (set in the mapping file)
          email              <- auth_user.email | trim | lower
                                (set in the mapping file)
          full_name          <- auth_user.first_name + auth_user.last_name joined by " " | trim
                                (set in the mapping file)
          office_id          <- uuid(dispatch_office: office_id)
                                (same name; the UUID of the dispatch_office row it points at)
          role               <- role | trim | lower
                                (same name; legacy padding trimmed; free text matched to the enum's labels, ignoring case and spaces)
          phone              <- phone | trim
                                (same name; legacy padding trimmed)
          is_active          <- auth_user.is_active
                                (set in the mapping file)
          is_staff           <- auth_user.is_staff
                                (set in the mapping file)
          settings           <- settings | json
                                (same name; JSON text checked to parse)
          joined_at          <- auth_user.date_joined | timestamptz(UTC)
                                (set in the mapping file)
          last_login_at      <- auth_user.last_login | timestamptz(UTC)
                                (set in the mapping file)
          metadata           <- {created}
                                (legacy columns with no target column: created)

    "#]]
    .assert_eq(&show("profiles"));
    let plan =
        agentctl(&["--source", &source, "--target", &target, "plan", "--goal", "migrate core"]);
    expect![[r#"
        I will copy 3 tables (about 15 rows) in 3 steps.
        Step 1: dispatch_office.
        Step 2: dispatch_profile.
        Step 3: dispatch_doctor.
        I read every row ahead: all of them fit the new database.

        Plan for "migrate core" (3 entities, about 15 rows)
          wave 1:
            dispatch_office -> offices                                   5 rows         5 migrate       0 reject  batch 20000
          wave 2:
            dispatch_profile -> profiles                                 5 rows         5 migrate       0 reject  batch 20000
          wave 3:
            dispatch_doctor -> doctors                                   5 rows         5 migrate       0 reject  batch 20000
          expected: 15 rows migrated, 0 rejected
          rollback order: dispatch_doctor, dispatch_profile, dispatch_office
          plan hash: 116d11a11e934b3c4be873c066a600d77c64a6df0c58f7979e4fed1b3367f491
          - auth_user is not an entity of its own: merged into the rows of the table that joins it.
          - dispatch_profile is in wave 2 because it references dispatch_office.
          - dispatch_doctor is in wave 3 because it references dispatch_office, dispatch_profile.
          - Batch sizes aim at about 4 MiB per batch from the width of each table's rows: dispatch_office 20000, dispatch_profile 20000, dispatch_doctor 20000.
    "#]]
    .assert_eq(&plan.stdout);
}

#[test]
fn mapping_problems_name_the_table_and_column() {
    let pg = shared();
    let (source, target, _) = pg.reference_pair("0.002");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    let builtin =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../mappings/dispatch.toml"))
            .unwrap();
    let bad = builtin
        .replace(
            r#"license_number = { from = "license_no", transforms = ["trim"] }"#,
            r#"license_number = { from = "licence" }"#,
        )
        .replace(r#""2" = "suspended""#, r#""2" = "sleeping""#);
    std::fs::write(&file, bad).unwrap();
    let path = file.to_str().unwrap();
    let plan = |goal: &str| {
        agentctl_on(
            &source,
            &target,
            &["plan", "--goal", goal, "--mapping", path, "--format", "json"],
        )
    };
    let out = plan("migrate doctors");
    assert_eq!(out.code, 2, "a mapping file with problems is bad configuration: {out:?}");
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(
        out.stderr.contains(
            "doctors.license_number: the mapping file reads `licence`, which the \
            source does not have"
        ),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(
            "doctors.status: maps `2` to `sleeping`, which is not a value of doctor_status"
        ),
        "{}",
        out.stderr
    );
    // A goal that needs doctors as a parent stops at them too; one that does not goes on, and
    // says why doctors is left out.
    let out = plan("migrate patients");
    assert_eq!(out.code, 2, "patients reference doctors: {out:?}");
    assert!(out.stderr.contains("doctors.license_number: the mapping file reads"), "{out:?}");
    let out = plan("migrate offices");
    assert_eq!(out.code, 0, "offices needs no doctor: {out:?}");
    let left: Value = serde_json::from_str(&out.stdout).unwrap();
    let why = left["plan"]["left_out"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["table"]["name"] == "dispatch_doctor")
        .map(|l| l["reason"].as_str().unwrap().to_owned());
    assert!(
        why.as_deref().is_some_and(|w| w.starts_with("its mapping has problems: doctors.")),
        "{why:?}: {}",
        out.stdout
    );

    std::fs::write(&file, "[entities.dispatch_doctor]\ntargett = \"doctors\"\n").unwrap();
    let out = plan("migrate doctors");
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("unknown field `targett`"), "{}", out.stderr);
}

#[test]
fn an_initialised_mapping_file_plans_the_same() {
    let pg = shared();
    let (source, target) = pg.chinook_pair();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("chinook.toml");
    let out = agentctl(&[
        "--source",
        &source,
        "--target",
        &target,
        "mapping",
        "init",
        "--output",
        file.to_str().unwrap(),
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("wrote the mapping of 11 entities"), "{}", out.stdout);
    let inferred = plan_json(&source, &target, "migrate everything", &[]);
    let from_file =
        plan_json(&source, &target, "migrate everything", &["--mapping", file.to_str().unwrap()]);
    assert_eq!(inferred["hash"], from_file["hash"]);
}

/// A target column that keeps less of a value than its source column (fewer decimals, fewer
/// digits of a second) has the server round the rest away without a word: the plan says so,
/// column by column, before anything runs.
#[test]
fn the_plan_says_which_columns_the_target_rounds() {
    let pg = shared();
    let (source, target) = (pg.create_db("rounding"), pg.create_db("rounding_target"));
    pg.psql(
        source.rsplit('/').next().unwrap(),
        "CREATE TABLE item (id int PRIMARY KEY, price numeric(12,4) NOT NULL, at timestamp, n int,
             fee numeric(12,4), due timestamptz);
         INSERT INTO item VALUES (1, 1.2345, '2020-01-01 10:00:00.5', 1, 0.125, now());",
    );
    pg.psql(
        target.rsplit('/').next().unwrap(),
        "CREATE DOMAIN cents AS numeric(10,2) CHECK (VALUE >= 0);
         CREATE DOMAIN instant AS timestamptz(0);
         CREATE TABLE item (id uuid PRIMARY KEY, legacy_id int NOT NULL UNIQUE,
             price numeric(10,2) NOT NULL, at timestamp(0), n numeric(8,2), fee cents, due instant);",
    );
    let plan = agentctl_on(&source, &target, &["plan", "--goal", "migrate everything"]);
    assert_eq!(plan.code, 0, "{plan:?}");
    let rounded: Vec<&str> = plan.stdout.lines().filter(|l| l.contains("Rounded:")).collect();
    assert_eq!(
        rounded,
        [
            "  - Rounded: item.price is numeric(12,4) and item.price numeric(10,2), which keeps 2 \
             decimals: the target rounds the rest away (validation compares the rounded values).",
            "  - Rounded: item.at is timestamp without time zone and item.at timestamp(0) without \
             time zone, which keeps whole seconds: the target rounds the rest away (validation \
             compares the rounded values).",
            "  - Rounded: item.fee is numeric(12,4) and item.fee cents (a domain over \
             numeric(10,2)), which keeps 2 decimals: the target rounds the rest away (validation \
             compares the rounded values).",
            "  - Rounded: item.due is timestamp with time zone and item.due instant (a domain over \
             timestamp(0) with time zone), which keeps whole seconds: the target rounds the rest \
             away (validation compares the rounded values)."
        ],
        "{}",
        plan.stdout
    );
}

/// A target column the target computes (`GENERATED ALWAYS AS`) where the source stores values
/// of its own: the source's values would never reach the target, so the plan is refused by
/// name until the mapping file leaves the column on purpose. A generated column the source
/// computes alike (the adversarial corpus' `nights`) is reproduced and needs nothing.
#[test]
fn a_source_column_the_target_computes_instead_is_refused_until_left_on_purpose() {
    let pg = shared();
    let (source, target) = (pg.create_db("computed"), pg.create_db("computed_target"));
    pg.psql(
        source.rsplit('/').next().unwrap(),
        "CREATE TABLE line (id int PRIMARY KEY, qty int NOT NULL, price numeric(8,2) NOT NULL,
             total numeric(10,2) NOT NULL);
         INSERT INTO line VALUES (1, 2, 5.00, 9.00), (2, 1, 3.00, 3.00);",
    );
    pg.psql(
        target.rsplit('/').next().unwrap(),
        "CREATE TABLE line (id uuid PRIMARY KEY, legacy_id int NOT NULL UNIQUE, qty int NOT NULL,
             price numeric(8,2) NOT NULL, total numeric(10,2) GENERATED ALWAYS AS (qty * price) STORED);",
    );
    let plan = agentctl_on(&source, &target, &["plan", "--goal", "migrate everything"]);
    assert_ne!(plan.code, 0, "{plan:?}");
    assert!(
        plan.stderr.contains(
            "total: line.total is computed by the target (GENERATED ALWAYS AS \
             (((qty)::numeric * price))), not copied, and line has no metadata column: the \
             source's own values would be left behind; make line.total a plain column, or leave \
             it on purpose in the mapping file: [entities.line] leave = [\"total\"]"
        ),
        "{}",
        plan.stderr
    );
    let dir = tempfile::tempdir().unwrap();
    let leave = dir.path().join("leave.toml");
    std::fs::write(&leave, "[entities.line]\nleave = [\"total\"]\n").unwrap();
    let leave = leave.to_str().unwrap();
    let plan = agentctl_on(
        &source,
        &target,
        &["plan", "--goal", "migrate everything", "--mapping", leave],
    );
    assert_eq!(plan.code, 0, "{plan:?}");
    assert!(
        plan.stdout.contains("Left behind on purpose (the mapping file's leave): total of line."),
        "{}",
        plan.stdout
    );
}

/// An `oid` column (or the `lo` extension's domain over it) names large objects, which live
/// apart from every table: copying the numbers would leave the contents behind and the new rows
/// naming nothing. The run is refused by column before anything is written, until the mapping
/// file leaves the columns on purpose. The target schema is generated from a source with the
/// `lo` extension, whose domain comes with the extension.
#[test]
fn a_column_naming_large_objects_is_refused_until_left_on_purpose() {
    let pg = shared();
    let (source, target) = (pg.create_db("blobs"), pg.create_db("blobs_target"));
    pg.psql(
        source.rsplit('/').next().unwrap(),
        "CREATE EXTENSION lo;
         CREATE TABLE document (id int PRIMARY KEY, title text NOT NULL, content oid, scan lo);
         INSERT INTO document SELECT g, 'doc ' || g, lo_from_bytea(0, convert_to(repeat('page ', g), 'UTF8')),
             CASE WHEN g = 2 THEN lo_from_bytea(0, '\\xdeadbeef')::lo END FROM generate_series(1, 2) g;",
    );
    let out = agentctl_on(&source, &target, &["schema", "generate", "--from-source", "--apply"]);
    assert_eq!(out.code, 0, "the lo extension brings its own domain: {out:?}");
    let t = target.rsplit('/').next().unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec!["run", "--goal", "migrate everything", "--yes"];
        args.extend_from_slice(extra);
        agentctl_on(&source, &target, &args)
    };
    let out = run(&[]);
    assert_eq!(out.code, 2, "{out:?}");
    for column in ["content", "scan"] {
        let said = format!(
            "document.{column}: its source column {column} names large objects (an oid column; \
             the source holds 3 of them), which agentctl does not copy: the new rows would name \
             objects that are not there; keep the contents in a bytea column instead (ALTER TABLE \
             \"public\".\"document\" ALTER \"{column}\" TYPE bytea USING lo_get(\"{column}\")), or \
             leave the column on purpose in the mapping file: [entities.document] leave = \
             [\"{column}\"]"
        );
        assert!(out.stderr.contains(&said), "{said}: {}", out.stderr);
    }
    assert_eq!(pg.psql(t, "SELECT count(*) FROM document"), "0", "nothing ran");

    let dir = tempfile::tempdir().unwrap();
    let leave = dir.path().join("leave.toml");
    std::fs::write(&leave, "[entities.document]\nleave = [\"content\", \"scan\"]\n").unwrap();
    let out = run(&["--mapping", leave.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains(
            "Left behind on purpose (the mapping file's leave): content, scan of document."
        ),
        "{}",
        out.stdout
    );
    assert_eq!(
        pg.psql(
            t,
            "SELECT string_agg(format('%s %s %s %s', legacy_id, title, content IS NULL, scan IS NULL), \
                ', ' ORDER BY legacy_id) FROM document"
        ),
        "1 doc 1 t t, 2 doc 2 t t",
        "the rows are there, without the large objects",
    );
}

/// One table name in two schemas, as a database of one schema per tenant has it: `mapping
/// init` keys each by its schema, and the run with that file moves each tenant's rows into its
/// own table. A bare name that means both is refused, in the mapping file and in a goal.
#[test]
fn a_table_name_two_schemas_share_is_never_taken_for_one_table() {
    let pg = shared();
    let (source, target) = pg.generated_pair(
        "tenants",
        "CREATE SCHEMA b;
         CREATE TABLE public.orders (id int PRIMARY KEY, total int);
         CREATE TABLE b.orders (id int PRIMARY KEY, total int);
         INSERT INTO public.orders SELECT i, i FROM generate_series(1, 5) i;
         INSERT INTO b.orders SELECT i, 100 + i FROM generate_series(1, 8) i;",
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tenants.toml");
    let path = file.to_str().unwrap();
    let out = agentctl_on(&source, &target, &["mapping", "init", "--output", path]);
    assert_eq!(out.code, 0, "{out:?}");
    let written = std::fs::read_to_string(&file).unwrap();
    for key in ["[entities.\"public.orders\"]", "[entities.\"b.orders\"]", "target = \"b.orders\""]
    {
        assert!(written.contains(key), "{key}: {written}");
    }
    let run = agentctl_on(
        &source,
        &target,
        &["run", "--goal", "migrate everything", "--yes", "--mapping", path],
    );
    assert_eq!(run.code, 0, "{run:?}");
    let t = target.rsplit('/').next().unwrap();
    assert_eq!(
        pg.psql(
            t,
            "SELECT sum(total) FROM public.orders UNION ALL SELECT sum(total) FROM b.orders"
        ),
        "15\n836"
    );
    // A bare name that means both tables, in the file or in a goal, says which tables it means.
    std::fs::write(
        &file,
        "[groups]\nshop = [\"orders\"]\n[entities.orders]\nleave = [\"total\"]\n",
    )
    .unwrap();
    let out = agentctl_on(
        &source,
        &target,
        &["plan", "--goal", "migrate public.orders", "--mapping", path],
    );
    assert_eq!(out.code, 2, "{out:?}");
    for said in [
        "orders: names 2 tables (b.orders, public.orders): key the rule by the schema",
        "orders: group `shop` names 2 tables (b.orders, public.orders)",
    ] {
        assert!(out.stderr.contains(said), "{said}: {}", out.stderr);
    }
    // A group's member is read as a goal's word is: a rule of its own for one of the tables
    // does not make the bare name mean the other.
    std::fs::write(
        &file,
        "[groups]\nshop = [\"orders\"]\n[entities.\"public.orders\"]\nleave = []\n",
    )
    .unwrap();
    let out = agentctl_on(&source, &target, &["plan", "--goal", "shop", "--mapping", path]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains("orders: group `shop` names 2 tables (b.orders, public.orders)"),
        "{}",
        out.stderr
    );
    // So does a target named by the bare name the new database's schemas share.
    std::fs::write(&file, "[entities.\"b.orders\"]\ntarget = \"orders\"\n").unwrap();
    let out = agentctl_on(&source, &target, &["plan", "--goal", "b.orders", "--mapping", path]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains(
            "b.orders: the mapping file's target `orders` names 2 tables (b.orders, \
                public.orders): write its schema, target = \"b.orders\""
        ),
        "{}",
        out.stderr
    );
    let out = agentctl_on(&source, &target, &["plan", "--goal", "migrate orders"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains("`orders` names several tables (b.orders, public.orders)"),
        "{}",
        out.stderr
    );
}

/// A database restored from a dump has no statistics until it is analyzed: the server's
/// estimate of its rows is unknown and no column has a width. The plan estimates the rows from
/// the tables' pages, as the server's own planner does, and samples the width of their rows: a
/// table of 64 kB rows goes in batches of a few dozen rows, not 20,000 (which held 1.6 GB for
/// rows of 20 kB), and every row still arrives once.
#[test]
fn a_database_never_analyzed_is_planned_from_its_pages_and_sampled_rows() {
    let pg = shared();
    let (source, target) = pg.generated_pair(
        "restored",
        "CREATE TABLE doc (id int PRIMARY KEY, body text) WITH (autovacuum_enabled = false);
         ALTER TABLE doc ALTER body SET STORAGE EXTERNAL;
         INSERT INTO doc SELECT g, (SELECT string_agg(md5(g || '-' || i), '') FROM generate_series(1, 2048) i)
             FROM generate_series(1, 300) g;
         CREATE TABLE note (id int PRIMARY KEY, line text) WITH (autovacuum_enabled = false);
         INSERT INTO note SELECT g, 'note ' || g FROM generate_series(1, 5000) g;
         CREATE TABLE zip (id int PRIMARY KEY, body text) WITH (autovacuum_enabled = false);
         INSERT INTO zip SELECT g, repeat('agentctl ' || g || ' ', 3000) FROM generate_series(1, 200) g;",
    );
    let s = source.rsplit('/').next().unwrap();
    assert_eq!(
        pg.psql(s, "SELECT string_agg(reltuples::text, ' ' ORDER BY relname) FROM pg_class WHERE relname IN ('doc', 'note', 'zip')"),
        "-1 -1 -1",
        "never analyzed"
    );
    let out = agentctl_on(&source, &target, &["run", "--goal", "migrate everything", "--yes"]);
    assert_eq!(out.code, 0, "{out:?}");
    let planned = |table: &str| -> (i64, i64) {
        let line = out
            .stdout
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{table} -> {table} ")))
            .unwrap_or_else(|| panic!("{table} is planned: {}", out.stdout));
        let number = |after: &str| -> i64 {
            let at = line.find(after).unwrap_or_else(|| panic!("{after} in {line}"));
            line[..at].split_whitespace().last().unwrap().parse().unwrap()
        };
        (number(" rows"), line.rsplit(' ').next().unwrap().parse().unwrap())
    };
    let (doc_rows, doc_batch) = planned("doc");
    assert!((150..=600).contains(&doc_rows), "doc's 300 rows estimated {doc_rows}");
    assert!((32..=128).contains(&doc_batch), "4 MiB of 64 kB rows, not {doc_batch}");
    let (note_rows, note_batch) = planned("note");
    assert!((2_500..=10_000).contains(&note_rows), "note's 5,000 rows estimated {note_rows}");
    assert_eq!(note_batch, 20_000, "narrow rows, as many as a batch takes");
    let (_, zip_batch) = planned("zip");
    let t = target.rsplit('/').next().unwrap();
    assert_eq!(
        pg.psql(
            t,
            "SELECT string_agg(format('%s %s %s', source_table, rows_read, batches), ', ' ORDER BY source_table) \
                FROM agentctl.migration_checkpoints"
        ),
        format!(
            "doc 300 {}, note 5000 1, zip 200 {}",
            300usize.div_ceil(doc_batch as usize),
            200usize.div_ceil(zip_batch as usize)
        ),
    );
    assert_eq!(pg.psql(t, "SELECT count(DISTINCT md5(body)) FROM doc"), "300");

    // Analyzed, the statistics give a body kept in TOAST the 18 bytes of its pointer, and one
    // stored compressed (36 kB of text that repeats) the bytes it takes compressed: the width
    // of the rows as they are read is what a batch is planned from.
    pg.psql(s, "ANALYZE doc; ANALYZE zip;");
    let stored: i64 =
        pg.psql(s, "SELECT sum(avg_width) FROM pg_stats WHERE tablename = 'zip'").parse().unwrap();
    assert!(stored < 4_000, "zip's 36 kB rows are stored in {stored} bytes");
    let plan = plan_json(&source, &target, "migrate doc and zip", &[]);
    for (table, wide) in [("doc", 32..=128), ("zip", 60..=200)] {
        let entity = plan["plan"]["waves"][0]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["table"]["name"] == table)
            .unwrap_or_else(|| panic!("{table} in {plan}"));
        let batch = entity["batch_size"].as_i64().unwrap();
        assert!(wide.contains(&batch), "4 MiB of {table}'s rows as read, not {batch}");
    }
}
