//! Applying a [`MappingSpec`] to one source row: the transforms, then every rule of the target
//! that can be checked on the row alone (NOT NULL, enum labels, types and lengths, domain and
//! table CHECKs). Values are PostgreSQL's text forms in and out, so the same mapped row feeds a
//! prediction now and a COPY into the target later.
//!
//! A row that fails becomes a [`Rejection`] naming the column, the rule and the reason in plain
//! words. Rules that need other rows (unique keys, references) are the predictor's job.

use runtime::error::ToolError;
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use runtime::domain::{type_modifier, Column, SchemaReport, Table, TableName, TypeKind};
use runtime::mapping::{ColumnMapping, Feed, KeyDeriver, MappingSpec, ScriptAnswer, Transform};
use runtime::text_rows::TextRows;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::checks::{impossible_date, read_time, CheckExpr, TimeKind, Val};
use runtime::mapping::Keys;

/// Why a row cannot go into the target.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    /// The target column at fault, when one is.
    pub column: Option<String>,
    /// A stable name for the rule, to group rejections: `not_null:last_name`,
    /// `check:orders_total_check`.
    pub rule: String,
    /// The reason in plain words.
    pub reason: String,
}

/// Whole cents as a decimal amount: `-1250` is `-12.50`.
pub fn amount(cents: i64) -> String {
    format!(
        "{}{}.{:02}",
        if cents < 0 { "-" } else { "" },
        cents.unsigned_abs() / 100,
        cents.unsigned_abs() % 100
    )
}

#[derive(Clone, Debug)]
enum Ty {
    Enum(String, Vec<String>),
    /// An integer type's least and greatest values.
    Int(i64, i64),
    Numeric {
        max_abs: Option<f64>,
    },
    Bool,
    /// A date or timestamp, and the microseconds its precision keeps (1 but for
    /// `timestamp(p)` with p below 6, which the server rounds to).
    Time(TimeKind, i64),
    Json,
    Uuid,
    Text {
        max_len: Option<i32>,
    },
}

struct Compiled {
    target: String,
    feed: Feed,
    /// For a key or a reference: the derivation of that table's UUIDs.
    deriver: Option<KeyDeriver>,
    /// For a generic reference: each parent and its key derivation, by the value that names it.
    parents: HashMap<String, (TableName, KeyDeriver)>,
    /// Indexes into the scanned row of the columns the feed reads.
    inputs: Vec<usize>,
    transforms: Vec<Transform>,
    ty: Ty,
    type_label: String,
    nullable: bool,
    domain: Option<(String, Vec<(String, CheckExpr)>)>,
}

/// The UUIDs a mapper derived for one-column references, by column and key, kept from row to
/// row of a scan: references repeat their parents' keys (4M references to 2,400 profiles at
/// scale 1.0), and each derivation is a SHA-256 (about 53 ns) where a slot here is a compare.
/// Only for keys written as the integer they are (`42`, `-7`; not `042`, `+42` or ` 42`): a
/// UUID is derived from the key's text, so two texts of one number never share a slot. A memo
/// handed to another mapper starts over.
#[derive(Default)]
pub struct ReferenceMemo {
    mapper: usize,
    /// By mapped column: `SLOTS` slots of key and UUID, a key in the slot its low bits name.
    columns: Vec<Vec<(i64, Uuid)>>,
}

impl ReferenceMemo {
    const SLOTS: usize = 4096;
    /// No key reads as this: [`ReferenceMemo::integer`] takes at most 18 digits.
    const EMPTY: i64 = i64::MIN;

    /// The UUID `deriver` derives from `key`, the reference of mapped column `column`.
    fn derive(&mut self, column: usize, deriver: &KeyDeriver, key: &str) -> Uuid {
        let Some(n) = Self::integer(key) else { return deriver.derive(&[key]) };
        if self.columns.len() <= column {
            self.columns.resize_with(column + 1, Vec::new);
        }
        let slots = &mut self.columns[column];
        if slots.is_empty() {
            slots.resize(Self::SLOTS, (Self::EMPTY, Uuid::nil()));
        }
        let slot = &mut slots[n as usize & (Self::SLOTS - 1)];
        if slot.0 != n {
            *slot = (n, deriver.derive(&[key]));
        }
        slot.1
    }

    /// The integer `key` spells, if it is written exactly as that integer's own text.
    fn integer(key: &str) -> Option<i64> {
        let (negative, digits) = match key.strip_prefix('-') {
            Some(rest) => (true, rest.as_bytes()),
            None => (false, key.as_bytes()),
        };
        let canonical = match digits {
            [] | [b'0', _, ..] => false,
            [b'0'] => !negative,
            _ => digits.len() <= 18 && digits.iter().all(u8::is_ascii_digit),
        };
        if !canonical {
            return None;
        }
        let n = digits.iter().fold(0i64, |n, d| n * 10 + i64::from(d - b'0'));
        Some(if negative { -n } else { n })
    }
}

/// A mapping ready to apply to rows scanned in the order of [`MappingSpec::source_columns`].
pub struct RowMapper {
    /// Tells this mapper's [`ReferenceMemo`]s from another's.
    id: usize,
    pub spec: MappingSpec,
    key_inputs: Vec<usize>,
    columns: Vec<Compiled>,
    checks: Vec<(String, String, CheckExpr)>,
    /// CHECKs that could not be read; the database alone decides those.
    pub unchecked: Vec<String>,
    /// Parent rows that kept a UUID of their own: parent table -> legacy key -> UUID.
    kept: HashMap<TableName, HashMap<String, String>>,
}

/// A domain's checks by their text, parsed.
type DomainChecks = Option<(String, Vec<(String, CheckExpr)>)>;

/// The type a target column's values are checked as, and its domain's checks if it has one.
fn column_type(col: &Column, target: &SchemaReport) -> Result<(Ty, DomainChecks), ToolError> {
    Ok(match &col.type_kind {
        TypeKind::Domain { base } => {
            let d = target.domain(&col.type_name).ok_or_else(|| {
                ToolError::bad_input(format!(
                    "domain {} is not in the target report",
                    col.type_name
                ))
            })?;
            let base_name = base.split('(').next().unwrap_or(base).trim();
            let base_name = match base_name {
                "timestamp with time zone" => "timestamptz",
                "timestamp without time zone" => "timestamp",
                "character varying" => "varchar",
                "integer" => "int4",
                "smallint" => "int2",
                "bigint" => "int8",
                "boolean" => "bool",
                other => other,
            };
            let checks = d
                .checks
                .iter()
                .filter_map(|c| {
                    CheckExpr::parse(&c.expression).ok().map(|e| (c.expression.clone(), e))
                })
                .collect();
            (ty_of(base, base_name, &TypeKind::Base, None, target), Some((d.name.clone(), checks)))
        }
        kind => (ty_of(&col.data_type, &col.type_name, kind, col.max_length, target), None),
    })
}

/// The scanned columns (by index) a column mapping's feed reads.
fn feed_inputs(
    m: &ColumnMapping,
    index: &impl Fn(&str) -> Result<usize, ToolError>,
) -> Result<Vec<usize>, ToolError> {
    Ok(match (&m.feed, m.transforms.first()) {
        (Feed::Column { column }, Some(Transform::Script { path, code })) => {
            vec![index(
                &runtime::mapping::ScriptColumn {
                    column: column.clone(),
                    path: path.clone(),
                    code: code.clone(),
                }
                .output(),
            )?]
        }
        (Feed::Column { column }, _) => vec![index(column)?],
        // Read as the parent's own key: the scan's columns of the key it equals.
        (Feed::Reference { columns, parent, parent_key: Some(key) }, _) => columns
            .iter()
            .enumerate()
            .map(|(i, c)| index(&key.output(c, parent, i)))
            .collect::<Result<_, _>>()?,
        (
            Feed::Concat { columns, .. }
            | Feed::Reference { columns, .. }
            | Feed::Metadata { columns },
            _,
        ) => columns.iter().map(|c| index(c)).collect::<Result<_, _>>()?,
        (Feed::Generic { column, by, .. }, _) => vec![index(column)?, index(by)?],
        (Feed::Key | Feed::LegacyKey | Feed::Constant { .. }, _) => vec![],
    })
}

/// The output column index and parent of every reference the mapping makes.
pub struct Reference {
    pub column: usize,
    pub target_column: String,
    pub parent: TableName,
    /// Indexes into the scanned row of the parent's key parts.
    pub inputs: Vec<usize>,
}

/// A generic reference of a mapper: the parent of a row is the table its `by` value names.
#[derive(Clone, Debug)]
pub struct GenericReference {
    pub column: usize,
    pub target_column: String,
    /// Indexes into the scanned row of the parent's key and of the value naming the parent.
    pub id: usize,
    pub by: usize,
    /// The parents, by the value that names each.
    pub parents: BTreeMap<String, TableName>,
}

impl GenericReference {
    /// The parent a scanned row points at and its key; `None` when the reference is NULL or its
    /// `by` value names no parent (the mapper rejects that row).
    pub fn of<'r>(&self, row: &[Option<&'r str>]) -> Option<(&TableName, &'r str)> {
        let id = row[self.id]?;
        self.parents.get(row[self.by]?).map(|p| (p, id))
    }

    /// The rejection of a row whose reference points into `parent`, a table the migration does
    /// not bring over.
    pub fn not_migrated(&self, target: &str, parent: &TableName, id: &str) -> Rejection {
        let column = &self.target_column;
        Rejection {
            column: Some(column.clone()),
            rule: format!("reference:{column}"),
            reason: format!(
                "{target}.{column}: the {} row it points at ({id}) is not migrated: {parent} is \
                    no entity of this migration",
                parent.name
            ),
        }
    }
}

fn ty_of(
    data_type: &str,
    type_name: &str,
    kind: &TypeKind,
    max_length: Option<i32>,
    target: &SchemaReport,
) -> Ty {
    if let (TypeKind::Enum, Some(labels)) = (kind, target.enums.get(type_name)) {
        return Ty::Enum(type_name.to_owned(), labels.clone());
    }
    if let Some(kind) = TimeKind::of(type_name) {
        return Ty::Time(kind, precision(data_type));
    }
    match type_name {
        "int2" => Ty::Int(i16::MIN.into(), i16::MAX.into()),
        "int4" => Ty::Int(i32::MIN.into(), i32::MAX.into()),
        "int8" => Ty::Int(i64::MIN, i64::MAX),
        "numeric" => {
            // numeric(p,s): at most p-s digits before the point.
            let max_abs = type_modifier(data_type, 0)
                .zip(type_modifier(data_type, 1))
                .map(|(p, s)| 10f64.powi(p - s));
            Ty::Numeric { max_abs }
        }
        "float4" | "float8" => Ty::Numeric { max_abs: None },
        "bool" => Ty::Bool,
        "json" | "jsonb" => Ty::Json,
        "uuid" => Ty::Uuid,
        _ => Ty::Text { max_len: max_length },
    }
}

/// The microseconds a `timestamp(p)` keeps: 10^(6-p), or 1 without a precision.
fn precision(data_type: &str) -> i64 {
    type_modifier(data_type, 0)
        .filter(|p| (0..6).contains(p))
        .map_or(1, |p| 10i64.pow(6 - p as u32))
}

impl RowMapper {
    /// Compiles `spec` against the target table (and the target's enums and domains).
    pub fn new(
        spec: &MappingSpec,
        target_table: &Table,
        target: &SchemaReport,
        keys: Keys,
    ) -> Result<RowMapper, ToolError> {
        let scan = spec.source_columns();
        let index = |c: &str| {
            scan.iter().position(|s| s == c).ok_or_else(|| {
                ToolError::bad_input(format!("{}: source column {c} is not scanned", spec.source))
            })
        };
        let mut columns = Vec::new();
        for m in &spec.columns {
            let col = target_table.column(&m.target).ok_or_else(|| {
                ToolError::bad_input(format!("{} has no column {}", target_table.name, m.target))
            })?;
            let (ty, domain) = column_type(col, target)?;
            let inputs = feed_inputs(m, &index)?;
            let parents = match &m.feed {
                Feed::Generic { parents, .. } => parents
                    .iter()
                    .map(|(kind, parent)| {
                        let deriver = KeyDeriver::new(keys.layout, keys.namespace, parent);
                        (kind.clone(), (parent.clone(), deriver))
                    })
                    .collect(),
                _ => HashMap::new(),
            };
            let deriver = match &m.feed {
                Feed::Key => Some(KeyDeriver::new(keys.layout, keys.namespace, &spec.source)),
                Feed::Reference { parent, .. } => {
                    Some(KeyDeriver::new(keys.layout, keys.namespace, parent))
                }
                _ => None,
            };
            columns.push(Compiled {
                target: m.target.clone(),
                feed: m.feed.clone(),
                deriver,
                parents,
                inputs,
                transforms: m.transforms.clone(),
                ty,
                type_label: col.data_type.clone(),
                nullable: col.nullable
                    && domain
                        .as_ref()
                        .is_none_or(|_| !target.domain(&col.type_name).is_some_and(|d| d.not_null)),
                domain,
            });
        }
        let mut checks = Vec::new();
        let mut unchecked = Vec::new();
        for c in &target_table.checks {
            match CheckExpr::parse(&c.expression) {
                Ok(e) => checks.push((c.name.clone(), c.expression.clone(), e)),
                Err(why) => unchecked.push(format!("{} ({why})", c.name)),
            }
        }
        let key_inputs = spec.key.iter().map(|k| index(k)).collect::<Result<_, _>>()?;
        static MAPPERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1);
        Ok(RowMapper {
            id: MAPPERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            spec: spec.clone(),
            key_inputs,
            columns,
            checks,
            unchecked,
            kept: HashMap::new(),
        })
    }

    /// Parent rows that exist in the target under a UUID of their own: references to them use
    /// that UUID instead of the derived one.
    pub fn keep_parent_ids(&mut self, parent: TableName, ids: HashMap<String, String>) {
        if !ids.is_empty() {
            self.kept.insert(parent, ids);
        }
    }

    pub fn spec(&self) -> &MappingSpec {
        &self.spec
    }

    /// The UUID agentctl derives for a scanned row.
    pub fn id(&self, row: &[Option<&str>]) -> String {
        let deriver = self
            .columns
            .iter()
            .find(|c| matches!(c.feed, Feed::Key))
            .and_then(|c| c.deriver.as_ref());
        deriver.map(|d| self.with_key(row, |key| d.derive(key)).to_string()).unwrap_or_default()
    }

    /// The legacy key of a scanned row.
    pub fn key<'a>(&self, row: &[Option<&'a str>]) -> Vec<&'a str> {
        self.key_inputs.iter().map(|&i| row[i].unwrap_or("")).collect()
    }

    /// The columns of the scanned row that make its legacy key.
    pub fn key_columns(&self) -> &[usize] {
        &self.key_inputs
    }

    /// Calls `f` with the legacy key's parts, without allocating for keys of up to four parts.
    fn with_key<R>(&self, row: &[Option<&str>], f: impl FnOnce(&[&str]) -> R) -> R {
        let mut parts = [""; 4];
        match self.key_inputs.len() {
            n @ 0..=4 => {
                for (part, &i) in parts.iter_mut().zip(&self.key_inputs) {
                    *part = row[i].unwrap_or("");
                }
                f(&parts[..n])
            }
            _ => f(&self.key(row)),
        }
    }

    pub fn references(&self) -> Vec<Reference> {
        self.columns
            .iter()
            .enumerate()
            .filter_map(|(i, c)| match &c.feed {
                Feed::Reference { parent, .. } => Some(Reference {
                    column: i,
                    target_column: c.target.clone(),
                    parent: parent.clone(),
                    inputs: c.inputs.clone(),
                }),
                _ => None,
            })
            .collect()
    }

    /// The generic references: each row's parent is the one its `by` value names.
    pub fn generic_references(&self) -> Vec<GenericReference> {
        self.columns
            .iter()
            .enumerate()
            .filter_map(|(i, c)| match &c.feed {
                Feed::Generic { parents, .. } => Some(GenericReference {
                    column: i,
                    target_column: c.target.clone(),
                    id: c.inputs[0],
                    by: c.inputs[1],
                    parents: parents.clone(),
                }),
                _ => None,
            })
            .collect()
    }

    pub fn target_columns(&self) -> Vec<&str> {
        self.columns.iter().map(|c| c.target.as_str()).collect()
    }

    /// Maps one scanned row onto the end of `out`, one value a target column (in
    /// `target_columns` order); a row the mapping refuses adds nothing. `memo` keeps the UUIDs
    /// of references from row to row: one a scan.
    pub fn map_into(
        &self,
        row: &[Option<&str>],
        out: &mut TextRows,
        memo: &mut ReferenceMemo,
    ) -> Result<(), Rejection> {
        if memo.mapper != self.id {
            *memo = ReferenceMemo { mapper: self.id, columns: Vec::new() };
        }
        let mark = out.values();
        let mapped = self.map_values(row, out, memo);
        if mapped.is_err() {
            out.truncate_values(mark);
        }
        mapped
    }

    fn map_values(
        &self,
        row: &[Option<&str>],
        out: &mut TextRows,
        memo: &mut ReferenceMemo,
    ) -> Result<(), Rejection> {
        let mut uuid_text = [0u8; uuid::fmt::Hyphenated::LENGTH];
        for (n, c) in self.columns.iter().enumerate() {
            // Values are borrowed from the row (or the mapping) unless a transform makes a new one.
            let raw: Option<Cow<str>> = match &c.feed {
                Feed::Key => c.deriver.as_ref().map(|d| {
                    Cow::Borrowed(
                        &*self
                            .with_key(row, |key| d.derive(key))
                            .hyphenated()
                            .encode_lower(&mut uuid_text),
                    )
                }),
                Feed::LegacyKey => Some(match self.key_inputs.as_slice() {
                    [only] => Cow::Borrowed(row[*only].unwrap_or("")),
                    _ => Cow::Owned(runtime::mapping::key_text(&self.key(row))),
                }),
                Feed::Column { .. } => row[c.inputs[0]].map(Cow::Borrowed),
                Feed::Constant { value } => Some(Cow::Borrowed(value.as_str())),
                Feed::Concat { separator, .. } => {
                    let parts: Vec<&str> = c.inputs.iter().filter_map(|&i| row[i]).collect();
                    (!parts.is_empty()).then(|| Cow::Owned(parts.join(separator)))
                }
                Feed::Reference { parent, .. } => {
                    let parts: Option<Vec<&str>> = c.inputs.iter().map(|&i| row[i]).collect();
                    parts.and_then(|p| {
                        match self
                            .kept
                            .get(parent)
                            .and_then(|k| k.get(&runtime::mapping::key_text(&p)))
                        {
                            Some(kept) => Some(Cow::Borrowed(kept.as_str())),
                            None => c.deriver.as_ref().map(|d| {
                                let id = match p.as_slice() {
                                    [key] => memo.derive(n, d, key),
                                    _ => d.derive(&p),
                                };
                                Cow::Borrowed(&*id.hyphenated().encode_lower(&mut uuid_text))
                            }),
                        }
                    })
                }
                Feed::Generic { by, .. } => match (row[c.inputs[0]], row[c.inputs[1]]) {
                    (None, _) => None,
                    (Some(id), kind) => match kind.and_then(|k| c.parents.get(k)) {
                        Some((parent, d)) => Some(Cow::Borrowed(
                            match self.kept.get(parent).and_then(|k| k.get(id)) {
                                Some(kept) => kept.as_str(),
                                None => &*d.derive(&[id]).hyphenated().encode_lower(&mut uuid_text),
                            },
                        )),
                        None => {
                            // Its own rule: the row names no parent, which a reference to a
                            // parent that is not there (`reference`) does.
                            let named = kind.unwrap_or("NULL");
                            return Err(self.reject(
                                c,
                                "generic",
                                format!(
                                    "its {by} {named} names no table whose keys the mapping \
                                    rewrites"
                                ),
                            ));
                        }
                    },
                },
                // No legacy column left over: the same empty object for every row.
                Feed::Metadata { columns } if columns.is_empty() => Some(Cow::Borrowed("{}")),
                Feed::Metadata { columns } => {
                    let obj: BTreeMap<&str, Option<&str>> = columns
                        .iter()
                        .zip(&c.inputs)
                        .map(|(name, &i)| (name.as_str(), row[i]))
                        .collect();
                    Some(Cow::Owned(serde_json::to_string(&obj).expect("strings serialize")))
                }
            };
            let value = self.transform(c, raw)?;
            out.push(self.validate(c, value)?.as_deref());
        }
        if !self.checks.is_empty() {
            self.table_checks(out, out.len() - 1)?;
        }
        Ok(())
    }

    fn reject(&self, c: &Compiled, rule: &str, reason: String) -> Rejection {
        Rejection {
            column: Some(c.target.clone()),
            rule: format!("{rule}:{}", c.target),
            reason: format!("{}.{}: {reason}", self.spec.target.name, c.target),
        }
    }

    fn transform<'a>(
        &'a self,
        c: &'a Compiled,
        mut v: Option<Cow<'a, str>>,
    ) -> Result<Option<Cow<'a, str>>, Rejection> {
        for t in &c.transforms {
            v = match (t, v) {
                (Transform::Default { value }, None) => Some(Cow::Borrowed(value.as_str())),
                (_, None) => None,
                (Transform::Trim, Some(s)) => Some(match s {
                    Cow::Borrowed(b) => Cow::Borrowed(b.trim()),
                    Cow::Owned(o) if o.trim().len() == o.len() => Cow::Owned(o),
                    Cow::Owned(o) => Cow::Owned(o.trim().to_owned()),
                }),
                (Transform::Lower, Some(s)) => Some(Cow::Owned(s.to_lowercase())),
                (Transform::Upper, Some(s)) => Some(Cow::Owned(s.to_uppercase())),
                (Transform::NullIfEmpty, Some(s)) => (!s.is_empty()).then_some(s),
                (Transform::Default { .. }, some) => some,
                (Transform::Cents, Some(s)) => {
                    let cents: i64 = s.trim().parse().map_err(|_| {
                        self.reject(c, "cents", format!("`{s}` is not a whole number of cents"))
                    })?;
                    Some(Cow::Owned(amount(cents)))
                }
                (Transform::Bool, Some(s)) => match yes_no(&s) {
                    Some(b) => Some(Cow::Borrowed(b)),
                    None => {
                        return Err(self.reject(c, "bool", format!("`{s}` is not a yes/no value")))
                    }
                },
                (Transform::Json, Some(s)) => {
                    serde_json::from_str::<serde::de::IgnoredAny>(&s)
                        .map_err(|e| self.reject(c, "json", format!("not valid JSON ({e})")))?;
                    Some(s)
                }
                (Transform::Timestamptz { zone }, Some(s)) => {
                    let mut zoned = String::with_capacity(s.len() + 1 + zone.len());
                    zoned.push_str(&s);
                    zoned.push(' ');
                    zoned.push_str(zone);
                    Some(Cow::Owned(zoned))
                }
                // The sandbox answered as the row was read: `=value` or `!error`.
                (Transform::Script { path, .. }, Some(s)) => match ScriptAnswer::read(&s) {
                    ScriptAnswer::Value(value) => Some(Cow::Owned(value.to_owned())),
                    ScriptAnswer::Raised(error) => {
                        return Err(self.reject(c, "script", format!("{path} raised {error}")))
                    }
                    ScriptAnswer::Untagged => {
                        return Err(self.reject(
                            c,
                            "script",
                            format!("{path}: the sandbox's answer `{s}` is not tagged"),
                        ))
                    }
                },
                (Transform::Values { map }, Some(s)) => {
                    Some(Cow::Borrowed(map.get(s.as_ref()).ok_or_else(|| {
                        let known: Vec<&str> = map.keys().map(String::as_str).collect();
                        self.reject(
                            c,
                            "values",
                            format!(
                                "`{s}` is not one of the values the mapping knows ({})",
                                known.join(", ")
                            ),
                        )
                    })?))
                }
            };
        }
        Ok(v)
    }

    fn validate<'a>(
        &self,
        c: &Compiled,
        v: Option<Cow<'a, str>>,
    ) -> Result<Option<Cow<'a, str>>, Rejection> {
        let Some(s) = v else {
            return if c.nullable {
                Ok(None)
            } else {
                Err(self.reject(c, "not_null", "is required but the value is NULL".into()))
            };
        };
        let value = self.check_type(c, &s)?;
        if let Some((domain, checks)) = &c.domain {
            let value = value.unwrap_or_else(|| typed(&c.ty, &s));
            for (text, check) in checks {
                if check.holds(&|name: &str| {
                    if name.eq_ignore_ascii_case("VALUE") {
                        value.clone()
                    } else {
                        Val::Null
                    }
                }) == Some(false)
                {
                    return Err(self.reject(
                        c,
                        &format!("domain:{domain}"),
                        format!("`{s}` is not a valid {domain} ({text})"),
                    ));
                }
            }
        }
        Ok(Some(s))
    }

    /// The value's type and length, as far as they can be judged without the server; the
    /// value as its domain's checks see it, when read for its type already.
    fn check_type(&self, c: &Compiled, s: &str) -> Result<Option<Val>, Rejection> {
        // Each check refuses only what it reads and finds wrong: a value in a form it does not
        // read may be one the server reads, and is left to it (the COPY, then the careful path
        // with the server's own reason), never refused here.
        let bad_type = || self.reject(c, "type", format!("`{s}` is not a valid {}", c.type_label));
        let mut value = None;
        match &c.ty {
            Ty::Enum(name, labels) => {
                if !labels.iter().any(|l| *l == s) {
                    return Err(self.reject(
                        c,
                        "enum",
                        format!("`{s}` is not a value of {name} ({})", labels.join(", ")),
                    ));
                }
            }
            Ty::Int(lo, hi) => match s.trim().parse::<i64>() {
                Ok(n) if n < *lo || n > *hi => return Err(bad_type()),
                Ok(_) => {}
                Err(_) if newer_number_syntax(s) => {}
                Err(_) => return Err(bad_type()),
            },
            Ty::Numeric { max_abs } => match s.trim().parse::<f64>() {
                Ok(n) if max_abs.is_some_and(|m| n.abs() >= m) => {
                    return Err(self.reject(
                        c,
                        "overflow",
                        format!("{s} does not fit {}", c.type_label),
                    ));
                }
                Ok(_) => {}
                Err(_) if newer_number_syntax(s) => {}
                Err(_) => return Err(bad_type()),
            },
            Ty::Bool => {
                if !boolean_word(s) {
                    return Err(bad_type());
                }
            }
            Ty::Time(kind, kept) => match read_time(s, *kind) {
                // A time its precision rounds is not judged here: the server keeps the rounded one.
                Some(t) => value = Some(if t % kept == 0 { Val::Time(t) } else { Val::Null }),
                None if impossible_date(s) => return Err(bad_type()),
                None => value = Some(Val::Null),
            },
            Ty::Json => {
                serde_json::from_str::<serde::de::IgnoredAny>(s)
                    .map_err(|e| self.reject(c, "json", format!("not valid JSON ({e})")))?;
            }
            // A UUID agentctl derived, or kept from the target, needs no reading back.
            Ty::Uuid
                if c.transforms.is_empty()
                    && matches!(
                        c.feed,
                        Feed::Key | Feed::Reference { .. } | Feed::Generic { .. }
                    ) => {}
            Ty::Uuid => {
                // The server also reads hyphens after any group of four digits.
                let digits = || {
                    let s = s.trim().trim_start_matches('{').trim_end_matches('}');
                    s.bytes().filter(|&b| b != b'-')
                };
                if Uuid::parse_str(s).is_err()
                    && !(digits().count() == 32 && digits().all(|b| b.is_ascii_hexdigit()))
                {
                    return Err(bad_type());
                }
            }
            Ty::Text { max_len } => {
                // The server drops spaces past the length (and only spaces).
                let chars = s.trim_end_matches(' ').chars().count();
                if max_len.is_some_and(|n| chars > n as usize) {
                    return Err(self.reject(
                        c,
                        "length",
                        format!("{chars} characters do not fit {}", c.type_label),
                    ));
                }
            }
        }
        Ok(value)
    }

    /// The table's CHECKs on row `row` of `out`.
    fn table_checks(&self, out: &TextRows, row: usize) -> Result<(), Rejection> {
        for (name, text, check) in &self.checks {
            let col = |n: &str| match self.columns.iter().position(|c| c.target == n) {
                Some(i) => {
                    out.get(row, i).map(|s| typed(&self.columns[i].ty, s)).unwrap_or(Val::Null)
                }
                None => Val::Null,
            };
            if check.holds(&col) == Some(false) {
                return Err(Rejection {
                    column: None,
                    rule: format!("check:{name}"),
                    reason: format!("{}: violates CHECK {name} {text}", self.spec.target.name),
                });
            }
        }
        Ok(())
    }
}

fn typed(ty: &Ty, s: &str) -> Val {
    match ty {
        Ty::Int(..) | Ty::Numeric { .. } => s.trim().parse().map(Val::Num).unwrap_or(Val::Null),
        Ty::Bool => crate::checks::cast(Val::Text(s.to_owned()), "boolean"),
        Ty::Time(kind, kept) => {
            read_time(s, *kind).filter(|t| t % kept == 0).map(Val::Time).unwrap_or(Val::Null)
        }
        _ => Val::Text(s.to_owned()),
    }
}

/// Number spellings PostgreSQL 16 and later read and Rust does not: `1_000`, `0x1F`, `0o17`,
/// `0b101`. Left to the server, whichever version it is.
fn newer_number_syntax(s: &str) -> bool {
    let digits = s.trim().trim_start_matches(['+', '-']).to_ascii_lowercase();
    digits.contains('_') || ["0x", "0o", "0b"].iter().any(|p| digits.starts_with(p))
}

/// The `bool` transform: `t` or `f` for a yes/no word (any case, spaces around), else `None`.
/// Compared without case in ASCII, which is the word lowercased: no other letter lowercases to
/// one of these (and no string is made a row).
fn yes_no(s: &str) -> Option<&'static str> {
    let word = s.trim();
    let is = |words: &[&str]| words.iter().any(|w| w.eq_ignore_ascii_case(word));
    if is(&["1", "t", "true", "y", "yes"]) {
        Some("t")
    } else if is(&["0", "f", "false", "n", "no"]) {
        Some("f")
    } else {
        None
    }
}

/// Whether the server reads `s` as a boolean: a prefix of `true`, `false`, `yes` or `no`, at
/// least two letters of `on` or `off`, or `1` or `0`, in any case, spaces around it.
fn boolean_word(s: &str) -> bool {
    let word = s.trim_matches(|c| matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c'));
    let prefix_of =
        |full: &str| full.get(..word.len()).is_some_and(|p| p.eq_ignore_ascii_case(word));
    !word.is_empty()
        && (["true", "false", "yes", "no"].iter().any(|f| prefix_of(f))
            || (word.len() >= 2 && ["on", "off"].iter().any(|f| prefix_of(f)))
            || word == "1"
            || word == "0")
}

#[cfg(test)]
mod tests;
