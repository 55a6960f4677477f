//! The window of event ids one reader of a partition admitted: a record
//! whose id was admitted at one of the `kafka.dedupe_window` offsets before
//! it is a repeat. The workers (`worker::dedupe`) and the replays
//! (`replay`) decide repeats with it, so both halves of the Kappa
//! architecture skip the same records.

use std::collections::{HashMap, VecDeque};

use uuid::Uuid;

/// The ids admitted at the last `size` offsets of one partition.
#[derive(Debug)]
pub struct Window {
    size: i64,
    /// Each id's latest admission (foldhash: a replay asks once per record).
    last: HashMap<Uuid, i64, foldhash::fast::RandomState>,
    /// Admissions in offset order, to forget what leaves the window.
    order: VecDeque<(i64, Uuid)>,
}

impl Window {
    pub fn new(size: u64) -> Self {
        Self {
            size: i64::try_from(size).unwrap_or(i64::MAX),
            last: HashMap::default(),
            order: VecDeque::new(),
        }
    }

    /// Whether `id` was admitted at one of the `size` offsets before `offset`.
    pub fn seen(&self, id: &Uuid, offset: i64) -> bool {
        self.last
            .get(id)
            .is_some_and(|&at| at >= offset.saturating_sub(self.size))
    }

    /// Admits `id` at `offset` (after every earlier admission), forgetting
    /// what no later offset's window reaches.
    pub fn admit(&mut self, id: Uuid, offset: i64) {
        while let Some(&(at, old)) = self.order.front() {
            if at > offset.saturating_sub(self.size) {
                break;
            }
            self.order.pop_front();
            if self.last.get(&old) == Some(&at) {
                self.last.remove(&old);
            }
        }
        self.last.insert(id, offset);
        self.order.push_back((offset, id));
    }

    /// Whether `id` at `offset` is a repeat; admits it either way.
    pub fn repeat(&mut self, id: Uuid, offset: i64) -> bool {
        let seen = self.seen(&id, offset);
        self.admit(id, offset);
        seen
    }

    /// The admissions a window at `next` still reaches, in offset order:
    /// admitting them again into an empty window rebuilds this one.
    pub fn admitted(&self, next: i64) -> impl Iterator<Item = (i64, Uuid)> + '_ {
        let oldest = next.saturating_sub(self.size);
        self.order
            .iter()
            .copied()
            .filter(move |(at, id)| *at >= oldest && self.last.get(id) == Some(at))
    }

    /// Ids held now.
    pub fn ids(&self) -> usize {
        self.last.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    #[test]
    fn a_window_holds_the_ids_of_its_last_offsets() {
        let mut window = Window::new(3);
        assert!(!window.repeat(id(1), 10));
        assert!(!window.repeat(id(2), 11));
        assert!(
            window.repeat(id(1), 13),
            "10 is within the 3 offsets before 13"
        );
        assert!(!window.seen(&id(2), 15), "11 is not within the 3 before 15");
        // The repeat at 13 was admitted: the id stays until 16.
        assert!(window.seen(&id(1), 16));
        assert!(!window.seen(&id(1), 17));
        window.admit(id(3), 100);
        assert_eq!(window.ids(), 1, "what no window reaches is forgotten");
    }
}
