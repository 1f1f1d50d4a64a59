//! Dates and timestamps in the text form PostgreSQL writes, read strictly: a value is read
//! only when it is a real day and time and its zone, if any, is an offset; anything else is
//! `None`, for the caller's general reader or for the server.

/// Days from 1970-01-01 to a day of the proleptic Gregorian calendar (Howard Hinnant's
/// days-from-civil); the month and day are not checked.
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let yy = if m <= 2 { y - 1 } else { y };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468
}

/// The server's `isspace`: ASCII only.
pub fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c')
}

/// `YYYY-MM-DD` (years 1 to 9999, a real day) to days since 1970-01-01, and what follows it.
pub fn date(s: &str) -> Option<(i64, &str)> {
    let b = s.as_bytes();
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let y = digits(&b[0..4])?;
    let m = digits(&b[5..7])?;
    let d = digits(&b[8..10])?;
    let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
    let month_days = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    if y == 0 || !(1..=12).contains(&m) || d == 0 || d > month_days[(m - 1) as usize] {
        return None;
    }
    Some((days_from_civil(y, m, d), &s[10..]))
}

/// ASCII digits as a number; `None` if any is not one.
fn digits(b: &[u8]) -> Option<i64> {
    b.iter().try_fold(0i64, |n, &c| c.is_ascii_digit().then(|| n * 10 + i64::from(c - b'0')))
}

/// `YYYY-MM-DD[( |T)HH:MM[:SS[.ffffff]]][zone]` to microseconds since 1970-01-01 as written, and
/// the zone's offset in seconds east of UTC (`None`: no zone). A zone not known here (a named
/// one, which needs the server's zone database) makes the whole value `None`.
pub fn timestamp(s: &str) -> Option<(i64, Option<i64>)> {
    let (days, rest) = date(s.trim_matches(is_space))?;
    let mut micros = days * 86_400_000_000;
    let rest = match rest.as_bytes().first() {
        Some(b' ' | b'T') => &rest[1..],
        Some(_) => return None,
        None => return Some((micros, None)),
    };
    let b = rest.as_bytes();
    if b.len() < 5 || b[2] != b':' {
        return None;
    }
    let (h, mi) = (digits(&b[0..2])?, digits(&b[3..5])?);
    let mut at = 5;
    let mut sec = 0;
    if b.get(at) == Some(&b':') {
        sec = digits(b.get(at + 1..at + 3)?)?;
        at += 3;
        if b.get(at) == Some(&b'.') {
            let frac: &[u8] = &b[at + 1..];
            let n = frac.iter().take_while(|c| c.is_ascii_digit()).count();
            if n == 0 || n > 6 {
                return None;
            }
            micros += digits(&frac[..n])? * 10i64.pow(6 - n as u32);
            at += 1 + n;
        }
    }
    if h > 23 || mi > 59 || sec > 59 {
        return None;
    }
    micros += (h * 3600 + mi * 60 + sec) * 1_000_000;
    let zone = rest[at..].trim_start_matches(' ');
    if zone.is_empty() {
        return Some((micros, None));
    }
    Some((micros, Some(offset(zone)?)))
}

/// `UTC`, `GMT`, `Z`, `+HH`, `+HH:MM`, `+HHMM`, `+HH:MM:SS` (and `-`) in seconds east of UTC.
fn offset(zone: &str) -> Option<i64> {
    if ["UTC", "GMT", "Z"].iter().any(|z| zone.eq_ignore_ascii_case(z)) {
        return Some(0);
    }
    let sign = match zone.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let b = &zone.as_bytes()[1..];
    let (h, m, s) = match b.len() {
        2 => (digits(b)?, 0, 0),
        4 => (digits(&b[..2])?, digits(&b[2..])?, 0),
        5 if b[2] == b':' => (digits(&b[..2])?, digits(&b[3..])?, 0),
        8 if b[2] == b':' && b[5] == b':' => {
            (digits(&b[..2])?, digits(&b[3..5])?, digits(&b[6..])?)
        }
        _ => return None,
    };
    if h > 15 || m > 59 || s > 59 {
        return None;
    }
    Some(sign * (h * 3600 + m * 60 + s))
}
