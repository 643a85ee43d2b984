//! One record checked against its stream's settings (stream name,
//! `streams_allowed`, partition key, size after compression, explicit hash
//! key) and built into its pipeline form.

use super::{record_cost, Live, RecordInput};
use crate::config::{Compression, StreamSettings};
use crate::error_code::ErrorCode;
use crate::ipc::{Attempt, RecordResult};
use crate::pipeline::{Origin, PartitionKey, UserRecord};
use crate::shard_map::{hash_partition_key, parse_explicit_hash_key};
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Checks one record against its stream's settings and builds its
/// pipeline form.
pub(super) fn validate(
    r: RecordInput,
    now: Instant,
    origin: &Arc<Origin>,
    entry: &StreamEntry,
    budget: u64,
    ttl: Option<Duration>,
) -> Result<UserRecord, (u64, ErrorCode, String)> {
    let id = r.id;
    let (stream, settings) = (&entry.name, &entry.settings);
    if !entry.allowed {
        return Err((
            id,
            ErrorCode::StreamNotAllowed,
            format!("stream {stream:?} is not in streams_allowed; records for it are refused"),
        ));
    }
    let pk = std::str::from_utf8(&r.partition_key).map_err(|_| {
        (
            id,
            ErrorCode::InvalidPartitionKey,
            "partition key is not valid UTF-8".to_string(),
        )
    })?;
    check_partition_key(pk).map_err(|m| (id, ErrorCode::InvalidPartitionKey, m))?;
    let how = r.compression.unwrap_or(settings.compression);
    // Uncompressed data stays a slice of the request frame until the
    // record is held past its first attempt (`UserRecord::detach`).
    let (data, detached) = match crate::compress::compress(&r.data, how, settings.compression_level)
    {
        Some(c) => (Bytes::from(c), true),
        None => (r.data, false),
    };
    // Limits apply to what is sent: the compressed size.
    let size = data.len() + r.partition_key.len();
    if size as u64 > settings.max_record_size {
        return Err((
            id,
            ErrorCode::RecordTooLarge,
            format!(
                "record is {size} bytes (data {}{} + partition key {}); max_record_size for stream {stream} is {}",
                data.len(),
                if how == Compression::None { "" } else { " after compression" },
                r.partition_key.len(),
                settings.max_record_size
            ),
        ));
    }
    let (hash, ehk) = match &r.explicit_hash_key {
        None => (hash_partition_key(pk), None),
        Some(k) => {
            let s = std::str::from_utf8(k).map_err(|_| {
                (
                    id,
                    ErrorCode::InvalidExplicitHashKey,
                    "explicit hash key is not valid UTF-8".to_string(),
                )
            })?;
            let h = parse_explicit_hash_key(s)
                .map_err(|e| (id, ErrorCode::InvalidExplicitHashKey, e.to_string()))?;
            // Normalised ("007" -> "7"): Kinesis refuses leading zeros,
            // and would fail the whole PutRecords call for it.
            (h, Some(h.to_string()))
        }
    };
    Ok(UserRecord {
        id,
        origin: origin.clone(),
        // Copied at once (inline for all but long keys): every record keeps
        // its key to its end (metrics, the aggregate's key table, the
        // entry's key), so a slice would keep the whole frame alive. The
        // explicit hash key above is a new string already.
        partition_key: PartitionKey::new_checked(&r.partition_key),
        explicit_hash_key: ehk,
        hash,
        cost: record_cost(size, budget),
        data,
        detached,
        deadline: now + entry.buffered_time,
        expiry: now + ttl.unwrap_or(entry.ttl),
        ready_since: now,
        attempts: Vec::new(),
        spool: 0,
    })
}

/// The longest partition key, in UTF-16 code units.
pub(crate) const MAX_PARTITION_KEY_UTF16: usize = 256;

/// Checks a partition key's length by the rule the service applies.
///
/// AWS documents "1 to 256 Unicode characters", but kinesalite (`.length`
/// of a JavaScript string) and kinesis-mock (`String.length` in Scala)
/// count UTF-16 code units, as AWS's own Java-based servers do in their
/// length checks. A key over the limit is refused by the service with a
/// ValidationException for the whole PutRecords call, failing every other
/// record in it, so kpld applies the stricter count: a character outside
/// the Basic Multilingual Plane (an emoji, say) counts twice.
pub(crate) fn check_partition_key(pk: &str) -> Result<(), String> {
    if pk.is_empty() {
        return Err(format!(
            "partition key is empty; it must have 1 to {MAX_PARTITION_KEY_UTF16} UTF-16 code units"
        ));
    }
    // No UTF-8 sequence gives more UTF-16 code units than it has bytes, so
    // a key of at most 256 bytes (nearly all of them) needs no count.
    if pk.len() <= MAX_PARTITION_KEY_UTF16 {
        return Ok(());
    }
    let units = pk.encode_utf16().count();
    if units > MAX_PARTITION_KEY_UTF16 {
        let chars = pk.chars().count();
        return Err(format!(
            "partition key has {units} UTF-16 code units ({chars} characters); at most \
             {MAX_PARTITION_KEY_UTF16} are allowed (Kinesis counts UTF-16 code units: a \
             character outside the Basic Multilingual Plane counts as 2)"
        ));
    }
    Ok(())
}

pub(crate) fn failure(
    id: u64,
    code: ErrorCode,
    message: String,
    attempts: Vec<Attempt>,
) -> RecordResult {
    RecordResult {
        id,
        success: false,
        attempts,
        error_code: code.as_str().to_string(),
        error_message: message,
        ..Default::default()
    }
}

fn valid_stream_name(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

/// A stream's name, permission and settings, looked up once per run of
/// records for it.
pub(super) struct StreamEntry {
    pub(super) name: Arc<str>,
    allowed: bool,
    settings: Arc<StreamSettings>,
    buffered_time: Duration,
    ttl: Duration,
}

/// The last stream name seen in a request, checked: records of one request
/// nearly always share a stream.
#[derive(Default)]
pub(super) struct StreamCache {
    name: Option<Bytes>,
    entry: Option<StreamEntry>,
}

impl StreamCache {
    pub(super) fn lookup(
        &mut self,
        stream: &Bytes,
        live: &Live,
    ) -> Result<&StreamEntry, (ErrorCode, String)> {
        if self.name.as_deref() != Some(&stream[..]) {
            self.name = Some(stream.clone());
            self.entry = std::str::from_utf8(stream)
                .ok()
                .filter(|s| valid_stream_name(s))
                .map(|s| {
                    let settings = live.settings_for(s).clone();
                    StreamEntry {
                        name: Arc::from(s),
                        allowed: live.allowed(s),
                        buffered_time: settings.record_max_buffered_time(),
                        ttl: settings.record_ttl(),
                        settings,
                    }
                });
        }
        self.entry.as_ref().ok_or_else(|| {
            (
                ErrorCode::InvalidStreamName,
                format!(
                    "stream name {:?} is not valid: 1 to 128 characters of a-z, A-Z, 0-9, '_', '-', '.'",
                    String::from_utf8_lossy(&stream[..stream.len().min(200)])
                ),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::check_partition_key;

    #[test]
    fn partition_key_of_256_code_units_is_accepted() {
        assert_eq!(check_partition_key(&"k".repeat(256)), Ok(()));
        // Two bytes each in UTF-8, one code unit each in UTF-16.
        assert_eq!(check_partition_key(&"\u{e9}".repeat(256)), Ok(()));
        // 128 characters outside the BMP: 256 code units.
        assert_eq!(check_partition_key(&"\u{1F511}".repeat(128)), Ok(()));
    }

    #[test]
    fn partition_key_over_256_code_units_is_refused_with_both_counts() {
        let e = check_partition_key(&"k".repeat(257)).unwrap_err();
        assert!(e.contains("257 UTF-16 code units (257 characters)"), "{e}");
        // 200 characters pass a count of characters but are 400 code units:
        // the service refuses them.
        let e = check_partition_key(&"\u{1F511}".repeat(200)).unwrap_err();
        assert!(e.contains("400 UTF-16 code units (200 characters)"), "{e}");
        assert!(e.contains("at most 256"), "{e}");
        let e = check_partition_key(&format!("{}\u{1F511}", "k".repeat(255))).unwrap_err();
        assert!(e.contains("257 UTF-16 code units (256 characters)"), "{e}");
    }

    #[test]
    fn empty_partition_key_is_refused() {
        let e = check_partition_key("").unwrap_err();
        assert!(e.contains("empty"), "{e}");
    }
}
