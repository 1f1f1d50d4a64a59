//! Real databases nobody on this team wrote, migrated on first sight: `schema generate
//! --from-source --apply`, `run --goal "migrate everything"`, then five checks made here, from
//! the two catalogs and the rows, not from what agentctl reports: rows per table (less the
//! rejections it recorded), each foreign key's links (every child key with the key of the row
//! it points at, on both sides), natural joins written once for both sides, `validate` and
//! `audit verify`.

use std::collections::BTreeMap;
use std::path::Path;

use tests::{agentctl, datasets, shared, PgCluster};

fn db_of(url: &str) -> &str {
    url.rsplit('/').next().unwrap()
}

/// A source table: its qualified, quoted name and its primary key's columns.
struct SourceTable {
    display: String,
    quoted: String,
    key: Vec<String>,
    /// `ONLY ` for a plain table (its own rows, not those of tables inheriting from it), or
    /// nothing for a partitioned one (its partitions' rows).
    only: &'static str,
}

fn source_tables(pg: &PgCluster, db: &str) -> Vec<SourceTable> {
    let out = pg.psql(
        db,
        "SELECT CASE WHEN n.nspname = 'public' THEN c.relname ELSE n.nspname || '.' || c.relname END,
                quote_ident(n.nspname) || '.' || quote_ident(c.relname),
                coalesce((SELECT string_agg(quote_ident(a.attname), ',' ORDER BY k.ord) FROM pg_constraint p
                          CROSS JOIN LATERAL unnest(p.conkey) WITH ORDINALITY k(num, ord)
                          JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.num
                          WHERE p.conrelid = c.oid AND p.contype = 'p'), ''),
                c.relkind
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
           AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'agentctl') AND n.nspname NOT LIKE 'pg\\_%'
         ORDER BY 1",
    );
    out.lines()
        .map(|l| {
            let f: Vec<&str> = l.split('|').collect();
            SourceTable {
                display: f[0].to_owned(),
                quoted: f[1].to_owned(),
                key: f[2].split(',').filter(|s| !s.is_empty()).map(str::to_owned).collect(),
                only: if f[3] == "r" { "ONLY " } else { "" },
            }
        })
        .collect()
}

/// A source foreign key, on the table that holds its rows (a partition's, on its parent).
struct Link {
    name: String,
    child: String,
    columns: Vec<String>,
    parent: String,
    referenced: Vec<String>,
}

fn source_links(pg: &PgCluster, db: &str) -> Vec<Link> {
    let out = pg.psql(
        db,
        "WITH RECURSIVE top(oid, root) AS (
             SELECT c.oid, c.oid FROM pg_class c WHERE NOT c.relispartition
             UNION ALL SELECT i.inhrelid, t.root FROM pg_inherits i JOIN top t ON t.oid = i.inhparent)
         SELECT DISTINCT ON (t.root, con.conkey, con.confrelid) con.conname,
                t.root::regclass::text, con.confrelid::regclass::text,
                (SELECT string_agg(quote_ident(a.attname), ',' ORDER BY k.ord) FROM unnest(con.conkey) WITH ORDINALITY k(num, ord)
                 JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.num),
                (SELECT string_agg(quote_ident(a.attname), ',' ORDER BY k.ord) FROM unnest(con.confkey) WITH ORDINALITY k(num, ord)
                 JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.num)
         FROM pg_constraint con JOIN top t ON t.oid = con.conrelid
         WHERE con.contype = 'f' AND con.conparentid = 0
         ORDER BY t.root, con.conkey, con.confrelid, con.conname",
    );
    out.lines()
        .map(|l| {
            let f: Vec<&str> = l.split('|').collect();
            Link {
                name: f[0].to_owned(),
                child: f[1].to_owned(),
                parent: f[2].to_owned(),
                columns: f[3].split(',').map(str::to_owned).collect(),
                referenced: f[4].split(',').map(str::to_owned).collect(),
            }
        })
        .collect()
}

/// `regclass` text with the schema spelled out, for a name the source printed unqualified.
fn qualified(pg: &PgCluster, db: &str, regclass: &str) -> String {
    pg.psql(
        db,
        &format!(
            "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) FROM \
        pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = '{}'::regclass",
            regclass.replace('\'', "''")
        ),
    )
}

fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

fn key_text(alias: &str, key: &[String]) -> String {
    if key.is_empty() {
        "''".to_owned()
    } else {
        format!(
            "concat_ws('|', {})",
            key.iter().map(|k| format!("{alias}.{k}::text")).collect::<Vec<_>>().join(", ")
        )
    }
}

/// The links of one key as `md5:count`, the pairs (child key > parent key) sorted.
fn digest(pairs: &str) -> String {
    format!(
        "SELECT coalesce(md5(string_agg(pair, ',' ORDER BY pair COLLATE \"C\")), '-') || ':' \
        || count(*) FROM ({pairs}) l(pair)"
    )
}

/// Runs the whole check on one database; `joins` are natural joins with `{id:col}` standing for
/// the key column `col` of the source, `id` in the target (`{legacy:col}`: `legacy_id` in the
/// target; `{kept:col}`: the data column `id` or `legacy_id` kept as `source_col`); `rejected` the rows expected to be rejected, by source table; `mapping` a mapping
/// file for the schema, the run and the validation.
fn migrate_and_prove(
    pg: &PgCluster,
    source: &str,
    joins: &[&str],
    rejected: &[(&str, i64)],
    mapping: Option<&Path>,
) -> String {
    let target = pg.create_db(&format!("{}_target", db_of(source)));
    let (s, t) = (db_of(source), db_of(&target));
    let mapping: Vec<&str> =
        mapping.map(|m| vec!["--mapping", m.to_str().unwrap()]).unwrap_or_default();
    let with = |args: &[&str]| -> tests::Output {
        let mut all = vec!["--source", source, "--target", &target];
        all.extend_from_slice(args);
        all.extend_from_slice(&mapping);
        agentctl(&all)
    };
    let out = with(&["schema", "generate", "--from-source", "--apply"]);
    assert_eq!(out.code, 0, "schema generate on {s}: {out:?}");
    let out = with(&["run", "--goal", "migrate everything", "--yes", "--format", "json"]);
    assert_eq!(out.code, 0, "run on {s}: {out:?}");

    // Rows per table, less what was rejected with a reason.
    let recorded: BTreeMap<String, i64> = pg
        .psql(t, "SELECT source_table, count(*) FROM agentctl.rejected_rows GROUP BY 1")
        .lines()
        .filter_map(|l| l.split_once('|'))
        .map(|(k, v)| (k.to_owned(), v.parse().unwrap()))
        .collect();
    let expected: BTreeMap<String, i64> =
        rejected.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect();
    assert_eq!(recorded, expected, "{s}: the rows rejected, by table");
    let tables = source_tables(pg, s);
    assert!(!tables.is_empty());
    for table in &tables {
        let count = |db: &str| {
            let sql = format!("SELECT count(*) FROM {}{}", table.only, table.quoted);
            pg.psql(db, &sql).parse::<i64>().unwrap()
        };
        let gone = recorded.get(&table.display).copied().unwrap_or(0);
        assert_eq!(count(t) + gone, count(s), "{s}: rows of {}", table.display);
    }

    // Partitions stay partitions, each with its rows; every index is valid (an index of a
    // partitioned table put back `ON ONLY` it would not be, nor exist on its partitions).
    let partitions = pg.psql(
        s,
        "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relispartition AND c.relkind = 'r' ORDER BY 1",
    );
    for partition in partitions.lines() {
        let in_target = format!(
            "SELECT relispartition FROM pg_class WHERE oid = '{}'::regclass",
            partition.replace('\'', "''")
        );
        assert_eq!(pg.psql(t, &in_target), "t", "{s}: {partition} is a partition in the target");
        let count = |db: &str| pg.psql(db, &format!("SELECT count(*) FROM {partition}"));
        assert_eq!(count(t), count(s), "{s}: rows of partition {partition}");
    }
    assert_eq!(
        pg.psql(t, "SELECT count(*) FROM pg_index WHERE NOT indisvalid"),
        "0",
        "{s}: every index of the target is valid"
    );

    // Comments on tables and on the columns kept as they were.
    let comments = |db: &str| {
        pg.psql(
            db,
            "SELECT c.relname || coalesce('.' || a.attname, '') || ': ' || d.description FROM pg_description d
             JOIN pg_class c ON c.oid = d.objoid AND d.classoid = 'pg_class'::regclass
             JOIN pg_namespace n ON n.oid = c.relnamespace
             LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = d.objsubid AND d.objsubid > 0
             WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('agentctl', 'pg_catalog', 'information_schema')
               AND coalesce(a.attname, '') NOT IN ('legacy_id', 'id') ORDER BY 1",
        )
    };
    assert_eq!(comments(t), comments(s), "{s}: comments");

    // Every sequence a column draws from hands out a value past the column's rows.
    let drawn = pg.psql(
        t,
        "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname), quote_ident(a.attname), s.oid::regclass::text
         FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
         JOIN pg_depend d ON d.refobjid = c.oid AND d.refobjsubid = a.attnum AND d.classid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
         JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
         WHERE n.nspname <> 'agentctl' AND c.relkind IN ('r', 'p') AND NOT c.relispartition",
    );
    for line in drawn.lines() {
        let f: Vec<&str> = line.split('|').collect();
        let past = pg.psql(
            t,
            &format!(
                "SELECT coalesce((SELECT max({}) FROM {}), 0) < (SELECT CASE WHEN is_called THEN \
                    last_value + 1 ELSE last_value END FROM {})",
                f[1], f[0], f[2]
            ),
        );
        assert_eq!(
            past, "t",
            "{s}: the sequence {} of {}.{} hands out a value past its rows",
            f[2], f[0], f[1]
        );
    }

    // Each foreign key's links: the same child rows point at the same parent rows.
    let keys: BTreeMap<String, Vec<String>> =
        tables.iter().map(|t| (t.quoted.clone(), t.key.clone())).collect();
    // The links of each key, by (table, columns): what `validate` must count in the target.
    let mut linked: BTreeMap<(String, String), i64> = BTreeMap::new();
    for link in source_links(pg, s) {
        let (child, parent) = (qualified(pg, s, &link.child), qualified(pg, s, &link.parent));
        let on = |a: &str, cols: &[String]| {
            format!("({})", cols.iter().map(|c| format!("{a}.{c}")).collect::<Vec<_>>().join(", "))
        };
        let child_key = keys.get(&child).map(Vec::as_slice).unwrap_or_default();
        let legacy = |a: &str| {
            if child_key.is_empty() {
                "''".to_owned()
            } else {
                format!("{a}.legacy_id::text")
            }
        };
        // Less the links of the child rows rejected with a reason.
        let display = tables
            .iter()
            .find(|t| t.quoted == child)
            .map(|t| t.display.as_str())
            .unwrap_or_default();
        let gone = pg.psql(
            t,
            &format!(
                "SELECT coalesce(string_agg(quote_literal(legacy_key), ','), '') FROM \
                    agentctl.rejected_rows WHERE source_table = {}",
                quote_literal(display)
            ),
        );
        let source_pairs = format!(
            "SELECT {} || '>' || {} FROM {child} c JOIN {parent} p ON {} = {}{}",
            key_text("c", child_key),
            key_text("p", &keys[&parent]),
            on("p", &link.referenced),
            on("c", &link.columns),
            if gone.is_empty() {
                String::new()
            } else {
                format!(" WHERE {} NOT IN ({gone})", key_text("c", child_key))
            },
        );
        // In the target the key is either a uuid reference to the parent's id or kept on the
        // same columns.
        let rewritten = link.columns.len() == 1
            && pg.psql(
                t,
                &format!(
                    "SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND conrelid = '{}'::regclass AND confrelid = '{}'::regclass
                       AND conkey = ARRAY[(SELECT attnum FROM pg_attribute WHERE attrelid = conrelid AND quote_ident(attname) = '{}')]
                       AND confkey = ARRAY[(SELECT attnum FROM pg_attribute WHERE attrelid = confrelid AND attname = 'id')]",
                    child.replace('\'', "''"),
                    parent.replace('\'', "''"),
                    link.columns[0].replace('\'', "''")
                ),
            ) == "1";
        let target_on = if rewritten {
            format!("p.id = c.{}", link.columns[0])
        } else {
            format!("{} = {}", on("p", &link.referenced), on("c", &link.columns))
        };
        let target_pairs = format!(
            "SELECT {} || '>' || p.legacy_id::text FROM {child} c JOIN {parent} p ON {target_on}",
            legacy("c")
        );
        let (from, to) = (pg.psql(s, &digest(&source_pairs)), pg.psql(t, &digest(&target_pairs)));
        assert_eq!(to, from, "{s}: the links of {} ({child} -> {parent})", link.name);
        let count = to.rsplit(':').next().unwrap().parse::<i64>().unwrap();
        *linked.entry((child.clone(), link.columns.join(","))).or_default() += count;
    }

    // Questions an application asks, on non-key columns: the same answers.
    for join in joins {
        let side = |key: &str| -> String {
            let mut sql = join.to_string();
            for (mark, in_target) in
                [("{id:", "id"), ("{legacy:", "legacy_id"), ("{kept:", "source_")]
            {
                while let Some(at) = sql.find(mark) {
                    let end = at + sql[at..].find('}').unwrap();
                    let col = sql[at + mark.len()..end].to_owned();
                    let renamed = match in_target {
                        "source_" => format!("source_{col}"),
                        _ => in_target.to_owned(),
                    };
                    sql.replace_range(at..=end, if key == "id" { &renamed } else { &col });
                }
            }
            sql
        };
        let (from, to) = (pg.psql(s, &side("source")), pg.psql(t, &side("id")));
        assert!(!from.is_empty(), "{s}: the join answers something: {join}");
        assert_eq!(to, from, "{s}: {join}");
    }

    // `validate` counts the same links, each equal on both sides.
    let out = with(&["validate", "--format", "json"]);
    assert_eq!(out.code, 0, "validate on {s}: {out:?}");
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let quote =
        |name: &str| pg.psql(t, &format!("SELECT quote_ident('{}')", name.replace('\'', "''")));
    let mut counted: BTreeMap<(String, String), i64> = BTreeMap::new();
    for entity in report["entities"].as_array().unwrap() {
        let table = format!(
            "{}.{}",
            quote(entity["target"]["schema"].as_str().unwrap()),
            quote(entity["target"]["name"].as_str().unwrap())
        );
        for l in entity["links"].as_array().unwrap() {
            assert_eq!(l["source"], l["target"], "{s}: validate's links of {table}: {l}");
            let columns: Vec<String> = l["columns"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| quote(c.as_str().unwrap()))
                .collect();
            counted.insert((table.clone(), columns.join(",")), l["target"].as_i64().unwrap());
        }
    }
    for (key, links) in &linked {
        assert_eq!(counted.get(key), Some(links), "{s}: validate counts the links of {key:?}");
    }
    let out = agentctl(&["--target", &target, "audit", "verify"]);
    assert_eq!(out.code, 0, "audit verify on {s}: {out:?}");
    target
}

fn load(pg: &PgCluster, prefix: &str, script: &Path, cwd: &Path) -> String {
    let url = pg.create_db(prefix);
    pg.psql_file(db_of(&url), script, cwd);
    url
}

#[test]
fn chinook_is_migrated_whole() {
    let pg = shared();
    let source = pg.chinook();
    migrate_and_prove(
        pg,
        &source,
        &[
            "SELECT ar.name, count(*), min(al.title) FROM artist ar JOIN album al ON al.artist_id \
                = ar.{id:artist_id} GROUP BY 1 ORDER BY 1",
            "SELECT c.last_name, c.first_name, sum(il.unit_price * il.quantity) FROM customer c
               JOIN invoice i ON i.customer_id = c.{id:customer_id} JOIN invoice_line il ON il.invoice_id = i.{id:invoice_id}
             GROUP BY 1, 2 ORDER BY 1, 2",
            "SELECT p.name, count(*) FROM playlist p JOIN playlist_track pt ON pt.playlist_id = \
                p.{id:playlist_id} GROUP BY 1 ORDER BY 1, 2",
            "SELECT e.last_name, m.last_name FROM employee e JOIN employee m ON e.reports_to = \
                m.{id:employee_id} ORDER BY 1, 2",
        ],
        &[],
        None,
    );
}

#[test]
fn employee_is_migrated_whole() {
    let pg = shared();
    let dir = datasets().join("employee");
    let source = load(pg, "employee", &dir.join("employee.sql"), &dir);
    migrate_and_prove(
        pg,
        &source,
        &[
            "SELECT d.dept_name, count(*), min(e.hire_date) FROM department d
               JOIN dept_emp de ON de.dept_no = d.{id:dept_no} JOIN employee e ON e.{id:emp_no} = de.emp_no
             GROUP BY 1 ORDER BY 1",
            "SELECT e.last_name, max(s.amount) FROM employee e JOIN salary s ON s.emp_no = e.{id:emp_no}
             WHERE e.last_name LIKE 'Fac%' GROUP BY 1 ORDER BY 1",
        ],
        &[],
        None,
    );
}

#[test]
fn northwind_is_migrated_whole() {
    let pg = shared();
    let dir = datasets().join("northwind");
    let source = load(pg, "northwind", &dir.join("northwind.sql"), &dir);
    migrate_and_prove(
        pg,
        &source,
        &[
            "SELECT c.company_name, count(*), sum(od.unit_price * od.quantity) FROM customers c
               JOIN orders o ON o.customer_id = c.{id:customer_id} JOIN order_details od ON od.order_id = o.{id:order_id}
             GROUP BY 1 ORDER BY 1",
            "SELECT cat.category_name, s.company_name, count(*) FROM products p JOIN categories cat ON p.category_id = cat.{id:category_id}
               JOIN suppliers s ON p.supplier_id = s.{id:supplier_id} GROUP BY 1, 2 ORDER BY 1, 2",
            "SELECT e.last_name, t.territory_description FROM employees e JOIN employee_territories et ON et.employee_id = e.{id:employee_id}
               JOIN territories t ON t.{id:territory_id} = et.territory_id ORDER BY 1, 2",
        ],
        &[],
        None,
    );
}

#[test]
fn iso_3166_and_its_keyless_subdivisions_are_migrated_whole() {
    let pg = shared();
    let dir = datasets().join("iso-3166");
    let source = load(pg, "iso3166", &dir.join("iso-3166.sql"), &dir);
    migrate_and_prove(
        pg,
        &source,
        &["SELECT c.name, count(*), min(s.subcountry_name) FROM country c JOIN subcountry s ON \
            s.country = c.{id:two_letter} GROUP BY 1 ORDER BY 1"],
        &[],
        None,
    );
}

/// A real Django schema, built by Django's migrations of Wagtail and its apps (auth, admin,
/// contenttypes, taggit, ...), filled through the site's models. The mapping file declares the
/// page log's page_id (Wagtail declares it without a constraint) a reference, and taggit's
/// generic relation (a content type and an object id) a generic reference: both are rewritten to
/// UUIDs. The generic relations it leaves alone keep the old keys, which each target row keeps
/// as legacy_id. A small app of the corpus's own (`zoo`) adds the shapes Wagtail does not make:
/// multi-table inheritance, a UUID key, arrays, ranges, intervals, bytea and inet.
#[test]
fn a_wagtail_site_built_by_django_is_migrated_whole() {
    let Some(python) = tests::django_python() else { return };
    let pg = shared();
    let source = pg.django(&python);
    let mapping = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/django/mapping.toml");
    // The log entries of the page deleted by the fill point at no page: rejected, with that reason.
    let dangling: i64 = pg
        .psql(
            db_of(&source),
            "SELECT count(*) FROM wagtailcore_pagelogentry l WHERE NOT EXISTS (SELECT 1 FROM \
                wagtailcore_page p WHERE p.id = l.page_id)",
        )
        .parse()
        .unwrap();
    assert!(dangling > 0, "the fill deletes a page whose log entries stay");
    let target = migrate_and_prove(
        pg,
        &source,
        &[
            "SELECT p.title, p.depth, u.username FROM wagtailcore_page p JOIN auth_user u ON \
                p.owner_id = u.{id:id} ORDER BY 1, 2, 3",
            "SELECT g.name, count(*) FROM auth_group g JOIN auth_group_permissions gp ON gp.group_id = g.{id:id}
               JOIN auth_permission p ON gp.permission_id = p.{id:id} GROUP BY 1 ORDER BY 1",
            "SELECT ct.app_label, ct.model, t.name, d.title FROM taggit_taggeditem ti JOIN taggit_tag t ON ti.tag_id = t.{id:id}
               JOIN django_content_type ct ON ti.content_type_id = ct.{id:id} JOIN wagtaildocs_document d ON d.{id:id} = ti.object_id
             ORDER BY 1, 2, 3, 4",
            "SELECT l.object_repr, p.title FROM django_admin_log l JOIN wagtailcore_page p ON \
                p.{legacy:id}::text = l.object_id ORDER BY 1, 2",
            // A workflow state and its current task state reference each other.
            "SELECT p.title, ws.status, ts.status FROM wagtailcore_workflowstate ws
               JOIN wagtailcore_taskstate ts ON ws.current_task_state_id = ts.{id:id} AND ts.workflow_state_id = ws.{id:id}
               JOIN wagtailcore_page p ON p.{legacy:id}::text = ws.object_id ORDER BY 1",
            // The reference the mapping file declares: rewritten to the page's UUID.
            "SELECT p.title, l.action, count(*) FROM wagtailcore_pagelogentry l JOIN wagtailcore_page p ON l.page_id = p.{id:id}
             GROUP BY 1, 2 ORDER BY 1, 2",
            // The zoo: a child of multi-table inheritance, keyed by its parent's key; a UUID key
            // (kept as legacy_id) and its self-reference; PostgreSQL's own types, as they were.
            "SELECT p.name, host(p.location), r.serves_pizza FROM zoo_restaurant r JOIN zoo_place p ON r.place_ptr_id = p.{id:id}
             ORDER BY 1",
            "SELECT k.{legacy:code}, k.name, m.name FROM zoo_keeper k LEFT JOIN zoo_keeper m ON k.mentor_id = m.{id:code} ORDER BY 1",
            "SELECT a.name, a.kind, a.weight, a.age, encode(a.photo, 'hex'), a.tags, a.stay, a.meta::text, k.name, p.name
             FROM zoo_animal a LEFT JOIN zoo_keeper k ON a.keeper_id = k.{id:code} LEFT JOIN zoo_place p ON a.home_id = p.{id:id}
             ORDER BY 1",
            "SELECT a.name, b.name FROM zoo_animal_friends f JOIN zoo_animal a ON f.from_animal_id = a.{id:id}
               JOIN zoo_animal b ON f.to_animal_id = b.{id:id} ORDER BY 1, 2",
        ],
        &[("wagtailcore_pagelogentry", dangling)],
        Some(&mapping),
    );
    let t = db_of(&target);
    assert_eq!(
        pg.psql(
            t,
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = \
            'wagtailcore_pagelogentry'::regclass AND attname = 'page_id'"
        ),
        "uuid"
    );
    let reason = pg.psql(
        t,
        "SELECT DISTINCT reason FROM agentctl.rejected_rows WHERE \
        source_table = 'wagtailcore_pagelogentry'",
    );
    assert!(
        reason.contains("wagtailcore_page"),
        "rejected because the page is not there: {reason}"
    );
    // What no foreign key declares, and the mapping file does not either, is named in the plan.
    let out = agentctl(&[
        "--source",
        &source,
        "--target",
        &target,
        "plan",
        "--goal",
        "migrate everything",
        "--mapping",
        mapping.to_str().unwrap(),
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    let said = "Not rewritten: wagtailcore_referenceindex.to_object_id is a generic reference \
        (its table named by to_content_type_id)";
    assert!(out.stdout.contains(said), "{said}: {}", out.stdout);
    for declared in [
        "Not rewritten: wagtailcore_pagelogentry.page_id",
        "Not rewritten: taggit_taggeditem.object_id",
    ] {
        assert!(!out.stdout.contains(declared), "the mapping file declares it: {}", out.stdout);
    }
    // A declared generic reference is rewritten, and checked as the rows go in.
    let checked = "taggit_taggeditem.object_id is a generic reference: each row is checked, \
        before it is written, against the table its content_type_id names";
    assert!(out.stdout.contains(checked), "{checked}: {}", out.stdout);
    let named = format!(
        "{dangling} x wagtailcore_pagelogentry.page_id: the wagtailcore_page row it points at ("
    );
    assert!(out.stdout.contains(&named), "the plan names the rows it will reject: {}", out.stdout);
    // A declaration that names what is not there stops before anything, naming each.
    let bad =
        std::env::temp_dir().join(format!("agentctl-bad-references-{}.toml", std::process::id()));
    std::fs::write(
        &bad,
        "[entities.wagtailcore_pagelogentry]\nreferences = { nope_id = \
        \"auth_user\", page_id = \"no_such_table\" }\n",
    )
    .unwrap();
    let out = agentctl(&[
        "--source",
        &source,
        "--target",
        &target,
        "schema",
        "generate",
        "--from-source",
        "--mapping",
        bad.to_str().unwrap(),
    ]);
    std::fs::remove_file(&bad).unwrap();
    assert_eq!(out.code, 2, "{out:?}");
    for said in [
        "wagtailcore_pagelogentry.nope_id: the mapping file declares a reference on a column the \
            source table does not have",
        "wagtailcore_pagelogentry.page_id: the mapping file's reference names `no_such_table`, \
            which the source does not have",
    ] {
        assert!(out.stderr.contains(said), "{said}: {}", out.stderr);
    }
    // And `analyze` says how to declare one.
    let out = agentctl(&["--source", &source, "--target", &target, "analyze"]);
    assert!(
        out.stdout.contains(
            "wagtailcore_pagelogentry.page_id looks like a reference to wagtailcore_page"
        ) && out.stdout.contains("references = { page_id = \"wagtailcore_page\" }"),
        "{out:?}"
    );
}

/// The columns of the adversarial schema's `odd_value`, as text where a type has no equality.
const ODD_VALUES: &str =
    "span, bits, varbits, doc::text, words, moods, tags, grid, host, net, mac, \
    spot::text, area::text, nights, stay, raw, closing, opening, ratio, weight";

/// Every shape of `tests/corpus/adversarial.sql` in one database: reserved words, odd names,
/// extension types, schemas, partitions with their own foreign keys, composite keys and keys,
/// keys to a unique rule, a keyless table with identical rows.
#[test]
fn an_adversarial_schema_is_migrated_whole() {
    let pg = shared();
    let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let source = load(pg, "adversarial", &here.join("adversarial.sql"), &here);
    let target = migrate_and_prove(
        pg,
        &source,
        &[
            "SELECT u.\"default\", u.mood, count(*), sum(l.price) FROM \"user\" u
               JOIN \"Odd Schema\".\"Line \"\"Items\"\".v2 ✓\" l ON l.\"Owner.Handle\" = \
                   u.{id:\"user\"} GROUP BY 1, 2 ORDER BY 1, 2",
            "SELECT r.name, count(*), sum(p.amount) FROM payment p JOIN sales.store s ON p.store_id = s.{id:id}
               JOIN sales.region r ON (r.country, r.code) = (s.country, s.region_code) GROUP BY 1 ORDER BY 1",
            "SELECT e.name, m.name FROM employee e JOIN employee m ON e.manager_id = m.{id:id} \
                ORDER BY 1, 2",
            "SELECT who, what, happened_at, count(*) FROM audit_log GROUP BY 1, 2, 3 HAVING \
                count(*) > 1 ORDER BY 1, 2, 3",
            // The generic reference, rewritten to the UUID of the row its kind names.
            "SELECT r.body, e.name FROM remark r JOIN employee e ON r.about_id = e.{id:id} WHERE \
                r.about_kind = 'employee' ORDER BY 1",
            "SELECT r.body, s.country FROM remark r JOIN sales.store s ON r.about_id = s.{id:id} \
                WHERE r.about_kind = 'store' ORDER BY 1",
            // (But the remark about the reply that goes: it goes with it.)
            "SELECT r.body, o.body FROM remark r JOIN remark o ON r.about_id = o.{id:id} \
                WHERE r.about_kind = 'remark' AND r.body <> 'about that reply' ORDER BY 1",
            // Every value of the unusual ones, as it was.
            "SELECT {legacy:id}, at, at_zone, day, doc::text, docb, amount, second, fee, big FROM reading \
                ORDER BY 1",
            &format!("SELECT {{legacy:id}}, {ODD_VALUES} FROM odd_value ORDER BY 1"),
            // Data named id, kept as source_id: a keyless child's, and part of a key over two
            // levels of partitions.
            "SELECT {kept:id}, name, seats FROM van ORDER BY 1",
            "SELECT tableoid::regclass, {kept:id}, region, weight FROM shipment ORDER BY 2, 3",
            "SELECT a, b, v FROM key_pair ORDER BY v",
            "SELECT {legacy:id}, title, metadata FROM document ORDER BY 1",
            "SELECT {legacy:id}, '[' || email || ']', '[' || label || ']' FROM contact ORDER BY 1",
            "SELECT s.name, p.name FROM sales.product s JOIN product p ON s.base_id = p.{id:id} ORDER BY 1",
            "SELECT {legacy:id}, code, wearer FROM name_tag ORDER BY 1",
            // References written otherwise than the key they equal, each to its parent.
            "SELECT l.{legacy:id}, m.owner FROM mail_login l JOIN mailbox m ON l.address = m.{id:address} \
                ORDER BY 1",
            "SELECT u.{legacy:id}, t.label FROM tariff_use u JOIN tariff t ON u.amount = t.{id:amount} \
                ORDER BY 1",
        ],
        // The one row of a NOT VALID key that points at no employee, the one login that
        // equals no mailbox, the remark about a kind the mapping file does not name, the one
        // about an employee who is not there, the one about a remark that is not, the reply to
        // a remark that is not and the remark about that reply.
        &[("badge", 1), ("mail_login", 1), ("remark", 5)],
        Some(&here.join("adversarial.toml")),
    );
    // A varchar equals char's padded key as the foreign key compares them (as char), which a
    // join of the two as text does not: so asked of the target alone.
    let codes = pg.psql(
        db_of(&target),
        "SELECT u.legacy_id, w.meaning FROM code_use u LEFT JOIN code_word w ON w.id = u.code ORDER BY 1",
    );
    assert_eq!(codes, "1|x\n2|x\n3|y\n4|");
    let mapping = here.join("adversarial.toml");
    // Right after the load nothing is out of step: not the reply rejected for a remark that was
    // never written (its parent is in neither database, so it is not tried again).
    let analysis = tests::agentctl_on(
        &source,
        &target,
        &["diff", "analyze", "--mapping", mapping.to_str().unwrap()],
    );
    assert!(analysis.stdout.contains("source rows compared: 0 out of step"), "{analysis:?}");
    let plan = tests::agentctl_on(
        &source,
        &target,
        &["plan", "--goal", "migrate everything", "--mapping", mapping.to_str().unwrap()],
    );
    assert!(
        plan.stdout.contains(
            "Not reproduced: foreign table public.remote_rate (recreate it in the target after the \
                migration; its rows live outside the database and are not migrated)."
        ),
        "{plan:?}"
    );
    let rules = |db: &str| {
        pg.psql(
            db,
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint
             WHERE conrelid = 'queue_slot'::regclass AND conname IN ('queue_slot_position', 'queue_slot_board') ORDER BY 1",
        )
    };
    assert_eq!(rules(db_of(&target)), rules(db_of(&source)), "unique rules as declared");
    let reason = pg.psql(
        db_of(&target),
        "SELECT reason FROM agentctl.rejected_rows WHERE source_table = 'remark' ORDER BY \
            legacy_key",
    );
    // Removed after the load or refused before it, each is recorded with its source row, as
    // the legacy database holds it (not as the target held it for a moment: UUIDs).
    let recorded = pg.psql(
        db_of(&target),
        "SELECT legacy_key, source_row->>'id', source_row->>'about_id', source_row->>'reply_to', \
            source_row ? 'legacy_id' FROM agentctl.rejected_rows WHERE source_table = 'remark' \
            ORDER BY legacy_key",
    );
    assert_eq!(recorded, "41|41|7||f\n43|43|9999||f\n47|47|999||f\n48|48||9999|f\n49|49|48||f");
    // A generic reference is checked against the table its kind names, as a foreign key is,
    // also when the row it names went for its own reference after the load (48, then 49).
    assert_eq!(
        reason,
        "remark.about_id: its about_kind ghost names no table whose keys the mapping rewrites\n\
            remark.about_id: the employee row it points at is not in the target\n\
            remark.about_id: the row it points at was not migrated\n\
            remark.reply_to: the row it points at was not migrated\n\
            remark.about_id: the row it points at was not migrated"
    );
    assert!(
        plan.stdout.contains(
            "remark.about_id is a generic reference: each row is checked, before it is written, \
                against the table its about_kind names (but remark itself"
        ),
        "{plan:?}"
    );
    for said in [
        "1 x remark.about_id: its about_kind ghost names no table",
        "1 x remark.about_id: the employee row it points at (9999) does not exist in the source",
        // Two rows pointing at different remarks (47 at 999, 49 at 48): no one parent named.
        "2 x remark.about_id: the remark row it points at is not migrated (e.g. 47, 49)",
    ] {
        assert!(plan.stdout.contains(said), "{said}: {plan:?}");
    }
    // The sync checks them too: a new remark about a store goes in, one about an employee who
    // is not there is rejected with that reason.
    pg.psql(
        db_of(&source),
        "INSERT INTO remark VALUES (45, 'store', 3, 'a new one'), (46, 'employee', 9998, 'gone')",
    );
    let synced = tests::agentctl_on(
        &source,
        &target,
        &["diff", "migrate", "remark", "--analyze", "--mapping", mapping.to_str().unwrap()],
    );
    assert_eq!(synced.code, 0, "{synced:?}");
    let fates = pg.psql(
        db_of(&target),
        "SELECT r.legacy_id, s.country FROM remark r JOIN sales.store s ON s.id = r.about_id WHERE \
            r.legacy_id = 45 UNION ALL SELECT 46, reason FROM agentctl.rejected_rows WHERE \
            source_table = 'remark' AND legacy_key = '46'",
    );
    assert_eq!(
        fates,
        format!(
            "45|{}\n46|remark.about_id: the row it points at is not in the target",
            pg.psql(db_of(&target), "SELECT country FROM sales.store WHERE legacy_id = 3")
        )
    );
    a_changed_value_of_any_type_is_found(pg, &source, &target, &mapping);
    odd_values_are_kept_in_step(pg, &source, &target, &mapping);
}

/// The differential sync carries `odd_value`'s changes over as exactly as the load did: values
/// changed to other edges of their types, a row deleted, a row added.
fn odd_values_are_kept_in_step(pg: &PgCluster, source: &str, target: &str, mapping: &Path) {
    pg.psql(
        db_of(source),
        "UPDATE odd_value SET doc = '<b/>', words = 'a:1 b:2', moods = '{}', tags = ARRAY[NULL]::text[],
             raw = '\\x', weight = '-0', opening = '00:00:00-12', span = '-5 min', grid = '{{1},{2}}'
         WHERE id = 1;
         DELETE FROM odd_value WHERE id = 3;
         INSERT INTO odd_value (id, spot, grid, area) VALUES (4, point(1e-300, 1e300), '{{1,2},{3,4}}',
             box(point(3, 3), point(-3, -3)));",
    );
    let args =
        ["diff", "migrate", "odd_value", "--analyze", "--mapping", mapping.to_str().unwrap()];
    let synced = tests::agentctl_on(source, target, &args);
    assert_eq!(synced.code, 0, "{synced:?}");
    let values = |db: &str, key: &str, live: &str| {
        pg.psql(db, &format!("SELECT {key}, {ODD_VALUES} FROM odd_value{live} ORDER BY 1"))
    };
    assert_eq!(
        values(db_of(target), "legacy_id", " WHERE deleted_at IS NULL"),
        values(db_of(source), "id", ""),
        "odd_value after the sync"
    );
}

/// The validation sees one value of `odd_value` changed behind agentctl's back, whatever its
/// type, also where the type's own equality calls the two equal (-0 and 0, `1 day` and
/// `24:00:00`, a time of day at another zone): what is stored is not what the source holds.
/// The same value written otherwise (a box by its other corners, `0 years`) is no change.
fn a_changed_value_of_any_type_is_found(
    pg: &PgCluster,
    source: &str,
    target: &str,
    mapping: &Path,
) {
    let t = db_of(target);
    pg.psql(t, "CREATE TABLE public.odd_value_as_migrated AS SELECT * FROM odd_value");
    let validate = || {
        let args = ["validate", "odd_value", "--mapping", mapping.to_str().unwrap()];
        tests::agentctl_on(source, target, &args)
    };
    let changed = [
        "span = '-1 year -2 mons +3 days -04:05:06.123455' WHERE legacy_id = 1",
        "bits = B'1011' WHERE legacy_id = 1",
        "varbits = B'1010' WHERE legacy_id = 1",
        "doc = '<a x=\"1\">t&amp;2</a>' WHERE legacy_id = 1",
        "words = to_tsvector('english', 'the quick brown cat') WHERE legacy_id = 1",
        "moods = ARRAY['calm']::mood[] WHERE legacy_id = 1",
        "tags = ARRAY['x,y', 'a\"b', NULL, NULL, ''] WHERE legacy_id = 1",
        "grid = '{{1,NULL},{3,5}}' WHERE legacy_id = 1",
        "host = '10.0.0.1/25' WHERE legacy_id = 1",
        "mac = '08:00:2b:01:02:04' WHERE legacy_id = 1",
        "spot = point(1e-300, -9e299) WHERE legacy_id = 1",
        "area = box(point(0, 0), point(1.5, 2.5)) WHERE legacy_id = 1",
        "stay = tstzrange('2020-01-01 00:00+00', '2021-01-01 00:00+04') WHERE legacy_id = 1",
        "raw = '\\x00ff11' WHERE legacy_id = 1",
        "closing = '23:59:59.999999' WHERE legacy_id = 1",
        "opening = '10:34:56.789+00' WHERE legacy_id = 1",
        "weight = 0 WHERE legacy_id = 1",
        "span = '24:00:00' WHERE legacy_id = 2",
        "tags = '{}' WHERE legacy_id = 2",
    ];
    let unchanged = [
        "area = box(point(-1, -1), point(2, 2)) WHERE legacy_id = 2",
        "span = '0 years' WHERE legacy_id = 2",
    ];
    for (update, found) in
        changed.iter().map(|u| (u, true)).chain(unchanged.iter().map(|u| (u, false)))
    {
        pg.psql(t, &format!("UPDATE odd_value SET {update}"));
        let out = validate();
        let line = out.stdout.lines().find(|l| l.starts_with("odd_value ")).unwrap_or_default();
        let fields: Vec<&str> = line.split_whitespace().collect();
        match found {
            true => {
                assert_ne!(out.code, 0, "{update}: {out:?}");
                assert_eq!(fields.get(5), Some(&"1"), "{update}: one row differs: {line}");
            }
            false => assert_eq!(out.code, 0, "{update} is the same value: {out:?}"),
        }
        pg.psql(
            t,
            "DELETE FROM odd_value; INSERT INTO odd_value SELECT * FROM public.odd_value_as_migrated",
        );
    }
    assert_eq!(validate().code, 0, "the values as migrated");
}

/// A legacy database that reads a backslash in a string literal as an escape
/// (`standard_conforming_strings = off`, the default before PostgreSQL 9.1): text keys ending in
/// backslashes, read in keyset pages across several pages, every row migrated once.
#[test]
fn a_database_reading_backslashes_as_escapes_is_paged_as_written() {
    let pg = shared();
    let source = pg.create_db("escapes");
    let db = db_of(&source);
    pg.psql(
        db,
        "CREATE TABLE item (code text PRIMARY KEY, note text);
         INSERT INTO item SELECT 'k' || lpad(i::text, 6, '0') || E'\\\\', 'n' || i
         FROM generate_series(1, 50000) i;",
    );
    pg.psql(db, &format!("ALTER DATABASE {db} SET standard_conforming_strings = off"));
    migrate_and_prove(pg, &source, &[], &[], None);
}

/// An old database that stores text as SQL_ASCII keeps bytes of no declared encoding. A value
/// that is not UTF-8 (LATIN1's é) stops the run before anything is written, approved ahead or
/// not (the load would have written the pages before it), naming the table and the row and
/// saying what to do; converted, the text migrates as it is.
#[test]
fn a_sql_ascii_database_stops_at_bytes_that_are_not_utf8_before_anything_runs() {
    let pg = shared();
    let name = format!("ascii_{}", std::process::id());
    pg.psql(
        "postgres",
        &format!(
            "CREATE DATABASE {name} ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C' \
                TEMPLATE template0"
        ),
    );
    // No statistics: their values are text too, and the schema's reading would stop there.
    pg.psql(
        &name,
        "CREATE TABLE person (id int PRIMARY KEY, name text NOT NULL) WITH (autovacuum_enabled = false);
         INSERT INTO person SELECT i, 'p' || i FROM generate_series(1, 60) i;
         INSERT INTO person VALUES (61, E'Jos\\xe9');",
    );
    let (source, target) = (pg.url(&name), pg.create_db("ascii_target"));
    let on = |args: &[&str]| {
        let all = [&["--source", source.as_str(), "--target", target.as_str()], args].concat();
        // Pages of 20 rows: the load would write three before the one that stops it.
        tests::agentctl_with(&all, &[("BATCH_SIZE", "20")])
    };
    assert_eq!(on(&["schema", "generate", "--from-source", "--apply"]).code, 0);
    let run = on(&["run", "--goal", "migrate everything", "--yes"]);
    assert_ne!(run.code, 0, "{run:?}");
    for said in ["while reading person, row 61 in key order", "SQL_ASCII", "iconv"] {
        assert!(run.stderr.contains(said), "{said}: {}", run.stderr);
    }
    let t = db_of(&target);
    assert_eq!(pg.psql(t, "SELECT count(*) FROM person"), "0", "nothing written");
    // Converted to UTF-8 (as iconv from LATIN1 would): migrated as it is.
    pg.psql(&name, "UPDATE person SET name = E'Jos\\xc3\\xa9' WHERE id = 61");
    let run = on(&["run", "--goal", "migrate everything", "--yes"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(pg.psql(t, "SELECT name FROM person WHERE legacy_id = 61"), "Jos\u{e9}");
    assert_eq!(pg.psql(t, "SELECT count(*) FROM person"), "61");
}

/// A cycle whose rows the target will partly refuse cannot be settled by the load yet: the plan
/// says so, naming the rows, and nothing runs.
#[test]
fn a_cycle_with_rejected_rows_is_refused_before_anything_runs() {
    let pg = shared();
    let source = pg.create_db("cycle");
    pg.psql(
        db_of(&source),
        "CREATE TABLE emp (id int PRIMARY KEY);
         CREATE TABLE team (id int PRIMARY KEY, name text NOT NULL, lead_id int);
         CREATE TABLE member (id int PRIMARY KEY, team_id int NOT NULL REFERENCES team (id), emp_id int);
         ALTER TABLE team ADD FOREIGN KEY (lead_id) REFERENCES member (id) DEFERRABLE INITIALLY DEFERRED;
         INSERT INTO emp SELECT generate_series(1, 5);
         BEGIN;
         INSERT INTO team SELECT i, 't' || i, i FROM generate_series(1, 4) i;
         INSERT INTO member VALUES (1, 1, 1), (2, 2, 2), (3, 3, 3), (4, 4, 4), (5, 1, 1), (6, 2, 99);
         COMMIT;
         ALTER TABLE member ADD FOREIGN KEY (emp_id) REFERENCES emp (id) NOT VALID;
         UPDATE team SET lead_id = 6 WHERE id = 3;",
    );
    let target = pg.create_db("cycle_target");
    let out = agentctl(&[
        "--source",
        &source,
        "--target",
        &target,
        "schema",
        "generate",
        "--from-source",
        "--apply",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    let out = agentctl(&[
        "--source",
        &source,
        "--target",
        &target,
        "run",
        "--goal",
        "migrate everything",
        "--yes",
    ]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains(
            "team and member reference each other, and 1 rows of team point at \
            member rows that will be rejected (e.g. 3)"
        ),
        "{}",
        out.stderr
    );
    assert_eq!(pg.psql(db_of(&target), "SELECT count(*) FROM emp"), "0", "nothing ran");
}

/// A table the goal asks for that no target table takes, or a foreign key the target would not
/// keep, stops the plan before anything runs, naming it; leaving the table out by name works.
#[test]
fn a_table_or_a_reference_nothing_takes_stops_the_plan() {
    let pg = shared();
    let dir = datasets().join("iso-3166");
    let source = load(pg, "iso3166", &dir.join("iso-3166.sql"), &dir);
    let target = pg.create_db("iso3166_partial");
    let out = agentctl(&[
        "--source",
        &source,
        "--target",
        &target,
        "schema",
        "generate",
        "--from-source",
        "--apply",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    let t = db_of(&target);
    pg.psql(t, "ALTER TABLE subcountry RENAME TO regions");
    let run = |goal: &str| {
        agentctl(&["--source", &source, "--target", &target, "run", "--goal", goal, "--yes"])
    };
    let out = run("migrate everything");
    assert_eq!(out.code, 2, "what the target lacks is the operator's to change: {out:?}");
    assert!(out.stderr.contains("nothing can take the rows of subcountry"), "{}", out.stderr);
    assert_eq!(pg.psql(t, "SELECT count(*) FROM country"), "0", "nothing ran");

    let out = run("migrate everything except subcountry");
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains("not migrated (excluded by the goal): subcountry"),
        "every source table has an outcome: {}",
        out.stdout
    );
    assert!(
        out.stdout.contains("every row of the 1 tables above is accounted for: 242 = 242 migrated"),
        "{}",
        out.stdout
    );
    let report = agentctl(&["--target", &target, "report", "--format", "md"]);
    assert!(
        report.stdout.contains("| subcountry | not migrated: excluded by the goal |"),
        "the report too: {}",
        report.stdout
    );
    let report = agentctl(&["--target", &target, "report"]);
    assert!(
        report.stdout.lines().any(|l| l == "subcountry: not migrated: excluded by the goal"),
        "{}",
        report.stdout
    );
    assert_eq!(pg.psql(t, "SELECT count(*) FROM country"), "242");

    pg.psql(
        t,
        "ALTER TABLE regions RENAME TO subcountry; ALTER TABLE subcountry DROP CONSTRAINT \
        subcountry_country_fkey, ALTER COLUMN country TYPE text",
    );
    let out = run("migrate subcountry");
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains("foreign key subcountry_country_fkey to country is not kept"),
        "{}",
        out.stderr
    );
    assert_eq!(pg.psql(t, "SELECT count(*) FROM subcountry"), "0", "nothing ran");
}

/// A generic reference kept in a text column, as django-guardian's `object_pk` and
/// django-reversion's `object_id` are (`varchar(255)`): declared in the mapping, each value
/// becomes its parent's UUID as text. The rows whose parent is missing are rejected, those
/// naming a row of their own table that never came are removed after the load, and
/// validation counts the links: comparing the text with a UUID stopped the load before
/// ("operator does not exist: uuid = character varying").
#[test]
fn a_generic_reference_held_as_text_is_rewritten_and_proven() {
    let pg = shared();
    let source = pg.create_db("generic_text");
    pg.psql(
        db_of(&source),
        "CREATE TABLE django_content_type (id serial PRIMARY KEY, app_label text NOT NULL, model text NOT NULL);
         INSERT INTO django_content_type (app_label, model) VALUES ('shop', 'item'), ('shop', 'note');
         CREATE TABLE shop_item (id int PRIMARY KEY, name text NOT NULL);
         INSERT INTO shop_item SELECT g, 'item ' || g FROM generate_series(1, 5) g;
         CREATE TABLE shop_note (id int PRIMARY KEY,
             content_type_id int NOT NULL REFERENCES django_content_type (id),
             object_pk varchar(255) NOT NULL, body text);
         INSERT INTO shop_note VALUES
             (1, 1, '1', 'on item 1'), (2, 1, '5', 'on item 5'), (3, 1, '9', 'on an item gone'),
             (4, 2, '1', 'on note 1'), (5, 2, '4', 'on note 4'), (6, 2, '77', 'on a note gone');",
    );
    let target = pg.create_db("generic_text_target");
    let on = |args: &[&str]| {
        let mut all = vec!["--source", &source, "--target", &target];
        all.extend_from_slice(args);
        agentctl(&all)
    };
    assert_eq!(on(&["schema", "generate", "--from-source", "--apply"]).code, 0);
    let dir = tempfile::tempdir().unwrap();
    let mapping = dir.path().join("mapping.toml");
    std::fs::write(
        &mapping,
        "[entities.shop_note]\ngeneric = { object_pk = { by = \"content_type_id\" } }\n",
    )
    .unwrap();
    let mapping = mapping.to_str().unwrap();
    let out = on(&["run", "--goal", "migrate everything", "--yes", "--mapping", mapping]);
    assert_eq!(out.code, 0, "{out:?}");
    let t = db_of(&target);
    assert_eq!(
        pg.psql(
            t,
            "SELECT string_agg(format('%s>%s', n.legacy_id, coalesce(i.legacy_id, p.legacy_id)), ' ' ORDER BY n.legacy_id)
             FROM shop_note n LEFT JOIN shop_item i ON i.id::text = n.object_pk
             LEFT JOIN shop_note p ON p.id::text = n.object_pk"
        ),
        "1>1 2>5 4>1 5>4",
        "each kept note points at its parent's UUID"
    );
    assert_eq!(
        pg.psql(
            t,
            "SELECT string_agg(legacy_key || ' ' || rule, ', ' ORDER BY legacy_key) FROM agentctl.rejected_rows"
        ),
        "3 reference, 6 reference:object_pk",
        "the note on an item gone, and the one on a note that never came"
    );
    let out = on(&["validate", "shop_note", "--mapping", mapping]);
    assert_eq!(out.code, 0, "{out:?}");
}
