//! Shard prediction: partition key -> 128-bit hash key -> open shard.
//!
//! Pure logic, no I/O. A map holds the open shards of one stream sorted by
//! ending hash key; their ranges must tile 0..=2^128-1 with no gap or overlap,
//! so every hash key maps to exactly one shard.

use md5::{Digest, Md5};
use std::sync::Arc;

/// MD5 of the partition key's UTF-8 bytes read as a big-endian u128, as
/// Kinesis computes it.
pub fn hash_partition_key(partition_key: &str) -> u128 {
    let digest: [u8; 16] = Md5::digest(partition_key.as_bytes()).into();
    u128::from_be_bytes(digest)
}

/// Why an explicit hash key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExplicitHashKeyError {
    #[error("explicit hash key is empty")]
    Empty,
    #[error("explicit hash key {0:?} is not a decimal number (digits 0-9 only)")]
    NotDecimal(String),
    #[error("explicit hash key {0:?} is larger than 2^128-1")]
    TooLarge(String),
}

/// Parses a decimal explicit hash key in 0..=2^128-1.
pub fn parse_explicit_hash_key(s: &str) -> Result<u128, ExplicitHashKeyError> {
    if s.is_empty() {
        return Err(ExplicitHashKeyError::Empty);
    }
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ExplicitHashKeyError::NotDecimal(truncate(s)));
    }
    s.parse::<u128>()
        .map_err(|_| ExplicitHashKeyError::TooLarge(truncate(s)))
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

/// One open shard and its inclusive hash key range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    pub id: Arc<str>,
    pub start: u128,
    pub end: u128,
}

/// Why a set of shards does not form a usable map.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardMapError {
    #[error("the stream has no open shard")]
    Empty,
    #[error("open shards do not cover hash keys from {from} to {to}")]
    Gap { from: u128, to: u128 },
    #[error("open shards {a} and {b} overlap")]
    Overlap { a: String, b: String },
    #[error("shard {0} has a starting hash key above its ending hash key")]
    Inverted(String),
}

/// The open shards of one stream, sorted by ending hash key.
#[derive(Debug, Clone)]
pub struct ShardMap {
    shards: Vec<Shard>,
}

impl ShardMap {
    /// Builds a map, checking that the shards tile the whole hash key space.
    pub fn new(mut shards: Vec<Shard>) -> Result<Self, ShardMapError> {
        if shards.is_empty() {
            return Err(ShardMapError::Empty);
        }
        shards.sort_by_key(|s| s.end);
        let mut next: u128 = 0;
        for (i, s) in shards.iter().enumerate() {
            if s.start > s.end {
                return Err(ShardMapError::Inverted(s.id.to_string()));
            }
            if s.start > next {
                return Err(ShardMapError::Gap {
                    from: next,
                    to: s.start - 1,
                });
            }
            if s.start < next {
                return Err(ShardMapError::Overlap {
                    a: shards[i - 1].id.to_string(),
                    b: s.id.to_string(),
                });
            }
            if s.end == u128::MAX {
                if i + 1 != shards.len() {
                    return Err(ShardMapError::Overlap {
                        a: s.id.to_string(),
                        b: shards[i + 1].id.to_string(),
                    });
                }
                return Ok(ShardMap { shards });
            }
            next = s.end + 1;
        }
        Err(ShardMapError::Gap {
            from: next,
            to: u128::MAX,
        })
    }

    /// Index of the shard whose range holds `hash`.
    pub fn index_of(&self, hash: u128) -> usize {
        // The shards tile the key space and the last one ends at u128::MAX,
        // so the partition point is always a valid index.
        self.shards.partition_point(|s| s.end < hash)
    }

    pub fn shard(&self, index: usize) -> &Shard {
        &self.shards[index]
    }

    pub fn lookup(&self, hash: u128) -> &Shard {
        self.shard(self.index_of(hash))
    }

    pub fn len(&self) -> usize {
        self.shards.len()
    }

    pub fn is_empty(&self) -> bool {
        self.shards.is_empty()
    }

    pub fn shards(&self) -> &[Shard] {
        &self.shards
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn even_map(n: u128) -> ShardMap {
        let step = u128::MAX / n;
        let shards = (0..n)
            .map(|i| Shard {
                id: format!("shardId-{i:012}").into(),
                start: 0,
                end: if i == n - 1 {
                    u128::MAX
                } else {
                    (i + 1) * step - 1
                },
            })
            .collect::<Vec<_>>();
        // Starts follow the previous end exactly.
        let mut fixed = shards.clone();
        for i in 1..fixed.len() {
            fixed[i].start = fixed[i - 1].end + 1;
        }
        ShardMap::new(fixed).unwrap()
    }

    #[test]
    fn partition_key_hash_is_big_endian_md5() {
        // MD5("a") = 0cc175b9c0f1b6a831c399e269772661
        assert_eq!(
            hash_partition_key("a"),
            0x0cc175b9c0f1b6a831c399e269772661u128
        );
    }

    #[test]
    fn explicit_hash_keys_are_checked() {
        assert_eq!(parse_explicit_hash_key("0"), Ok(0));
        assert_eq!(
            parse_explicit_hash_key("340282366920938463463374607431768211455"),
            Ok(u128::MAX)
        );
        assert!(matches!(
            parse_explicit_hash_key("340282366920938463463374607431768211456"),
            Err(ExplicitHashKeyError::TooLarge(_))
        ));
        assert!(matches!(
            parse_explicit_hash_key("-1"),
            Err(ExplicitHashKeyError::NotDecimal(_))
        ));
        assert!(matches!(
            parse_explicit_hash_key("+1"),
            Err(ExplicitHashKeyError::NotDecimal(_))
        ));
        assert!(matches!(
            parse_explicit_hash_key("abc"),
            Err(ExplicitHashKeyError::NotDecimal(_))
        ));
        assert_eq!(
            parse_explicit_hash_key(""),
            Err(ExplicitHashKeyError::Empty)
        );
    }

    #[test]
    fn map_with_a_gap_is_refused() {
        let r = ShardMap::new(vec![
            Shard {
                id: "a".into(),
                start: 0,
                end: 10,
            },
            Shard {
                id: "b".into(),
                start: 12,
                end: u128::MAX,
            },
        ]);
        assert_eq!(r.unwrap_err(), ShardMapError::Gap { from: 11, to: 11 });
    }

    #[test]
    fn map_with_an_overlap_is_refused() {
        let r = ShardMap::new(vec![
            Shard {
                id: "a".into(),
                start: 0,
                end: 10,
            },
            Shard {
                id: "b".into(),
                start: 5,
                end: u128::MAX,
            },
        ]);
        assert!(matches!(r, Err(ShardMapError::Overlap { .. })));
    }

    #[test]
    fn map_not_reaching_the_top_is_refused() {
        let r = ShardMap::new(vec![Shard {
            id: "a".into(),
            start: 0,
            end: 10,
        }]);
        assert!(matches!(r, Err(ShardMapError::Gap { from: 11, .. })));
    }

    proptest! {
        #[test]
        fn every_hash_maps_to_exactly_the_shard_holding_it(n in 1u128..64, h: u128) {
            let map = even_map(n);
            let holders: Vec<_> = map.shards().iter().filter(|s| s.start <= h && h <= s.end).collect();
            prop_assert_eq!(holders.len(), 1);
            prop_assert_eq!(&map.lookup(h).id, &holders[0].id);
        }

        #[test]
        fn unsorted_input_gives_the_same_map(n in 1u128..32, h: u128, seed: u64) {
            let map = even_map(n);
            let mut shuffled = map.shards().to_vec();
            let len = shuffled.len();
            shuffled.rotate_left((seed as usize) % len);
            let other = ShardMap::new(shuffled).unwrap();
            prop_assert_eq!(&map.lookup(h).id, &other.lookup(h).id);
        }
    }
}
