//! Rows of text values in one buffer: a page of a source scan, or a batch's mapped rows.
//!
//! A migration handles millions of values; keeping each as a `String` of its own made
//! allocating and freeing them the largest single cost of a run (bench/RESULTS.md). Here a
//! page's values sit end to end in one string, each known by where it ends, so a page is a
//! handful of allocations whatever its size, and a row is read as borrowed `&str`s.

/// Rows of `width` values each, every value PostgreSQL's text form or NULL.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TextRows {
    width: usize,
    text: String,
    /// Per value, where it ends in `text`; a NULL has [`NULL`] set (and ends where the value
    /// before it ends).
    ends: Vec<usize>,
}

/// The bit that marks a NULL in `ends`; no buffer comes near that size.
const NULL: usize = 1 << (usize::BITS - 1);

impl TextRows {
    pub fn new(width: usize) -> TextRows {
        TextRows { width, text: String::new(), ends: Vec::new() }
    }

    /// Room for `rows` rows of about `bytes` bytes of text in all.
    pub fn with_capacity(width: usize, rows: usize, bytes: usize) -> TextRows {
        TextRows {
            width,
            text: String::with_capacity(bytes),
            ends: Vec::with_capacity(rows * width),
        }
    }

    /// These rows' buffers, emptied, as room for `rows` rows of `width` values and about
    /// `bytes` bytes of text: a batch's few MiB reused instead of freed and faulted in afresh.
    pub fn reuse(mut self, width: usize, rows: usize, bytes: usize) -> TextRows {
        self.text.clear();
        self.ends.clear();
        self.text.reserve(bytes);
        self.ends.reserve(rows * width);
        TextRows { width, ..self }
    }

    /// Values a row.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Complete rows held.
    pub fn len(&self) -> usize {
        self.ends.len().checked_div(self.width).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Bytes of text held (a measure of the page's size).
    pub fn text_len(&self) -> usize {
        self.text.len()
    }

    /// Appends one value to the row being built; a row is complete after `width` of them.
    pub fn push(&mut self, value: Option<&str>) {
        match value {
            Some(v) => {
                self.text.push_str(v);
                self.ends.push(self.text.len());
            }
            None => self.ends.push(self.text.len() | NULL),
        }
    }

    /// Appends one value made of `parts` end to end (a value read in pieces, such as COPY text
    /// with its escapes undone, without a string of its own).
    pub fn push_parts<'a>(&mut self, parts: impl IntoIterator<Item = &'a str>) {
        for part in parts {
            self.text.push_str(part);
        }
        self.ends.push(self.text.len());
    }

    /// Appends a whole row.
    pub fn push_row<'a>(&mut self, row: impl IntoIterator<Item = Option<&'a str>>) {
        for v in row {
            self.push(v);
        }
    }

    /// Values pushed so far (complete rows and the row being built).
    pub fn values(&self) -> usize {
        self.ends.len()
    }

    /// Drops every value after the first `values` (a row given up half way).
    pub fn truncate_values(&mut self, values: usize) {
        if values < self.ends.len() {
            let end = if values == 0 { 0 } else { self.ends[values - 1] & !NULL };
            self.ends.truncate(values);
            self.text.truncate(end);
        }
    }

    pub fn clear(&mut self) {
        self.ends.clear();
        self.text.clear();
    }

    /// Value `n` counting from the first of the first row.
    fn value(&self, n: usize) -> Option<&str> {
        let end = self.ends[n];
        if end & NULL != 0 {
            return None;
        }
        let start = if n == 0 { 0 } else { self.ends[n - 1] & !NULL };
        Some(&self.text[start..end])
    }

    /// Column `column` of row `row`.
    pub fn get(&self, row: usize, column: usize) -> Option<&str> {
        assert!(column < self.width, "column {column} of a {}-value row", self.width);
        self.value(row * self.width + column)
    }

    /// The values of row `row`, in order.
    pub fn row(&self, row: usize) -> impl ExactSizeIterator<Item = Option<&str>> + Clone + '_ {
        let first = row * self.width;
        assert!(first + self.width <= self.ends.len(), "row {row} of {} rows", self.len());
        (first..first + self.width).map(move |n| self.value(n))
    }

    /// Every row, in order.
    pub fn rows(
        &self,
    ) -> impl Iterator<Item = impl ExactSizeIterator<Item = Option<&str>> + Clone + '_> + '_ {
        (0..self.len()).map(move |r| self.row(r))
    }

    /// A fingerprint of these rows, value by value, NULLs told from empty text, under `seal`
    /// (what the rows mean: the mapping that reads them): equal rows under an equal seal give an
    /// equal fingerprint, in any process and build (XXH3, whose output is fixed by its
    /// specification).
    pub fn fingerprint(&self, seal: u64) -> i64 {
        let used = self.ends.last().map_or(0, |&end| end & !NULL);
        let text = xxhash_rust::xxh3::xxh3_64_with_seed(&self.text.as_bytes()[..used], seal);
        let mut ends = xxhash_rust::xxh3::Xxh3::with_seed(text);
        let mut chunk = Vec::with_capacity(8 * 1024);
        chunk.extend_from_slice(&(self.width as u64).to_le_bytes());
        for block in self.ends.chunks(1024) {
            for &end in block {
                chunk.extend_from_slice(&(end as u64).to_le_bytes());
            }
            ends.update(&chunk);
            chunk.clear();
        }
        ends.digest() as i64
    }

    /// Column `column` of every row, in order.
    pub fn column(&self, column: usize) -> impl ExactSizeIterator<Item = Option<&str>> + '_ {
        (0..self.len()).map(move |r| self.get(r, column))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PINNED: i64 = 6_942_173_154_509_032_349;

    #[test]
    fn values_nulls_and_empty_strings_come_back_as_pushed() {
        let mut rows = TextRows::new(3);
        rows.push_row([Some("1"), None, Some("")]);
        rows.push_row([None, Some("two words"), Some("é")]);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows.row(0).collect::<Vec<_>>(), vec![Some("1"), None, Some("")]);
        assert_eq!(rows.row(1).collect::<Vec<_>>(), vec![None, Some("two words"), Some("é")]);
        assert_eq!(rows.get(1, 2), Some("é"));
        assert_eq!(rows.get(0, 1), None);
        assert_eq!(rows.rows().count(), 2);
        assert_eq!(rows.column(1).collect::<Vec<_>>(), vec![None, Some("two words")]);
    }

    #[test]
    fn a_fingerprint_tells_every_value_and_null_apart_and_never_changes() {
        let rows = |values: &[Option<&str>]| {
            let mut rows = TextRows::new(2);
            rows.push_row(values.iter().copied());
            rows
        };
        let page = rows(&[Some("1"), Some("ab")]);
        let print = page.fingerprint(7);
        assert_eq!(print, rows(&[Some("1"), Some("ab")]).fingerprint(7));
        assert_ne!(print, page.fingerprint(8), "the seal is part of it");
        assert_ne!(print, rows(&[Some("1a"), Some("b")]).fingerprint(7), "values' bounds");
        assert_ne!(rows(&[Some(""), None]).fingerprint(7), rows(&[None, Some("")]).fingerprint(7));
        let mut given_up = rows(&[Some("1"), Some("ab")]);
        let mark = given_up.values();
        given_up.push(Some("half"));
        given_up.truncate_values(mark);
        assert_eq!(given_up.fingerprint(7), print);
        // Stored with a load's records and compared by later builds: it must not move.
        assert_eq!(print, PINNED);
    }

    #[test]
    fn a_row_given_up_half_way_leaves_no_trace() {
        let mut rows = TextRows::new(2);
        rows.push_row([Some("a"), Some("b")]);
        let mark = rows.values();
        rows.push(Some("half"));
        rows.truncate_values(mark);
        rows.push(None);
        rows.push(Some("kept"));
        assert_eq!(rows.len(), 2);
        assert_eq!(rows.row(1).collect::<Vec<_>>(), vec![None, Some("kept")]);
        assert_eq!(rows.text_len(), "abkept".len());
        rows.truncate_values(0);
        assert!(rows.is_empty());
        assert_eq!(rows.text_len(), 0);
    }
}
