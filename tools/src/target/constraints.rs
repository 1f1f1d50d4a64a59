//! Setting a table's constraints, indexes and autovacuum aside for its load (recorded in
//! `agentctl.suspended_constraints`, so a crash leaves nothing lost), putting them back, and
//! rolling back what agentctl wrote.

use async_trait::async_trait;
use runtime::domain::TableName;
use runtime::domain::{KeysAside, RollbackEntity, RolledBack};
use runtime::ports::{ConstraintStore, ToolError};
use runtime::RunId;

use crate::catalog::{ident, quoted};
use crate::pg::while_doing;

use super::PgTarget;

/// What putting constraints back does at a foreign key the rows break (SQLSTATE 23503).
#[derive(Clone, Copy, PartialEq, Eq)]
enum OnRefusal {
    /// Fails with the server's words.
    Fail,
    /// Stops there: that key and what comes after it stay aside.
    Stop,
    /// Leaves that key aside and goes on with the rest.
    Skip,
}

/// The kind, and the name, under which an empty table's autovacuum is recorded as off for its
/// load (in parentheses: no constraint or index can be named so without quotes).
const AUTOVACUUM: &str = "autovacuum";
const AUTOVACUUM_NAME: &str = "(autovacuum)";

/// Records a constraint or index (or an empty table's autovacuum) as set aside for a load, with
/// what restores it, and drops it (switches it off), in the caller's transaction.
async fn set_aside(
    c: &mut sqlx::PgConnection,
    run: RunId,
    target: &TableName,
    name: &str,
    kind: &str,
    definition: &str,
    validated: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO agentctl.suspended_constraints (target_table, name, kind, \
        definition, validated, run_id) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(target.to_string())
    .bind(name)
    .bind(kind)
    .bind(definition)
    .bind(validated)
    .bind(run.0)
    .execute(&mut *c)
    .await?;
    let drop = match kind {
        "index" => format!("DROP INDEX {}.{}", ident(&target.schema), ident(name)),
        AUTOVACUUM => format!("ALTER TABLE {} SET (autovacuum_enabled = false)", quoted(target)),
        _ => format!("ALTER TABLE {} DROP CONSTRAINT {}", quoted(target), ident(name)),
    };
    sqlx::query(&drop).execute(c).await?;
    Ok(())
}

/// A key agentctl sets aside for a load (`suspend_keys`), as put back: its kind of constraint
/// and its one column.
fn plain_key(kind: &str, definition: &str) -> Option<(&'static str, &'static str)> {
    match (kind, definition) {
        ("primary", super::PRIMARY_KEY_ASIDE) => Some(("PRIMARY KEY", "id")),
        ("unique", "UNIQUE (legacy_id)") => Some(("UNIQUE", "legacy_id")),
        _ => None,
    }
}

/// How long putting constraints back may wait for a table another session is using.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// As long as it takes: the load's own put-back, which waits for agentctl's own readers of
    /// the table (its load baseline) by design.
    Always,
    /// At most [`LOCK_WAIT`], as everything a rollback locks.
    Bounded,
}

/// Bounds the transaction's waits for locks by [`LOCK_WAIT`]; its backend's pid.
async fn bounded(c: &mut sqlx::PgConnection) -> Result<i32, sqlx::Error> {
    sqlx::query(&format!("SET LOCAL lock_timeout = '{}s'", LOCK_WAIT.as_secs()))
        .execute(&mut *c)
        .await?;
    sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(c).await
}

/// Whether a statement gave up waiting for a lock (`lock_timeout`, SQLSTATE 55P03).
fn timed_out(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.code().as_deref() == Some("55P03"))
}

/// Puts one recorded constraint, index or autovacuum setting back on `target`, in the
/// caller's transaction.
async fn put_back(
    c: &mut sqlx::PgConnection,
    target: &TableName,
    name: &str,
    kind: &str,
    definition: &str,
    validated: bool,
) -> Result<(), sqlx::Error> {
    let table = quoted(target);
    let create = match (kind, plain_key(kind, definition)) {
        // The plain keys: the index built under a lock that lets readers on (the load baseline
        // reads the table meanwhile), then made the constraint it was.
        (_, Some((key, column))) => {
            let name = ident(name);
            sqlx::query(&format!("CREATE UNIQUE INDEX {name} ON {table} ({column})"))
                .execute(&mut *c)
                .await?;
            format!("ALTER TABLE {table} ADD CONSTRAINT {name} {key} USING INDEX {name}")
        }
        ("index", _) => definition.to_owned(),
        (AUTOVACUUM, _) => format!("ALTER TABLE {table} RESET (autovacuum_enabled)"),
        // A unique key is built whole, never NOT VALID.
        ("unique", _) => format!("ALTER TABLE {table} ADD CONSTRAINT {} {definition}", ident(name)),
        // Validated as it is added, unless it was NOT VALID before agentctl set it aside.
        _ if validated || definition.ends_with("NOT VALID") => {
            format!("ALTER TABLE {table} ADD CONSTRAINT {} {definition}", ident(name))
        }
        _ => format!("ALTER TABLE {table} ADD CONSTRAINT {} {definition} NOT VALID", ident(name)),
    };
    sqlx::query(&create).execute(c).await.map(drop)
}

/// The keys set aside for the table's load.
pub(super) async fn keys_aside(
    c: &mut sqlx::PgConnection,
    target: &TableName,
) -> Result<KeysAside, sqlx::Error> {
    let (primary, legacy): (bool, bool) = sqlx::query_as(
        "SELECT coalesce(bool_or(kind = 'primary'), false), coalesce(bool_or(kind = 'unique'), false) \
        FROM agentctl.suspended_constraints WHERE target_table = $1",
    )
    .bind(target.to_string())
    .fetch_one(c)
    .await?;
    Ok(KeysAside { primary, legacy })
}

impl PgTarget {
    /// Puts back what is recorded as set aside for the table (of some kinds, or all); returns what
    /// was put back and whether that was everything. A foreign key the rows break fails it,
    /// ends it there, or is left aside while the rest goes on, as `on_refusal` says; what is not
    /// put back stays recorded.
    async fn restore(
        &self,
        target: &TableName,
        kinds: Option<&[&str]>,
        on_refusal: OnRefusal,
        wait: Wait,
    ) -> Result<(Vec<String>, bool), ToolError> {
        let what = format!("putting back the constraints and indexes of {target}");
        let records: Vec<(String, String, String, bool)> = sqlx::query_as(
            "SELECT name, kind, definition, validated FROM agentctl.suspended_constraints
             WHERE target_table = $1 AND ($2::text[] IS NULL OR kind = ANY($2))
             ORDER BY kind <> 'primary', kind = 'autovacuum', kind = 'unique', kind DESC, name",
        )
        .bind(target.to_string())
        .bind(kinds)
        .fetch_all(&self.pool)
        .await
        .map_err(while_doing(&what))?;
        let mut restored = Vec::with_capacity(records.len());
        let mut everything = true;
        // The primary key first: a foreign key (the table's own, to itself) needs its index.
        // Then indexes and foreign keys, then the unique legacy key: making its index the
        // constraint waits for every reader of the table (the load baseline), and whatever came
        // after it would wait behind that. Autovacuum last, so that none of these waits for it.
        for (name, kind, definition, validated) in records {
            // Back in place, checked against every row in one set-based pass, and off the record
            // in one transaction: a constraint the rows break stays recorded and aside, so a
            // retry or the final put-back meets the same refusal instead of a constraint
            // silently left unchecked. (The lock it takes stops writers to the table and its
            // parent, never readers; agentctl writes to neither at that point.)
            let mut tx = self.pool.begin().await.map_err(while_doing(&what))?;
            let me = match wait {
                Wait::Always => None,
                Wait::Bounded => Some(bounded(&mut tx).await.map_err(while_doing(&what))?),
            };
            match put_back(&mut tx, target, &name, &kind, &definition, validated).await {
                Ok(()) => {}
                Err(sqlx::Error::Database(db))
                    if on_refusal != OnRefusal::Fail && db.code().as_deref() == Some("23503") =>
                {
                    if on_refusal == OnRefusal::Stop {
                        return Ok((restored, false));
                    }
                    // Rolled back with its transaction, still on the record.
                    everything = false;
                    continue;
                }
                Err(e) => match me.filter(|_| timed_out(&e)) {
                    Some(me) => {
                        drop(tx);
                        return Err(self.waited(me, &[quoted(target)]).await);
                    }
                    None => return Err(while_doing(format!("putting back {name} on {target}"))(e)),
                },
            }
            sqlx::query(
                "DELETE FROM agentctl.suspended_constraints WHERE target_table = $1 AND name = $2",
            )
            .bind(target.to_string())
            .bind(&name)
            .execute(&mut *tx)
            .await
            .map_err(while_doing(&what))?;
            tx.commit().await.map_err(while_doing(&what))?;
            restored.push(name);
        }
        Ok((restored, everything))
    }
}

#[async_trait]
impl ConstraintStore for PgTarget {
    async fn suspend_constraints(
        &self,
        run: RunId,
        target: &TableName,
    ) -> Result<Vec<String>, ToolError> {
        let what = format!("setting aside the foreign keys and indexes of {target} for the load");
        let mut tx = self.pool.begin().await.map_err(while_doing(&what))?;
        let table = quoted(target);
        let found: Vec<(String, String, String, bool)> = sqlx::query_as(
            "SELECT conname::text, 'constraint', pg_get_constraintdef(oid), convalidated FROM pg_constraint
             WHERE conrelid = $1::regclass AND contype = 'f'
             UNION ALL
             SELECT i.relname::text, 'index', replace(pg_get_indexdef(i.oid), ' ON ONLY ', ' ON '), true
             FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
             WHERE x.indrelid = $1::regclass AND NOT x.indisunique AND NOT x.indisprimary
               AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid)",
        )
        .bind(&table)
        .fetch_all(&mut *tx)
        .await
        .map_err(while_doing(&what))?;
        for (name, kind, definition, validated) in &found {
            set_aside(&mut tx, run, target, name, kind, definition, *validated)
                .await
                .map_err(while_doing(&what))?;
        }
        // An empty table's autovacuum is off while agentctl fills it: it would otherwise analyze
        // a half-loaded table (statistics thrown away when it is full) and vacuum it while the
        // load appends to it, taking a core from the load. Put back with the table's constraints,
        // after which autovacuum does both once. A setting of the operator's own is left alone.
        // (A partitioned table has no storage of its own to vacuum, nor the setting.)
        let quiet: bool = sqlx::query_scalar(&format!(
            "SELECT (SELECT relkind FROM pg_class WHERE oid = $1::regclass) <> 'p' AND NOT EXISTS (SELECT 1 FROM {table})
                AND NOT EXISTS (SELECT 1 FROM pg_class c, unnest(c.reloptions) o
                                WHERE c.oid = $1::regclass AND o LIKE 'autovacuum\\_enabled=%')"
        ))
        .bind(&table)
        .fetch_one(&mut *tx)
        .await
        .map_err(while_doing(&what))?;
        if quiet {
            set_aside(
                &mut tx,
                run,
                target,
                AUTOVACUUM_NAME,
                AUTOVACUUM,
                "autovacuum_enabled",
                true,
            )
            .await
            .map_err(while_doing(&what))?;
        }
        let all: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM agentctl.suspended_constraints WHERE target_table = $1 ORDER BY name",
        )
        .bind(target.to_string())
        .fetch_all(&mut *tx)
        .await
        .map_err(while_doing(&what))?;
        tx.commit().await.map_err(while_doing(&what))?;
        Ok(all)
    }
    async fn restore_constraints(&self, target: &TableName) -> Result<Vec<String>, ToolError> {
        self.restore(target, None, OnRefusal::Fail, Wait::Always)
            .await
            .map(|(restored, _)| restored)
    }
    async fn restore_constraints_unless_refused(
        &self,
        target: &TableName,
    ) -> Result<(Vec<String>, bool), ToolError> {
        self.restore(target, None, OnRefusal::Stop, Wait::Always).await
    }
    async fn restore_constraints_but_refused(
        &self,
        target: &TableName,
    ) -> Result<Vec<String>, ToolError> {
        self.restore(target, None, OnRefusal::Skip, Wait::Always)
            .await
            .map(|(restored, _)| restored)
    }
    async fn suspend_keys(&self, run: RunId, target: &TableName) -> Result<KeysAside, ToolError> {
        let what = format!("setting aside the keys of {target} for the load");
        let table = quoted(target);
        let empty: bool = sqlx::query_scalar(&format!("SELECT NOT EXISTS (SELECT 1 FROM {table})"))
            .fetch_one(&self.pool)
            .await
            .map_err(while_doing(&what))?;
        if !empty {
            // A load that starts again over rows of its own: the primary key comes back, so
            // that a row the table holds is found by it.
            self.restore(target, Some(&["primary"]), OnRefusal::Fail, Wait::Always).await?;
        }
        let mut tx = self.pool.begin().await.map_err(while_doing(&what))?;
        // The primary key on id alone and the unique constraint on legacy_id alone, both there,
        // of a plain table, no foreign key leaning on either, and no row yet.
        let found: Vec<(String, String, String)> = sqlx::query_as(&format!(
            "WITH cols AS (
                 SELECT (SELECT attnum FROM pg_attribute WHERE attrelid = $1::regclass AND attname = 'id') AS id,
                        (SELECT attnum FROM pg_attribute WHERE attrelid = $1::regclass AND attname = 'legacy_id') AS legacy
             ), keys AS (
                 SELECT k.oid, k.conname, k.contype, k.conindid, k.conkey
                 FROM pg_constraint k, cols
                 WHERE k.conrelid = $1::regclass AND (k.contype = 'p' AND k.conkey = ARRAY[cols.id]
                                                      OR k.contype = 'u' AND k.conkey = ARRAY[cols.legacy])
             )
             SELECT k.conname::text, CASE k.contype WHEN 'p' THEN 'primary' ELSE 'unique' END,
                    pg_get_constraintdef(k.oid)
             FROM keys k
             WHERE (SELECT count(*) FROM keys) = 2
               AND (SELECT relkind FROM pg_class WHERE oid = $1::regclass) = 'r'
               AND NOT EXISTS (SELECT 1 FROM pg_constraint f WHERE f.contype = 'f' AND f.conindid = k.conindid)
               AND NOT EXISTS (SELECT 1 FROM {table})
             ORDER BY k.contype"
        ))
        .bind(&table)
        .fetch_all(&mut *tx)
        .await
        .map_err(while_doing(&what))?;
        // Each only as `plain_key` puts it back.
        for (name, kind, definition) in &found {
            if plain_key(kind, definition).is_some() {
                set_aside(&mut tx, run, target, name, kind, definition, true)
                    .await
                    .map_err(while_doing(&what))?;
            }
        }
        let aside = keys_aside(&mut tx, target).await.map_err(while_doing(&what))?;
        tx.commit().await.map_err(while_doing(&what))?;
        Ok(aside)
    }
    async fn restore_keys(&self, target: &TableName) -> Result<(), ToolError> {
        self.restore(target, Some(&["primary", "unique"]), OnRefusal::Fail, Wait::Always)
            .await
            .map(drop)
    }
    async fn rollback(
        &self,
        run: RunId,
        entities: &[RollbackEntity],
    ) -> Result<Vec<RolledBack>, ToolError> {
        // What an interrupted load left aside comes back first, waiting no longer than the
        // rollback's own locks do.
        for e in entities {
            self.restore(&e.target, None, OnRefusal::Fail, Wait::Bounded).await?;
        }
        let what = "rolling back";
        let mut tx = self.pool.begin().await.map_err(while_doing(what))?;
        let me = bounded(&mut tx).await.map_err(while_doing(what))?;
        let targets: Vec<TableName> = entities.iter().map(|e| e.target.clone()).collect();
        let mut locked: Vec<String> = targets.iter().map(quoted).collect();
        self.lock(&mut tx, me, &locked, "ROW EXCLUSIVE").await?;
        let references = references_to(&mut tx, &targets).await.map_err(while_doing(what))?;
        // Dropping a foreign key locks its table and the table it references whole: both are
        // taken here, at once, so that the rollback waits at one place, for a bounded time.
        locked = references
            .iter()
            .flat_map(|r| [r.table.clone(), r.referenced_quoted.clone()])
            .collect();
        locked.sort();
        locked.dedup();
        self.lock(&mut tx, me, &locked, "ACCESS EXCLUSIVE").await?;
        for r in &references {
            let drop = format!("ALTER TABLE {} DROP CONSTRAINT {}", r.table, ident(&r.name));
            sqlx::query(&drop).execute(&mut *tx).await.map_err(while_doing(what))?;
        }
        let mut done = Vec::with_capacity(entities.len());
        for e in entities {
            let table = quoted(&e.target);
            let deleted = delete_ours(&mut tx, e).await?;
            let kept: i64 = sqlx::query_scalar(&format!(
                "SELECT count(*) FROM {table} WHERE legacy_id IS NOT NULL"
            ))
            .fetch_one(&mut *tx)
            .await
            .map_err(while_doing(format!("counting the rows left in {}", e.target)))?;
            // The entity starts over the next time it is migrated.
            for sql in [
                "DELETE FROM agentctl.migration_checkpoints WHERE source_table = $1",
                "UPDATE agentctl.migration_control SET state = 'rolled back', finished_at = \
                    now(), detail = 'rolled back by run ' || $2 WHERE source_table = $1",
            ] {
                sqlx::query(sql)
                    .bind(e.source.to_string())
                    .bind(run.to_string())
                    .execute(&mut *tx)
                    .await
                    .map_err(while_doing(what))?;
            }
            crate::diff::forget_baseline(&mut tx, &e.target).await.map_err(while_doing(what))?;
            sqlx::query("DELETE FROM agentctl.deferred_references WHERE target_table = $1")
                .bind(e.target.to_string())
                .execute(&mut *tx)
                .await
                .map_err(while_doing(what))?;
            done.push(RolledBack {
                source: e.source.clone(),
                target: e.target.clone(),
                deleted,
                kept,
            });
        }
        // Every reference left is checked once, in bulk: one to a deleted row fails the whole
        // rollback.
        for r in &references {
            let add = format!(
                "ALTER TABLE {} ADD CONSTRAINT {} {}",
                r.table,
                ident(&r.name),
                r.definition
            );
            sqlx::query(&add).execute(&mut *tx).await.map_err(|err| {
                match still_referenced(&err) {
                    Some(child) => orphaning(&r.referenced, &child, r.from_rollback),
                    None => while_doing(format!("putting back {} on {}", r.name, r.table))(err),
                }
            })?;
        }
        tx.commit().await.map_err(while_doing(what))?;
        Ok(done)
    }
}

/// How long a rollback waits for a table another session is using. Its statements lock whole
/// tables; waiting without end would also queue every other session's reads and writes of
/// those tables behind it, a stall of the application using the target.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

impl PgTarget {
    /// Locks `tables` (quoted) in `mode` in the rollback's transaction, waiting at most
    /// [`LOCK_WAIT`]; when another session holds one of them, the error names it and the
    /// sessions holding it (`me` is the rollback's own), and the transaction is given up whole.
    async fn lock(
        &self,
        c: &mut sqlx::PgConnection,
        me: i32,
        tables: &[String],
        mode: &str,
    ) -> Result<(), ToolError> {
        if tables.is_empty() {
            return Ok(());
        }
        let lock = format!("LOCK TABLE {} IN {mode} MODE", tables.join(", "));
        let Err(err) = sqlx::query(&lock).execute(&mut *c).await else { return Ok(()) };
        if !timed_out(&err) {
            return Err(while_doing("locking the tables to roll back")(err));
        }
        Err(self.waited(me, tables).await)
    }

    /// Why a rollback gave up waiting for `tables` (quoted): the sessions other than `me`
    /// holding a lock on one of them, each with its state and query.
    async fn waited(&self, me: i32, tables: &[String]) -> ToolError {
        let holders: Result<Vec<(String, i32, String, String)>, _> = sqlx::query_as(
            "SELECT DISTINCT l.relation::regclass::text, a.pid, coalesce(a.state, ''),
                    left(regexp_replace(coalesce(a.query, ''), '\\s+', ' ', 'g'), 80)
             FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
             WHERE l.granted AND l.locktype = 'relation' AND l.pid <> $2
               AND l.relation = ANY($1::text[]::regclass[])
             ORDER BY 1, 2",
        )
        .bind(tables)
        .bind(me)
        .fetch_all(&self.pool)
        .await;
        let holders: Vec<String> = match holders {
            Ok(holders) => holders
                .iter()
                .map(|(table, pid, state, query)| format!("{table}: pid {pid}, {state}, `{query}`"))
                .collect(),
            Err(e) => {
                return while_doing("looking for the sessions using the tables to roll back")(e)
            }
        };
        ToolError::system(format!(
            "rollback waited {} s for tables other sessions are using ({}); nothing was deleted: \
                end those sessions or wait until they are done, then run rollback again",
            LOCK_WAIT.as_secs(),
            match holders.is_empty() {
                true => "they have ended since".to_owned(),
                false => holders.join("; "),
            }
        ))
    }
}

/// Deletes the rows of `e`'s table that are agentctl's, in the caller's transaction, a page of
/// 50,000 at a time in the order of their UUIDs (memory stays flat whatever the table's size);
/// how many.
async fn delete_ours(c: &mut sqlx::PgConnection, e: &RollbackEntity) -> Result<i64, ToolError> {
    const PAGE: i64 = 50_000;
    let table = quoted(&e.target);
    // Only rows carrying agentctl's prefix can be its own (all of them, in the ordered
    // layout); each is checked against the derivation before it is deleted.
    let read = format!(
        "SELECT legacy_id::text, id FROM {table} WHERE legacy_id IS NOT NULL AND \
            ($1::uuid IS NULL OR id BETWEEN $1 AND $2) AND ($3::uuid IS NULL OR id > $3) \
         ORDER BY id LIMIT {PAGE}"
    );
    let delete = format!("DELETE FROM {table} WHERE id = ANY($1)");
    let range = e.deriver.range();
    let (mut after, mut deleted) = (None::<uuid::Uuid>, 0i64);
    loop {
        let rows: Vec<(String, uuid::Uuid)> = sqlx::query_as(&read)
            .bind(range.map(|r| r.0))
            .bind(range.map(|r| r.1))
            .bind(after)
            .fetch_all(&mut *c)
            .await
            .map_err(while_doing(format!("reading the rows of {}", e.target)))?;
        let Some(&(_, last)) = rows.last() else { return Ok(deleted) };
        after = Some(last);
        let ours: Vec<uuid::Uuid> = rows
            .iter()
            .filter(|(legacy, id)| e.deriver.derive_stored(legacy) == *id)
            .map(|&(_, id)| id)
            .collect();
        deleted += sqlx::query(&delete)
            .bind(&ours)
            .execute(&mut *c)
            .await
            .map_err(|err| match still_referenced(&err) {
                Some(child) => orphaning(&e.target.name, &child, false),
                None => {
                    while_doing(format!("deleting the rows agentctl created in {}", e.target))(err)
                }
            })?
            .rows_affected() as i64;
    }
}

/// A foreign key that references a table being rolled back, from any table (that table
/// itself included).
struct Reference {
    /// The referencing table, quoted.
    table: String,
    name: String,
    /// As `pg_get_constraintdef` gives it (`NOT VALID`, `DEFERRABLE` and actions included).
    definition: String,
    /// The referenced table's name, for the error.
    referenced: String,
    /// The referenced table, quoted.
    referenced_quoted: String,
    /// Whether the referencing table is rolled back too.
    from_rollback: bool,
}

/// The foreign keys that reference `targets`. A rollback drops them before its deletes and
/// adds them back after, in its transaction, so that the server checks the references left
/// once, in bulk: with the keys in place it checked every deleted row on its own (a
/// self-referencing table without an index on its reference, 60,000 rows, took 30 s per
/// 50,000-row statement, and failed when a statement deleted a parent before its children),
/// and an `ON DELETE CASCADE` or `SET NULL` key would have changed rows agentctl did not create
/// instead of failing.
async fn references_to(
    c: &mut sqlx::PgConnection,
    targets: &[TableName],
) -> Result<Vec<Reference>, sqlx::Error> {
    let names: Vec<String> = targets.iter().map(quoted).collect();
    let found: Vec<(String, String, String, String, String, bool)> = sqlx::query_as(
        "SELECT format('%I.%I', n.nspname, r.relname), k.conname::text, pg_get_constraintdef(k.oid), \
            p.relname::text, format('%I.%I', pn.nspname, p.relname), k.conrelid = ANY($1::text[]::regclass[]) \
         FROM pg_constraint k JOIN pg_class r ON r.oid = k.conrelid \
         JOIN pg_namespace n ON n.oid = r.relnamespace JOIN pg_class p ON p.oid = k.confrelid \
         JOIN pg_namespace pn ON pn.oid = p.relnamespace \
         WHERE k.contype = 'f' AND k.conparentid = 0 AND k.confrelid = ANY($1::text[]::regclass[]) \
         ORDER BY 1, 2",
    )
    .bind(names)
    .fetch_all(c)
    .await?;
    Ok(found
        .into_iter()
        .map(|(table, name, definition, referenced, referenced_quoted, from_rollback)| Reference {
            table,
            name,
            definition,
            referenced,
            referenced_quoted,
            from_rollback,
        })
        .collect())
}

/// The table whose rows a statement found still referencing a deleted row (SQLSTATE 23503).
fn still_referenced(err: &sqlx::Error) -> Option<String> {
    let sqlx::Error::Database(db) = err else { return None };
    (db.code().as_deref() == Some("23503")).then(|| {
        db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
            .and_then(|p| p.table().map(str::to_owned))
            .unwrap_or_else(|| "another table".into())
    })
}

/// The refusal of a rollback that would leave rows of `child` pointing at deleted rows of
/// `target`; `in_rollback` when `child` is rolled back too (the rows are then ones agentctl
/// did not create).
fn orphaning(target: &str, child: &str, in_rollback: bool) -> ToolError {
    ToolError::system(match in_rollback {
        true => format!(
            "cannot roll back {target}: rows of {child} that agentctl did not create still reference them; \
             delete those rows or point them elsewhere first (nothing was deleted)"
        ),
        false => format!(
            "cannot roll back {target}: rows of {child} still reference them and are not part of this rollback; \
             include that table too if agentctl migrated it, or delete those rows or point them elsewhere first \
             (nothing was deleted)"
        ),
    })
}
