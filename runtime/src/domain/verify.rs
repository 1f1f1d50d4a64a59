//! What a validation compares and finds: pages of expected rows, how the target's rows
//! compare, and an entity's validation with its differences, orphans, links and money totals.

use serde::{Deserialize, Serialize};

use crate::domain::TableName;
use crate::text_rows::TextRows;

/// What the target should hold for a page of source rows.
#[derive(Clone, Debug, Default)]
pub struct Expected {
    /// Target columns with their `format_type` text; `legacy_id` and the key among them.
    pub columns: Vec<(String, String)>,
    pub id_column: usize,
    pub legacy_column: usize,
    /// Per row: the legacy key, and whether the row should be in the target at all (false:
    /// the mapping rejects it).
    pub keys: Vec<String>,
    pub wanted: Vec<bool>,
    /// The rows' values in `columns` order, in one buffer (`values.get(row, column)`).
    pub values: TextRows,
    /// Columns whose target values come back with the answer (money, to total).
    pub returned: Vec<usize>,
}

impl Expected {
    /// The page of these rows only, in this order.
    pub fn rows(&self, rows: &[usize]) -> Expected {
        Expected {
            columns: self.columns.clone(),
            id_column: self.id_column,
            legacy_column: self.legacy_column,
            keys: rows.iter().map(|&r| self.keys[r].clone()).collect(),
            wanted: rows.iter().map(|&r| self.wanted[r]).collect(),
            values: {
                let mut values = TextRows::new(self.columns.len());
                for &r in rows {
                    values.push_row(self.values.row(r));
                }
                values
            },
            returned: self.returned.clone(),
        }
    }

    /// Each column's values, to bind as a text array.
    pub fn column_arrays(&self) -> Vec<Vec<Option<&str>>> {
        (0..self.columns.len()).map(|c| self.values.column(c).collect()).collect()
    }
}

/// How the target's row compares with one expected row.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Compared {
    /// A row with this legacy key is in the target.
    pub present: bool,
    /// Its UUID is the one agentctl derives (false: a row kept from before agentctl).
    pub ours: bool,
    /// The first column whose value differs, by index.
    pub differs: Option<usize>,
    /// The `returned` columns' target values.
    pub returned: Vec<Option<String>>,
}

/// One target row that is not what the mapping of its source row says it should be.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Difference {
    pub legacy_key: String,
    /// The first differing column, or what is wrong with the row as a whole.
    pub column: String,
    pub expected: Option<String>,
    pub found: Option<String>,
}

/// References in the target that point at no row.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Orphans {
    pub column: String,
    /// The table it points into: one for a foreign key, each parent of a generic reference.
    pub parents: Vec<TableName>,
    pub count: i64,
    /// Legacy keys of the first few.
    pub examples: Vec<String>,
    /// A validated foreign key guarantees the column (nothing needed counting).
    pub enforced: bool,
}

/// One reference counted on both sides: the source rows migrated whose reference columns are
/// all set, and the target rows made from them whose reference points at a row of the parent. Equal
/// counts mean no link was lost or left dangling.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Links {
    /// The target columns holding the reference: one holding the parent's UUID, or a foreign
    /// key's columns copied as they are.
    pub columns: Vec<String>,
    pub parent: TableName,
    /// The parent's columns they point at (`id` for a UUID).
    pub referenced: Vec<String>,
    /// The source columns it is made from.
    pub source_columns: Vec<String>,
    pub source: i64,
    pub target: i64,
}

/// A money column's total over the migrated rows, both sides, in cents.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MoneyTotal {
    pub column: String,
    pub source_cents: i64,
    pub target_cents: i64,
}

impl MoneyTotal {
    /// Adds amounts in cents to both sides, saturating as [`cents`] does.
    pub fn add(&mut self, source_cents: i64, target_cents: i64) {
        self.source_cents = self.source_cents.saturating_add(source_cents);
        self.target_cents = self.target_cents.saturating_add(target_cents);
    }
}

/// What validating one entity found.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EntityValidation {
    pub source: TableName,
    pub target: TableName,
    pub passed: bool,
    /// Source rows in scope.
    pub source_rows: i64,
    /// Source rows whose target row holds the mapped values.
    pub migrated: i64,
    /// Source rows not in the target, each with its recorded reason.
    pub rejected: i64,
    /// Source rows whose target row was there before agentctl and kept (not compared).
    pub kept: i64,
    /// Source rows neither in the target nor rejected: lost.
    pub missing: i64,
    /// Of the missing rows listed in `differences`, those the last sync held for an operator
    /// (each difference says why).
    #[serde(default)]
    pub held: i64,
    /// Pages with rows that do not agree whose source reads otherwise than the load read it
    /// (the load has no record of it as it is now): the source changed since the load.
    #[serde(default)]
    pub source_changed_pages: i64,
    /// Pages with rows that do not agree whose source reads as the load read it, but whose
    /// target rows are not what the load wrote: the target changed since the load.
    #[serde(default)]
    pub target_changed_pages: i64,
    /// Rows of the target table with a legacy key (all made from this source, or kept).
    pub target_rows: i64,
    /// Target rows with a legacy key no source row has.
    pub extra: i64,
    pub rows_compared: i64,
    pub rows_differing: i64,
    /// Of `rows_differing`, the rows that were in the target before agentctl (which never
    /// overwrites them).
    #[serde(default)]
    pub kept_differing: i64,
    /// The first differences (at most 20).
    pub differences: Vec<Difference>,
    pub orphans: Vec<Orphans>,
    /// Every reference of the mapping, its links counted in the source and in the target.
    #[serde(default)]
    pub links: Vec<Links>,
    pub money: Vec<MoneyTotal>,
    /// Source rows proven by the load's record of their page (the page read again unchanged,
    /// the target's rows hashed against the hashes the load recorded) instead of mapped again.
    #[serde(default)]
    pub rows_by_record: i64,
    /// One line: what passed or what did not.
    pub detail: String,
    pub seconds: f64,
}

/// A decimal amount in whole cents (`12.5` is 1250, digits past the cent dropped; `money` as
/// every session of agentctl writes it, `-$1,234.50`, is -123450); NULL, and what is no
/// amount (`NaN`), count as nothing; an amount beyond what 64 bits of cents hold (`money`'s
/// least, a numeric of a thousand digits) counts as the most they hold, the same on both
/// sides of a comparison. Totals add with [`i64::saturating_add`].
pub fn cents(v: Option<&str>) -> i64 {
    let Some(s) = v.map(str::trim) else { return 0 };
    let (neg, s) = s.strip_prefix('-').map_or((false, s), |r| (true, r));
    let plain: String;
    let s = match s.strip_prefix('$') {
        Some(money) => {
            plain = money.replace(',', "");
            plain.as_str()
        }
        None => s,
    };
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    let frac: String = frac.chars().chain(std::iter::repeat('0')).take(2).collect();
    let digits = !whole.is_empty() && whole.bytes().all(|b| b.is_ascii_digit());
    let whole: i128 = match digits {
        true => whole.parse().unwrap_or(i128::MAX),
        false => 0,
    };
    let c = whole.saturating_mul(100).saturating_add(frac.parse::<i128>().unwrap_or(0));
    let c = if neg { -c } else { c };
    c.clamp(i64::MIN.into(), i64::MAX.into()) as i64
}

/// A load's record of one batch's source page, as a validation looks it up: the page's
/// fingerprint under the mapping that read it ([`TextRows::fingerprint`]), the record's bucket
/// in `load_baseline`, and how many rows the page had.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageRecord {
    pub fingerprint: i64,
    pub bucket: i64,
    pub rows: i64,
}

/// A page of source rows read again unchanged, to be proven by the load's record of it: the
/// page's legacy keys and the UUIDs derived from them, in page order.
#[derive(Clone, Debug)]
pub struct RecordedPage {
    pub record: PageRecord,
    /// The target's columns, as an [`Expected`] page has them.
    pub columns: Vec<(String, String)>,
    pub id_column: usize,
    pub legacy_column: usize,
    pub keys: Vec<i64>,
    pub ids: Vec<uuid::Uuid>,
    /// Columns whose target values come back with the answer (money, to total).
    pub returned: Vec<usize>,
}

/// The target's rows of a page proven to be what the load recorded (a key in the record holds
/// its row, present, agentctl's and equal; any other key of the page has none): whether each
/// key is in the record, and the money totals of the recorded rows in cents, one a returned
/// column, as the record has them and as the target holds them.
#[derive(Clone, Debug, PartialEq)]
pub struct ProvenPage {
    pub recorded: Vec<bool>,
    pub source_cents: Vec<i64>,
    pub target_cents: Vec<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_count_in_whole_cents() {
        assert_eq!(cents(Some("12.5")), 1250);
        assert_eq!(cents(Some("12.50")), 1250);
        assert_eq!(cents(Some("-0.07")), -7);
        assert_eq!(cents(Some("3")), 300);
        assert_eq!(cents(Some("-$1,234.50")), -123_450, "money as agentctl's sessions write it");
        assert_eq!(cents(Some("$1,234,567.89")), 123_456_789);
        assert_eq!(cents(Some(" 1.239 ")), 123);
        assert_eq!(cents(None), 0);
        assert_eq!(cents(Some("-$92,233,720,368,547,758.08")), i64::MIN, "money's least");
        assert_eq!(cents(Some("92233720368547758.08")), i64::MAX);
        assert_eq!(cents(Some(&format!("1{}", "0".repeat(1000)))), i64::MAX);
        assert_eq!(cents(Some("NaN")), 0);
        assert_eq!(cents(Some("-Infinity")), 0);
    }
}
