//! What a put accepted, for the clients that ask (`Hello.want_accepted`):
//! record ids in runs of consecutive ids (clients number their records one
//! after another, so a frame of thousands is usually one run), accepted at
//! once into the buffers or once the spool has synced them.

use crate::ipc::Accepted;

/// Record ids as runs: run i is `first_ids[i] ..first_ids[i] + counts[i]`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct IdRuns {
    pub first_ids: Vec<u64>,
    pub counts: Vec<u64>,
}

impl IdRuns {
    pub fn push(&mut self, id: u64) {
        if let (Some(&first), Some(count)) = (self.first_ids.last(), self.counts.last_mut()) {
            if first.checked_add(*count) == Some(id) {
                *count += 1;
                return;
            }
        }
        self.first_ids.push(id);
        self.counts.push(1);
    }

    pub fn append(&mut self, other: IdRuns) {
        for (first, count) in other.first_ids.into_iter().zip(other.counts) {
            match (self.first_ids.last(), self.counts.last_mut()) {
                (Some(&f), Some(c)) if f.checked_add(*c) == Some(first) => *c += count,
                _ => {
                    self.first_ids.push(first);
                    self.counts.push(count);
                }
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.first_ids.is_empty()
    }

    /// How many ids the runs hold.
    pub fn len(&self) -> u64 {
        self.counts.iter().sum()
    }

    pub fn into_message(self) -> Accepted {
        Accepted {
            first_ids: self.first_ids,
            counts: self.counts,
        }
    }
}

/// What one `Producer::put_accepting` accepted.
#[derive(Default)]
pub struct Acceptance {
    /// In the buffers now (streams with `durability = "memory"`).
    pub now: IdRuns,
    /// Written to the spool (`disk` streams): accepted once each ticket is
    /// durable.
    pub spooled: Vec<(IdRuns, crate::spool::Ticket)>,
}

#[cfg(test)]
mod tests {
    use super::IdRuns;

    #[test]
    fn consecutive_ids_make_one_run_and_gaps_start_new_ones() {
        let mut r = IdRuns::default();
        for id in [1, 2, 3, 7, 8, u64::MAX - 1, u64::MAX, 0] {
            r.push(id);
        }
        assert_eq!(r.first_ids, vec![1, 7, u64::MAX - 1, 0]);
        assert_eq!(r.counts, vec![3, 2, 2, 1]);
        assert_eq!(r.len(), 8);
    }

    #[test]
    fn appending_joins_a_run_that_continues_the_last() {
        let mut a = IdRuns::default();
        a.push(1);
        a.push(2);
        let mut b = IdRuns::default();
        b.push(3);
        b.push(9);
        a.append(b);
        assert_eq!(a.first_ids, vec![1, 9]);
        assert_eq!(a.counts, vec![3, 1]);
    }
}
