//! The mapping file as an operator writes it (TOML, `mappings/dispatch.toml`), or as
//! `agentctl mapping init` writes it: per entity, its target, key, joins, column rules, the
//! references no foreign key declares, generic references and the sync policy.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{SyncPolicy, UuidLayout};
use crate::error::BadInput;

/// The default namespace for derived UUIDs when a mapping file names none.
pub const DEFAULT_NAMESPACE: Uuid = Uuid::from_u128(0x6167_656e_7463_746c_0000_0000_0000_0001);

/// A mapping file, as written by hand or by `agentctl mapping init`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingFile {
    #[serde(default)]
    pub settings: Settings,
    /// Names for sets of tables, usable in goals: `core = ["dispatch_office", ...]`.
    #[serde(default)]
    pub groups: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub entities: BTreeMap<String, EntityRule>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The namespace every derived UUID hangs from: one per project.
    #[serde(default = "default_namespace")]
    pub namespace: Uuid,
    #[serde(default = "default_layout")]
    pub uuid_layout: UuidLayout,
    /// The zone legacy `timestamp without time zone` values were written in.
    #[serde(default = "default_zone")]
    pub timezone: String,
}

fn default_namespace() -> Uuid {
    DEFAULT_NAMESPACE
}
fn default_layout() -> UuidLayout {
    UuidLayout::Ordered
}
fn default_zone() -> String {
    "UTC".into()
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            namespace: DEFAULT_NAMESPACE,
            uuid_layout: default_layout(),
            timezone: default_zone(),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntityRule {
    /// The target table (default: inferred from the name).
    pub target: Option<String>,
    /// Leave this table out, for this reason.
    pub skip: Option<String>,
    #[serde(default)]
    pub join: Vec<JoinRule>,
    #[serde(default)]
    pub columns: BTreeMap<String, ColumnRule>,
    /// Source columns left behind on purpose: no column of the target takes them, and no
    /// `metadata` column keeps them. Any other such column refuses the mapping.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub leave: Vec<String>,
    /// How `diff migrate` keeps the entity in step: `sync = { delete = "hard", conflicts = "manual"
    /// }`.
    #[serde(default, skip_serializing_if = "is_default_sync")]
    pub sync: SyncPolicy,
    /// Columns that hold another table's keys though no foreign key says so:
    /// `references = { page_id = "wagtailcore_page" }`. Each is treated as a foreign key.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub references: BTreeMap<String, String>,
    /// Generic references (Django's content type and object id), by column:
    /// `generic = { object_id = { by = "content_type_id" } }`. Each becomes the UUID of the row
    /// its type names.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub generic: BTreeMap<String, GenericRule>,
}

/// How a generic reference names its parent table: the `by` column's value.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenericRule {
    /// The column whose value names the parent's table (a content type's id).
    pub by: String,
    /// The table each value names. Left out, and `by` a foreign key to Django's content types,
    /// each content type names the table `app_label_model` (Django's default), where the
    /// source has one; given, these are added to those or replace them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub parents: BTreeMap<String, String>,
}

fn is_default_sync(rule: &SyncPolicy) -> bool {
    *rule == SyncPolicy::default()
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinRule {
    pub table: String,
    pub on: String,
    #[serde(default = "default_key")]
    pub key: String,
}

fn default_key() -> String {
    "id".into()
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnRule {
    pub from: Option<String>,
    pub concat: Option<Vec<String>>,
    pub separator: Option<String>,
    pub constant: Option<String>,
    /// `trim`, `lower`, `upper`, `null_if_empty`, `cents`, `bool`, `json`, `timestamptz`.
    #[serde(default)]
    pub transforms: Vec<String>,
    pub values: Option<BTreeMap<String, String>>,
    pub default: Option<String>,
    /// A custom transform run in the sandbox before the named ones:
    /// `transform = { python = "transforms/normalize_phone.py" }`.
    pub transform: Option<ScriptRule>,
}

/// A Python script defining `transform(value)`; its path is relative to the mapping file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptRule {
    pub python: String,
    /// The script's text, read by [`MappingFile::load_scripts`].
    #[serde(skip)]
    pub code: Option<String>,
}

impl MappingFile {
    pub fn parse(text: &str, origin: &str) -> Result<MappingFile, BadInput> {
        toml::from_str(text).map_err(|e| {
            BadInput(format!(
                "{origin}: {}",
                e.to_string().replace('\n', " ").split_whitespace().collect::<Vec<_>>().join(" ")
            ))
        })
    }

    /// Reads the scripts the file's custom transforms name, relative to `base` (the mapping
    /// file's directory).
    pub fn load_scripts(&mut self, base: &std::path::Path, origin: &str) -> Result<(), BadInput> {
        for (entity, rule) in &mut self.entities {
            for (column, c) in &mut rule.columns {
                if let Some(script) = &mut c.transform {
                    let path = base.join(&script.python);
                    let code = std::fs::read_to_string(&path).map_err(|e| {
                        BadInput(format!(
                            "{origin}: {entity}.{column}: transform script {}: {e}",
                            path.display()
                        ))
                    })?;
                    script.code = Some(code);
                }
            }
        }
        Ok(())
    }
}
