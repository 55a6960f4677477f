//! The stored form of the model's lists (`bytea`): written and read by this
//! service alone, so PostgreSQL stores bytes and parses nothing (as JSON
//! text, parsing the lists back into JSONB was most of a batch's cost, see
//! `docs/performance.md`).
//!
//! A list is its entries back to back. An entry is its id's length in bytes
//! (`u32`, big-endian), the id (UTF-8) and, in a scored list, the log-score
//! (`f64`, big-endian). These are PostgreSQL's own `int4send` and
//! `float8send` forms, so SQL can write the same bytes (the migration from
//! the JSON lists does, `migrations/0015_recommendation_binary_lists.sql`).

/// Appends a scored list.
pub fn put_scores<'a>(out: &mut Vec<u8>, entries: impl IntoIterator<Item = (&'a str, f64)>) {
    for (id, score) in entries {
        put_id(out, id);
        out.extend_from_slice(&score.to_be_bytes());
    }
}

/// Appends a list of ids.
pub fn put_ids<'a>(out: &mut Vec<u8>, ids: impl IntoIterator<Item = &'a str>) {
    for id in ids {
        put_id(out, id);
    }
}

fn put_id(out: &mut Vec<u8>, id: &str) {
    let len = u32::try_from(id.len()).expect("ids are bounded far below 4 GiB");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(id.as_bytes());
}

/// A stored list that is not entries of this form (written by hand, or cut
/// short): where reading it stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed {
    pub at: usize,
}

/// The entries of a scored list, in stored order; a malformed tail ends it
/// with an error.
pub fn scores(stored: &[u8]) -> Entries<'_, true> {
    Entries { stored, at: 0 }
}

/// The ids of a list of ids, in stored order.
pub fn ids(stored: &[u8]) -> Entries<'_, false> {
    Entries { stored, at: 0 }
}

/// Reads a list; `SCORED` says whether each id is followed by a score.
pub struct Entries<'a, const SCORED: bool> {
    stored: &'a [u8],
    at: usize,
}

impl<'a, const SCORED: bool> Entries<'a, SCORED> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let bytes = self.stored.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(bytes)
    }

    fn entry(&mut self) -> Option<(&'a str, f64)> {
        let len = u32::from_be_bytes(self.take(4)?.try_into().ok()?) as usize;
        let id = std::str::from_utf8(self.take(len)?).ok()?;
        let score = if SCORED {
            f64::from_be_bytes(self.take(8)?.try_into().ok()?)
        } else {
            0.0
        };
        Some((id, score))
    }
}

impl<'a, const SCORED: bool> Iterator for Entries<'a, SCORED> {
    type Item = Result<(&'a str, f64), Malformed>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.at >= self.stored.len() {
            return None;
        }
        let start = self.at;
        match self.entry() {
            Some(entry) => Some(Ok(entry)),
            None => {
                // Nothing after a malformed entry can be trusted.
                self.at = self.stored.len();
                Some(Err(Malformed { at: start }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_read_back_as_written() {
        let mut stored = Vec::new();
        put_scores(&mut stored, [("p1", 1.5), ("ünï", -1e300), ("", 0.0)]);
        let read: Vec<_> = scores(&stored).collect::<Result<_, _>>().unwrap();
        assert_eq!(read, [("p1", 1.5), ("ünï", -1e300), ("", 0.0)]);
        let mut stored = Vec::new();
        put_ids(&mut stored, ["a", "bc"]);
        let read: Vec<_> = ids(&stored).map(|e| e.unwrap().0).collect();
        assert_eq!(read, ["a", "bc"]);
        assert_eq!(scores(&[]).count(), 0);
    }

    #[test]
    fn the_bytes_are_postgres_send_forms() {
        let mut stored = Vec::new();
        put_scores(&mut stored, [("ab", 2.0)]);
        // int4send(2) || 'ab' || float8send(2.0)
        assert_eq!(stored, b"\0\0\0\x02ab\x40\0\0\0\0\0\0\0");
    }

    #[test]
    fn a_cut_or_bad_list_ends_with_where_it_broke() {
        let mut stored = Vec::new();
        put_scores(&mut stored, [("p1", 1.0), ("p2", 2.0)]);
        let cut = &stored[..stored.len() - 3];
        let read: Vec<_> = scores(cut).collect();
        assert_eq!(read, [Ok(("p1", 1.0)), Err(Malformed { at: 14 })]);
        // A length past the end, and an id that is not UTF-8.
        assert_eq!(
            ids(b"\xff\xff\xff\xffab").collect::<Vec<_>>(),
            [Err(Malformed { at: 0 })]
        );
        assert_eq!(
            ids(b"\0\0\0\x01\xff").collect::<Vec<_>>(),
            [Err(Malformed { at: 0 })]
        );
    }
}
