//! Reads a database's structure from `pg_catalog`: one query per kind of object (tables,
//! partitions, columns, constraints, indexes, triggers, enums, domains), never one per table,
//! so a schema of hundreds of tables is read in a few round trips.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use runtime::domain::{Check, Column, ColumnStats, Domain, ForeignKey, Index, SchemaReport, Table, TableName, TypeKind, Unique};
use runtime::ports::{Catalog, ToolError};
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};

use crate::pg::{while_doing, DbError};

/// Schemas that are PostgreSQL's or agentctl's own, never migrated.
const USER_SCHEMAS: &str = "n.nspname NOT IN ('pg_catalog', 'information_schema', 'agentctl') \
     AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'";

pub struct PgCatalog {
    pool: PgPool,
    /// `host:port/db`, for the report and for error messages.
    label: String,
}

impl PgCatalog {
    pub fn new(pool: PgPool, label: impl Into<String>) -> PgCatalog {
        PgCatalog { pool, label: label.into() }
    }

    async fn rows(&self, what: &str, sql: &str, oids: Option<&[i64]>) -> Result<Vec<PgRow>, DbError> {
        let mut q = sqlx::query(sql);
        if let Some(oids) = oids {
            q = q.bind(oids);
        }
        q.fetch_all(&self.pool).await.map_err(while_doing(format!("reading the {what} of {}", self.label)))
    }
}

fn get<'r, T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>>(r: &'r PgRow, col: &str) -> Result<T, DbError> {
    r.try_get(col).map_err(while_doing(format!("reading catalog column {col}")))
}

#[async_trait]
impl Catalog for PgCatalog {
    async fn introspect(&self, exact_counts: bool) -> Result<SchemaReport, ToolError> {
        Ok(self.read(exact_counts).await?)
    }
}

impl PgCatalog {
    async fn read(&self, exact_counts: bool) -> Result<SchemaReport, DbError> {
        let table_rows = self
            .rows(
                "tables",
                &format!(
                    "SELECT c.oid::int8 AS oid, n.nspname::text AS nspname, c.relname::text AS relname, c.relkind::text AS relkind,
                            greatest(c.reltuples, 0)::int8 AS estimate, c.relispartition AS is_partition,
                            coalesce((SELECT sum(s.avg_width) FROM pg_stats s WHERE s.schemaname = n.nspname AND s.tablename = c.relname), 0)::int8 AS width,
                            (SELECT p.inhparent::int8 FROM pg_inherits p WHERE p.inhrelid = c.oid LIMIT 1) AS parent
                     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                     WHERE c.relkind IN ('r', 'p') AND {USER_SCHEMAS}
                     ORDER BY n.nspname, c.relname"
                ),
                None,
            )
            .await?;
        let mut tables: Vec<Table> = Vec::new();
        let mut index: HashMap<i64, usize> = HashMap::new();
        let mut partitions: Vec<(i64, TableName)> = Vec::new();
        for r in &table_rows {
            let name = TableName::new(get::<String>(r, "nspname")?, get::<String>(r, "relname")?);
            if get::<bool>(r, "is_partition")? {
                // A partition is migrated through its parent: listed there, not as an entity.
                if let Some(parent) = get::<Option<i64>>(r, "parent")? {
                    partitions.push((parent, name));
                }
                continue;
            }
            index.insert(get(r, "oid")?, tables.len());
            tables.push(Table {
                name,
                kind: if get::<String>(r, "relkind")? == "p" { "partitioned".into() } else { "table".into() },
                partitions: Vec::new(),
                columns: Vec::new(),
                primary_key: Vec::new(),
                unique: Vec::new(),
                foreign_keys: Vec::new(),
                checks: Vec::new(),
                indexes: Vec::new(),
                triggers: Vec::new(),
                estimated_rows: get(r, "estimate")?,
                exact_rows: None,
                avg_row_bytes: get(r, "width")?,
            });
        }
        for (parent, name) in partitions {
            if let Some(&i) = index.get(&parent) {
                tables[i].partitions.push(name);
            }
        }
        let oids: Vec<i64> = index.keys().copied().collect();
        let at = |r: &PgRow| -> Result<Option<usize>, DbError> { Ok(index.get(&get::<i64>(r, "oid")?).copied()) };

        for r in &self
            .rows(
                "columns",
                "SELECT a.attrelid::int8 AS oid, a.attname::text AS attname, format_type(a.atttypid, a.atttypmod) AS data_type,
                        t.typname::text AS type_name, t.typtype::text AS typtype, t.typcategory::text AS typcategory,
                        CASE WHEN t.typtype = 'd' THEN format_type(t.typbasetype, t.typtypmod) END AS domain_base,
                        CASE WHEN t.typcategory = 'A' THEN format_type(t.typelem, NULL) END AS element,
                        CASE WHEN t.typname IN ('varchar', 'bpchar') AND a.atttypmod > 4 THEN a.atttypmod - 4 END AS max_length,
                        NOT a.attnotnull AS nullable, pg_get_expr(d.adbin, d.adrelid) AS default_expr, a.attidentity::text AS identity
                        , s.null_frac::float8 AS null_frac, s.n_distinct::float8 AS n_distinct, s.avg_width AS avg_width,
                        (s.histogram_bounds::text::text[])[1] AS lo,
                        (s.histogram_bounds::text::text[])[array_length(s.histogram_bounds::text::text[], 1)] AS hi
                 FROM pg_attribute a
                 JOIN pg_type t ON t.oid = a.atttypid
                 JOIN pg_class c ON c.oid = a.attrelid
                 JOIN pg_namespace n ON n.oid = c.relnamespace
                 LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
                 LEFT JOIN pg_stats s ON s.schemaname = n.nspname AND s.tablename = c.relname AND s.attname = a.attname
                 WHERE a.attnum > 0 AND NOT a.attisdropped AND a.attrelid = ANY($1::int8[]::oid[])
                 ORDER BY a.attrelid, a.attnum",
                Some(&oids),
            )
            .await?
        {
            let Some(i) = at(r)? else { continue };
            let type_kind = match (get::<String>(r, "typtype")?.as_str(), get::<String>(r, "typcategory")?.as_str()) {
                ("e", _) => TypeKind::Enum,
                ("d", _) => TypeKind::Domain { base: get::<Option<String>>(r, "domain_base")?.unwrap_or_default() },
                (_, "A") => TypeKind::Array { element: get::<Option<String>>(r, "element")?.unwrap_or_default() },
                ("b", _) => TypeKind::Base,
                _ => TypeKind::Other,
            };
            let identity = match get::<String>(r, "identity")?.as_str() {
                "a" => Some("always".to_owned()),
                "d" => Some("by_default".to_owned()),
                _ => None,
            };
            tables[i].columns.push(Column {
                name: get(r, "attname")?,
                data_type: get(r, "data_type")?,
                type_name: get(r, "type_name")?,
                type_kind,
                max_length: get(r, "max_length")?,
                nullable: get(r, "nullable")?,
                default: get(r, "default_expr")?,
                identity,
                stats: match get::<Option<f64>>(r, "null_frac")? {
                    None => None,
                    Some(null_fraction) => Some(ColumnStats {
                        null_fraction,
                        distinct: get::<Option<f64>>(r, "n_distinct")?.unwrap_or(0.0),
                        avg_width: get::<Option<i32>>(r, "avg_width")?.unwrap_or(0),
                        min: get(r, "lo")?,
                        max: get(r, "hi")?,
                    }),
                },
            });
        }

        for r in &self
            .rows(
                "constraints",
                "SELECT con.conrelid::int8 AS oid, con.contype::text AS kind, con.conname::text AS conname,
                        rn.nspname::text AS ref_schema, rc.relname::text AS ref_table, con.confdeltype::text AS on_delete,
                        con.condeferrable AS deferrable, con.convalidated AS validated, pg_get_constraintdef(con.oid, true) AS def,
                        ARRAY(SELECT a.attname::text FROM unnest(con.conkey) WITH ORDINALITY k(num, ord)
                              JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.num ORDER BY k.ord) AS cols,
                        ARRAY(SELECT a.attname::text FROM unnest(con.confkey) WITH ORDINALITY k(num, ord)
                              JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.num ORDER BY k.ord) AS ref_cols
                 FROM pg_constraint con
                 LEFT JOIN pg_class rc ON rc.oid = con.confrelid
                 LEFT JOIN pg_namespace rn ON rn.oid = rc.relnamespace
                 WHERE con.contype IN ('p', 'f', 'u', 'c') AND con.conrelid = ANY($1::int8[]::oid[])
                 ORDER BY con.conrelid, con.conname",
                Some(&oids),
            )
            .await?
        {
            let Some(i) = at(r)? else { continue };
            let cols: Vec<String> = get(r, "cols")?;
            let name: String = get(r, "conname")?;
            match get::<String>(r, "kind")?.as_str() {
                "p" => tables[i].primary_key = cols,
                "u" => tables[i].unique.push(Unique { name, parts: cols, predicate: None }),
                "c" => {
                    let def: String = get(r, "def")?;
                    let expression = def.strip_prefix("CHECK ").unwrap_or(&def).to_owned();
                    tables[i].checks.push(Check { name, expression });
                }
                _ => tables[i].foreign_keys.push(ForeignKey {
                    name,
                    columns: cols,
                    references: TableName::new(get::<String>(r, "ref_schema")?, get::<String>(r, "ref_table")?),
                    referenced_columns: get(r, "ref_cols")?,
                    on_delete: match get::<String>(r, "on_delete")?.as_str() {
                        "r" => "restrict",
                        "c" => "cascade",
                        "n" => "set null",
                        "d" => "set default",
                        _ => "no action",
                    }
                    .to_owned(),
                    deferrable: get(r, "deferrable")?,
                    validated: get(r, "validated")?,
                }),
            }
        }

        for r in &self
            .rows(
                "indexes",
                "SELECT i.indrelid::int8 AS oid, ic.relname::text AS name, pg_get_indexdef(i.indexrelid) AS def,
                        i.indisunique AS is_unique, i.indisprimary AS is_primary,
                        EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid) AS backs_constraint,
                        ARRAY(SELECT pg_get_indexdef(i.indexrelid, k, true) FROM generate_series(1, i.indnkeyatts) k) AS parts,
                        pg_get_expr(i.indpred, i.indrelid) AS predicate
                 FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
                 WHERE i.indrelid = ANY($1::int8[]::oid[])
                 ORDER BY i.indrelid, ic.relname",
                Some(&oids),
            )
            .await?
        {
            let Some(i) = at(r)? else { continue };
            let (name, unique, primary): (String, bool, bool) = (get(r, "name")?, get(r, "is_unique")?, get(r, "is_primary")?);
            // A unique index that no constraint owns is a uniqueness rule of its own.
            if unique && !primary && !get::<bool>(r, "backs_constraint")? {
                tables[i].unique.push(Unique { name: name.clone(), parts: get(r, "parts")?, predicate: get(r, "predicate")? });
            }
            tables[i].indexes.push(Index { name, definition: get(r, "def")?, unique, primary });
        }

        for r in &self
            .rows(
                "triggers",
                "SELECT tgrelid::int8 AS oid, tgname::text AS name FROM pg_trigger
                 WHERE NOT tgisinternal AND tgrelid = ANY($1::int8[]::oid[]) ORDER BY tgrelid, tgname",
                Some(&oids),
            )
            .await?
        {
            if let Some(i) = at(r)? {
                tables[i].triggers.push(get(r, "name")?);
            }
        }

        let mut enums: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for r in &self
            .rows(
                "enum types",
                &format!(
                    "SELECT t.typname::text AS name, e.enumlabel::text AS label
                     FROM pg_enum e JOIN pg_type t ON t.oid = e.enumtypid JOIN pg_namespace n ON n.oid = t.typnamespace
                     WHERE {USER_SCHEMAS} ORDER BY t.typname, e.enumsortorder"
                ),
                None,
            )
            .await?
        {
            enums.entry(get(r, "name")?).or_default().push(get(r, "label")?);
        }

        let mut domains: Vec<Domain> = Vec::new();
        for r in &self
            .rows(
                "domains",
                &format!(
                    "SELECT t.typname::text AS name, format_type(t.typbasetype, t.typtypmod) AS base, t.typnotnull AS not_null,
                            ARRAY(SELECT c.conname::text FROM pg_constraint c WHERE c.contypid = t.oid ORDER BY c.conname) AS check_names,
                            ARRAY(SELECT pg_get_constraintdef(c.oid, true) FROM pg_constraint c WHERE c.contypid = t.oid ORDER BY c.conname) AS check_defs
                     FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
                     WHERE t.typtype = 'd' AND {USER_SCHEMAS} ORDER BY t.typname"
                ),
                None,
            )
            .await?
        {
            let names: Vec<String> = get(r, "check_names")?;
            let defs: Vec<String> = get(r, "check_defs")?;
            domains.push(Domain {
                name: get(r, "name")?,
                base: get(r, "base")?,
                not_null: get(r, "not_null")?,
                checks: names
                    .into_iter()
                    .zip(defs)
                    .map(|(name, def)| Check { name, expression: def.strip_prefix("CHECK ").unwrap_or(&def).to_owned() })
                    .collect(),
            });
        }

        if exact_counts {
            for t in &mut tables {
                let sql = format!("SELECT count(*) FROM {}", quoted(&t.name));
                let n: i64 = sqlx::query_scalar(&sql)
                    .fetch_one(&self.pool)
                    .await
                    .map_err(while_doing(format!("counting the rows of {}", t.name)))?;
                t.exact_rows = Some(n);
            }
        }
        Ok(SchemaReport { database: self.label.clone(), tables, enums, domains })
    }
}

/// `"schema"."table"`, quoted for SQL.
pub fn quoted(t: &TableName) -> String {
    format!("{}.{}", ident(&t.schema), ident(&t.name))
}

/// A SQL identifier, quoted.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
