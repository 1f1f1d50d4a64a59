//! The sync baseline's row hash, `hash_record_extended(ROW(columns), 0)` (scheme 2, see
//! [`crate::diff`]), computed in agentctl from the binary values a load sends, so the load
//! records what it wrote without the server hashing every row again (bench/RESULTS.md).
//!
//! PostgreSQL hashes each column with its type's extended hash function (Bob Jenkins' lookup3
//! over the value's stored bytes, or over a 32-bit value) and folds them as
//! `result * 31 + column_hash`, a NULL counting 0. Here each column has a [`ColumnHash`] read
//! from the target's catalog, and a value is hashed only when its stored form is certain from
//! the bytes sent: a number past its column's scale (the server rounds it), a `varchar(n)`
//! value longer than `n` (the server cuts trailing spaces), a NaN or a `jsonb` number with an
//! exponent give no hash, and the caller has the server hash that row. A `jsonb` document is
//! parsed and hashed as the server stores it.
//! The tests compare every kind with the server's own answer.

use std::collections::HashMap;

use sqlx::PgConnection;

use crate::binary::BaseColumn;

fn mix(a: &mut u32, b: &mut u32, c: &mut u32) {
    *a = a.wrapping_sub(*c);
    *a ^= c.rotate_left(4);
    *c = c.wrapping_add(*b);
    *b = b.wrapping_sub(*a);
    *b ^= a.rotate_left(6);
    *a = a.wrapping_add(*c);
    *c = c.wrapping_sub(*b);
    *c ^= b.rotate_left(8);
    *b = b.wrapping_add(*a);
    *a = a.wrapping_sub(*c);
    *a ^= c.rotate_left(16);
    *c = c.wrapping_add(*b);
    *b = b.wrapping_sub(*a);
    *b ^= a.rotate_left(19);
    *a = a.wrapping_add(*c);
    *c = c.wrapping_sub(*b);
    *c ^= b.rotate_left(4);
    *b = b.wrapping_add(*a);
}

fn last(a: &mut u32, b: &mut u32, c: &mut u32) {
    *c ^= *b;
    *c = c.wrapping_sub(b.rotate_left(14));
    *a ^= *c;
    *a = a.wrapping_sub(c.rotate_left(11));
    *b ^= *a;
    *b = b.wrapping_sub(a.rotate_left(25));
    *c ^= *b;
    *c = c.wrapping_sub(b.rotate_left(16));
    *a ^= *c;
    *a = a.wrapping_sub(c.rotate_left(4));
    *b ^= *a;
    *b = b.wrapping_sub(a.rotate_left(14));
    *c ^= *b;
    *c = c.wrapping_sub(b.rotate_left(24));
}

fn word(k: &[u8]) -> u32 {
    u32::from_le_bytes([k[0], k[1], k[2], k[3]])
}

/// `hash_bytes_extended(k, len, 0)` as a little-endian server computes it.
pub fn bytes(k: &[u8]) -> u64 {
    let init = 0x9e37_79b9u32.wrapping_add(k.len() as u32).wrapping_add(3_923_095);
    let (mut a, mut b, mut c) = (init, init, init);
    let mut k = k;
    while k.len() >= 12 {
        a = a.wrapping_add(word(&k[0..4]));
        b = b.wrapping_add(word(&k[4..8]));
        c = c.wrapping_add(word(&k[8..12]));
        mix(&mut a, &mut b, &mut c);
        k = &k[12..];
    }
    // The last 11 bytes; the lowest byte of c is left to the length.
    let shifted = |bytes: &[u8], first_shift: u32| {
        bytes
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &x)| n.wrapping_add(u32::from(x) << (first_shift + 8 * i as u32)))
    };
    if k.len() >= 8 {
        c = c.wrapping_add(shifted(&k[8..], 8));
        b = b.wrapping_add(word(&k[4..8]));
        a = a.wrapping_add(word(&k[0..4]));
    } else if k.len() >= 4 {
        b = b.wrapping_add(shifted(&k[4..], 0));
        a = a.wrapping_add(word(&k[0..4]));
    } else {
        a = a.wrapping_add(shifted(k, 0));
    }
    last(&mut a, &mut b, &mut c);
    (u64::from(b) << 32) | u64::from(c)
}

/// `hash_bytes_uint32_extended(k, 0)`.
pub fn uint32(k: u32) -> u64 {
    let init = 0x9e37_79b9u32.wrapping_add(4).wrapping_add(3_923_095);
    let (mut a, mut b, mut c) = (init.wrapping_add(k), init, init);
    last(&mut a, &mut b, &mut c);
    (u64::from(b) << 32) | u64::from(c)
}

/// `hashint8extended(v, 0)`: the high half folded into the low one, so that a value hashes as
/// the same value of a narrower integer type would.
pub fn int8(v: i64) -> u64 {
    let (lo, hi) = (v as u32, (v >> 32) as u32);
    uint32(lo ^ if v >= 0 { hi } else { !hi })
}

/// How one column's value is hashed: its base type's extended hash function.
#[derive(Clone, Debug, PartialEq)]
pub enum ColumnHash {
    /// smallint, integer, date: the value as a 32-bit integer.
    Int2,
    Int4,
    /// bigint, timestamp, timestamptz: `hashint8extended`.
    Int8,
    /// boolean: `hashcharextended`.
    Bool,
    Uuid,
    /// text and varchar (`max_chars` its length limit), in a deterministic collation.
    Text {
        max_chars: Option<usize>,
    },
    /// character(n): the value without its trailing spaces.
    Bpchar,
    /// An enum: its label's OID.
    Enum(HashMap<String, u32>),
    /// numeric: digits and weight, not the scale; `scale` the column's, if it has one.
    Numeric {
        scale: Option<u16>,
    },
    Float4,
    Float8,
    /// jsonb: its document as the server stores it (object keys sorted, the last of equal
    /// keys kept), each key and scalar hashed and rotated in.
    Jsonb,
    /// json, hashed as its text, which is the text stored.
    Json,
}

impl ColumnHash {
    /// Whether hashing a value parses it (a document, a label looked up, digits), at a cost
    /// well above comparing it with the last value's bytes.
    pub fn parses(&self) -> bool {
        matches!(self, ColumnHash::Jsonb | ColumnHash::Enum(_) | ColumnHash::Numeric { .. })
    }

    /// The hash of a value in its binary COPY form, or `None` when the stored value is not
    /// certain from it.
    pub fn of(&self, v: &[u8]) -> Option<u64> {
        Some(match self {
            ColumnHash::Int2 => uint32(i32::from(i16::from_be_bytes(v.try_into().ok()?)) as u32),
            ColumnHash::Int4 => uint32(i32::from_be_bytes(v.try_into().ok()?) as u32),
            ColumnHash::Int8 => int8(i64::from_be_bytes(v.try_into().ok()?)),
            ColumnHash::Bool => uint32(u32::from(*v.first()?)),
            ColumnHash::Uuid => (v.len() == 16).then(|| bytes(v))?,
            ColumnHash::Text { max_chars } => {
                // Past its length only trailing spaces are accepted, and cut.
                if let Some(n) = *max_chars {
                    if v.len() > n && std::str::from_utf8(v).ok()?.chars().count() > n {
                        return None;
                    }
                }
                bytes(v)
            }
            ColumnHash::Bpchar => {
                bytes(&v[..v.iter().rposition(|&b| b != b' ').map_or(0, |i| i + 1)])
            }
            ColumnHash::Enum(oids) => uint32(*oids.get(std::str::from_utf8(v).ok()?)?),
            ColumnHash::Numeric { scale } => numeric(v, *scale)?,
            ColumnHash::Float4 => float(f64::from(f32::from_be_bytes(v.try_into().ok()?)))?,
            ColumnHash::Float8 => float(f64::from_be_bytes(v.try_into().ok()?))?,
            ColumnHash::Jsonb => jsonb(v.strip_prefix(&[1])?)?,
            ColumnHash::Json => bytes(v),
        })
    }
}

/// `hashfloat8extended`: zero (of either sign) hashes to the seed; a NaN is not hashed here.
fn float(v: f64) -> Option<u64> {
    if v.is_nan() {
        return None;
    }
    Some(if v == 0.0 { 0 } else { bytes(&v.to_le_bytes()) })
}

/// `hash_numeric_extended` of a numeric's binary form: its base-10000 digits without leading
/// or trailing zeros, in the server's byte order, the weight folded in; the sign and the
/// display scale do not count.
fn numeric(v: &[u8], scale: Option<u16>) -> Option<u64> {
    let field = |i: usize| -> Option<[u8; 2]> { v.get(i..i + 2)?.try_into().ok() };
    let ndigits = usize::try_from(i16::from_be_bytes(field(0)?)).ok()?;
    let weight = i32::from(i16::from_be_bytes(field(2)?));
    let sign = u16::from_be_bytes(field(4)?);
    let dscale = u16::from_be_bytes(field(6)?);
    if sign != 0 && sign != 0x4000 {
        return None;
    }
    if scale.is_some_and(|s| dscale > s) {
        return None;
    }
    let digits: Vec<i16> =
        (0..ndigits).map(|i| field(8 + 2 * i).map(i16::from_be_bytes)).collect::<Option<_>>()?;
    Some(digits_hash(&digits, weight))
}

/// `hash_numeric_extended` of a numeric's base-10000 `digits` (most significant first) and
/// `weight`: the digits without leading or trailing zeros, in the server's byte order, the
/// weight of the first one kept folded in; a numeric of no nonzero digit hashes to -1.
fn digits_hash(digits: &[i16], weight: i32) -> u64 {
    let Some(first) = digits.iter().position(|&d| d != 0) else {
        return u64::MAX;
    };
    let end = digits.iter().rposition(|&d| d != 0).map_or(first, |i| i + 1);
    let stored: Vec<u8> = digits[first..end].iter().flat_map(|d| d.to_le_bytes()).collect();
    bytes(&stored) ^ (i64::from(weight - first as i32) as u64)
}

/// JSON's tokens as `jsonb` keeps them.
enum Json {
    Null,
    Bool(bool),
    /// The value's `hash_numeric_extended`.
    Number(u64),
    String(Vec<u8>),
    Array(Vec<Json>),
    /// Sorted by key as `jsonb` sorts them (shorter first, then bytewise), one value a key.
    Object(Vec<(Vec<u8>, Json)>),
}

/// Nesting deeper than this is left to the server.
const JSON_DEPTH: usize = 64;

/// `jsonb_hash_extended(text::jsonb, 0)`, or `None` for what this parser does not take on
/// (a number with an exponent, nesting past [`JSON_DEPTH`], anything the server would refuse).
fn jsonb(text: &[u8]) -> Option<u64> {
    let mut p = JsonParser { s: text, at: 0 };
    let doc = p.value(0)?;
    p.blank();
    if p.at != text.len() {
        return None;
    }
    // An empty object or array hashes to the seed.
    if matches!(&doc, Json::Array(a) if a.is_empty())
        || matches!(&doc, Json::Object(o) if o.is_empty())
    {
        return Some(0);
    }
    let mut hash = 0u64;
    match doc {
        // A scalar is stored as a one-element array.
        scalar @ (Json::Null | Json::Bool(_) | Json::Number(_) | Json::String(_)) => {
            hash ^= JB_FARRAY;
            hash_value(&scalar, &mut hash);
        }
        container => hash_value(&container, &mut hash),
    }
    Some(hash)
}

const JB_FARRAY: u64 = 0x4000_0000_4000_0000;
const JB_FOBJECT: u64 = 0x2000_0000_2000_0000;

fn hash_value(v: &Json, hash: &mut u64) {
    let scalar = |h: &mut u64, tmp: u64| {
        *h = ((*h << 1) & 0xffff_fffe_ffff_fffe) | ((*h >> 31) & 0x0000_0001_0000_0001);
        *h ^= tmp;
    };
    match v {
        Json::Null => scalar(hash, 1),
        Json::Bool(b) => scalar(hash, if *b { 2 } else { 4 }),
        Json::Number(n) => scalar(hash, *n),
        Json::String(s) => scalar(hash, bytes(s)),
        Json::Array(items) => {
            *hash ^= JB_FARRAY;
            items.iter().for_each(|i| hash_value(i, hash));
        }
        Json::Object(pairs) => {
            *hash ^= JB_FOBJECT;
            for (k, v) in pairs {
                scalar(hash, bytes(k));
                hash_value(v, hash);
            }
        }
    }
}

struct JsonParser<'a> {
    s: &'a [u8],
    at: usize,
}

impl JsonParser<'_> {
    fn blank(&mut self) {
        while self.s.get(self.at).is_some_and(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    fn eat(&mut self, word: &[u8]) -> Option<()> {
        self.s[self.at..].starts_with(word).then(|| self.at += word.len())
    }

    fn value(&mut self, depth: usize) -> Option<Json> {
        if depth > JSON_DEPTH {
            return None;
        }
        self.blank();
        Some(match *self.s.get(self.at)? {
            b'n' => self.eat(b"null").map(|()| Json::Null)?,
            b't' => self.eat(b"true").map(|()| Json::Bool(true))?,
            b'f' => self.eat(b"false").map(|()| Json::Bool(false))?,
            b'"' => Json::String(self.string()?),
            b'[' => {
                self.at += 1;
                let mut items = Vec::new();
                self.blank();
                if self.eat(b"]").is_none() {
                    loop {
                        items.push(self.value(depth + 1)?);
                        self.blank();
                        if self.eat(b",").is_none() {
                            self.eat(b"]")?;
                            break;
                        }
                    }
                }
                Json::Array(items)
            }
            b'{' => {
                self.at += 1;
                let mut pairs: Vec<(Vec<u8>, Json)> = Vec::new();
                self.blank();
                if self.eat(b"}").is_none() {
                    loop {
                        self.blank();
                        let key = self.string()?;
                        self.blank();
                        self.eat(b":")?;
                        pairs.push((key, self.value(depth + 1)?));
                        self.blank();
                        if self.eat(b",").is_none() {
                            self.eat(b"}")?;
                            break;
                        }
                    }
                }
                // Shorter keys first, then bytewise; of equal keys the last one stays.
                pairs.reverse();
                pairs.sort_by(|(a, _), (b, _)| a.len().cmp(&b.len()).then_with(|| a.cmp(b)));
                pairs.dedup_by(|later, first| later.0 == first.0);
                Json::Object(pairs)
            }
            _ => Json::Number(self.number()?),
        })
    }

    /// A string's bytes, unescaped; `None` where the server refuses it (`\u0000`, a lone
    /// surrogate, a control character).
    fn string(&mut self) -> Option<Vec<u8>> {
        self.eat(b"\"")?;
        let mut out = Vec::new();
        loop {
            let b = *self.s.get(self.at)?;
            self.at += 1;
            match b {
                b'"' => return Some(out),
                b'\\' => {
                    let e = *self.s.get(self.at)?;
                    self.at += 1;
                    let c = match e {
                        b'"' | b'\\' | b'/' => e,
                        b'b' => 8,
                        b'f' => 12,
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'u' => {
                            let mut code = self.hex4()?;
                            if (0xd800..0xdc00).contains(&code) {
                                self.eat(b"\\u")?;
                                let low = self.hex4()?;
                                if !(0xdc00..0xe000).contains(&low) {
                                    return None;
                                }
                                code = 0x10000 + ((code - 0xd800) << 10) + (low - 0xdc00);
                            }
                            let ch = char::from_u32(code).filter(|&c| c != '\0')?;
                            out.extend_from_slice(ch.encode_utf8(&mut [0; 4]).as_bytes());
                            continue;
                        }
                        _ => return None,
                    };
                    out.push(c);
                }
                0..0x20 => return None,
                _ => out.push(b),
            }
        }
    }

    fn hex4(&mut self) -> Option<u32> {
        let digits = std::str::from_utf8(self.s.get(self.at..self.at + 4)?).ok()?;
        self.at += 4;
        u32::from_str_radix(digits, 16).ok()
    }

    /// A number's `hash_numeric_extended`, through the same binary form a numeric column gets.
    fn number(&mut self) -> Option<u64> {
        let start = self.at;
        self.eat(b"-");
        let digits = |p: &mut Self| {
            let from = p.at;
            while p.s.get(p.at).is_some_and(u8::is_ascii_digit) {
                p.at += 1;
            }
            p.at - from
        };
        let whole = digits(self);
        if whole == 0 || (whole > 1 && self.s[self.at - whole] == b'0') {
            return None;
        }
        if self.eat(b".").is_some() && digits(self) == 0 {
            return None;
        }
        if matches!(self.s.get(self.at), Some(b'e' | b'E')) {
            return None;
        }
        let text = std::str::from_utf8(&self.s[start..self.at]).ok()?;
        let mut buf = Vec::new();
        crate::binary::value_into(crate::binary::Wire::Numeric, text, &mut buf)?;
        numeric(&buf, None)
    }
}

/// A row hash so far with its next column's hash folded in (a NULL's is 0).
pub fn fold(row: u64, column: u64) -> u64 {
    (row << 5).wrapping_sub(row).wrapping_add(column)
}

/// What a row adds to a sum of its page's rows: its hash hashed again, as
/// `hash_numeric_extended(hash::numeric, 0)` (the digits of its magnitude in base 10000, the
/// weight folded in). A row hash is linear in its columns' hashes ([`fold`]), so a plain sum
/// of row hashes is the same linear fold of each column's sum: two rows of a page that traded
/// a value would add up to what they did before. Hashed again, they do not.
pub fn summand(row: u64) -> u64 {
    // Base-10000 digits, most significant first (a u64 has at most 5).
    let (mut n, mut digits, mut at) = ((row as i64).unsigned_abs(), [0i16; 5], 5);
    while n > 0 {
        at -= 1;
        digits[at] = (n % 10_000) as i16;
        n /= 10_000;
    }
    digits_hash(&digits[at..], (digits.len() - at) as i32 - 1)
}

/// How each of `columns` (name, type as the caller casts it) of a table whose columns are
/// `base` ([`crate::binary::base_columns`]) is hashed, or `None` when one of them cannot be
/// hashed here: a type without a [`ColumnHash`], a collation that is not deterministic, a type
/// other than the column's (the server's hash casts to it), or a database whose encoding is
/// not UTF-8.
pub async fn column_hashes(
    c: &mut PgConnection,
    base: &[BaseColumn],
    columns: &[(String, String)],
) -> Result<Option<Vec<ColumnHash>>, sqlx::Error> {
    // Text is stored in the server's encoding: the bytes sent are the bytes stored only in UTF-8.
    let encoding: String =
        sqlx::query_scalar("SELECT current_setting('server_encoding')").fetch_one(&mut *c).await?;
    if encoding != "UTF8" {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(columns.len());
    for (name, ty) in columns {
        let Some(b) = base.iter().find(|b| &b.name == name) else {
            return Ok(None);
        };
        if &b.declared != ty {
            return Ok(None);
        }
        let limit = (b.typmod >= 4).then(|| b.typmod - 4);
        let hash = match (b.typname.as_str(), b.typtype.as_str()) {
            (_, "e") => {
                let labels: Vec<(String, i32)> = sqlx::query_as(
                    "SELECT enumlabel::text, oid::int4 FROM pg_enum WHERE enumtypid = $1::oid",
                )
                .bind(b.oid)
                .fetch_all(&mut *c)
                .await?;
                ColumnHash::Enum(labels.into_iter().map(|(l, o)| (l, o as u32)).collect())
            }
            ("text" | "varchar", _) if b.deterministic => {
                ColumnHash::Text { max_chars: limit.and_then(|n| usize::try_from(n).ok()) }
            }
            ("bpchar", _) if b.deterministic => ColumnHash::Bpchar,
            ("int2", _) => ColumnHash::Int2,
            ("int4" | "date", _) => ColumnHash::Int4,
            // A timestamp of fewer than six decimals is rounded by the server.
            ("timestamp" | "timestamptz", _) if (0..6).contains(&b.typmod) => return Ok(None),
            ("int8" | "timestamp" | "timestamptz", _) => ColumnHash::Int8,
            ("bool", _) => ColumnHash::Bool,
            ("uuid", _) => ColumnHash::Uuid,
            ("numeric", _) => ColumnHash::Numeric { scale: limit.map(|m| (m & 0xffff) as u16) },
            ("float4", _) => ColumnHash::Float4,
            ("float8", _) => ColumnHash::Float8,
            ("jsonb", _) => ColumnHash::Jsonb,
            ("json", _) => ColumnHash::Json,
            _ => return Ok(None),
        };
        out.push(hash);
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_folds_its_columns_as_the_server_does() {
        assert_eq!([1, 0, 2].into_iter().fold(0, fold), 31 * 31 + 2);
        assert_eq!(fold(u64::MAX, 1), u64::MAX.wrapping_mul(31).wrapping_add(1));
    }

    #[test]
    fn a_row_adds_to_its_page_as_the_server_hashes_it_again() {
        // `SELECT v, hash_numeric_extended(v::numeric, 0)` on PostgreSQL 15.
        for (v, server) in [
            (0i64, -1i64),
            (1, -7_507_508_252_608_306_360),
            (-1, -7_507_508_252_608_306_360),
            (10_000, -7_507_508_252_608_306_359),
            (9_999, 247_439_845_080_503_643),
            (100_000_000, -7_507_508_252_608_306_358),
            (i64::MAX, -3_677_347_392_575_813_757),
            (i64::MIN, -4_744_979_959_383_781_710),
            (123_456_789_012, -7_333_021_434_929_618_173),
            (-390_851_726_765_819_440, 4_317_813_624_664_752_618),
        ] {
            assert_eq!(summand(v as u64) as i64, server, "{v}");
        }
    }

    #[test]
    fn numbers_hash_by_value_not_by_scale() {
        // 1.5 and 1.50: the same digits and weight, another display scale.
        let a = [0, 2, 0, 0, 0, 0, 0, 1, 0, 1, 0x13, 0x88];
        let b = [0, 2, 0, 0, 0, 0, 0, 2, 0, 1, 0x13, 0x88];
        assert_eq!(numeric(&a, None), numeric(&b, None));
        assert_eq!(numeric(&b, Some(1)), None, "rounded by the server to its column's scale");
        assert_eq!(ColumnHash::Bpchar.of(b"ab  "), ColumnHash::Bpchar.of(b"ab"));
        assert_eq!(ColumnHash::Text { max_chars: Some(2) }.of(b"ab "), None, "cut by the server");
        assert_eq!(ColumnHash::Jsonb.of(b"\x01{ }"), Some(0));
        assert_eq!(
            ColumnHash::Jsonb.of(b"\x01{\"a\": 1e3}"),
            None,
            "an exponent is left to the server"
        );
    }
}
