//! Reads a database's structure from `pg_catalog`: one query per kind of object (tables,
//! partitions, columns, constraints, indexes, triggers, enums, domains), never one per table,
//! so a schema of hundreds of tables is read in a few round trips.

use std::collections::{BTreeMap, HashMap, HashSet};

use async_trait::async_trait;
use runtime::domain::{
    Check, Column, ColumnStats, Domain, Extension, ForeignKey, Index, Partition, Partitioning,
    SchemaReport, Sequence, Table, TableName, TypeKind, Unique, UserType,
};
use runtime::ports::{Catalog, ToolError};
pub use runtime::sql::{ident, literal, quoted};
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};

use crate::pg::while_doing;
use crate::target::{retrying, Failure};

/// Times a catalog read is tried again after a transient failure: 200 ms doubling, about 12 s
/// in all, longer than a server takes to restart.
const READ_RETRIES: u32 = 6;

/// Schemas that are PostgreSQL's or agentctl's own, never migrated.
pub(crate) const USER_SCHEMAS: &str =
    "n.nspname NOT IN ('pg_catalog', 'information_schema', 'agentctl') \
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

    /// One catalog query; a connection lost or a server restarting under it is outlived by
    /// reading again, as the load's writes are (a read changes nothing).
    async fn rows(
        &self,
        what: &str,
        sql: &str,
        oids: Option<&[i64]>,
    ) -> Result<Vec<PgRow>, ToolError> {
        let what = format!("reading the {what} of {}", self.label);
        let read = || async {
            let mut q = sqlx::query(sql);
            if let Some(oids) = oids {
                q = q.bind(oids);
            }
            q.fetch_all(&self.pool).await.map_err(Failure::from)
        };
        retrying(READ_RETRIES, &what, read)
            .await
            .map(|(rows, _)| rows)
            .map_err(|e| ToolError { message: format!("while {}", e.message), ..e })
    }
}

impl PgCatalog {
    /// Named definitions, one a row of `sql`'s `name` and `definition` columns.
    async fn definitions(&self, what: &str, sql: &str) -> Result<Vec<UserType>, ToolError> {
        self.rows(what, sql, None)
            .await?
            .iter()
            .map(|r| Ok(UserType { name: get(r, "name")?, definition: get(r, "definition")? }))
            .collect()
    }
}

fn get<'r, T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>>(
    r: &'r PgRow,
    col: &str,
) -> Result<T, ToolError> {
    r.try_get(col).map_err(while_doing(format!("reading catalog column {col}")))
}

#[async_trait]
impl Catalog for PgCatalog {
    async fn introspect(&self, exact_counts: bool) -> Result<SchemaReport, ToolError> {
        Ok(self.read(exact_counts).await?)
    }
}

/// Rows a table holds by the server's own estimate, as its planner makes it: the density its
/// last analysis found (rows a page) times the pages it has now; for a table never analyzed or
/// vacuumed (as a database is after a restore), the pages it has times the rows that fit a page
/// by its columns' declared widths (32 bytes for a value of varying length). A partitioned
/// table holds none of its own: its partitions' are added to it.
const ESTIMATE: &str = "CASE WHEN c.relkind = 'p' THEN 0
     WHEN c.relpages > 0 AND c.reltuples >= 0 THEN
         round(c.reltuples / c.relpages * (pg_relation_size(c.oid) / current_setting('block_size')::int8))::int8
     ELSE (pg_relation_size(c.oid) / current_setting('block_size')::int8)
         * ((current_setting('block_size')::int8 - 24) / (28 + coalesce((
             SELECT sum(CASE WHEN t.typlen > 0 THEN t.typlen ELSE 32 END) FROM pg_attribute a
             JOIN pg_type t ON t.oid = a.atttypid
             WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped), 0)))::int8
     END";

/// The bytes of a column's value as COPY text, in the sample `s` of [`PgCatalog::sample_widths`]:
/// text's and bytea's (in hex) from the length their storage records, so a value kept out of
/// line is not fetched to be measured (a table of 10 MB documents would have the sample read
/// a gigabyte); any other as its text.
fn text_width(c: &Column) -> String {
    let col = format!("s.{}", ident(&c.name));
    match c.type_name.as_str() {
        "text" | "varchar" | "bpchar" => format!("coalesce(octet_length({col}), 0)"),
        "bytea" => format!("coalesce(2 + 2 * octet_length({col}), 0)"),
        _ => format!("coalesce(octet_length({col}::text), 0)"),
    }
}

/// Rows read to sample the width of a table ([`PgCatalog::sample_widths`]): its first ones.
const WIDTH_SAMPLE: usize = 100;

impl PgCatalog {
    async fn read(&self, exact_counts: bool) -> Result<SchemaReport, ToolError> {
        let mut tables = self.tables().await?;
        self.columns(&mut tables).await?;
        self.sample_widths(&mut tables).await?;
        self.constraints(&mut tables).await?;
        self.keys_set_aside(&mut tables).await?;
        self.indexes(&mut tables).await?;
        self.triggers(&mut tables).await?;
        let mut tables = tables.list;
        let (enums, domains, types) =
            (self.enums().await?, self.domains().await?, self.types().await?);
        let sequences = self.sequences().await?;
        let other_objects = self.other_objects().await?;
        let collations = self.collations().await?;
        let extensions = self.extensions().await?;
        let large_objects = self.large_objects().await?;
        let encoding = self.encoding().await?;
        if exact_counts {
            self.count_rows(&mut tables).await?;
        }
        Ok(SchemaReport {
            database: self.label.clone(),
            tables,
            enums,
            domains,
            types,
            collations,
            sequences,
            other_objects,
            extensions,
            large_objects,
            encoding,
        })
    }

    /// Samples the width of each table's rows as they are read. The statistics give the width
    /// stored, which is not it for a value stored compressed (110 kB of text in 1.7 kB) or out
    /// of line (a value kept in TOAST counts the 18 bytes of its pointer), and give none for a
    /// table never analyzed (as a database is after a restore). A table's batch size is
    /// planned from its rows' width: from the statistics alone, tables of 20 kB and 110 kB
    /// rows went in batches of 20,000 and 1,000 rows (1.6 and 1.4 GB held, bench/RESULTS.md).
    /// A table of fewer rows than the sample asks for has its rows counted so.
    async fn sample_widths(&self, tables: &mut Tables) -> Result<(), ToolError> {
        for t in tables.list.iter_mut().filter(|t| t.bytes > 0 && !t.columns.is_empty()) {
            let only = if t.kind == "partitioned" { "" } else { "ONLY " };
            let widths: Vec<String> = t.columns.iter().map(text_width).collect();
            let sql = format!(
                "SELECT coalesce(avg({}), 0)::int8 AS width, count(*) AS rows \
                    FROM (SELECT * FROM {only}{} LIMIT {WIDTH_SAMPLE}) s",
                widths.join(" + "),
                quoted(&t.name)
            );
            // A table agentctl may not read (one the migration leaves alone) keeps the width
            // its statistics give: the load's own read is where a privilege is asked for.
            let Ok(rows) = self.rows(&format!("width of {}", t.name), &sql, None).await else {
                continue;
            };
            let Some(row) = rows.first() else { continue };
            t.avg_row_bytes = t.avg_row_bytes.max(get(row, "width")?);
            // Fewer rows than asked for are all the rows there are, whatever the estimate.
            let sampled: i64 = get(row, "rows")?;
            if sampled < WIDTH_SAMPLE as i64 {
                t.estimated_rows = sampled;
            }
        }
        Ok(())
    }

    /// One row a table of the user's schemas (partitions included), with what `tables` needs.
    async fn table_rows(&self) -> Result<Vec<PgRow>, ToolError> {
        self
            .rows(
                "tables",
                &format!(
                    "SELECT c.oid::int8 AS oid, n.nspname::text AS nspname, c.relname::text AS relname, c.relkind::text AS relkind,
                            {ESTIMATE} AS estimate, c.relispartition AS is_partition,
                            pg_total_relation_size(c.oid)::int8 AS bytes,
                            coalesce((SELECT sum(s.avg_width) FROM pg_stats s WHERE s.schemaname = n.nspname AND s.tablename = c.relname AND s.inherited = (c.relkind = 'p')), 0)::int8 AS width,
                            (SELECT p.inhparent::int8 FROM pg_inherits p WHERE p.inhrelid = c.oid LIMIT 1) AS parent,
                            CASE WHEN c.relkind = 'p' THEN pg_get_partkeydef(c.oid) END AS partition_key,
                            obj_description(c.oid, 'pg_class') AS comment,
                            CASE WHEN c.relispartition THEN pg_get_expr(c.relpartbound, c.oid) END AS bound,
                            (SELECT array_agg(CASE WHEN k.num = 0 THEN NULL ELSE a.attname::text END ORDER BY k.ord)
                             FROM pg_partitioned_table pt CROSS JOIN LATERAL unnest(pt.partattrs::int2[]) WITH ORDINALITY k(num, ord)
                             LEFT JOIN pg_attribute a ON a.attrelid = pt.partrelid AND a.attnum = k.num
                             WHERE pt.partrelid = c.oid) AS partition_columns
                     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                     WHERE c.relkind IN ('r', 'p') AND {USER_SCHEMAS}
                     ORDER BY n.nspname, c.relname"
                ),
                None,
            )
            .await
    }

    /// Every table of the user's schemas, with its partitions listed on its topmost table.
    async fn tables(&self) -> Result<Tables, ToolError> {
        let table_rows = self.table_rows().await?;
        let mut tables: Vec<Table> = Vec::new();
        let mut index: HashMap<i64, usize> = HashMap::new();
        let mut partitions: Vec<(i64, i64, TableName)> = Vec::new();
        // What each partition takes on disk and its estimated rows, added to its topmost table's.
        let mut partition_bytes: Vec<(i64, i64, i64)> = Vec::new();
        // Each partition's bound and own key, and each partitioned table's key and columns.
        let mut bounds: HashMap<i64, (String, Option<String>)> = HashMap::new();
        let mut names: HashMap<i64, TableName> = HashMap::new();
        // Plain tables that inherit from another (by position), and the parent's oid.
        let mut inheriting: Vec<(usize, i64)> = Vec::new();
        for r in &table_rows {
            let name = TableName::new(get::<String>(r, "nspname")?, get::<String>(r, "relname")?);
            names.insert(get(r, "oid")?, name.clone());
            if get::<bool>(r, "is_partition")? {
                // A partition is migrated through its parent: listed there, not as an entity.
                if let Some(parent) = get::<Option<i64>>(r, "parent")? {
                    partitions.push((get(r, "oid")?, parent, name));
                    partition_bytes.push((parent, get(r, "bytes")?, get(r, "estimate")?));
                    bounds.insert(
                        get(r, "oid")?,
                        (
                            get::<Option<String>>(r, "bound")?.unwrap_or_default(),
                            get(r, "partition_key")?,
                        ),
                    );
                }
                continue;
            }
            if let Some(parent) = get::<Option<i64>>(r, "parent")? {
                inheriting.push((tables.len(), parent));
            }
            index.insert(get(r, "oid")?, tables.len());
            tables.push(table_of(r, name)?);
        }
        for (i, parent) in inheriting {
            tables[i].inherits = names.get(&parent).cloned();
        }
        // A partition of a partition belongs to the topmost table.
        let parent_of: HashMap<i64, i64> =
            partitions.iter().map(|(oid, parent, _)| (*oid, *parent)).collect();
        let top = |mut oid: i64| {
            while let Some(&p) = parent_of.get(&oid) {
                oid = p;
            }
            oid
        };
        let depth = |mut oid: i64| {
            let mut d = 0;
            while let Some(&p) = parent_of.get(&oid) {
                oid = p;
                d += 1;
            }
            d
        };
        for (parent, bytes, rows) in partition_bytes {
            if let Some(&i) = index.get(&top(parent)) {
                tables[i].bytes += bytes;
                tables[i].estimated_rows += rows;
            }
        }
        let mut partition_of: HashMap<i64, usize> = HashMap::new();
        let mut by_depth: Vec<&(i64, i64, TableName)> = partitions.iter().collect();
        by_depth.sort_by_key(|(oid, _, name)| (depth(*oid), name.clone()));
        for (oid, parent, name) in by_depth {
            if let Some(&i) = index.get(&top(*parent)) {
                tables[i].partitions.push(name.clone());
                partition_of.insert(*oid, i);
                let (bound, key) = bounds.remove(oid).unwrap_or_default();
                if let (Some(p), Some(parent)) =
                    (tables[i].partitioning.as_mut(), names.get(parent))
                {
                    p.partitions.push(Partition {
                        name: name.clone(),
                        parent: parent.clone(),
                        bound,
                        key,
                    });
                }
            }
        }
        Ok(Tables { list: tables, index, partition_of })
    }

    /// Every table's columns, with their types, defaults and statistics.
    async fn columns(&self, tables: &mut Tables) -> Result<(), ToolError> {
        for r in &self
            .rows(
                "columns",
                "SELECT a.attrelid::int8 AS oid, a.attname::text AS attname, format_type(a.atttypid, a.atttypmod) AS data_type,
                        t.typname::text AS type_name, t.typtype::text AS typtype, t.typcategory::text AS typcategory,
                        CASE WHEN t.typtype = 'd' THEN format_type(t.typbasetype, t.typtypmod) END AS domain_base,
                        CASE WHEN t.typcategory = 'A' THEN format_type(t.typelem, NULL) END AS element,
                        CASE WHEN t.typname IN ('varchar', 'bpchar') AND a.atttypmod > 4 THEN a.atttypmod - 4 END AS max_length,
                        NOT a.attnotnull AS nullable, pg_get_expr(d.adbin, d.adrelid) AS default_expr, a.attidentity::text AS identity,
                        a.attgenerated::text AS generated, col_description(a.attrelid, a.attnum) AS comment,
                        CASE WHEN a.attcollation <> t.typcollation AND a.attcollation <> 0 THEN
                          (SELECT quote_ident(cn.nspname) || '.' || quote_ident(co.collname) FROM pg_collation co
                           JOIN pg_namespace cn ON cn.oid = co.collnamespace WHERE co.oid = a.attcollation) END AS collation
                        , s.null_frac::float8 AS null_frac, s.n_distinct::float8 AS n_distinct, s.avg_width AS avg_width,
                        (s.histogram_bounds::text::text[])[1] AS lo,
                        (s.histogram_bounds::text::text[])[array_length(s.histogram_bounds::text::text[], 1)] AS hi
                 FROM pg_attribute a
                 JOIN pg_type t ON t.oid = a.atttypid
                 JOIN pg_class c ON c.oid = a.attrelid
                 JOIN pg_namespace n ON n.oid = c.relnamespace
                 LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
                 LEFT JOIN pg_stats s ON s.schemaname = n.nspname AND s.tablename = c.relname AND s.attname = a.attname
                      AND s.inherited = (c.relkind = 'p')
                 WHERE a.attnum > 0 AND NOT a.attisdropped AND a.attrelid = ANY($1::int8[]::oid[])
                 ORDER BY a.attrelid, a.attnum",
                Some(&tables.oids()),
            )
            .await?
        {
            let Some(i) = tables.at(r)? else { continue };
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
            let (default, generated) = match get::<String>(r, "generated")?.as_str() {
                "s" => (None, get(r, "default_expr")?),
                _ => (get(r, "default_expr")?, None),
            };
            tables.list[i].columns.push(Column {
                name: get(r, "attname")?,
                data_type: get(r, "data_type")?,
                type_name: get(r, "type_name")?,
                type_kind,
                max_length: get(r, "max_length")?,
                nullable: get(r, "nullable")?,
                default,
                identity,
                generated,
                collation: get(r, "collation")?,
                comment: get(r, "comment")?,
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
        Ok(())
    }

    /// Every table's keys, unique rules, CHECKs, exclusions and foreign keys; a partition's own
    /// foreign keys are kept once on its table.
    async fn constraints(&self, tables: &mut Tables) -> Result<(), ToolError> {
        let with_partitions: Vec<i64> =
            tables.index.keys().chain(tables.partition_of.keys()).copied().collect();
        let mut partition_keys: Vec<(usize, ForeignKey)> = Vec::new();
        for r in &self
            .rows(
                "constraints",
                "SELECT con.conrelid::int8 AS oid, con.contype::text AS kind, con.conname::text AS conname,
                        rn.nspname::text AS ref_schema, rc.relname::text AS ref_table, con.confdeltype::text AS on_delete,
                        con.condeferrable AS deferrable, con.condeferred AS deferred, con.convalidated AS validated, pg_get_constraintdef(con.oid, true) AS def,
                        ARRAY(SELECT a.attname::text FROM unnest(con.conkey) WITH ORDINALITY k(num, ord)
                              JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.num ORDER BY k.ord) AS cols,
                        ARRAY(SELECT a.attname::text FROM unnest(con.confkey) WITH ORDINALITY k(num, ord)
                              JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.num ORDER BY k.ord) AS ref_cols
                 FROM pg_constraint con
                 LEFT JOIN pg_class rc ON rc.oid = con.confrelid
                 LEFT JOIN pg_namespace rn ON rn.oid = rc.relnamespace
                 WHERE con.contype IN ('p', 'f', 'u', 'c', 'x') AND con.conrelid = ANY($1::int8[]::oid[])
                   AND con.conparentid = 0
                 ORDER BY con.conrelid, con.conname",
                Some(&with_partitions),
            )
            .await?
        {
            let oid: i64 = get(r, "oid")?;
            if let Some(&i) = tables.partition_of.get(&oid) {
                // A partition's own foreign key (not one inherited from its parent): the table's
                // rows reference through it too. Kept once for the table, whichever partition
                // declares it; the partition's other rules hold for its rows only.
                if get::<String>(r, "kind")? == "f" {
                    partition_keys.push((i, foreign_key(r)?));
                }
                continue;
            }
            let Some(i) = tables.index.get(&oid).copied() else { continue };
            let cols: Vec<String> = get(r, "cols")?;
            let name: String = get(r, "conname")?;
            match get::<String>(r, "kind")?.as_str() {
                "p" => tables.list[i].primary_key = cols,
                "u" => tables.list[i].unique.push(Unique {
                    name,
                    parts: cols,
                    predicate: None,
                    definition: get(r, "def")?,
                }),
                "c" => {
                    let def: String = get(r, "def")?;
                    let expression = def.strip_prefix("CHECK ").unwrap_or(&def).to_owned();
                    tables.list[i].checks.push(Check { name, expression });
                }
                "x" => tables.list[i].exclusions.push(Check { name, expression: get(r, "def")? }),
                _ => tables.list[i].foreign_keys.push(foreign_key(r)?),
            }
        }
        for (i, fk) in partition_keys {
            let same = |f: &ForeignKey| {
                f.columns == fk.columns
                    && f.references == fk.references
                    && f.referenced_columns == fk.referenced_columns
            };
            if !tables.list[i].foreign_keys.iter().any(same) {
                tables.list[i].foreign_keys.push(fk);
            }
        }
        Ok(())
    }

    /// The primary keys agentctl set aside for a load that has not ended (a killed run, before
    /// it is carried on), read from its records as the keys they are: whoever reads the schema
    /// meanwhile sees the table as designed. The records and the keys are read in one
    /// statement, so in one snapshot: a key put back (its record deleted in the same
    /// transaction) after the constraints were read is found as the key it is again, never
    /// missed between the two reads.
    async fn keys_set_aside(&self, tables: &mut Tables) -> Result<(), ToolError> {
        let records = self
            .rows(
                "keys set aside",
                "SELECT to_regclass('agentctl.suspended_constraints') IS NOT NULL AS recorded",
                None,
            )
            .await?;
        if !records.first().map(|r| get::<bool>(r, "recorded")).transpose()?.unwrap_or(false) {
            return Ok(());
        }
        let keyless: Vec<i64> = tables
            .index
            .iter()
            .filter(|&(_, &i)| tables.list[i].primary_key.is_empty())
            .map(|(&oid, _)| oid)
            .collect();
        let found = self
            .rows(
                "keys set aside",
                &format!(
                    "SELECT target_table AS name, NULL::int8 AS oid FROM agentctl.suspended_constraints \
                        WHERE kind = 'primary' AND definition = '{key}' \
                     UNION ALL \
                     SELECT NULL, conrelid::int8 FROM pg_constraint WHERE contype = 'p' \
                        AND conrelid = ANY($1::int8[]::oid[]) AND pg_get_constraintdef(oid) = '{key}'",
                    key = crate::target::PRIMARY_KEY_ASIDE
                ),
                Some(&keyless),
            )
            .await?;
        let mut aside = HashSet::new();
        for r in &found {
            match get::<Option<String>>(r, "name")? {
                Some(name) => {
                    aside.insert(name);
                }
                None => {
                    if let Some(i) = tables.at(r)? {
                        aside.insert(tables.list[i].name.to_string());
                    }
                }
            }
        }
        for t in tables.list.iter_mut() {
            if t.primary_key.is_empty() && aside.contains(&t.name.to_string()) {
                t.primary_key = vec!["id".to_owned()];
            }
        }
        Ok(())
    }

    /// Every table's indexes; a unique index no constraint owns is a unique rule too.
    async fn indexes(&self, tables: &mut Tables) -> Result<(), ToolError> {
        for r in &self
            .rows(
                "indexes",
                "SELECT i.indrelid::int8 AS oid, ic.relname::text AS name, pg_get_indexdef(i.indexrelid) AS def,
                        i.indisunique AS is_unique, i.indisprimary AS is_primary,
                        EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid AND c.conrelid = i.indrelid AND c.contype IN ('p', 'u', 'x')) AS backs_constraint,
                        ARRAY(SELECT pg_get_indexdef(i.indexrelid, k, true) FROM generate_series(1, i.indnkeyatts) k) AS parts,
                        pg_get_expr(i.indpred, i.indrelid) AS predicate
                 FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
                 WHERE i.indrelid = ANY($1::int8[]::oid[])
                 ORDER BY i.indrelid, ic.relname",
                Some(&tables.oids()),
            )
            .await?
        {
            let Some(i) = tables.at(r)? else { continue };
            let (name, unique, primary): (String, bool, bool) = (get(r, "name")?, get(r, "is_unique")?, get(r, "is_primary")?);
            let constraint: bool = get(r, "backs_constraint")?;
            // A unique index that no constraint owns is a uniqueness rule of its own.
            if unique && !primary && !constraint {
                tables.list[i].unique.push(Unique {
                    name: name.clone(),
                    parts: get(r, "parts")?,
                    predicate: get(r, "predicate")?,
                    definition: String::new(),
                });
            }
            tables.list[i].indexes.push(Index { name, definition: get(r, "def")?, unique, primary, constraint });
        }
        Ok(())
    }

    async fn triggers(&self, tables: &mut Tables) -> Result<(), ToolError> {
        for r in &self
            .rows(
                "triggers",
                "SELECT tgrelid::int8 AS oid, tgname::text AS name FROM pg_trigger
                 WHERE NOT tgisinternal AND tgrelid = ANY($1::int8[]::oid[]) ORDER BY tgrelid, tgname",
                Some(&tables.oids()),
            )
            .await?
        {
            if let Some(i) = tables.at(r)? {
                tables.list[i].triggers.push(get(r, "name")?);
            }
        }
        Ok(())
    }

    /// Every enum type with its labels, in order.
    async fn enums(&self) -> Result<BTreeMap<String, Vec<String>>, ToolError> {
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
        Ok(enums)
    }

    /// Every domain with its base type and CHECKs.
    async fn domains(&self) -> Result<Vec<Domain>, ToolError> {
        let mut domains: Vec<Domain> = Vec::new();
        for r in &self
            .rows(
                "domains",
                &format!(
                    "SELECT t.typname::text AS name, format_type(t.typbasetype, t.typtypmod) AS base, t.typnotnull AS not_null,
                            ARRAY(SELECT c.conname::text FROM pg_constraint c WHERE c.contypid = t.oid ORDER BY c.conname) AS check_names,
                            ARRAY(SELECT pg_get_constraintdef(c.oid, true) FROM pg_constraint c WHERE c.contypid = t.oid ORDER BY c.conname) AS check_defs,
                            (SELECT e.extname::text FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
                              WHERE d.classid = 'pg_type'::regclass AND d.objid = t.oid AND d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e') AS extension
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
                extension: get(r, "extension")?,
                checks: names
                    .into_iter()
                    .zip(defs)
                    .map(|(name, def)| Check { name, expression: def.strip_prefix("CHECK ").unwrap_or(&def).to_owned() })
                    .collect(),
            });
        }
        Ok(domains)
    }

    /// The composite and range types of the database's own.
    async fn types(&self) -> Result<Vec<UserType>, ToolError> {
        let types = self
            .definitions(
                "composite and range types",
                &format!(
                    "SELECT quote_ident(n.nspname) || '.' || quote_ident(t.typname) AS name,
                            CASE t.typtype
                              WHEN 'c' THEN '(' || (SELECT string_agg(quote_ident(a.attname) || ' ' || format_type(a.atttypid, a.atttypmod), ', ' ORDER BY a.attnum)
                                                     FROM pg_attribute a WHERE a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped) || ')'
                              ELSE 'RANGE (SUBTYPE = ' || format_type(r.rngsubtype, NULL) || ')'
                            END AS definition
                     FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
                     LEFT JOIN pg_range r ON r.rngtypid = t.oid
                     WHERE {USER_SCHEMAS} AND (t.typtype = 'r' OR (t.typtype = 'c' AND (SELECT c.relkind FROM pg_class c WHERE c.oid = t.typrelid) = 'c'))
                       AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_type'::regclass AND d.objid = t.oid AND d.deptype = 'e')
                     ORDER BY t.oid"
                ),
            )
            .await?;
        Ok(types)
    }

    /// The sequences no column owns, at their next value.
    async fn sequences(&self) -> Result<Vec<Sequence>, ToolError> {
        let mut sequences = Vec::new();
        for r in &self
            .rows(
                "sequences",
                &format!(
                    "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) AS name, format_type(s.seqtypid, NULL) AS data_type,
                            coalesce(p.last_value + s.seqincrement, s.seqstart) AS next, s.seqincrement AS increment,
                            s.seqmin AS min, s.seqmax AS max, s.seqcycle AS cycle
                     FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid JOIN pg_namespace n ON n.oid = c.relnamespace
                     JOIN pg_sequences p ON p.schemaname = n.nspname AND p.sequencename = c.relname
                     WHERE {USER_SCHEMAS}
                       AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype IN ('i', 'e'))
                     ORDER BY 1"
                ),
                None,
            )
            .await?
        {
            sequences.push(Sequence {
                name: get(r, "name")?,
                data_type: get(r, "data_type")?,
                next: get(r, "next")?,
                increment: get(r, "increment")?,
                min: get(r, "min")?,
                max: get(r, "max")?,
                cycle: get(r, "cycle")?,
            });
        }
        Ok(sequences)
    }

    /// The views, foreign tables and functions, which no table holds (a foreign table's rows
    /// live outside the database).
    async fn other_objects(&self) -> Result<Vec<(String, String)>, ToolError> {
        let mut other_objects = Vec::new();
        for r in &self
            .rows(
                "views and functions",
                &format!(
                    "SELECT CASE c.relkind WHEN 'v' THEN 'view' WHEN 'f' THEN 'foreign table' ELSE 'materialized view' END AS kind,
                            quote_ident(n.nspname) || '.' || quote_ident(c.relname) AS name
                     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                     WHERE c.relkind IN ('v', 'm', 'f') AND {USER_SCHEMAS}
                       AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
                     UNION ALL
                     SELECT CASE p.prokind WHEN 'p' THEN 'procedure' ELSE 'function' END,
                            quote_ident(n.nspname) || '.' || quote_ident(p.proname) || '(' || pg_get_function_identity_arguments(p.oid) || ')'
                     FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                     WHERE {USER_SCHEMAS}
                       AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype IN ('e', 'i'))
                     ORDER BY 1, 2"
                ),
                None,
            )
            .await?
        {
            other_objects.push((get(r, "kind")?, get(r, "name")?));
        }
        Ok(other_objects)
    }

    /// The collations of the database's own.
    async fn collations(&self) -> Result<Vec<UserType>, ToolError> {
        let collations = self
            .definitions(
                "collations",
                &format!(
                    "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.collname) AS name,
                            CASE c.collprovider WHEN 'i' THEN 'provider = icu, locale = ' || quote_literal(c.colliculocale)
                                 ELSE 'provider = libc, lc_collate = ' || quote_literal(c.collcollate) || ', lc_ctype = ' || quote_literal(c.collctype) END
                            || ', deterministic = ' || c.collisdeterministic AS definition
                     FROM pg_collation c JOIN pg_namespace n ON n.oid = c.collnamespace
                     WHERE {USER_SCHEMAS}
                       AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_collation'::regclass AND d.objid = c.oid AND d.deptype = 'e')
                     ORDER BY 1"
                ),
            )
            .await?;
        Ok(collations)
    }

    /// The database's `server_encoding`.
    async fn encoding(&self) -> Result<String, ToolError> {
        let rows = self
            .rows("encoding", "SELECT current_setting('server_encoding') AS encoding", None)
            .await?;
        rows.first().map_or(Ok(String::new()), |r| get(r, "encoding"))
    }

    /// How many large objects the database holds.
    async fn large_objects(&self) -> Result<i64, ToolError> {
        let rows = self
            .rows("large objects", "SELECT count(*) FROM pg_largeobject_metadata", None)
            .await?;
        rows.first().map_or(Ok(0), |r| get(r, "count"))
    }

    /// The extensions installed, but plpgsql.
    async fn extensions(&self) -> Result<Vec<Extension>, ToolError> {
        let mut extensions = Vec::new();
        for r in &self
            .rows(
                "extensions",
                "SELECT e.extname::text AS name, n.nspname::text AS schema FROM pg_extension e
                 JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname <> 'plpgsql' ORDER BY e.extname",
                None,
            )
            .await?
        {
            extensions.push(Extension { name: get(r, "name")?, schema: get(r, "schema")? });
        }
        Ok(extensions)
    }

    /// Counts every table's rows: a plain table's own (`ONLY`: not those of tables inheriting
    /// from it, counted as theirs), a partitioned table's partitions'.
    async fn count_rows(&self, tables: &mut [Table]) -> Result<(), ToolError> {
        for t in tables.iter_mut() {
            let only = if t.kind == "table" { "ONLY " } else { "" };
            let sql = format!("SELECT count(*) FROM {only}{}", quoted(&t.name));
            let n: i64 = sqlx::query_scalar(&sql)
                .fetch_one(&self.pool)
                .await
                .map_err(while_doing(format!("counting the rows of {}", t.name)))?;
            t.exact_rows = Some(n);
        }
        Ok(())
    }
}

/// The tables read so far, by oid, with the partitions that belong to each.
struct Tables {
    list: Vec<Table>,
    /// A table's position in `list`, by its oid.
    index: HashMap<i64, usize>,
    /// The table a partition's rows belong to (its topmost), by the partition's oid.
    partition_of: HashMap<i64, usize>,
}

impl Tables {
    /// The table of a catalog row's `oid`, if it is one of them.
    fn at(&self, r: &PgRow) -> Result<Option<usize>, ToolError> {
        Ok(self.index.get(&get::<i64>(r, "oid")?).copied())
    }

    fn oids(&self) -> Vec<i64> {
        self.index.keys().copied().collect()
    }
}

/// A table as a row of the tables query has it: nothing of its columns or rules read yet.
fn table_of(r: &PgRow, name: TableName) -> Result<Table, ToolError> {
    let partitioning = match get::<Option<String>>(r, "partition_key")? {
        Some(key) => {
            let columns: Vec<Option<String>> =
                get::<Option<Vec<Option<String>>>>(r, "partition_columns")?.unwrap_or_default();
            let plain = columns.iter().all(Option::is_some);
            Some(Partitioning {
                key,
                columns: if plain { columns.into_iter().flatten().collect() } else { Vec::new() },
                partitions: Vec::new(),
            })
        }
        None => None,
    };
    Ok(Table {
        name,
        kind: if get::<String>(r, "relkind")? == "p" {
            "partitioned".into()
        } else {
            "table".into()
        },
        partitions: Vec::new(),
        partitioning,
        columns: Vec::new(),
        primary_key: Vec::new(),
        unique: Vec::new(),
        foreign_keys: Vec::new(),
        checks: Vec::new(),
        exclusions: Vec::new(),
        inherits: None,
        indexes: Vec::new(),
        triggers: Vec::new(),
        estimated_rows: get(r, "estimate")?,
        exact_rows: None,
        avg_row_bytes: get(r, "width")?,
        bytes: get(r, "bytes")?,
        comment: get(r, "comment")?,
    })
}

fn foreign_key(r: &PgRow) -> Result<ForeignKey, ToolError> {
    Ok(ForeignKey {
        name: get(r, "conname")?,
        columns: get(r, "cols")?,
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
        deferred: get(r, "deferred")?,
        validated: get(r, "validated")?,
    })
}
