//! Proving a migration in the target: pages of expected rows compared by row hash over the
//! page's key range, the rows whose hashes differ compared typed, one statement a page;
//! orphans and links counted; the validation stored.

use async_trait::async_trait;
use runtime::domain::{integer_key, TableName};
use runtime::domain::{Compared, Expected, Links, PageRecord, ProvenPage, RecordedPage};
use runtime::ports::{ToolError, Verifier};
use runtime::RunId;
use sqlx::{PgPool, Row};

use crate::catalog::{ident, quoted};
use crate::pg::while_doing;
use runtime::sql::in_none_of;

use super::PgTarget;

#[async_trait]
impl Verifier for PgTarget {
    async fn compare(
        &self,
        target: &TableName,
        page: &Expected,
    ) -> Result<Vec<Compared>, ToolError> {
        match self.compare_by_hash(target, page).await? {
            Some(answers) => Ok(answers),
            None => self.compare_values(target, page).await,
        }
    }
    async fn page_records(&self, target: &TableName) -> Result<Vec<PageRecord>, ToolError> {
        let records: Vec<(i64, i64, i32)> = sqlx::query_as(
            "SELECT page_hash, bucket::int8, page_rows FROM agentctl.load_baseline
             WHERE target_table = $1 AND lo IS NOT NULL AND page_hash IS NOT NULL AND scheme = 2
             ORDER BY lo",
        )
        .bind(target.to_string())
        .fetch_all(&self.pool)
        .await
        .map_err(while_doing(format!("reading the load's records of {target}")))?;
        Ok(records
            .into_iter()
            .map(|(fingerprint, bucket, rows)| PageRecord {
                fingerprint,
                bucket,
                rows: rows.into(),
            })
            .collect())
    }
    async fn prove_by_record(
        &self,
        target: &TableName,
        page: &RecordedPage,
    ) -> Result<Option<ProvenPage>, ToolError> {
        let (Some(&low), Some(&high)) = (page.keys.first(), page.keys.last()) else {
            return Ok(None);
        };
        let what = || format!("proving rows of {target} by the load's record");
        let mut c = self.pool.acquire().await.map_err(while_doing(what()))?;
        let record: Option<(Vec<i64>, Vec<i64>, Option<Vec<i64>>)> = sqlx::query_as(
            "SELECT int_keys, hashes, money FROM agentctl.load_baseline
             WHERE target_table = $1 AND bucket = $2 AND scheme = 2",
        )
        .bind(target.to_string())
        .bind(page.record.bucket)
        .fetch_optional(&mut *c)
        .await
        .map_err(while_doing(what()))?;
        let Some((keys, hashes, Some(source_cents))) = record else { return Ok(None) };
        if source_cents.len() != page.returned.len() || keys.len() != hashes.len() {
            return Ok(None);
        }
        // Which keys of the page the record holds, and what the server's hash of each of
        // their rows, its legacy key and UUID folded in after its columns, must add up to.
        let mut recorded = Vec::with_capacity(page.keys.len());
        let mut expected: i128 = 0;
        for (key, id) in page.keys.iter().zip(&page.ids) {
            match keys.binary_search(key) {
                Ok(i) => {
                    let row = crate::row_hash::fold(hashes[i] as u64, crate::row_hash::int8(*key));
                    let row = crate::row_hash::fold(row, crate::row_hash::bytes(id.as_bytes()));
                    expected += i128::from(crate::row_hash::summand(row) as i64);
                    recorded.push(true);
                }
                Err(_) => recorded.push(false),
            }
        }
        // Every key of the record is a key of the page (the page's keys are distinct).
        if recorded.iter().filter(|&&r| r).count() != keys.len() {
            return Ok(None);
        }
        // The server answers for the whole range in one row: how many rows it holds, the sum of
        // their hashes (each hashed again, `row_hash::summand`, so that rows trading values do
        // not add up to the same) and their money totals. Equal count and sum: the range holds
        // exactly the recorded rows, each with its recorded values and derived UUID, so the
        // page's other keys have none. (Measured, bench/RESULTS.md: reading every row's hash back to check
        // it here cost agentctl 2 s more CPU in `validate` at scale 1.0; joining the rows to the
        // record in the server cost it five times the read.)
        let hashed = hashed_columns(&page.columns, page.id_column, page.legacy_column);
        let mut row = qualified(&page.columns, &hashed);
        row.extend(["t.legacy_id::int8".to_owned(), "t.id".to_owned()]);
        let totals: String = page
            .returned
            .iter()
            .map(|&i| format!(", sum(trunc(t.{}::numeric, 2))::text", ident(&page.columns[i].0)))
            .collect();
        let sql = format!(
            "SELECT count(*),
                 sum(hash_numeric_extended(hash_record_extended(ROW({row}), 0)::numeric, 0))::text
                 {totals}
             FROM {table} t WHERE t.legacy_id BETWEEN $1 AND $2",
            row = row.join(", "),
            table = quoted(target),
        );
        let answer = sqlx::query(&sql).bind(low).bind(high).fetch_one(&mut *c).await;
        let answer = answer.map_err(while_doing(what()))?;
        drop(c);
        let read = |a: &sqlx::postgres::PgRow| -> Result<_, sqlx::Error> {
            let held: (i64, Option<String>) = (a.try_get(0)?, a.try_get(1)?);
            let totals: Vec<Option<String>> =
                (0..page.returned.len()).map(|j| a.try_get(2 + j)).collect::<Result<_, _>>()?;
            Ok((held, totals))
        };
        let ((rows, sum), totals) = read(&answer).map_err(while_doing(what()))?;
        let sum = sum.and_then(|s| s.parse::<i128>().ok());
        if rows != keys.len() as i64 || sum != Some(expected) {
            return Ok(None);
        }
        let target_cents = totals.iter().map(|t| runtime::domain::cents(t.as_deref())).collect();
        Ok(Some(ProvenPage { recorded, source_cents, target_cents }))
    }
    async fn value_of(
        &self,
        target: &TableName,
        column: &str,
        key_type: &str,
        key: &str,
    ) -> Result<Option<String>, ToolError> {
        let sql = format!(
            "SELECT {}::text FROM {} WHERE legacy_id = $1::{key_type}",
            ident(column),
            quoted(target)
        );
        let v: Option<Option<String>> = sqlx::query_scalar(&sql)
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(while_doing(format!("reading {target}.{column} of legacy key {key}")))?;
        Ok(v.flatten())
    }
    async fn rejected_keys(&self, source: &TableName) -> Result<Vec<(String, bool)>, ToolError> {
        Ok(sqlx::query_as(&format!(
            "SELECT legacy_key, bool_and(rule LIKE 'reference%' OR (rule = 'sync' AND {})) \
                FROM agentctl.rejected_rows WHERE source_table = $1 GROUP BY 1",
            crate::diff::REFUSED_BY_RULE
        ))
        .bind(source.to_string())
        .fetch_all(&self.pool)
        .await
        .map_err(while_doing(format!("reading the rejected rows of {source}")))?)
    }
    async fn held_reasons(
        &self,
        source: &TableName,
        keys: &[String],
    ) -> Result<Vec<(String, String)>, ToolError> {
        let last: Vec<(String, Option<String>, Option<String>)> = sqlx::query_as(
            "SELECT DISTINCT ON (legacy_key) legacy_key::text, outcome, reason
             FROM agentctl.data_differentials
             WHERE source_table = $1 AND legacy_key = ANY($2) AND applied_at IS NOT NULL
             ORDER BY legacy_key, applied_at DESC",
        )
        .bind(source.to_string())
        .bind(keys)
        .fetch_all(&self.pool)
        .await
        .map_err(while_doing(format!("reading what the last sync did with rows of {source}")))?;
        Ok(last
            .into_iter()
            .filter(|(_, outcome, _)| outcome.as_deref() == Some("held"))
            .map(|(key, _, reason)| (key, reason.unwrap_or_default()))
            .collect())
    }
    async fn existing_ids(
        &self,
        table: &TableName,
        ids: &[String],
    ) -> Result<Vec<String>, ToolError> {
        let sql = format!("SELECT id::text FROM {} WHERE id = ANY($1::uuid[])", quoted(table));
        Ok(sqlx::query_scalar(&sql)
            .bind(ids)
            .fetch_all(&self.pool)
            .await
            .map_err(while_doing(format!("looking up rows of {table}")))?)
    }
    async fn all_ids(
        &self,
        table: &TableName,
        at_most: usize,
    ) -> Result<Option<Vec<uuid::Uuid>>, ToolError> {
        let sql = format!("SELECT id FROM {} LIMIT $1", quoted(table));
        let ids: Vec<uuid::Uuid> = sqlx::query_scalar(&sql)
            .bind(i64::try_from(at_most).unwrap_or(i64::MAX - 1) + 1)
            .fetch_all(&self.pool)
            .await
            .map_err(while_doing(format!("reading the ids of {table}")))?;
        Ok((ids.len() <= at_most).then_some(ids))
    }
    async fn orphans(
        &self,
        child: &TableName,
        column: &str,
        parents: &[TableName],
    ) -> Result<Option<(i64, Vec<String>)>, ToolError> {
        // A validated foreign key on exactly this column and parent: the database guarantees it.
        let columns = [column.to_owned()];
        if let [parent] = parents {
            let enforced = enforced_key(&self.pool, child, &columns, parent, None)
                .await
                .map_err(while_doing(format!("looking for the foreign key of {child}.{column}")))?;
            if enforced {
                return Ok(None);
            }
        }
        let col = ident(column);
        let id = super::as_parent_id(&self.pool, (child, "c"), column)
            .await
            .map_err(while_doing(format!("reading the type of {child}.{column}")))?;
        let sql = format!(
            "SELECT count(*), coalesce((array_agg(c.legacy_id::text ORDER BY c.legacy_id))[1:5], '{{}}')
             FROM {} c WHERE c.{col} IS NOT NULL AND {}",
            quoted(child),
            in_none_of(parents, &id)
        );
        let named: Vec<String> = parents.iter().map(ToString::to_string).collect();
        Ok(Some(sqlx::query_as(&sql).fetch_one(&self.pool).await.map_err(while_doing(format!(
            "looking for references of {child}.{column} that point at no row of {}",
            named.join(" or ")
        )))?))
    }
    async fn links(
        &self,
        child: &TableName,
        links: &mut [Links],
        live: bool,
        except: &[String],
    ) -> Result<i64, ToolError> {
        let what = || format!("counting the references of {child}");
        let live_only = if live { " AND c.deleted_at IS NULL" } else { "" };
        let mut filter = String::from(" AND c.legacy_id IS NOT NULL");
        if !except.is_empty() {
            filter.push_str(" AND c.legacy_id::text <> ALL($1)");
        }
        filter.push_str(live_only);
        let count = |sql: String| async move {
            let q = sqlx::query(&sql);
            let q = if except.is_empty() { q } else { q.bind(except) };
            q.fetch_one(&self.pool).await.map_err(while_doing(what()))
        };
        // A link under a validated foreign key on exactly its columns and the parent's is a row
        // that sets them: the database guarantees the parent row. Those are counted together,
        // in one scan of the child that counts its rows too; the others each look their parent
        // rows up.
        let mut enforced = Vec::new();
        for (i, link) in links.iter_mut().enumerate() {
            let set: Vec<String> =
                link.columns.iter().map(|c| format!("c.{} IS NOT NULL", ident(c))).collect();
            let referenced = Some(link.referenced.as_slice());
            let guaranteed =
                enforced_key(&self.pool, child, &link.columns, &link.parent, referenced);
            if guaranteed.await.map_err(while_doing(what()))? {
                enforced.push((i, set.join(" AND ")));
                continue;
            }
            // A reference to a parent's UUID may be held as text (a generic reference).
            let mut on = Vec::with_capacity(link.columns.len());
            for (c, r) in link.columns.iter().zip(&link.referenced) {
                on.push(match r == "id" {
                    true => {
                        let id = super::as_parent_id(&self.pool, (child, "c"), c);
                        format!("p.id = {}", id.await.map_err(while_doing(what()))?)
                    }
                    false => format!("p.{} = c.{}", ident(r), ident(c)),
                });
            }
            let row = count(format!(
                "SELECT count(*) FROM {} c WHERE {}{filter} AND EXISTS (SELECT 1 FROM {} p WHERE {})",
                quoted(child),
                set.join(" AND "),
                quoted(&link.parent),
                on.join(" AND ")
            ))
            .await?;
            link.target = row.try_get(0).map_err(while_doing(what()))?;
        }
        let counts: String = enforced
            .iter()
            .map(|(_, set)| format!(", count(*) FILTER (WHERE {set}{filter})"))
            .collect();
        let rows = if live { "count(*) FILTER (WHERE c.deleted_at IS NULL)" } else { "count(*)" };
        let sql = format!("SELECT {rows}{counts} FROM {} c", quoted(child));
        // The keys left out are only named in the links' counts.
        let row = match enforced.is_empty() {
            true => sqlx::query(&sql).fetch_one(&self.pool).await.map_err(while_doing(what()))?,
            false => count(sql).await?,
        };
        for (n, (i, _)) in enforced.iter().enumerate() {
            links[*i].target = row.try_get(1 + n).map_err(while_doing(what()))?;
        }
        row.try_get(0).map_err(while_doing(what()))
    }
    async fn save_validation(
        &self,
        run: RunId,
        r: &runtime::domain::EntityValidation,
    ) -> Result<(), ToolError> {
        let what = || format!("storing the validation of {}", r.source);
        let json = |v: Result<serde_json::Value, serde_json::Error>| {
            v.map_err(|e| ToolError::system(format!("{}: {e}", what())))
        };
        let (differences, orphans, links, money) = (
            json(serde_json::to_value(&r.differences))?,
            json(serde_json::to_value(&r.orphans))?,
            json(serde_json::to_value(&r.links))?,
            json(serde_json::to_value(&r.money))?,
        );
        sqlx::query(
            "INSERT INTO agentctl.migration_validation_reports (run_id, source_table, target_table, passed, source_rows, migrated, rejected,
                 target_rows, rows_compared, rows_differing, differences, orphans, money, detail, seconds, links)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
             ON CONFLICT (run_id, source_table) DO UPDATE SET passed = $4, source_rows = $5, migrated = $6, rejected = $7,
                 target_rows = $8, rows_compared = $9, rows_differing = $10, differences = $11, orphans = $12, money = $13,
                 detail = $14, seconds = $15, links = $16, validated_at = now()",
        )
        .bind(run.0)
        .bind(r.source.to_string())
        .bind(r.target.to_string())
        .bind(r.passed)
        .bind(r.source_rows)
        .bind(r.migrated)
        .bind(r.rejected)
        .bind(r.target_rows)
        .bind(r.rows_compared)
        .bind(r.rows_differing)
        .bind(differences)
        .bind(orphans)
        .bind(money)
        .bind(&r.detail)
        .bind(r.seconds)
        .bind(links)
        .execute(&self.pool)
        .await
        .map_err(while_doing(format!("storing the validation of {}", r.source)))?;
        Ok(())
    }
}

impl PgTarget {
    /// Each expected row against the target's row of its legacy key, typed, in one statement:
    /// whether it is there, whether it is agentctl's, and its first differing column.
    async fn compare_values(
        &self,
        target: &TableName,
        page: &Expected,
    ) -> Result<Vec<Compared>, ToolError> {
        let n = page.columns.len();
        let (id, legacy) = (page.id_column, page.legacy_column);
        let cast = |i: usize| format!("u.c{i}::{}", page.columns[i].1);
        let diffs: Vec<String> = (0..n)
            .filter(|&i| i != id && i != legacy)
            .map(|i| {
                let found = format!("t.{}", ident(&page.columns[i].0));
                format!("WHEN {} THEN {i}", runtime::sql::differs(&found, &cast(i)))
            })
            .collect();
        let returned = returned_columns(&page.columns, &page.returned);
        let arrays: Vec<String> = (0..n).map(|i| format!("${}::text[]", i + 3)).collect();
        let names: Vec<String> = (0..n).map(|i| format!("c{i}")).collect();
        let sql = format!(
            "SELECT t.id IS NOT NULL, coalesce(t.id = {idcast}, false),
                 CASE WHEN t.id IS NULL OR NOT u.wanted THEN NULL {diffs} END{returned}
             FROM unnest($1::text[], $2::bool[], {arrays}) WITH ORDINALITY AS u(k, wanted, {names}, n)
             LEFT JOIN {table} t ON t.legacy_id = u.k::{legacy_type}
             ORDER BY u.n",
            idcast = cast(id),
            diffs = diffs.join(" "),
            arrays = arrays.join(", "),
            names = names.join(", "),
            table = quoted(target),
            legacy_type = page.columns[legacy].1,
        );
        let mut q = sqlx::query(&sql).bind(&page.keys).bind(&page.wanted);
        let columns = page.column_arrays();
        for column in &columns {
            q = q.bind(column);
        }
        let what = || format!("comparing rows of {target} with their source rows");
        let rows = q.fetch_all(&self.pool).await.map_err(while_doing(what()))?;
        rows.iter()
            .map(|r| {
                Ok(Compared {
                    present: r.try_get(0)?,
                    ours: r.try_get(1)?,
                    differs: r.try_get::<Option<i32>, _>(2)?.map(|i| i as usize),
                    returned: (0..page.returned.len()).map(|i| r.try_get(3 + i)).collect::<Result<
                        _,
                        sqlx::Error,
                    >>(
                    )?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(|e| while_doing(what())(e))
    }

    /// The page compared by row hashes: each expected row hashed here as the load hashes what
    /// it sends ([`crate::row_hash`]), each target row by the server, in one scan of the page's
    /// key range; a row whose hashes differ, or that cannot be hashed here, is then compared
    /// value by value ([`PgTarget::compare_values`]), so a difference is named as before and a
    /// hash never passes a row the values would fail (short of a 64-bit collision). `None`
    /// when the page cannot be compared this way: a legacy key that is not an integer, a key
    /// that is not a uuid, or a column without a binary encoder or hash here.
    async fn compare_by_hash(
        &self,
        target: &TableName,
        page: &Expected,
    ) -> Result<Option<Vec<Compared>>, ToolError> {
        let (id, legacy) = (page.id_column, page.legacy_column);
        let keys: Option<Vec<i64>> = page.keys.iter().map(|k| k.parse().ok()).collect();
        let uuid_key = page.columns[id].1 == "uuid";
        let (Some(keys), true, true) = (keys, integer_key(&page.columns[legacy].1), uuid_key)
        else {
            return Ok(None);
        };
        let (Some(&low), Some(&high)) = (keys.iter().min(), keys.iter().max()) else {
            return Ok(None);
        };
        let hashed = hashed_columns(&page.columns, id, legacy);
        let columns: Vec<(String, String)> =
            hashed.iter().map(|&i| page.columns[i].clone()).collect();
        let what = || format!("comparing rows of {target} with their source rows");
        let mut c = self.pool.acquire().await.map_err(while_doing(what()))?;
        let base =
            crate::binary::base_columns(&mut c, target).await.map_err(while_doing(what()))?;
        let Some(wires) = crate::binary::wires(&base, &columns) else { return Ok(None) };
        let hows = crate::row_hash::column_hashes(&mut c, &base, &columns).await;
        let Some(hows) = hows.map_err(while_doing(what()))? else { return Ok(None) };
        let returned = returned_columns(&page.columns, &page.returned);
        let row = qualified(&page.columns, &hashed);
        let sql = format!(
            "SELECT t.legacy_id::int8, t.id, hash_record_extended(ROW({row}), 0){returned}
             FROM {table} t WHERE t.legacy_id BETWEEN $1 AND $2",
            row = row.join(", "),
            table = quoted(target),
        );
        let rows = sqlx::query(&sql).bind(low).bind(high).fetch_all(&mut *c).await;
        let rows = rows.map_err(while_doing(what()))?;
        drop(c);
        let mut held = std::collections::HashMap::with_capacity(rows.len());
        for r in &rows {
            let returned: Result<Vec<Option<String>>, sqlx::Error> =
                (0..page.returned.len()).map(|i| r.try_get(3 + i)).collect();
            let row = (r.try_get::<uuid::Uuid, _>(1), r.try_get::<i64, _>(2), returned);
            let (Ok(uuid), Ok(hash), Ok(returned)) = row else {
                return Err(ToolError::system(format!("{}: an unreadable row", what())));
            };
            let key: i64 = r.try_get(0).map_err(while_doing(what()))?;
            held.insert(key, (uuid, hash, returned));
        }
        let mut answers = Vec::with_capacity(keys.len());
        let mut by_value = Vec::new();
        let mut buf = Vec::new();
        for (r, key) in keys.iter().enumerate() {
            let Some((uuid, hash, returned)) = held.remove(key) else {
                answers.push(Compared {
                    returned: vec![None; page.returned.len()],
                    ..Compared::default()
                });
                continue;
            };
            let ours =
                page.values.get(r, id).and_then(|e| uuid::Uuid::parse_str(e).ok()) == Some(uuid);
            // A row kept from before agentctl is compared too: its key says it is the source
            // row's, so its values must be.
            if page.wanted[r]
                && expected_hash(page, r, &hashed, &wires, &hows, &mut buf) != Some(hash)
            {
                by_value.push(r);
            }
            answers.push(Compared { present: true, ours, differs: None, returned });
        }
        if !by_value.is_empty() {
            let exact = self.compare_values(target, &page.rows(&by_value)).await?;
            for (&r, answer) in by_value.iter().zip(exact) {
                answers[r] = answer;
            }
        }
        Ok(Some(answers))
    }
}

/// The returned columns (money, to total) as the select list's tail: `, t.col::numeric::text`
/// each (a `money` column's text would carry its currency symbol).
fn returned_columns(columns: &[(String, String)], returned: &[usize]) -> String {
    returned.iter().map(|&i| format!(", t.{}::numeric::text", ident(&columns[i].0))).collect()
}

/// Columns `which` of `columns` as the target row `t`'s, for a select list.
fn qualified(columns: &[(String, String)], which: &[usize]) -> Vec<String> {
    which.iter().map(|&i| format!("t.{}", ident(&columns[i].0))).collect()
}

/// Every column of `columns` but the row's UUID and its legacy key: the columns a row's hash
/// covers, in the load baseline as in a comparison.
fn hashed_columns(columns: &[(String, String)], id: usize, legacy: usize) -> Vec<usize> {
    (0..columns.len()).filter(|&i| i != id && i != legacy).collect()
}

/// Row `r` of `page` hashed over the `hashed` columns as the server hashes the stored row, or
/// `None` when a value's stored form is not certain from it.
fn expected_hash(
    page: &Expected,
    r: usize,
    hashed: &[usize],
    wires: &[crate::binary::Wire],
    hows: &[crate::row_hash::ColumnHash],
    buf: &mut Vec<u8>,
) -> Option<i64> {
    let mut hash = 0u64;
    for (j, &i) in hashed.iter().enumerate() {
        let element = match page.values.get(r, i) {
            None => 0,
            Some(value) => {
                buf.clear();
                crate::binary::value_into(wires[j], value, buf)?;
                hows[j].of(buf)?
            }
        };
        hash = crate::row_hash::fold(hash, element);
    }
    Some(hash as i64)
}

/// Whether a validated foreign key of `child` on exactly `columns` points at `parent` (at
/// exactly its `referenced` columns, when given).
async fn enforced_key(
    pool: &PgPool,
    child: &TableName,
    columns: &[String],
    parent: &TableName,
    referenced: Option<&[String]>,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_constraint c
         WHERE c.conrelid = $1::regclass AND c.confrelid = $2::regclass AND c.contype = 'f' AND c.convalidated
           AND c.conkey = ARRAY(SELECT a.attnum FROM unnest($3::text[]) WITH ORDINALITY n(name, o)
                                JOIN pg_attribute a ON a.attrelid = $1::regclass AND a.attname = n.name ORDER BY n.o)
           AND ($4::text[] IS NULL
                OR c.confkey = ARRAY(SELECT a.attnum FROM unnest($4::text[]) WITH ORDINALITY n(name, o)
                                     JOIN pg_attribute a ON a.attrelid = $2::regclass AND a.attname = n.name ORDER BY n.o)))",
    )
    .bind(quoted(child))
    .bind(quoted(parent))
    .bind(columns)
    .bind(referenced)
    .fetch_one(pool)
    .await
}
