//! Reads a database's structure from `pg_catalog`: one query per kind of object (tables,
//! columns, constraints), never one per table, so a schema of hundreds of tables is read in a
//! few round trips.

use std::collections::HashMap;

use async_trait::async_trait;
use runtime::domain::{Column, ForeignKey, SchemaReport, Table, TableName};
use runtime::ports::{Catalog, ToolError};
use sqlx::{PgPool, Row};

use crate::pg::while_doing;

/// Schemas that are PostgreSQL's or agentctl's own, never migrated.
const SYSTEM_SCHEMAS: &str = "n.nspname NOT IN ('pg_catalog', 'information_schema', 'agentctl') \
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
}

#[async_trait]
impl Catalog for PgCatalog {
    async fn introspect(&self) -> Result<SchemaReport, ToolError> {
        let at = &self.label;
        let table_rows = sqlx::query(&format!(
            "SELECT c.oid::int8 AS oid, n.nspname, c.relname, greatest(c.reltuples, 0)::int8 AS estimate
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND {SYSTEM_SCHEMAS}
             ORDER BY n.nspname, c.relname"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(while_doing(format!("listing the tables of {at}")))?;

        let mut tables = Vec::with_capacity(table_rows.len());
        let mut index: HashMap<i64, usize> = HashMap::new();
        for r in &table_rows {
            let get = |e| while_doing(format!("reading the table list of {at}"))(e);
            let oid: i64 = r.try_get("oid").map_err(get)?;
            index.insert(oid, tables.len());
            tables.push(Table {
                name: TableName::new(r.try_get::<String, _>("nspname").map_err(get)?, r.try_get::<String, _>("relname").map_err(get)?),
                columns: Vec::new(),
                primary_key: Vec::new(),
                foreign_keys: Vec::new(),
                estimated_rows: r.try_get("estimate").map_err(get)?,
            });
        }
        let oids: Vec<i64> = index.keys().copied().collect();

        let columns = sqlx::query(
            "SELECT a.attrelid::int8 AS oid, a.attname, format_type(a.atttypid, a.atttypmod) AS data_type,
                    NOT a.attnotnull AS nullable, pg_get_expr(d.adbin, d.adrelid) AS default_expr
             FROM pg_attribute a
             LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
             WHERE a.attnum > 0 AND NOT a.attisdropped AND a.attrelid = ANY($1::int8[]::oid[])
             ORDER BY a.attrelid, a.attnum",
        )
        .bind(&oids)
        .fetch_all(&self.pool)
        .await
        .map_err(while_doing(format!("reading the columns of {at}")))?;
        for r in &columns {
            let get = |e| while_doing(format!("reading the columns of {at}"))(e);
            let oid: i64 = r.try_get("oid").map_err(get)?;
            if let Some(&i) = index.get(&oid) {
                tables[i].columns.push(Column {
                    name: r.try_get("attname").map_err(get)?,
                    data_type: r.try_get("data_type").map_err(get)?,
                    nullable: r.try_get("nullable").map_err(get)?,
                    default: r.try_get("default_expr").map_err(get)?,
                });
            }
        }

        let constraints = sqlx::query(
            "SELECT con.conrelid::int8 AS oid, con.contype::text AS kind, con.conname,
                    rn.nspname AS ref_schema, rc.relname AS ref_table,
                    ARRAY(SELECT a.attname::text FROM unnest(con.conkey) WITH ORDINALITY k(num, ord)
                          JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.num ORDER BY k.ord) AS cols,
                    ARRAY(SELECT a.attname::text FROM unnest(con.confkey) WITH ORDINALITY k(num, ord)
                          JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.num ORDER BY k.ord) AS ref_cols
             FROM pg_constraint con
             LEFT JOIN pg_class rc ON rc.oid = con.confrelid
             LEFT JOIN pg_namespace rn ON rn.oid = rc.relnamespace
             WHERE con.contype IN ('p', 'f') AND con.conrelid = ANY($1::int8[]::oid[])
             ORDER BY con.conrelid, con.conname",
        )
        .bind(&oids)
        .fetch_all(&self.pool)
        .await
        .map_err(while_doing(format!("reading the keys of {at}")))?;
        for r in &constraints {
            let get = |e| while_doing(format!("reading the keys of {at}"))(e);
            let oid: i64 = r.try_get("oid").map_err(get)?;
            let Some(&i) = index.get(&oid) else { continue };
            let cols: Vec<String> = r.try_get("cols").map_err(get)?;
            match r.try_get::<String, _>("kind").map_err(get)?.as_str() {
                "p" => tables[i].primary_key = cols,
                _ => tables[i].foreign_keys.push(ForeignKey {
                    name: r.try_get("conname").map_err(get)?,
                    columns: cols,
                    references: TableName::new(
                        r.try_get::<String, _>("ref_schema").map_err(get)?,
                        r.try_get::<String, _>("ref_table").map_err(get)?,
                    ),
                    referenced_columns: r.try_get("ref_cols").map_err(get)?,
                }),
            }
        }
        Ok(SchemaReport { database: self.label.clone(), tables })
    }
}
