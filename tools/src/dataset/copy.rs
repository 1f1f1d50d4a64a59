//! Writing rows in PostgreSQL's COPY text format, fast: no allocation per field, dates and
//! timestamps formatted by hand from day numbers.

/// One row being written into a COPY buffer.
pub struct Line<'a> {
    buf: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> Line<'a> {
    pub fn new(buf: &'a mut Vec<u8>) -> Line<'a> {
        Line { buf, first: true }
    }

    fn sep(&mut self) {
        if !self.first {
            self.buf.push(b'\t');
        }
        self.first = false;
    }

    pub fn null(&mut self) -> &mut Self {
        self.sep();
        self.buf.extend_from_slice(b"\\N");
        self
    }

    pub fn int(&mut self, v: i64) -> &mut Self {
        self.sep();
        self.buf.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
        self
    }

    pub fn opt_int(&mut self, v: Option<i64>) -> &mut Self {
        match v {
            Some(v) => self.int(v),
            None => self.null(),
        }
    }

    pub fn bool(&mut self, v: bool) -> &mut Self {
        self.sep();
        self.buf.push(if v { b't' } else { b'f' });
        self
    }

    /// Text, escaped for COPY (backslash, tab, newline, carriage return).
    pub fn text(&mut self, v: impl AsRef<str>) -> &mut Self {
        self.sep();
        push_text(self.buf, v.as_ref());
        self
    }

    pub fn opt_text(&mut self, v: Option<&str>) -> &mut Self {
        match v {
            Some(v) => self.text(v),
            None => self.null(),
        }
    }

    /// A decimal from hundredths: `-1234` → `-12.34`.
    pub fn cents(&mut self, v: i64) -> &mut Self {
        self.sep();
        if v < 0 {
            self.buf.push(b'-');
        }
        let a = v.unsigned_abs();
        self.buf.extend_from_slice(itoa::Buffer::new().format(a / 100).as_bytes());
        self.buf.push(b'.');
        self.buf.push(b'0' + (a % 100 / 10) as u8);
        self.buf.push(b'0' + (a % 10) as u8);
        self
    }

    /// A date from days since 1970-01-01.
    pub fn date(&mut self, days: i64) -> &mut Self {
        self.sep();
        push_date(self.buf, days);
        self
    }

    /// A timestamp without time zone from seconds since 1970-01-01 00:00:00.
    pub fn ts(&mut self, secs: i64) -> &mut Self {
        self.sep();
        push_date(self.buf, secs.div_euclid(86_400));
        let s = secs.rem_euclid(86_400);
        self.buf.push(b' ');
        push2(self.buf, s / 3600);
        self.buf.push(b':');
        push2(self.buf, s % 3600 / 60);
        self.buf.push(b':');
        push2(self.buf, s % 60);
        self
    }

    pub fn opt_ts(&mut self, secs: Option<i64>) -> &mut Self {
        match secs {
            Some(s) => self.ts(s),
            None => self.null(),
        }
    }

    /// A literal value written as it is (already valid COPY text): year-0001 dates and such.
    pub fn raw(&mut self, v: &str) -> &mut Self {
        self.sep();
        self.buf.extend_from_slice(v.as_bytes());
        self
    }

    pub fn end(&mut self) {
        self.buf.push(b'\n');
    }
}

/// Text escaped for COPY: backslash, tab, newline and carriage return.
pub(crate) fn push_text(buf: &mut Vec<u8>, v: &str) {
    for &b in v.as_bytes() {
        match b {
            b'\\' => buf.extend_from_slice(b"\\\\"),
            b'\t' => buf.extend_from_slice(b"\\t"),
            b'\n' => buf.extend_from_slice(b"\\n"),
            b'\r' => buf.extend_from_slice(b"\\r"),
            _ => buf.push(b),
        }
    }
}

/// A COPY field: escaped text, or `\N` for NULL.
pub(crate) fn push_field(buf: &mut Vec<u8>, v: Option<&str>) {
    match v {
        None => buf.extend_from_slice(b"\\N"),
        Some(s) => push_text(buf, s),
    }
}

fn push2(buf: &mut Vec<u8>, v: i64) {
    buf.push(b'0' + (v / 10) as u8);
    buf.push(b'0' + (v % 10) as u8);
}

/// Howard Hinnant's days-to-civil algorithm.
fn push_date(buf: &mut Vec<u8>, days: i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let y = itoa::Buffer::new().format(y).to_owned();
    for _ in y.len()..4 {
        buf.push(b'0');
    }
    buf.extend_from_slice(y.as_bytes());
    buf.push(b'-');
    push2(buf, m);
    buf.push(b'-');
    push2(buf, d);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_copy_fields() {
        let mut buf = Vec::new();
        Line::new(&mut buf)
            .int(-7)
            .text("a\tb\\c\nd")
            .null()
            .cents(-1205)
            .cents(7)
            .date(0)
            .ts(1_700_000_000)
            .date(-719_162)
            .bool(true)
            .end();
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            "-7\ta\\tb\\\\c\\nd\t\\N\t-12.05\t0.07\t1970-01-01\t2023-11-14 \
                22:13:20\t0001-01-01\tt\n"
        );
    }
}
