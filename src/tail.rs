//! `kpld tail`: reads a stream back and prints one line per user record.
//!
//! "Did my records arrive?" is the first question of every user; the KPL
//! leaves it to the KCL. Every shard is read, closed parents before their
//! children (the order a consumer sees), KPL aggregates are taken apart
//! (their MD5 checked: a record whose digest does not match is shown whole,
//! as the KCL does; an aggregate with a user record whose hash key is outside
//! the shard's range is skipped whole and counted, as the KCL drops it: what
//! is printed is what a KCL consumer reads), and data that kpld compressed
//! (gzip, zlib) is
//! decompressed when it decompresses cleanly. Pure parts first; the reading
//! loop at the end goes through [`SdkReader`], the SDK seam.

use crate::aggregate::MAGIC;
use crate::kinesis::{ApiError, ReadFrom, ReadRecord, SdkReader, ShardInfo};
use crate::kpl_proto::AggregatedRecord;
use md5::{Digest, Md5};
use prost::Message;
use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::time::Duration;

/// One user record as `kpld tail` prints it.
#[derive(Debug, Clone, PartialEq)]
pub struct TailRecord {
    pub shard_id: String,
    pub sequence_number: String,
    /// Its place in its aggregate (0 for a record that is not aggregated).
    pub sub_sequence_number: u64,
    pub partition_key: String,
    pub explicit_hash_key: Option<String>,
    pub data: Vec<u8>,
    /// Seconds since the epoch.
    pub approximate_arrival: Option<f64>,
}

/// Parses `--from`: `trim-horizon`, `latest` or `at-timestamp:RFC3339`.
pub fn parse_from(s: &str) -> Result<ReadFrom, String> {
    match s {
        "trim-horizon" => Ok(ReadFrom::TrimHorizon),
        "latest" => Ok(ReadFrom::Latest),
        _ => {
            let Some(ts) = s.strip_prefix("at-timestamp:") else {
                return Err(format!(
                    "--from {s:?}: expected trim-horizon, latest or at-timestamp:RFC3339 \
                     (e.g. at-timestamp:2026-12-03T10:00:00Z)"
                ));
            };
            aws_smithy_types::DateTime::from_str(ts, aws_smithy_types::date_time::Format::DateTime)
                .map(|t| ReadFrom::AtTimestamp(t.as_secs_f64()))
                .map_err(|e| format!("--from {s:?}: {ts:?} is not an RFC 3339 time: {e}"))
        }
    }
}

/// The shards in reading order: every shard after its parents (those that
/// are still listed), otherwise in shard id order.
pub fn read_order(shards: &[ShardInfo]) -> Vec<ShardInfo> {
    let ids: HashSet<&str> = shards.iter().map(|s| s.id.as_str()).collect();
    let mut sorted: Vec<&ShardInfo> = shards.iter().collect();
    sorted.sort_by(|a, b| a.id.cmp(&b.id));
    let mut done: HashSet<String> = HashSet::new();
    let mut out = Vec::with_capacity(shards.len());
    while out.len() < sorted.len() {
        let before = out.len();
        for s in &sorted {
            if done.contains(&s.id) {
                continue;
            }
            let ready = [&s.parent, &s.adjacent_parent]
                .into_iter()
                .flatten()
                .all(|p| !ids.contains(p.as_str()) || done.contains(p));
            if ready {
                done.insert(s.id.clone());
                out.push((*s).clone());
            }
        }
        if out.len() == before {
            // A cycle cannot happen in Kinesis; never loop on a bad answer.
            out.extend(
                sorted
                    .iter()
                    .filter(|s| !done.contains(&s.id))
                    .map(|s| (*s).clone()),
            );
        }
    }
    out
}

/// Takes one Kinesis record apart into the user records a KCL consumer of
/// the shard reads: none of an aggregate with a user record whose hash key
/// (explicit, else the MD5 of the partition key) is outside `range` (the
/// KCL drops such an aggregate whole). Returns them and how many user
/// records were dropped.
pub fn deaggregate(
    shard_id: &str,
    range: Option<(u128, u128)>,
    r: &ReadRecord,
) -> (Vec<TailRecord>, usize) {
    let whole = || {
        vec![TailRecord {
            shard_id: shard_id.to_string(),
            sequence_number: r.sequence_number.clone(),
            sub_sequence_number: 0,
            partition_key: r.partition_key.clone(),
            explicit_hash_key: None,
            data: r.data.clone(),
            approximate_arrival: r.approximate_arrival,
        }]
    };
    let d = &r.data;
    if d.len() < MAGIC.len() + 16 || d[..MAGIC.len()] != MAGIC {
        return (whole(), 0);
    }
    let (body, digest) = d[MAGIC.len()..].split_at(d.len() - MAGIC.len() - 16);
    if Md5::digest(body).as_slice() != digest {
        return (whole(), 0);
    }
    let Ok(agg) = AggregatedRecord::decode(body) else {
        return (whole(), 0);
    };
    let all: Vec<TailRecord> = agg
        .records
        .iter()
        .enumerate()
        .map(|(i, u)| TailRecord {
            shard_id: shard_id.to_string(),
            sequence_number: r.sequence_number.clone(),
            sub_sequence_number: i as u64,
            partition_key: agg
                .partition_key_table
                .get(u.partition_key_index as usize)
                .cloned()
                .unwrap_or_default(),
            explicit_hash_key: u
                .explicit_hash_key_index
                .and_then(|i| agg.explicit_hash_key_table.get(i as usize).cloned()),
            data: u.data.to_vec(),
            approximate_arrival: r.approximate_arrival,
        })
        .collect();
    let Some((first, last)) = range else {
        return (all, 0);
    };
    let readable = all.iter().all(|u| {
        let h = match &u.explicit_hash_key {
            Some(k) => k.parse::<u128>().ok(),
            None => Some(crate::shard_map::hash_partition_key(&u.partition_key)),
        };
        h.is_some_and(|h| first <= h && h <= last)
    });
    if readable {
        (all, 0)
    } else {
        let n = all.len();
        (Vec::new(), n)
    }
}

/// Undoes kpld's `compression`: gzip (`1f 8b`) or zlib (a valid zlib
/// header) data that decompresses completely is shown decompressed;
/// anything else as it is.
pub fn decompress(data: Vec<u8>) -> Vec<u8> {
    let gzip = data.len() >= 18 && data[0] == 0x1f && data[1] == 0x8b;
    let zlib = data.len() >= 6
        && data[0] & 0x0f == 8
        && data[0] >> 4 <= 7
        && (u16::from(data[0]) << 8 | u16::from(data[1])) % 31 == 0;
    let mut out = Vec::new();
    let ok = if gzip {
        flate2::read::GzDecoder::new(&data[..])
            .read_to_end(&mut out)
            .is_ok()
    } else if zlib {
        let mut z = flate2::read::ZlibDecoder::new(&data[..]);
        z.read_to_end(&mut out).is_ok() && z.total_in() == data.len() as u64
    } else {
        false
    };
    if ok {
        out
    } else {
        data
    }
}

/// The line printed for one record: its data as text (line breaks shown as
/// `\n` and `\r`, so one record stays one line), or `base64:` and its
/// base64 when it is not UTF-8; with `json`, one JSON object.
pub fn format_record(stream: &str, r: &TailRecord, json: bool) -> String {
    use base64::Engine as _;
    let b64 = || base64::engine::general_purpose::STANDARD.encode(&r.data);
    let text = std::str::from_utf8(&r.data).ok();
    if !json {
        return match text {
            Some(t) => t.replace('\r', "\\r").replace('\n', "\\n"),
            None => format!("base64:{}", b64()),
        };
    }
    let mut o = serde_json::Map::new();
    o.insert("stream".into(), stream.into());
    o.insert("shard_id".into(), r.shard_id.clone().into());
    o.insert("sequence_number".into(), r.sequence_number.clone().into());
    o.insert("sub_sequence_number".into(), r.sub_sequence_number.into());
    o.insert("partition_key".into(), r.partition_key.clone().into());
    if let Some(k) = &r.explicit_hash_key {
        o.insert("explicit_hash_key".into(), k.clone().into());
    }
    match text {
        Some(t) => o.insert("data".into(), t.into()),
        None => o.insert("data_base64".into(), b64().into()),
    };
    if let Some(t) = r.approximate_arrival {
        let dt = aws_smithy_types::DateTime::from_secs_f64(t);
        let s = dt
            .fmt(aws_smithy_types::date_time::Format::DateTime)
            .unwrap_or_else(|_| t.to_string());
        o.insert("approximate_arrival".into(), s.into());
    }
    serde_json::Value::Object(o).to_string()
}

/// What `kpld tail` was asked.
#[derive(Debug, Clone)]
pub struct TailOptions {
    pub stream: String,
    pub from: ReadFrom,
    pub json: bool,
    pub count: Option<u64>,
    pub follow: bool,
}

/// Why `kpld tail` stopped early.
#[derive(Debug, thiserror::Error)]
pub enum TailError {
    #[error("{what}: {err}")]
    Kinesis { what: String, err: ApiError },
    #[error("writing the output: {0}")]
    Output(#[from] std::io::Error),
}

const POLL_IDLE: Duration = Duration::from_millis(500);

/// Reads `opts.stream` and writes a line per user record to `out`. Without
/// `follow` it stops once every shard has been read to its end (closed) or
/// to the present (open); `count` stops it after that many records.
pub async fn run(
    reader: &SdkReader,
    opts: &TailOptions,
    out: &mut dyn Write,
) -> Result<u64, TailError> {
    let mut r = Reading {
        reader,
        opts,
        iters: HashMap::new(),
        ranges: HashMap::new(),
        printed: 0,
        skipped: 0,
        out,
    };
    let result = r.tail_loop().await;
    if r.skipped > 0 {
        eprintln!(
            "kpld tail: skipped {} user records in aggregates that hold a record outside \
             their shard's hash key range, as the KCL drops such an aggregate (copies left by a \
             reshard: kpld sends their records again to the right shards)",
            r.skipped
        );
    }
    result.map(|()| r.printed)
}

/// The state of one `kpld tail`.
struct Reading<'a, 'w> {
    reader: &'a SdkReader,
    opts: &'a TailOptions,
    /// Shard id -> its iterator (None: closed and read to its end).
    iters: HashMap<String, Option<String>>,
    ranges: HashMap<String, Option<(u128, u128)>>,
    printed: u64,
    skipped: usize,
    out: &'a mut (dyn Write + 'w),
}

impl Reading<'_, '_> {
    async fn tail_loop(&mut self) -> Result<(), TailError> {
        let kinesis = |what: String| move |err: ApiError| TailError::Kinesis { what, err };
        let (reader, opts) = (self.reader, self.opts);
        loop {
            let shards = reader
                .shards(&opts.stream)
                .await
                .map_err(kinesis(format!("listing the shards of {}", opts.stream)))?;
            let mut new_shards = false;
            for s in read_order(&shards) {
                if self.iters.contains_key(&s.id) {
                    continue;
                }
                new_shards = true;
                // A child of a shard read here starts where its parent ended:
                // at its beginning, whatever --from says.
                let parent_read = [&s.parent, &s.adjacent_parent]
                    .into_iter()
                    .flatten()
                    .any(|p| self.iters.contains_key(p));
                let from = if parent_read {
                    &ReadFrom::TrimHorizon
                } else {
                    &opts.from
                };
                let it = reader
                    .iterator(&opts.stream, &s.id, from)
                    .await
                    .map_err(kinesis(format!("GetShardIterator on {}", s.id)))?;
                self.iters.insert(s.id.clone(), it);
                self.ranges.insert(s.id.clone(), s.range);
                // Parents before children: read this one to the present first.
                if !self.read_to_present(&s.id).await? {
                    return Ok(());
                }
            }
            if !opts.follow {
                return Ok(());
            }
            // Following: poll every open shard, and look for new ones (a
            // reshard closes shards and lists their children).
            let mut closed_one = false;
            for id in shards.iter().map(|s| s.id.clone()) {
                if matches!(self.iters.get(&id), Some(Some(_))) {
                    if self.once(&id).await?.is_none() {
                        return Ok(());
                    }
                    closed_one |= matches!(self.iters.get(&id), Some(None));
                }
            }
            if !closed_one && !new_shards {
                tokio::time::sleep(POLL_IDLE).await;
            }
        }
    }

    /// Reads one shard until it is caught up (no records and nothing
    /// behind) or closed. False when `count` was reached.
    async fn read_to_present(&mut self, shard: &str) -> Result<bool, TailError> {
        loop {
            match self.once(shard).await? {
                None => return Ok(false),
                Some(caught_up) if caught_up || matches!(self.iters.get(shard), Some(None)) => {
                    return Ok(true)
                }
                Some(_) => {}
            }
        }
    }

    /// One GetRecords on `shard`. `None` when `count` was reached; otherwise
    /// whether the shard is caught up.
    async fn once(&mut self, shard: &str) -> Result<Option<bool>, TailError> {
        let Some(Some(it)) = self.iters.get(shard).cloned() else {
            return Ok(Some(true));
        };
        let batch = match self.reader.records(&it).await {
            Ok(b) => b,
            Err(e) if e.code.as_str() == "ProvisionedThroughputExceededException" => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                return Ok(Some(false));
            }
            Err(err) => {
                return Err(TailError::Kinesis {
                    what: format!("GetRecords on {shard}"),
                    err,
                })
            }
        };
        let range = self.ranges.get(shard).copied().flatten();
        let empty = batch.records.is_empty();
        for r in &batch.records {
            let (users, outside) = deaggregate(shard, range, r);
            self.skipped += outside;
            for u in users {
                let u = TailRecord {
                    data: decompress(u.data),
                    ..u
                };
                writeln!(
                    self.out,
                    "{}",
                    format_record(&self.opts.stream, &u, self.opts.json)
                )?;
                self.printed += 1;
                if self.opts.count.is_some_and(|n| self.printed >= n) {
                    self.out.flush()?;
                    return Ok(None);
                }
            }
        }
        self.out.flush()?;
        let caught_up = empty && batch.millis_behind_latest.unwrap_or(0) == 0;
        self.iters.insert(shard.to_string(), batch.next);
        Ok(Some(caught_up))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::encode_aggregate;

    fn shard(id: &str, parent: Option<&str>, adjacent: Option<&str>) -> ShardInfo {
        ShardInfo {
            id: id.into(),
            parent: parent.map(Into::into),
            adjacent_parent: adjacent.map(Into::into),
            range: None,
        }
    }

    fn read(data: Vec<u8>) -> ReadRecord {
        ReadRecord {
            sequence_number: "49".into(),
            partition_key: "outer".into(),
            data,
            approximate_arrival: Some(1_764_756_000.5),
        }
    }

    #[test]
    fn children_come_after_both_parents_whatever_their_ids() {
        let shards = vec![
            shard("a-child-of-merge", Some("z-left"), Some("b-right")),
            shard("z-left", None, None),
            shard("b-right", Some("y-gone"), None),
        ];
        let ids: Vec<_> = read_order(&shards).into_iter().map(|s| s.id).collect();
        assert_eq!(ids, ["b-right", "z-left", "a-child-of-merge"]);
    }

    #[test]
    fn an_aggregate_is_taken_apart_with_keys_and_sub_sequence_numbers() {
        let agg = encode_aggregate(&[
            ("k1", None, b"one"),
            ("k2", Some("12345"), b"two"),
            ("k1", None, b"three"),
        ]);
        let (got, outside) = deaggregate("shardId-1", None, &read(agg));
        assert_eq!(outside, 0);
        let seen: Vec<_> = got
            .iter()
            .map(|u| {
                (
                    u.sub_sequence_number,
                    u.partition_key.as_str(),
                    u.explicit_hash_key.as_deref(),
                    u.data.as_slice(),
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                (0, "k1", None, &b"one"[..]),
                (1, "k2", Some("12345"), &b"two"[..]),
                (2, "k1", None, &b"three"[..]),
            ]
        );
    }

    #[test]
    fn an_aggregate_with_a_record_outside_the_shard_is_dropped_whole_as_the_kcl_does() {
        use crate::shard_map::hash_partition_key;
        let (a, b) = ("alpha", "beta");
        let (ha, hb) = (hash_partition_key(a), hash_partition_key(b));
        let agg = encode_aggregate(&[(a, None, b"a"), (b, None, b"b"), (b, Some("7"), b"c")]);
        let (got, dropped) = deaggregate("s", Some((ha, ha)), &read(agg.clone()));
        assert_eq!((got.len(), dropped), (0, 3));
        // Both keys' hashes are far above 7, the third record's explicit hash key.
        let (got, dropped) = deaggregate("s", Some((ha.min(hb), ha.max(hb))), &read(agg.clone()));
        assert_eq!((got.len(), dropped), (0, 3));
        let (got, dropped) = deaggregate("s", Some((0, ha.max(hb))), &read(agg));
        assert_eq!((got.len(), dropped), (3, 0));
    }

    #[test]
    fn a_bad_digest_or_no_magic_shows_the_record_whole() {
        let mut agg = encode_aggregate(&[("k1", None, b"one")]);
        let last = agg.len() - 1;
        agg[last] ^= 1;
        let (got, _) = deaggregate("s", None, &read(agg.clone()));
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].data, agg);
        assert_eq!(got[0].partition_key, "outer");
        let (plain, _) = deaggregate("s", Some((0, 0)), &read(b"just text".to_vec()));
        assert_eq!(plain[0].data, b"just text");
    }

    #[test]
    fn what_kpld_compressed_is_shown_decompressed_and_other_data_as_is() {
        use crate::compress::compress;
        use crate::config::Compression;
        let text = b"{\"level\":\"info\",\"msg\":\"hello\"}".repeat(5);
        for how in [Compression::Gzip, Compression::Zlib] {
            let c = compress(&text, how, 6).unwrap();
            assert_ne!(c, text);
            assert_eq!(decompress(c), text, "{how:?}");
        }
        // Starts like a zlib header ("x^" is 0x78 0x5e: a valid one) but is text.
        for raw in [
            &b"x^ not compressed"[..],
            b"",
            b"\x1f\x8b short",
            &[0xff, 0x00, 0x01],
        ] {
            assert_eq!(decompress(raw.to_vec()), raw);
        }
    }

    #[test]
    fn lines_keep_one_record_per_line_and_json_names_every_field() {
        let r = TailRecord {
            shard_id: "shardId-000000000001".into(),
            sequence_number: "4960".into(),
            sub_sequence_number: 2,
            partition_key: "user-7".into(),
            explicit_hash_key: None,
            data: b"line one\nline two".to_vec(),
            approximate_arrival: Some(1_764_756_000.0),
        };
        assert_eq!(format_record("s", &r, false), "line one\\nline two");
        let v: serde_json::Value = serde_json::from_str(&format_record("s", &r, true)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "stream": "s", "shard_id": "shardId-000000000001", "sequence_number": "4960",
                "sub_sequence_number": 2, "partition_key": "user-7",
                "data": "line one\nline two", "approximate_arrival": "2025-12-03T10:00:00Z",
            })
        );
        let bin = TailRecord {
            data: vec![0xff, 0xfe, 0x00],
            explicit_hash_key: Some("42".into()),
            ..r
        };
        assert_eq!(format_record("s", &bin, false), "base64://4A");
        let v: serde_json::Value = serde_json::from_str(&format_record("s", &bin, true)).unwrap();
        assert_eq!(v["data_base64"], "//4A");
        assert_eq!(v["explicit_hash_key"], "42");
        assert!(v.get("data").is_none());
    }

    #[test]
    fn from_accepts_the_three_forms_and_names_what_is_wrong() {
        assert_eq!(parse_from("trim-horizon"), Ok(ReadFrom::TrimHorizon));
        assert_eq!(parse_from("latest"), Ok(ReadFrom::Latest));
        assert_eq!(
            parse_from("at-timestamp:2025-12-03T10:00:00Z"),
            Ok(ReadFrom::AtTimestamp(1_764_756_000.0))
        );
        let e = parse_from("at-timestamp:yesterday").unwrap_err();
        assert!(e.contains("RFC 3339"), "{e}");
        let e = parse_from("beginning").unwrap_err();
        assert!(e.contains("trim-horizon, latest or at-timestamp"), "{e}");
    }
}
