//! The dirt real legacy data has, and how much of it each table gets.
//!
//! Each fault kind is injected at a rate per table; a row carries at most one fault, so a
//! table's rows are exactly its clean rows plus the sum of its fault counts. A fault either
//! makes the reference mapping reject the row (the modern schema cannot hold it) or is repaired
//! on the way (trimmed, lower-cased, kept as it is). Children only ever reference parents that
//! are not rejected, so the expected outcome of every table is computable from its own counts:
//! a row is rejected exactly when it carries a rejecting fault.

use runtime::error::BadInput;
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// A reference to a parent that was hard-deleted.
    OrphanFk,
    /// A duplicate of an earlier row on columns the target makes unique.
    DuplicateUnique,
    /// NULL where the target requires a value.
    NullRequired,
    /// A status or type value the target's enum does not have.
    InvalidEnum,
    /// An email address that is not one.
    MalformedEmail,
    /// A date in year 0001 or 2999, or a validity window that ends before it starts.
    DateOutOfRange,
    /// A negative (or zero, where the target needs positive) amount.
    NegativeAmount,
    /// Leading or trailing spaces in a text value (trimmed on the way).
    WhitespacePadding,
    /// An email equal to an earlier one but for letter case.
    EmailCaseCollision,
    /// Text that went through a wrong encoding once ("JosÃ©"); kept as it is.
    Mojibake,
    /// A JSON text column whose value does not parse.
    BadJson,
}

impl FaultKind {
    pub const ALL: [FaultKind; 11] = [
        FaultKind::OrphanFk,
        FaultKind::DuplicateUnique,
        FaultKind::NullRequired,
        FaultKind::InvalidEnum,
        FaultKind::MalformedEmail,
        FaultKind::DateOutOfRange,
        FaultKind::NegativeAmount,
        FaultKind::WhitespacePadding,
        FaultKind::EmailCaseCollision,
        FaultKind::Mojibake,
        FaultKind::BadJson,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::OrphanFk => "orphan_fk",
            FaultKind::DuplicateUnique => "duplicate_unique",
            FaultKind::NullRequired => "null_required",
            FaultKind::InvalidEnum => "invalid_enum",
            FaultKind::MalformedEmail => "malformed_email",
            FaultKind::DateOutOfRange => "date_out_of_range",
            FaultKind::NegativeAmount => "negative_amount",
            FaultKind::WhitespacePadding => "whitespace_padding",
            FaultKind::EmailCaseCollision => "email_case_collision",
            FaultKind::Mojibake => "mojibake",
            FaultKind::BadJson => "bad_json",
        }
    }

    /// Whether the reference mapping rejects a row with this fault.
    pub fn rejects(self) -> bool {
        !matches!(self, FaultKind::WhitespacePadding | FaultKind::Mojibake)
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for FaultKind {
    type Err = BadInput;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FaultKind::ALL.into_iter().find(|k| k.as_str() == s.trim()).ok_or_else(|| {
            BadInput(format!(
                "unknown fault kind `{s}`; expected one of {}",
                FaultKind::ALL.map(FaultKind::as_str).join(", ")
            ))
        })
    }
}

/// Rates per table and kind: the share of a table's rows (0 to 1) that carry the fault.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FaultProfile {
    pub rates: BTreeMap<String, BTreeMap<FaultKind, f64>>,
}

impl FaultProfile {
    /// No dirt at all.
    pub fn clean() -> FaultProfile {
        FaultProfile::default()
    }

    /// What production had: offers lost about half their rows, discounts about 10%, case
    /// states about 4%, orders about 1%, tasks about 0.8%, the rest nearly clean.
    pub fn production() -> FaultProfile {
        use FaultKind::*;
        let table: &[(&str, &[(FaultKind, f64)])] = &[
            (
                "auth_user",
                &[(EmailCaseCollision, 0.004), (MalformedEmail, 0.002), (WhitespacePadding, 0.02)],
            ),
            ("dispatch_office", &[(WhitespacePadding, 0.10)]),
            ("dispatch_profile", &[(BadJson, 0.002), (InvalidEnum, 0.001)]),
            ("dispatch_doctor", &[(DuplicateUnique, 0.003), (InvalidEnum, 0.003)]),
            (
                "dispatch_patient",
                &[
                    (MalformedEmail, 0.002),
                    (DateOutOfRange, 0.001),
                    (NullRequired, 0.001),
                    (Mojibake, 0.005),
                    (WhitespacePadding, 0.01),
                ],
            ),
            ("dispatch_order", &[(InvalidEnum, 0.004), (NegativeAmount, 0.003), (OrphanFk, 0.003)]),
            ("dispatch_jaw", &[(InvalidEnum, 0.0002)]),
            ("dispatch_treatment_plan", &[(BadJson, 0.001)]),
            ("dispatch_patient_event", &[(BadJson, 0.0002), (DateOutOfRange, 0.0001)]),
            ("dispatch_case", &[(DateOutOfRange, 0.002)]),
            (
                "dispatch_case_state",
                &[(InvalidEnum, 0.025), (NullRequired, 0.01), (OrphanFk, 0.005)],
            ),
            ("dispatch_task", &[(OrphanFk, 0.005), (NullRequired, 0.003)]),
            ("dispatch_case_message", &[(NullRequired, 0.0005), (Mojibake, 0.003)]),
            ("dispatch_message_attachment", &[(NegativeAmount, 0.0005)]),
            ("dispatch_case_file", &[(NullRequired, 0.0001)]),
            ("dispatch_system_message", &[(OrphanFk, 0.00002), (InvalidEnum, 0.00001)]),
            ("dispatch_operation", &[(NegativeAmount, 0.002)]),
            ("dispatch_purchase", &[(OrphanFk, 0.001)]),
            ("dispatch_payment", &[(NegativeAmount, 0.001), (InvalidEnum, 0.001)]),
            ("dispatch_offer", &[(DuplicateUnique, 0.5)]),
            (
                "dispatch_discount",
                &[(NullRequired, 0.04), (DateOutOfRange, 0.03), (NegativeAmount, 0.03)],
            ),
            ("dispatch_role_permission", &[(DuplicateUnique, 0.002)]),
            ("technician_roles", &[(WhitespacePadding, 0.10)]),
        ];
        FaultProfile {
            rates: table
                .iter()
                .map(|(t, kinds)| ((*t).to_owned(), kinds.iter().copied().collect()))
                .collect(),
        }
    }

    /// Reads overrides from TOML (`[dispatch_offer]` then `duplicate_unique = 0.5`) on top of
    /// this profile.
    pub fn with_overrides(
        mut self,
        toml_text: &str,
        origin: &str,
    ) -> Result<FaultProfile, BadInput> {
        let parsed: BTreeMap<String, BTreeMap<String, f64>> =
            toml::from_str(toml_text).map_err(|e| {
                BadInput(format!("{origin}: {}", e.to_string().lines().next().unwrap_or_default()))
            })?;
        for (table, kinds) in parsed {
            for (kind, rate) in kinds {
                let kind: FaultKind = kind
                    .parse()
                    .map_err(|e: BadInput| BadInput(format!("{origin}: [{table}]: {e}")))?;
                if !(0.0..=1.0).contains(&rate) {
                    return Err(BadInput(format!(
                        "{origin}: [{table}] {kind} = {rate} is not a rate between 0 and 1"
                    )));
                }
                self.rates.entry(table.clone()).or_default().insert(kind, rate);
            }
        }
        Ok(self)
    }

    pub fn for_table(&self, table: &str) -> Vec<(FaultKind, f64)> {
        self.rates
            .get(table)
            .map(|m| m.iter().map(|(k, r)| (*k, *r)).filter(|(_, r)| *r > 0.0).collect())
            .unwrap_or_default()
    }
}
