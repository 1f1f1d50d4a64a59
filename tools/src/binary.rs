//! Mapped rows as `COPY ... (FORMAT binary)`: each text value sent in its column's binary form,
//! so the target server parses no timestamp, UUID or number (the text input functions were
//! about a third of the server's work in a load; bench/RESULTS.md).
//!
//! The encoders are strict: one accepts a value only when the server would store exactly what
//! the value's text would have become. Anything else (a column of another type, a timestamp in
//! a named zone, a number with an exponent) sends the batch as COPY text, where the server
//! decides as it always did. A value the server refuses in binary fails the COPY the same way
//! text would, and the batch takes the careful path.

use sqlx::PgConnection;

use crate::catalog::quoted;
use crate::row_hash::{self, ColumnHash};
use runtime::domain::TableName;
use runtime::time::{date, is_space, timestamp};

/// How a column's values travel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wire {
    /// text, varchar, char(n) and enum labels: the bytes themselves.
    Text,
    Bool,
    Int2,
    Int4,
    Int8,
    Float4,
    Float8,
    Numeric,
    Date,
    Timestamp,
    Timestamptz,
    Uuid,
    Json,
    Jsonb,
}

impl Wire {
    /// The wire form of a base type (`pg_type.typname` and `typtype`).
    pub fn of(typname: &str, typtype: &str) -> Option<Wire> {
        if typtype == "e" {
            return Some(Wire::Text);
        }
        Some(match typname {
            "text" | "varchar" | "bpchar" => Wire::Text,
            "bool" => Wire::Bool,
            "int2" => Wire::Int2,
            "int4" => Wire::Int4,
            "int8" => Wire::Int8,
            "float4" => Wire::Float4,
            "float8" => Wire::Float8,
            "numeric" => Wire::Numeric,
            "date" => Wire::Date,
            "timestamp" => Wire::Timestamp,
            "timestamptz" => Wire::Timestamptz,
            "uuid" => Wire::Uuid,
            "json" => Wire::Json,
            "jsonb" => Wire::Jsonb,
            _ => return None,
        })
    }
}

/// A table column as its values are stored: its declared type, and its base type below any
/// domains, with the first length or precision met on the way down.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct BaseColumn {
    pub name: String,
    /// As `format_type` spells the column's own type.
    pub declared: String,
    /// The base type's `pg_type.typname`, `typtype` and OID.
    pub typname: String,
    pub typtype: String,
    pub oid: i32,
    pub typmod: i32,
    /// Whether the column's collation (if any) is deterministic.
    pub deterministic: bool,
}

/// Every column of `table` as [`BaseColumn`], one catalog query.
pub async fn base_columns(
    c: &mut PgConnection,
    table: &TableName,
) -> Result<Vec<BaseColumn>, sqlx::Error> {
    sqlx::query_as(
        "WITH RECURSIVE b (name, declared, typ, typmod, deterministic) AS (
             SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), a.atttypid, a.atttypmod,
                    coalesce((SELECT l.collisdeterministic FROM pg_collation l WHERE l.oid = a.attcollation), true)
             FROM pg_attribute a WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped
             UNION ALL
             SELECT b.name, b.declared, t.typbasetype, CASE WHEN b.typmod = -1 THEN t.typtypmod ELSE b.typmod END, b.deterministic
             FROM b JOIN pg_type t ON t.oid = b.typ WHERE t.typtype = 'd')
         SELECT b.name, b.declared, t.typname::text AS typname, t.typtype::text AS typtype, t.oid::int4 AS oid, b.typmod, b.deterministic
         FROM b JOIN pg_type t ON t.oid = b.typ WHERE t.typtype <> 'd'",
    )
    .bind(quoted(table))
    .fetch_all(c)
    .await
}

/// About the most bytes the binary COPY of `rows` rows of `fields` values holding `text` bytes
/// of text takes: a value is never longer in binary than as text but for a numeric's 8-byte
/// header or a jsonb's version byte, and each carries a 4-byte length, each row a 2-byte count.
pub fn encoded_size(rows: usize, fields: usize, text: usize) -> usize {
    21 + text + rows * (2 + fields * 12)
}

/// The wire form of each of `columns` (name, type) of a table whose columns are `base`, or
/// `None` when one of them has no binary encoder here.
pub fn wires(base: &[BaseColumn], columns: &[(String, String)]) -> Option<Vec<Wire>> {
    columns
        .iter()
        .map(|(name, _)| {
            base.iter().find(|b| &b.name == name).and_then(|b| Wire::of(&b.typname, &b.typtype))
        })
        .collect()
}

/// The binary COPY of `rows` written into `buf` (emptied first), or `None` when a value is
/// not one the encoders are sure of; with `hashing` (how each column is hashed, `None` for a
/// column left out), each row's hash, from the bytes sent ([`ColumnHash`]), `None` for a row
/// with a value not certain from them. Give `buf` the room of [`encoded_size`] (or a buffer
/// used before), so that it is filled in place instead of being copied to a larger one as it
/// grows (each copy touched fresh memory: half the page faults of a run before it was sized).
pub fn encode<'a, R: IntoIterator<Item = Option<&'a str>>>(
    wires: &[Wire],
    hashing: Option<&[Option<ColumnHash>]>,
    rows: impl IntoIterator<Item = R>,
    buf: &mut Vec<u8>,
) -> Option<Vec<Option<i64>>> {
    buf.clear();
    let mut hashes = Vec::new();
    // Signature, flags, header extension length.
    buf.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
    buf.extend_from_slice(&[0; 8]);
    let fields = i16::try_from(wires.len()).ok()?;
    // Per column, where the last value hashed by parsing it sits in `buf`, and its hash: a
    // column repeats its value from row to row (the same `{}` of metadata in every row of a
    // table), and the same bytes hash the same.
    let mut last: Vec<Option<(std::ops::Range<usize>, Option<u64>)>> = vec![None; wires.len()];
    for row in rows {
        buf.extend_from_slice(&fields.to_be_bytes());
        let mut hash = Some(0u64);
        for (i, (&wire, value)) in wires.iter().zip(row).enumerate() {
            let how = hashing.and_then(|h| h.get(i)?.as_ref());
            let element = match value {
                None => {
                    buf.extend_from_slice(&(-1i32).to_be_bytes());
                    Some(0)
                }
                Some(s) => {
                    let at = buf.len();
                    buf.extend_from_slice(&[0; 4]);
                    value_into(wire, s, buf)?;
                    let len = i32::try_from(buf.len() - at - 4).ok()?;
                    buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
                    let value = at + 4..buf.len();
                    match how {
                        Some(h) if h.parses() => match &last[i] {
                            Some((was, hashed)) if buf[was.clone()] == buf[value.clone()] => {
                                *hashed
                            }
                            _ => {
                                let hashed = h.of(&buf[value.clone()]);
                                last[i] = Some((value, hashed));
                                hashed
                            }
                        },
                        Some(h) => h.of(&buf[value]),
                        None => None,
                    }
                }
            };
            if how.is_some() {
                hash = hash.zip(element).map(|(r, e)| row_hash::fold(r, e));
            }
        }
        if hashing.is_some() {
            hashes.push(hash.map(|h| h as i64));
        }
    }
    buf.extend_from_slice(&(-1i16).to_be_bytes());
    Some(hashes)
}

/// One value's binary form appended to `buf`; `None` when the encoder is not sure of it.
pub fn value_into(wire: Wire, s: &str, buf: &mut Vec<u8>) -> Option<()> {
    match wire {
        Wire::Text | Wire::Json => buf.extend_from_slice(s.as_bytes()),
        Wire::Jsonb => {
            buf.push(1);
            buf.extend_from_slice(s.as_bytes());
        }
        Wire::Bool => buf.push(boolean(s)? as u8),
        Wire::Int2 => buf.extend_from_slice(&i16::try_from(integer(s)?).ok()?.to_be_bytes()),
        Wire::Int4 => buf.extend_from_slice(&i32::try_from(integer(s)?).ok()?.to_be_bytes()),
        Wire::Int8 => buf.extend_from_slice(&integer(s)?.to_be_bytes()),
        Wire::Float4 => buf.extend_from_slice(&float::<f32>(s)?.to_be_bytes()),
        Wire::Float8 => buf.extend_from_slice(&float::<f64>(s)?.to_be_bytes()),
        Wire::Numeric => numeric(s, buf)?,
        Wire::Date => {
            let (days, rest) = date(s.trim_matches(is_space))?;
            if !rest.is_empty() {
                return None;
            }
            buf.extend_from_slice(&i32::try_from(days - PG_EPOCH_DAYS).ok()?.to_be_bytes());
        }
        Wire::Timestamp => {
            let (micros, zone) = timestamp(s)?;
            // A zone on a timestamp without time zone is ignored by the server; not guessed here.
            if zone.is_some() {
                return None;
            }
            buf.extend_from_slice(&(micros - PG_EPOCH_MICROS).to_be_bytes());
        }
        Wire::Timestamptz => {
            // Without a zone the value is read in the session's time zone: left to the server.
            let (micros, offset) = timestamp(s)?;
            buf.extend_from_slice(&(micros - offset? * 1_000_000 - PG_EPOCH_MICROS).to_be_bytes());
        }
        Wire::Uuid => match hyphenated(s.as_bytes()) {
            Some(bytes) => buf.extend_from_slice(&bytes),
            None => {
                // The other forms the server reads too (it takes no `urn:uuid:` prefix).
                if !matches!(s.len(), 32 | 38) {
                    return None;
                }
                buf.extend_from_slice(uuid::Uuid::try_parse(s).ok()?.as_bytes());
            }
        },
    }
    Some(())
}

/// A UUID in the form the mapping writes and the server prints (8-4-4-4-12 hex digits, either
/// case): read with a table instead of the general parser, which was a tenth of encoding.
fn hyphenated(s: &[u8]) -> Option<[u8; 16]> {
    const HEX: [u8; 256] = {
        let mut t = [0xff; 256];
        let mut i = 0;
        while i < 10 {
            t[b'0' as usize + i] = i as u8;
            i += 1;
        }
        let mut i = 0;
        while i < 6 {
            t[b'a' as usize + i] = 10 + i as u8;
            t[b'A' as usize + i] = 10 + i as u8;
            i += 1;
        }
        t
    };
    let s: &[u8; 36] = s.try_into().ok()?;
    if s[8] != b'-' || s[13] != b'-' || s[18] != b'-' || s[23] != b'-' {
        return None;
    }
    let mut out = [0u8; 16];
    let mut at = 0;
    for (byte, o) in out.iter_mut().enumerate() {
        // A hyphen before bytes 4, 6, 8 and 10.
        if matches!(byte, 4 | 6 | 8 | 10) {
            at += 1;
        }
        let (hi, lo) = (HEX[usize::from(s[at])], HEX[usize::from(s[at + 1])]);
        if (hi | lo) == 0xff {
            return None;
        }
        *o = hi << 4 | lo;
        at += 2;
    }
    Some(out)
}

fn boolean(s: &str) -> Option<bool> {
    let s = s.trim_matches(is_space);
    const TRUE: [&str; 6] = ["t", "true", "y", "yes", "on", "1"];
    const FALSE: [&str; 6] = ["f", "false", "n", "no", "off", "0"];
    if TRUE.iter().any(|t| s.eq_ignore_ascii_case(t)) {
        Some(true)
    } else if FALSE.iter().any(|f| s.eq_ignore_ascii_case(f)) {
        Some(false)
    } else {
        None
    }
}

fn integer(s: &str) -> Option<i64> {
    let s = s.trim_matches(is_space);
    // Rust reads `+5` and `-5` as the server does, and nothing the server would refuse.
    s.parse().ok()
}

fn float<F: std::str::FromStr + Into<f64> + Copy>(s: &str) -> Option<F> {
    let s = s.trim_matches(is_space);
    let v: F = s.parse().ok()?;
    let f: f64 = v.into();
    // The server refuses what overflows or underflows to zero; Rust rounds it to infinity or 0.
    let spelled_infinite = s.bytes().any(|b| b == b'i' || b == b'I');
    if f.is_infinite() && !spelled_infinite {
        return None;
    }
    if f == 0.0
        && s.bytes().take_while(|b| !matches!(b, b'e' | b'E')).any(|b| (b'1'..=b'9').contains(&b))
    {
        return None;
    }
    Some(v)
}

/// `[+-]digits[.digits]` in numeric's binary form: base-10000 digits around the point, the
/// weight of the first, the sign and the display scale (the typmod is applied by the server).
fn numeric(s: &str, buf: &mut Vec<u8>) -> Option<()> {
    let s = s.trim_matches(is_space);
    let (negative, s) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if (int.is_empty() && frac.is_empty())
        || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let dscale = u16::try_from(frac.len()).ok()?;
    let int = int.trim_start_matches('0');
    // Pad both parts to whole groups of four digits, aligned on the point.
    let lead = (4 - int.len() % 4) % 4;
    let trail = (4 - frac.len() % 4) % 4;
    let digits: Vec<u8> = std::iter::repeat_n(b'0', lead)
        .chain(int.bytes())
        .chain(frac.bytes())
        .chain(std::iter::repeat_n(b'0', trail))
        .map(|b| b - b'0')
        .collect();
    let mut groups: Vec<i16> =
        digits.chunks(4).map(|g| g.iter().fold(0i16, |n, &d| n * 10 + i16::from(d))).collect();
    let mut weight = i32::try_from((lead + int.len()) / 4).ok()? - 1;
    // No leading or trailing zero groups, as the server stores it.
    let first = groups.iter().position(|&g| g != 0);
    let Some(first) = first else {
        buf.extend_from_slice(&0i16.to_be_bytes());
        buf.extend_from_slice(&0i16.to_be_bytes());
        buf.extend_from_slice(&0u16.to_be_bytes());
        buf.extend_from_slice(&dscale.to_be_bytes());
        return Some(());
    };
    groups.drain(..first);
    weight -= i32::try_from(first).ok()?;
    while groups.last() == Some(&0) {
        groups.pop();
    }
    buf.extend_from_slice(&i16::try_from(groups.len()).ok()?.to_be_bytes());
    buf.extend_from_slice(&i16::try_from(weight).ok()?.to_be_bytes());
    buf.extend_from_slice(&(if negative { 0x4000u16 } else { 0 }).to_be_bytes());
    buf.extend_from_slice(&dscale.to_be_bytes());
    for g in groups {
        buf.extend_from_slice(&g.to_be_bytes());
    }
    Some(())
}

/// Days from 1970-01-01 to 2000-01-01, the server's epoch.
const PG_EPOCH_DAYS: i64 = 10_957;
const PG_EPOCH_MICROS: i64 = PG_EPOCH_DAYS * 86_400_000_000;

#[cfg(test)]
mod tests {
    use super::*;

    fn one(wire: Wire, s: &str) -> Option<Vec<u8>> {
        let mut buf = Vec::new();
        value_into(wire, s, &mut buf).map(|()| buf)
    }

    #[test]
    fn a_buffer_used_before_is_filled_as_a_fresh_one() {
        let wires = [Wire::Int4, Wire::Text, Wire::Uuid];
        let rows = [
            [Some("7"), Some("seven"), Some("67e55044-10b1-426f-9247-bb680e5fe0c8")],
            [Some("-1"), None, None],
        ];
        let mut fresh = Vec::new();
        let hashes = encode(&wires, None, rows, &mut fresh).expect("every value encodes");
        assert!(hashes.is_empty(), "nothing hashed without hashing");
        let mut used = b"the COPY data of another, longer batch".repeat(100);
        encode(&wires, None, rows, &mut used).expect("every value encodes");
        assert_eq!(used, fresh);
        // A value the encoders are unsure of: no COPY data at all.
        assert_eq!(encode(&wires, None, [[Some("x"), None, None]], &mut used), None);
    }

    #[test]
    fn a_value_repeated_from_the_row_before_hashes_as_it_would_alone() {
        let wires = [Wire::Jsonb, Wire::Text, Wire::Numeric];
        let labels = [("a".to_owned(), 7), ("b".to_owned(), 9)].into_iter().collect();
        let hashing = [
            Some(ColumnHash::Jsonb),
            Some(ColumnHash::Enum(labels)),
            Some(ColumnHash::Numeric { scale: None }),
        ];
        let rows = [
            [Some("{\"k\": 1}"), Some("a"), Some("1.50")],
            [Some("{\"k\": 1}"), Some("a"), Some("1.50")],
            [Some("{\"k\": 2}"), Some("b"), None],
            [Some("{\"k\": 1}"), Some("c"), Some("1.5")],
            [Some("{\"k\": 1}"), Some("c"), Some("1.5")],
        ];
        let mut buf = Vec::new();
        let together = encode(&wires, Some(&hashing), rows, &mut buf).expect("every value encodes");
        let alone: Vec<Option<i64>> = rows
            .iter()
            .map(|row| encode(&wires, Some(&hashing), [*row], &mut buf).expect("encodes")[0])
            .collect();
        assert_eq!(together, alone);
        assert_eq!(together[3], None, "a label the enum does not have, again after a repeat");
        assert_ne!(together[0], together[2]);
    }

    #[test]
    fn uuids_in_every_form_the_server_reads_and_no_other() {
        let bytes = uuid::Uuid::parse_str("67e55044-10b1-426f-9247-bb680e5fe0c8").unwrap();
        let bytes = Some(bytes.as_bytes().to_vec());
        for form in [
            "67e55044-10b1-426f-9247-bb680e5fe0c8",
            "67E55044-10B1-426F-9247-BB680E5FE0C8",
            "67e5504410b1426f9247bb680e5fe0c8",
            "{67e55044-10b1-426f-9247-bb680e5fe0c8}",
        ] {
            assert_eq!(one(Wire::Uuid, form), bytes, "{form}");
        }
        for bad in [
            "67e55044-10b1-426f-9247-bb680e5fe0cg",
            "67e55044-10b1-426f-9247-bb680e5fe0c",
            "67e55044010b1-426f-9247-bb680e5fe0c8",
            "67e55044-10b1-426f-9247-bb680e5fe0c8 ",
            "urn:uuid:67e55044-10b1-426f-9247-bb680e5fe0c8",
            "67e55044-10b1-426f-9247-bb680e5fe0\u{e9}",
        ] {
            assert_eq!(one(Wire::Uuid, bad), None, "{bad}");
        }
    }

    #[test]
    fn numbers_in_the_servers_binary_forms() {
        // 12345.670: two groups before the point (1, 2345), one after (6700), scale 3.
        assert_eq!(
            one(Wire::Numeric, "12345.670"),
            Some(vec![0, 3, 0, 1, 0, 0, 0, 3, 0, 1, 0x09, 0x29, 0x1a, 0x2c])
        );
        // -0.0012: weight -1 (the first group is the one after the point), sign 0x4000.
        assert_eq!(
            one(Wire::Numeric, "-0.0012"),
            Some(vec![0, 1, 0xff, 0xff, 0x40, 0, 0, 4, 0, 12])
        );
        assert_eq!(one(Wire::Numeric, "000.00"), Some(vec![0, 0, 0, 0, 0, 0, 0, 2]));
        assert_eq!(one(Wire::Numeric, "1e5"), None, "exponents are left to the server");
        assert_eq!(one(Wire::Numeric, "NaN"), None);
        assert_eq!(one(Wire::Int2, "40000"), None, "out of range for int2");
        assert_eq!(one(Wire::Int4, " +42 "), Some(42i32.to_be_bytes().to_vec()));
        assert_eq!(one(Wire::Float8, "1e400"), None, "the server refuses an overflow");
        assert_eq!(one(Wire::Float8, "1e-400"), None, "and an underflow to zero");
        assert_eq!(one(Wire::Float8, "-Infinity"), Some(f64::NEG_INFINITY.to_be_bytes().to_vec()));
        assert_eq!(one(Wire::Bool, "Yes"), Some(vec![1]));
        assert_eq!(one(Wire::Bool, "maybe"), None);
    }

    #[test]
    fn times_from_the_servers_epoch_in_utc() {
        assert_eq!(one(Wire::Date, "2000-01-02"), Some(1i32.to_be_bytes().to_vec()));
        assert_eq!(one(Wire::Date, "2023-02-29"), None, "not a day");
        let noon = 12 * 3_600_000_000i64;
        assert_eq!(one(Wire::Timestamp, "2000-01-01 12:00:00"), Some(noon.to_be_bytes().to_vec()));
        assert_eq!(
            one(Wire::Timestamp, "2000-01-01T12:00:00.5"),
            Some((noon + 500_000).to_be_bytes().to_vec())
        );
        assert_eq!(
            one(Wire::Timestamptz, "2000-01-01 12:00:00 UTC"),
            Some(noon.to_be_bytes().to_vec())
        );
        assert_eq!(
            one(Wire::Timestamptz, "2000-01-01 14:30:00+02:30"),
            Some(noon.to_be_bytes().to_vec())
        );
        assert_eq!(
            one(Wire::Timestamptz, "2000-01-01 12:00:00"),
            None,
            "the session's zone is the server's to apply"
        );
        assert_eq!(one(Wire::Timestamptz, "2000-01-01 12:00:00 Europe/Paris"), None);
        assert_eq!(one(Wire::Timestamp, "2000-01-01 12:00:00+01"), None);
        assert_eq!(
            one(Wire::Timestamp, "2000-01-01 12:00:00.1234567"),
            None,
            "the server rounds past microseconds"
        );
    }
}
