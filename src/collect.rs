//! Packing Kinesis records into PutRecords calls (pure).
//!
//! A call holds at most `collection_max_count` entries and at most
//! `collection_max_size` bytes of data plus partition keys (how the service
//! counts its request limit). An entry larger than the byte limit still goes,
//! alone, so nothing can be stuck forever.

use std::collections::VecDeque;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    pub max_count: usize,
    pub max_bytes: usize,
}

/// Something that can go into a PutRecords call.
pub trait RequestSize {
    /// Bytes it counts against the request limit (data + partition key).
    fn request_bytes(&self) -> usize;
}

/// Takes the next batch from the front of `queue`, in order.
pub fn take_batch<T: RequestSize>(queue: &mut VecDeque<T>, limits: BatchLimits) -> Vec<T> {
    let mut bytes = 0usize;
    let mut n = 0usize;
    for item in queue.iter() {
        let b = item.request_bytes();
        if n == limits.max_count || (n > 0 && bytes + b > limits.max_bytes) {
            break;
        }
        bytes += b;
        n += 1;
    }
    queue.drain(..n).collect()
}

/// True when the queue holds at least one full batch.
pub fn has_full_batch<T: RequestSize>(
    queue: &VecDeque<T>,
    queued_bytes: usize,
    limits: BatchLimits,
) -> bool {
    queue.len() >= limits.max_count || queued_bytes >= limits.max_bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    struct Item(usize);
    impl RequestSize for Item {
        fn request_bytes(&self) -> usize {
            self.0
        }
    }

    #[test]
    fn an_oversized_entry_goes_alone() {
        let mut q: VecDeque<Item> = [Item(10), Item(100), Item(5)].into_iter().collect();
        let l = BatchLimits {
            max_count: 500,
            max_bytes: 50,
        };
        assert_eq!(take_batch(&mut q, l).len(), 1);
        assert_eq!(take_batch(&mut q, l).len(), 1);
        assert_eq!(take_batch(&mut q, l).len(), 1);
        assert!(q.is_empty());
    }

    proptest! {
        #[test]
        fn no_batch_over_a_limit_and_nothing_lost(
            sizes in proptest::collection::vec(0usize..2000, 0..2000),
            max_count in 1usize..600,
            max_bytes in 1usize..20_000,
        ) {
            let mut q: VecDeque<Item> = sizes.iter().map(|&s| Item(s)).collect();
            let l = BatchLimits { max_count, max_bytes };
            let mut seen = vec![];
            while !q.is_empty() {
                let b = take_batch(&mut q, l);
                prop_assert!(!b.is_empty());
                prop_assert!(b.len() <= max_count);
                let total: usize = b.iter().map(|i| i.0).sum();
                prop_assert!(b.len() == 1 || total <= max_bytes);
                seen.extend(b.into_iter().map(|i| i.0));
            }
            prop_assert_eq!(seen, sizes);
        }
    }
}
