//! The partition key of a record read from a file, by the `[[files]]`
//! table's `partition_key` rule.
//!
//! Invariant: every key is valid UTF-8 of 1 to 256 bytes (so 1 to 256
//! characters, Kinesis' limit). Rules:
//! - `random`: 32 random hex digits (records spread over every shard).
//! - `line_hash`: MD5 of the record, 32 hex digits, like the Kinesis Agent's
//!   `DETERMINISTIC`: the same record always gets the same key.
//! - `path`: the file's path (its MD5 in hex if longer than 256 bytes), so a
//!   file's records stay in order on one shard.
//! - `{ json_field = "a.b" }`: the value at that dotted path of the record's
//!   JSON object: a string as is, a number or boolean as written; a string
//!   longer than 256 bytes by its MD5 in hex. A record that is not a JSON
//!   object, or has no such field, or has an empty string, null, an object
//!   or an array there, falls back to `line_hash` (not `random`: a record
//!   sent again after a restart then still goes to the same shard).

use md5::{Digest, Md5};
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use std::fmt;

/// Kinesis' limit on a partition key.
pub const MAX_KEY_BYTES: usize = 256;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PartitionKeyRule {
    Random,
    LineHash,
    Path,
    /// The dotted path's segments, each an object key.
    JsonField(Vec<String>),
}

impl PartitionKeyRule {
    /// None -> Random; "random" | "line_hash" | "path" | { json_field = "user.id" }.
    pub fn from_toml(v: Option<&toml::Value>) -> Result<PartitionKeyRule, String> {
        const EXPECTED: &str =
            "expected \"random\", \"line_hash\", \"path\" or { json_field = \"a.b\" }";
        match v {
            None => Ok(PartitionKeyRule::Random),
            Some(toml::Value::String(s)) => match s.as_str() {
                "random" => Ok(PartitionKeyRule::Random),
                "line_hash" => Ok(PartitionKeyRule::LineHash),
                "path" => Ok(PartitionKeyRule::Path),
                other => Err(format!("partition_key {other:?} is unknown; {EXPECTED}")),
            },
            Some(toml::Value::Table(t)) => {
                if let Some(k) = t.keys().find(|k| *k != "json_field") {
                    return Err(format!(
                        "partition_key has an unknown key {k:?}; {EXPECTED}"
                    ));
                }
                let path = match t.get("json_field") {
                    Some(toml::Value::String(s)) => s,
                    Some(v) => {
                        return Err(format!(
                            "partition_key.json_field must be a string like \"user.id\", not {}",
                            v.type_str()
                        ))
                    }
                    None => {
                        return Err(format!("partition_key table has no json_field; {EXPECTED}"))
                    }
                };
                let segments: Vec<String> = path.split('.').map(str::to_string).collect();
                if segments.iter().any(String::is_empty) {
                    return Err(format!(
                        "partition_key.json_field {path:?} has an empty segment; write names joined by dots, like \"user.id\""
                    ));
                }
                Ok(PartitionKeyRule::JsonField(segments))
            }
            Some(v) => Err(format!(
                "partition_key must be a string or a table, not {}; {EXPECTED}",
                v.type_str()
            )),
        }
    }

    /// A valid Kinesis partition key (1..=256 bytes) for this record.
    pub fn key(&self, record: &[u8], path: &str) -> Vec<u8> {
        match self {
            PartitionKeyRule::Random => hex(&rand::random::<[u8; 16]>()),
            PartitionKeyRule::LineHash => md5_hex(record),
            PartitionKeyRule::Path => bounded(path.as_bytes()),
            PartitionKeyRule::JsonField(segments) => match json_field(record, segments) {
                Some(k) if !k.is_empty() => bounded(&k),
                _ => md5_hex(record),
            },
        }
    }
}

/// The `random` rule's keys for one reader, written side by side into one
/// buffer (no allocation per key) from a splitmix64 stream seeded from the
/// system's generator: a key only has to land on a shard at random (its MD5
/// picks the shard), which this does at a few ns instead of the thread
/// generator's few hundred.
pub struct RandomKeys {
    state: u64,
    buf: bytes::BytesMut,
}

impl Default for RandomKeys {
    fn default() -> Self {
        RandomKeys::new(rand::random())
    }
}

impl RandomKeys {
    /// Keys this many at a time share a buffer.
    const PER_BUFFER: usize = 1024;
    /// Hex digits per key (128 bits, as the `random` rule's keys always had).
    const LEN: usize = 32;

    pub fn new(seed: u64) -> RandomKeys {
        RandomKeys {
            state: seed,
            buf: bytes::BytesMut::new(),
        }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// The next key: 32 hex digits.
    pub fn next_key(&mut self) -> bytes::Bytes {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        if self.buf.capacity() - self.buf.len() < Self::LEN {
            self.buf.reserve(Self::LEN * Self::PER_BUFFER);
        }
        let mut key = [0u8; Self::LEN];
        for half in key.chunks_exact_mut(16) {
            let x = self.next_u64();
            for (i, d) in half.iter_mut().enumerate() {
                *d = DIGITS[((x >> (60 - 4 * i)) & 15) as usize];
            }
        }
        self.buf.extend_from_slice(&key);
        self.buf.split_to(Self::LEN).freeze()
    }
}

fn hex(b: &[u8]) -> Vec<u8> {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = Vec::with_capacity(b.len() * 2);
    for x in b {
        out.push(DIGITS[usize::from(x >> 4)]);
        out.push(DIGITS[usize::from(x & 15)]);
    }
    out
}

fn md5_hex(b: &[u8]) -> Vec<u8> {
    let digest: [u8; 16] = Md5::digest(b).into();
    hex(&digest)
}

/// `k` itself if it fits, else its MD5 (never a cut, which could split a
/// character); an empty `k` never reaches here.
fn bounded(k: &[u8]) -> Vec<u8> {
    if k.is_empty() {
        // Only a path can be empty here; a key needs one byte at least.
        return md5_hex(k);
    }
    if k.len() <= MAX_KEY_BYTES {
        k.to_vec()
    } else {
        md5_hex(k)
    }
}

/// The value at `segments` of the JSON object `record`, as key bytes; the
/// parser skips everything else without building it.
fn json_field(record: &[u8], segments: &[String]) -> Option<Vec<u8>> {
    let mut de = serde_json::Deserializer::from_slice(record);
    let found = Seek(segments).deserialize(&mut de).ok()?;
    // Trailing garbage after the object: not a JSON record.
    de.end().ok()?;
    found
}

/// Walks one segment deeper per object; a scalar at the end is the key.
struct Seek<'s>(&'s [String]);

impl<'de> DeserializeSeed<'de> for Seek<'_> {
    type Value = Option<Vec<u8>>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Seek<'_> {
    type Value = Option<Vec<u8>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        // A key repeated in the object: the last one wins, as serde_json's
        // own maps do.
        while let Some(k) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match self.0.split_first() {
                Some((first, rest)) if *first == k => found = map.next_value_seed(Seek(rest))?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(if self.0.is_empty() { None } else { found })
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(self.0.is_empty().then(|| v.as_bytes().to_vec()))
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(self.0.is_empty().then(|| v.into_bytes()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(self.0.is_empty().then(|| v.to_string().into_bytes()))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(self.0.is_empty().then(|| v.to_string().into_bytes()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        // serde_json writes floats the shortest way that reads back the same.
        Ok(self
            .0
            .is_empty()
            .then(|| serde_json::Number::from_f64(v).map(|n| n.to_string().into_bytes()))
            .flatten())
    }

    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(self.0.is_empty().then(|| {
            if v {
                b"true".to_vec()
            } else {
                b"false".to_vec()
            }
        }))
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rule(s: &str) -> PartitionKeyRule {
        let v: toml::Table = toml::from_str(&format!("partition_key = {s}")).unwrap();
        PartitionKeyRule::from_toml(v.get("partition_key")).unwrap()
    }

    fn key(r: &PartitionKeyRule, record: &str) -> String {
        String::from_utf8(r.key(record.as_bytes(), "/var/log/app.log")).unwrap()
    }

    #[test]
    fn rules_are_read_from_toml_and_bad_ones_are_named() {
        assert_eq!(
            PartitionKeyRule::from_toml(None).unwrap(),
            PartitionKeyRule::Random
        );
        assert_eq!(rule("\"line_hash\""), PartitionKeyRule::LineHash);
        assert_eq!(rule("\"path\""), PartitionKeyRule::Path);
        assert_eq!(
            rule("{ json_field = \"user.id\" }"),
            PartitionKeyRule::JsonField(vec!["user".into(), "id".into()])
        );
        let err = |s: &str| {
            let v: toml::Table = toml::from_str(&format!("partition_key = {s}")).unwrap();
            PartitionKeyRule::from_toml(v.get("partition_key")).unwrap_err()
        };
        assert!(
            err("\"md5\"").starts_with("partition_key \"md5\" is unknown"),
            "{}",
            err("\"md5\"")
        );
        assert!(err("{ json_field = \"a..b\" }").contains("empty segment"));
        assert!(err("{ field = \"a\" }").contains("unknown key \"field\""));
        assert!(err("{ json_field = 3 }").contains("must be a string"));
        assert!(err("7").contains("not integer"));
    }

    #[test]
    fn line_hash_is_the_md5_of_the_record_and_stable() {
        let r = PartitionKeyRule::LineHash;
        // MD5("") and MD5("abc") from RFC 1321's test suite.
        assert_eq!(key(&r, ""), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(key(&r, "abc"), "900150983cd24fb0d6963f7d28e17f72");
        assert_ne!(key(&r, "abd"), key(&r, "abc"));
    }

    #[test]
    fn random_keys_differ_and_are_32_hex_digits() {
        let r = PartitionKeyRule::Random;
        let a = key(&r, "x");
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(a, key(&r, "x"));
    }

    #[test]
    fn path_keys_are_the_path_or_its_md5_when_too_long() {
        let r = PartitionKeyRule::Path;
        assert_eq!(r.key(b"x", "/var/log/a.log"), b"/var/log/a.log");
        let long = format!("/{}", "é".repeat(200));
        let k = r.key(b"x", &long);
        assert_eq!(k, md5_hex(long.as_bytes()));
        assert_eq!(r.key(b"x", "/".repeat(256).as_str()).len(), 256);
    }

    #[test]
    fn json_field_takes_strings_and_numbers_at_a_dotted_path() {
        let r = rule("{ json_field = \"user.id\" }");
        assert_eq!(
            key(&r, r#"{"user":{"id":"u-42","name":"x"},"id":"top"}"#),
            "u-42"
        );
        assert_eq!(key(&r, r#"{"a":[1,{"b":2}],"user":{"id":42}}"#), "42");
        assert_eq!(key(&r, r#"{"user":{"id":-7}}"#), "-7");
        assert_eq!(key(&r, r#"{"user":{"id":1.5}}"#), "1.5");
        assert_eq!(key(&r, r#"{"user":{"id":true}}"#), "true");
        assert_eq!(key(&r, r#"{"user":{"id":"\u00e9t\u00e9"}}"#), "été");
        assert_eq!(key(&r, r#"{"user":{"id":"a"},"user":{"id":"b"}}"#), "b");
    }

    #[test]
    fn json_field_falls_back_to_the_line_hash() {
        let r = rule("{ json_field = \"user.id\" }");
        for record in [
            "not json",
            "[1,2]",
            r#"{"user":{"name":"x"}}"#,
            r#"{"user":"id"}"#,
            r#"{"user":{"id":null}}"#,
            r#"{"user":{"id":""}}"#,
            r#"{"user":{"id":{"x":1}}}"#,
            r#"{"user":{"id":"u"}} trailing"#,
            r#"{"user":{"id":"u""#,
        ] {
            assert_eq!(
                key(&r, record),
                key(&PartitionKeyRule::LineHash, record),
                "{record}"
            );
        }
        let long = format!(r#"{{"user":{{"id":"{}"}}}}"#, "x".repeat(300));
        assert_eq!(
            key(&r, &long),
            String::from_utf8(md5_hex("x".repeat(300).as_bytes())).unwrap()
        );
    }

    proptest! {
        #[test]
        fn every_key_is_utf8_of_1_to_256_bytes(record in proptest::collection::vec(any::<u8>(), 0..600), path in ".{0,300}", field in "[a-z]{1,3}(\\.[a-z]{1,3}){0,2}") {
            let rules = [
                PartitionKeyRule::Random,
                PartitionKeyRule::LineHash,
                PartitionKeyRule::Path,
                PartitionKeyRule::JsonField(field.split('.').map(str::to_string).collect()),
            ];
            for r in &rules {
                let k = r.key(&record, &path);
                prop_assert!((1..=MAX_KEY_BYTES).contains(&k.len()), "{:?}: {} bytes", r, k.len());
                prop_assert!(std::str::from_utf8(&k).is_ok());
            }
        }

        #[test]
        fn json_field_finds_any_string_value(v in "\\PC{1,100}") {
            let record = serde_json::json!({"a": {"b": v.clone()}, "c": 1}).to_string();
            let r = PartitionKeyRule::JsonField(vec!["a".into(), "b".into()]);
            prop_assert_eq!(r.key(record.as_bytes(), "p"), v.as_bytes());
        }
    }

    #[test]
    fn random_keys_are_32_hex_digits_all_different_and_spread_over_the_hash_space() {
        let mut keys = RandomKeys::new(7);
        let mut seen = std::collections::HashSet::new();
        let mut quarters = [0u32; 4];
        for _ in 0..10_000 {
            let k = keys.next_key();
            assert_eq!(k.len(), 32);
            assert!(k
                .iter()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
            let digest: [u8; 16] = Md5::digest(&k).into();
            quarters[usize::from(digest[0] >> 6)] += 1;
            assert!(seen.insert(k), "a key twice");
        }
        // Each quarter of the hash space (four shards) gets about a quarter.
        assert!(
            quarters.iter().all(|q| (2_200..2_800).contains(q)),
            "{quarters:?}"
        );
        let a: Vec<_> = (0..3).map(|_| RandomKeys::new(1).next_key()).collect();
        assert!(
            a.windows(2).all(|w| w[0] == w[1]),
            "the same seed, the same keys"
        );
        assert_ne!(RandomKeys::new(1).next_key(), RandomKeys::new(2).next_key());
    }
}
