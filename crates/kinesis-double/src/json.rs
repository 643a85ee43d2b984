//! Wire shapes of the Kinesis JSON 1.1 protocol: request bodies (borrowing from the body
//! where the hot path needs it), response bodies, error bodies, opaque tokens and base64.

use std::borrow::Cow;
use std::io::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize};

use super::model::{ChildShard, ShardInfo};

/// The content type of every request and answer.
pub const CONTENT_TYPE: &str = "application/x-amz-json-1.1";

/// Prefix of the `X-Amz-Target` header; the operation name follows it.
pub const TARGET_PREFIX: &str = "Kinesis_20131202.";

#[derive(Deserialize)]
struct BorrowedStr<'a>(#[serde(borrow)] Cow<'a, str>);

/// Deserialize an optional string borrowing from the input when it has no escapes.
fn opt_cow<'de: 'a, 'a, D: Deserializer<'de>>(d: D) -> Result<Option<Cow<'a, str>>, D::Error> {
    Ok(Option::<BorrowedStr<'a>>::deserialize(d)?.map(|b| b.0))
}

/// PutRecords request (hot path: strings borrow from the body).
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PutRecordsReq<'a> {
    /// Stream name.
    #[serde(default, borrow, deserialize_with = "opt_cow")]
    pub stream_name: Option<Cow<'a, str>>,
    /// Stream ARN.
    #[serde(default, borrow, rename = "StreamARN", deserialize_with = "opt_cow")]
    pub stream_arn: Option<Cow<'a, str>>,
    /// Entries.
    #[serde(default, borrow)]
    pub records: Option<Vec<PutEntryReq<'a>>>,
}

/// One PutRecords entry; also the body of PutRecord (which adds the stream fields).
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PutEntryReq<'a> {
    /// Base64 data.
    #[serde(default, borrow, deserialize_with = "opt_cow")]
    pub data: Option<Cow<'a, str>>,
    /// Partition key.
    #[serde(default, borrow, deserialize_with = "opt_cow")]
    pub partition_key: Option<Cow<'a, str>>,
    /// Explicit hash key (decimal).
    #[serde(default, borrow, deserialize_with = "opt_cow")]
    pub explicit_hash_key: Option<Cow<'a, str>>,
}

/// PutRecord request.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PutRecordReq<'a> {
    /// Stream name.
    #[serde(default, borrow, deserialize_with = "opt_cow")]
    pub stream_name: Option<Cow<'a, str>>,
    /// Stream ARN.
    #[serde(default, borrow, rename = "StreamARN", deserialize_with = "opt_cow")]
    pub stream_arn: Option<Cow<'a, str>>,
    /// The entry.
    #[serde(flatten, borrow)]
    pub entry: PutEntryReq<'a>,
}

/// Requests that only name a stream (DescribeStreamSummary, DeleteStream).
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct StreamReq {
    /// Stream name.
    pub stream_name: Option<String>,
    /// Stream ARN.
    #[serde(rename = "StreamARN")]
    pub stream_arn: Option<String>,
}

/// DescribeStream request.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct DescribeStreamReq {
    /// Stream name.
    pub stream_name: Option<String>,
    /// Stream ARN.
    #[serde(rename = "StreamARN")]
    pub stream_arn: Option<String>,
    /// Page size (default 100).
    pub limit: Option<i64>,
    /// Start after this shard.
    pub exclusive_start_shard_id: Option<String>,
}

/// CreateStream request.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct CreateStreamReq {
    /// Stream name.
    pub stream_name: Option<String>,
    /// Shards (on-demand streams omit it and get 4).
    pub shard_count: Option<i64>,
}

/// ListStreams request.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct ListStreamsReq {
    /// Page size.
    pub limit: Option<i64>,
    /// Start after this stream.
    pub exclusive_start_stream_name: Option<String>,
}

/// ShardFilter of ListShards.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct ShardFilterReq {
    /// AFTER_SHARD_ID, AT_TRIM_HORIZON, FROM_TRIM_HORIZON, AT_LATEST, AT_TIMESTAMP,
    /// FROM_TIMESTAMP.
    #[serde(rename = "Type")]
    pub kind: Option<String>,
    /// For AFTER_SHARD_ID.
    pub shard_id: Option<String>,
}

/// ListShards request.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct ListShardsReq {
    /// Stream name (not allowed with NextToken).
    pub stream_name: Option<String>,
    /// Stream ARN (not allowed with NextToken).
    #[serde(rename = "StreamARN")]
    pub stream_arn: Option<String>,
    /// Continuation token from a previous page.
    pub next_token: Option<String>,
    /// Start after this shard (not allowed with NextToken).
    pub exclusive_start_shard_id: Option<String>,
    /// Page size, 1..=10000, default 1000.
    pub max_results: Option<i64>,
    /// Filter.
    pub shard_filter: Option<ShardFilterReq>,
    /// Not allowed with NextToken.
    pub stream_creation_timestamp: Option<f64>,
}

/// SplitShard request.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct SplitShardReq {
    /// Stream name.
    pub stream_name: Option<String>,
    /// Stream ARN.
    #[serde(rename = "StreamARN")]
    pub stream_arn: Option<String>,
    /// Shard to split.
    pub shard_to_split: Option<String>,
    /// Decimal hash key where the upper child starts.
    pub new_starting_hash_key: Option<String>,
}

/// MergeShards request.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct MergeShardsReq {
    /// Stream name.
    pub stream_name: Option<String>,
    /// Stream ARN.
    #[serde(rename = "StreamARN")]
    pub stream_arn: Option<String>,
    /// First parent.
    pub shard_to_merge: Option<String>,
    /// Second parent, adjacent to the first.
    pub adjacent_shard_to_merge: Option<String>,
}

/// GetShardIterator request.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct GetShardIteratorReq {
    /// Stream name.
    pub stream_name: Option<String>,
    /// Stream ARN.
    #[serde(rename = "StreamARN")]
    pub stream_arn: Option<String>,
    /// Shard.
    pub shard_id: Option<String>,
    /// TRIM_HORIZON, LATEST, AT_SEQUENCE_NUMBER, AFTER_SEQUENCE_NUMBER, AT_TIMESTAMP.
    pub shard_iterator_type: Option<String>,
    /// For the sequence-number types.
    pub starting_sequence_number: Option<String>,
    /// For AT_TIMESTAMP (epoch seconds).
    pub timestamp: Option<f64>,
}

/// GetRecords request.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct GetRecordsReq {
    /// Iterator from GetShardIterator or a previous GetRecords.
    pub shard_iterator: Option<String>,
    /// Max records (default and max 10000).
    pub limit: Option<i64>,
}

/// HashKeyRange.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct HashKeyRangeOut {
    /// Decimal.
    pub starting_hash_key: String,
    /// Decimal.
    pub ending_hash_key: String,
}

/// SequenceNumberRange.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct SequenceNumberRangeOut {
    /// First sequence number.
    pub starting_sequence_number: String,
    /// Set once closed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ending_sequence_number: Option<String>,
}

/// Shard.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ShardOut {
    /// Id.
    pub shard_id: String,
    /// Parent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_shard_id: Option<String>,
    /// Other parent of a merge.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adjacent_parent_shard_id: Option<String>,
    /// Range.
    pub hash_key_range: HashKeyRangeOut,
    /// Sequence range.
    pub sequence_number_range: SequenceNumberRangeOut,
}

impl From<ShardInfo> for ShardOut {
    fn from(s: ShardInfo) -> Self {
        ShardOut {
            shard_id: s.shard_id,
            parent_shard_id: s.parent_shard_id,
            adjacent_parent_shard_id: s.adjacent_parent_shard_id,
            hash_key_range: HashKeyRangeOut {
                starting_hash_key: s.starting_hash_key.to_string(),
                ending_hash_key: s.ending_hash_key.to_string(),
            },
            sequence_number_range: SequenceNumberRangeOut {
                starting_sequence_number: s.starting_sequence_number,
                ending_sequence_number: s.ending_sequence_number,
            },
        }
    }
}

/// ListShards answer.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListShardsOut {
    /// Page of shards.
    pub shards: Vec<ShardOut>,
    /// Present when more shards follow.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

/// StreamModeDetails.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct StreamModeOut {
    /// Always PROVISIONED.
    pub stream_mode: &'static str,
}

/// EnhancedMonitoring element.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct EnhancedMetricsOut {
    /// Always empty.
    pub shard_level_metrics: Vec<String>,
}

/// StreamDescriptionSummary.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct StreamSummaryOut {
    /// Name.
    pub stream_name: String,
    /// ARN.
    #[serde(rename = "StreamARN")]
    pub stream_arn: String,
    /// Always ACTIVE.
    pub stream_status: &'static str,
    /// Mode.
    pub stream_mode_details: StreamModeOut,
    /// Always 24.
    pub retention_period_hours: i32,
    /// Epoch seconds.
    pub stream_creation_timestamp: f64,
    /// Empty metrics.
    pub enhanced_monitoring: Vec<EnhancedMetricsOut>,
    /// NONE.
    pub encryption_type: &'static str,
    /// Open shards.
    pub open_shard_count: usize,
    /// Always 0.
    pub consumer_count: usize,
}

/// DescribeStreamSummary answer.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct DescribeStreamSummaryOut {
    /// The summary.
    pub stream_description_summary: StreamSummaryOut,
}

/// StreamDescription.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct StreamDescriptionOut {
    /// Name.
    pub stream_name: String,
    /// ARN.
    #[serde(rename = "StreamARN")]
    pub stream_arn: String,
    /// Always ACTIVE.
    pub stream_status: &'static str,
    /// Mode.
    pub stream_mode_details: StreamModeOut,
    /// Page of shards.
    pub shards: Vec<ShardOut>,
    /// More pages follow.
    pub has_more_shards: bool,
    /// Always 24.
    pub retention_period_hours: i32,
    /// Epoch seconds.
    pub stream_creation_timestamp: f64,
    /// Empty metrics.
    pub enhanced_monitoring: Vec<EnhancedMetricsOut>,
    /// NONE.
    pub encryption_type: &'static str,
}

/// DescribeStream answer.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct DescribeStreamOut {
    /// The description.
    pub stream_description: StreamDescriptionOut,
}

/// ListStreams answer.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListStreamsOut {
    /// Names.
    pub stream_names: Vec<String>,
    /// More pages follow.
    pub has_more_streams: bool,
}

/// PutRecord answer.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct PutRecordOut {
    /// Shard.
    pub shard_id: String,
    /// Sequence number.
    pub sequence_number: String,
    /// NONE.
    pub encryption_type: &'static str,
}

/// SplitShard / MergeShards answer: nothing; CreateStream too.
#[derive(Serialize)]
pub struct EmptyOut {}

/// GetShardIterator answer.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct GetShardIteratorOut {
    /// The iterator.
    pub shard_iterator: String,
}

/// One record of GetRecords.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct RecordOut {
    /// Sequence number.
    pub sequence_number: String,
    /// Epoch seconds.
    pub approximate_arrival_timestamp: f64,
    /// Base64 data.
    pub data: String,
    /// Partition key.
    pub partition_key: String,
}

/// ChildShard of GetRecords.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ChildShardOut {
    /// Id.
    pub shard_id: String,
    /// Parents.
    pub parent_shards: Vec<String>,
    /// Range.
    pub hash_key_range: HashKeyRangeOut,
}

impl From<ChildShard> for ChildShardOut {
    fn from(c: ChildShard) -> Self {
        ChildShardOut {
            shard_id: c.shard_id,
            parent_shards: c.parent_shards,
            hash_key_range: HashKeyRangeOut {
                starting_hash_key: c.hash_range.0.to_string(),
                ending_hash_key: c.hash_range.1.to_string(),
            },
        }
    }
}

/// GetRecords answer.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct GetRecordsOut {
    /// Records.
    pub records: Vec<RecordOut>,
    /// Absent at the end of a closed shard.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_shard_iterator: Option<String>,
    /// Always 0.
    pub millis_behind_latest: i64,
    /// At the end of a closed shard.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub child_shards: Option<Vec<ChildShardOut>>,
}

/// Serialize an answer body.
pub fn to_body<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("answer shapes always serialize")
}

/// The body of an error answer: `{"__type": code, "message": message}`.
pub fn error_body(code: &str, message: &str) -> Vec<u8> {
    #[derive(Serialize)]
    struct ErrorOut<'a> {
        #[serde(rename = "__type")]
        kind: &'a str,
        message: &'a str,
    }
    to_body(&ErrorOut {
        kind: code,
        message,
    })
}

/// Epoch seconds of a time (the JSON protocol's timestamp format).
pub fn epoch_secs(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// The time at epoch seconds `secs`.
pub fn from_epoch_secs(secs: f64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs_f64(secs.max(0.0))
}

/// Streaming writer of a PutRecords answer: entries in order, then the failed count.
pub struct PutRecordsWriter {
    buf: Vec<u8>,
    failed: usize,
    first: bool,
}

impl PutRecordsWriter {
    /// A writer expecting about `entries` entries.
    pub fn new(entries: usize) -> Self {
        let mut buf = Vec::with_capacity(64 + entries * 96);
        buf.extend_from_slice(b"{\"Records\":[");
        PutRecordsWriter {
            buf,
            failed: 0,
            first: true,
        }
    }

    fn sep(&mut self) {
        if !self.first {
            self.buf.push(b',');
        }
        self.first = false;
    }

    /// A success entry.
    pub fn ok(&mut self, seq: u64, shard_id: &str) {
        self.sep();
        self.buf.extend_from_slice(b"{\"SequenceNumber\":\"");
        push_seq(&mut self.buf, seq);
        self.buf.extend_from_slice(b"\",\"ShardId\":\"");
        self.buf.extend_from_slice(shard_id.as_bytes());
        self.buf.extend_from_slice(b"\"}");
    }

    /// A failed entry.
    pub fn err(&mut self, code: &str, message: &str) {
        self.sep();
        self.failed += 1;
        self.buf.extend_from_slice(b"{\"ErrorCode\":");
        serde_json::to_writer(&mut self.buf, code).expect("writing to a Vec cannot fail");
        self.buf.extend_from_slice(b",\"ErrorMessage\":");
        serde_json::to_writer(&mut self.buf, message).expect("writing to a Vec cannot fail");
        self.buf.push(b'}');
    }

    /// The finished body.
    pub fn finish(mut self) -> Vec<u8> {
        let _ = write!(
            self.buf,
            "],\"FailedRecordCount\":{},\"EncryptionType\":\"NONE\"}}",
            self.failed
        );
        self.buf
    }
}

/// Append the 56-digit sequence number of counter `n` (same text as `model::seq_string`).
fn push_seq(buf: &mut Vec<u8>, mut n: u64) {
    let mut digits = [b'0'; 56];
    digits[0] = b'4';
    digits[1] = b'9';
    let mut i = 56;
    while n > 0 {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    buf.extend_from_slice(&digits);
}

/// Decoded length of standard base64 text (padded or not), without decoding it.
pub fn b64_decoded_len(text: &str) -> usize {
    let b = text.as_bytes();
    let pad = b.iter().rev().take(2).take_while(|&&c| c == b'=').count();
    (b.len() - pad) * 3 / 4
}

/// Decode standard base64.
pub fn b64_decode(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    STANDARD.decode(text)
}

/// Encode standard base64.
pub fn b64_encode(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// Where a ListShards page continues: the stream, the filter and the last shard returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListCursor {
    /// Stream name.
    pub stream: String,
    /// AT_LATEST was asked for.
    pub open_only: bool,
    /// Last shard id already returned.
    pub after: String,
}

impl ListCursor {
    /// The opaque NextToken.
    pub fn encode(&self) -> String {
        let open = if self.open_only { "1" } else { "0" };
        b64_encode(format!("ls1\n{}\n{open}\n{}", self.stream, self.after).as_bytes())
    }

    /// Parse a NextToken made by [`ListCursor::encode`].
    pub fn decode(token: &str) -> Option<Self> {
        let text = String::from_utf8(b64_decode(token).ok()?).ok()?;
        let mut parts = text.split('\n');
        if parts.next()? != "ls1" {
            return None;
        }
        let stream = parts.next()?.to_owned();
        let open_only = match parts.next()? {
            "1" => true,
            "0" => false,
            _ => return None,
        };
        let after = parts.next()?.to_owned();
        parts.next().is_none().then_some(ListCursor {
            stream,
            open_only,
            after,
        })
    }
}

/// A shard iterator: stream, shard, position in the shard's records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IteratorToken {
    /// Stream name.
    pub stream: String,
    /// Shard id.
    pub shard_id: String,
    /// Index of the next record in the shard.
    pub pos: usize,
}

impl IteratorToken {
    /// The opaque ShardIterator.
    pub fn encode(&self) -> String {
        b64_encode(format!("it1\n{}\n{}\n{}", self.stream, self.shard_id, self.pos).as_bytes())
    }

    /// Parse a ShardIterator made by [`IteratorToken::encode`].
    pub fn decode(token: &str) -> Option<Self> {
        let text = String::from_utf8(b64_decode(token).ok()?).ok()?;
        let mut parts = text.split('\n');
        if parts.next()? != "it1" {
            return None;
        }
        let stream = parts.next()?.to_owned();
        let shard_id = parts.next()?.to_owned();
        let pos = parts.next()?.parse().ok()?;
        parts.next().is_none().then_some(IteratorToken {
            stream,
            shard_id,
            pos,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::seq_string;

    #[test]
    fn put_records_entries_borrow_from_the_body() {
        let body = br#"{"StreamName":"s","Records":[{"Data":"YWJj","PartitionKey":"k","ExplicitHashKey":"12"},{"Data":"","PartitionKey":"\u00e9"}]}"#;
        let req: PutRecordsReq = serde_json::from_slice(body).unwrap();
        let recs = req.records.unwrap();
        assert!(matches!(recs[0].data, Some(Cow::Borrowed("YWJj"))));
        assert!(matches!(
            recs[0].explicit_hash_key,
            Some(Cow::Borrowed("12"))
        ));
        assert_eq!(recs[1].partition_key.as_deref(), Some("é"));
        assert_eq!(recs[1].explicit_hash_key, None);
        assert_eq!(req.stream_name.as_deref(), Some("s"));
    }

    #[test]
    fn put_records_answer_is_valid_json() {
        let mut w = PutRecordsWriter::new(2);
        w.ok(7, "shardId-000000000001");
        w.err("InternalFailure", "Internal service failure.");
        let v: serde_json::Value = serde_json::from_slice(&w.finish()).unwrap();
        assert_eq!(v["FailedRecordCount"], 1);
        assert_eq!(v["Records"][0]["SequenceNumber"], seq_string(7));
        assert_eq!(v["Records"][1]["ErrorCode"], "InternalFailure");
    }

    #[test]
    fn decoded_length_without_decoding() {
        for n in 0..20 {
            let data = vec![7u8; n];
            let text = b64_encode(&data);
            assert_eq!(b64_decoded_len(&text), n);
            assert_eq!(b64_decoded_len(text.trim_end_matches('=')), n);
        }
    }

    #[test]
    fn tokens_round_trip() {
        let c = ListCursor {
            stream: "s.1".into(),
            open_only: true,
            after: "shardId-000000000003".into(),
        };
        assert_eq!(ListCursor::decode(&c.encode()), Some(c));
        let i = IteratorToken {
            stream: "s".into(),
            shard_id: "shardId-000000000000".into(),
            pos: 42,
        };
        assert_eq!(IteratorToken::decode(&i.encode()), Some(i));
        assert_eq!(ListCursor::decode("garbage"), None);
    }
}
