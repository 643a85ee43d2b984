//! The Kinesis operations: parse a request body, validate it like the service, apply it to
//! the model, and write the answer body. Synchronous and transport-free; entry-level faults
//! are drawn here, request-level ones in the server.

use std::time::SystemTime;

use md5::{Digest, Md5};
use serde::de::DeserializeOwned;

use super::faults::EntryFault;
use super::json::{self, IteratorToken, ListCursor, PutEntryReq, PutRecordsWriter};
use super::model::{parse_seq, ApiError, EntryIn, IteratorStart, Outcome, Payload};
use super::state::{CounterCells, Shared};

/// Operations that put records (the default fault scope).
pub fn is_put(op: &str) -> bool {
    op == "PutRecords" || op == "PutRecord"
}

/// Run operation `op` on `body`. `request` is the request's number (for the log).
pub fn dispatch(sh: &Shared, op: &str, body: &[u8], request: u64) -> Result<Vec<u8>, ApiError> {
    if let Some(shards) = sh.auto_create_shards {
        auto_create(sh, op, body, shards)?;
    }
    match op {
        "PutRecords" => put_records(sh, body, request),
        "PutRecord" => put_record(sh, body, request),
        "ListShards" => list_shards(sh, body),
        "DescribeStreamSummary" => describe_stream_summary(sh, body),
        "DescribeStream" => describe_stream(sh, body),
        "CreateStream" => create_stream(sh, body),
        "DeleteStream" => delete_stream(sh, body),
        "ListStreams" => list_streams(sh, body),
        "SplitShard" => split_shard(sh, body),
        "MergeShards" => merge_shards(sh, body),
        "GetShardIterator" => get_shard_iterator(sh, body),
        "GetRecords" => get_records(sh, body),
        _ => Err(ApiError::new(
            "UnknownOperationException",
            format!("Operation {op} is not supported by this fake Kinesis."),
        )),
    }
}

/// Creates the stream a request names if it does not exist (and the operation is one
/// that uses a stream rather than creating or deleting it).
fn auto_create(sh: &Shared, op: &str, body: &[u8], shards: usize) -> Result<(), ApiError> {
    #[derive(serde::Deserialize)]
    struct Named {
        #[serde(rename = "StreamName")]
        stream_name: Option<String>,
    }
    let uses_stream = matches!(
        op,
        "ListShards"
            | "DescribeStream"
            | "DescribeStreamSummary"
            | "PutRecord"
            | "PutRecords"
            | "GetShardIterator"
    );
    if !uses_stream {
        return Ok(());
    }
    let Some(name) = parse::<Named>(body)?.stream_name else {
        return Ok(());
    };
    let mut model = sh.model();
    if model.stream(&name).is_err() {
        model.create_stream(&name, shards, SystemTime::now())?;
    }
    Ok(())
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(serialization)
}

fn serialization(e: serde_json::Error) -> ApiError {
    ApiError::new(
        "SerializationException",
        format!("Malformed request body: {e}"),
    )
}

fn required<T>(v: Option<T>, field: &str) -> Result<T, ApiError> {
    v.ok_or_else(|| {
        ApiError::validation(format!(
            "1 validation error detected: Value null at '{field}' failed to satisfy constraint: \
             Member must not be null"
        ))
    })
}

fn int_in_range(v: Option<i64>, default: i64, max: i64, field: &str) -> Result<usize, ApiError> {
    let v = v.unwrap_or(default);
    if v < 1 {
        return Err(ApiError::validation(format!(
            "1 validation error detected: Value '{v}' at '{field}' failed to satisfy constraint: \
             Member must have value greater than or equal to 1"
        )));
    }
    if v > max {
        return Err(ApiError::validation(format!(
            "1 validation error detected: Value '{v}' at '{field}' failed to satisfy constraint: \
             Member must have value less than or equal to {max}"
        )));
    }
    Ok(v as usize)
}

fn valid_hash_key_text(s: &str) -> bool {
    // The service's pattern: 0|([1-9]\d{0,38})
    s == "0"
        || (!s.is_empty()
            && s.len() <= 39
            && s.as_bytes()[0] != b'0'
            && s.bytes().all(|b| b.is_ascii_digit()))
}

/// Where an entry sits in its request, for error messages; formatted only on error.
#[derive(Clone, Copy)]
enum Field {
    /// Entry `n` (1-based) of PutRecords: `records.n.member.`.
    Entry(usize),
    /// The body of PutRecord: no prefix.
    Single,
}

impl std::fmt::Display for Field {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Field::Entry(n) => write!(f, "records.{n}.member."),
            Field::Single => Ok(()),
        }
    }
}

/// Validate one entry and prepare it for the model (`keep`: decode the data for the log).
fn prepare_entry(
    sh: &Shared,
    r: &PutEntryReq<'_>,
    field: Field,
    keep: bool,
) -> Result<EntryIn, ApiError> {
    let Some(pk) = r.partition_key.as_deref() else {
        return required(None, &format!("{field}partitionKey"));
    };
    if pk.is_empty() {
        return Err(ApiError::validation(format!(
            "1 validation error detected: Value at '{field}partitionKey' failed to satisfy \
             constraint: Member must have length greater than or equal to 1"
        )));
    }
    // Kinesis (and kinesalite, kinesis-mock) count UTF-16 code units.
    if pk.len() > 256 && pk.encode_utf16().count() > 256 {
        return Err(ApiError::validation(format!(
            "1 validation error detected: Value at '{field}partitionKey' failed to satisfy \
             constraint: Member must have length less than or equal to 256"
        )));
    }
    let Some(data) = r.data.as_deref() else {
        return required(None, &format!("{field}data"));
    };
    let bytes = json::b64_decoded_len(data) + pk.len();
    if bytes > sh.limits.max_record_bytes {
        return Err(ApiError::validation(format!(
            "1 validation error detected: Value at '{field}data' failed to satisfy constraint: \
             Member must have length less than or equal to {}",
            sh.limits.max_record_bytes
        )));
    }
    let hash = match r.explicit_hash_key.as_deref() {
        Some(ehk) => {
            if !valid_hash_key_text(ehk) {
                return Err(ApiError::validation(format!(
                    "1 validation error detected: Value '{ehk}' at '{field}explicitHashKey' \
                     failed to satisfy constraint: Member must satisfy regular expression \
                     pattern: 0|([1-9]\\d{{0,38}})"
                )));
            }
            ehk.parse::<u128>().map_err(|_| {
                ApiError::invalid_argument(format!(
                    "Invalid ExplicitHashKey. ExplicitHashKey must be in the range: \
                     [0, 2^128-1]. Specified value was {ehk}"
                ))
            })?
        }
        None => u128::from_be_bytes(Md5::digest(pk.as_bytes()).into()),
    };
    let payload = if keep {
        let decoded = json::b64_decode(data).map_err(|e| {
            ApiError::new(
                "SerializationException",
                format!("Data of {field}data is not valid base64: {e}"),
            )
        })?;
        Some(Payload {
            partition_key: pk.to_owned(),
            explicit_hash_key: r.explicit_hash_key.as_deref().map(str::to_owned),
            data: decoded.into(),
        })
    } else {
        None
    };
    Ok(EntryIn {
        hash,
        bytes: bytes as u64,
        fault: EntryFault::None,
        payload,
    })
}

fn throttle_message(shard: &str, stream: &str, account: &str) -> String {
    format!("Rate exceeded for shard {shard} in stream {stream} under account {account}.")
}

const INTERNAL_MESSAGE: &str = "Internal service failure.";

/// Per-request tallies, added to the shared counters once.
#[derive(Default)]
struct Tally {
    accepted: u64,
    bytes: u64,
    throttled: u64,
    internal: u64,
}

impl Tally {
    fn count(&mut self, o: &Outcome, e: &EntryIn) {
        match o {
            Outcome::Accepted { .. } => {
                self.accepted += 1;
                self.bytes += e.bytes;
            }
            Outcome::Throttled { .. } => self.throttled += 1,
            Outcome::InternalFailure => self.internal += 1,
        }
    }

    fn publish(&self, c: &CounterCells) {
        CounterCells::add(&c.entries_accepted, self.accepted);
        CounterCells::add(&c.bytes_accepted, self.bytes);
        CounterCells::add(&c.entries_throttled, self.throttled);
        CounterCells::add(&c.internal_failures, self.internal);
    }
}

/// Draws the entries' faults; `keys` are their partition keys, in order
/// (for `throttle_key_prefix`).
fn draw_entry_faults<'a>(
    sh: &Shared,
    entries: &mut [EntryIn],
    keys: impl Iterator<Item = Option<&'a str>>,
) {
    let mut faults = Vec::new();
    let prefix = {
        let mut dice = sh.dice();
        dice.entries(entries.len(), &mut faults);
        dice.plan().throttle_key_prefix.clone()
    };
    for (e, f) in entries.iter_mut().zip(faults) {
        e.fault = f;
    }
    if let Some(p) = prefix {
        for (e, k) in entries.iter_mut().zip(keys) {
            if k.is_some_and(|k| k.starts_with(&p)) {
                e.fault = EntryFault::Throttle;
            }
        }
    }
}

fn put_records(sh: &Shared, body: &[u8], request: u64) -> Result<Vec<u8>, ApiError> {
    let req: json::PutRecordsReq<'_> = serde_json::from_slice(body).map_err(serialization)?;
    let records = required(req.records.as_ref(), "records")?;
    let n = records.len();
    if n == 0 {
        return Err(ApiError::validation(
            "1 validation error detected: Value at 'records' failed to satisfy constraint: \
             Member must have length greater than or equal to 1",
        ));
    }
    if n > sh.limits.max_entries {
        return Err(ApiError::validation(format!(
            "1 validation error detected: Value at 'records' failed to satisfy constraint: \
             Member must have length less than or equal to {}",
            sh.limits.max_entries
        )));
    }
    let keep = !sh.count_only;
    let mut entries = Vec::with_capacity(n);
    let mut total = 0usize;
    for (i, r) in records.iter().enumerate() {
        let e = prepare_entry(sh, r, Field::Entry(i + 1), keep)?;
        total += e.bytes as usize;
        entries.push(e);
    }
    if total > sh.limits.max_request_bytes {
        return Err(ApiError::invalid_argument(format!(
            "Records size exceeds {} MB limit",
            sh.limits.max_request_bytes / (1024 * 1024)
        )));
    }
    draw_entry_faults(
        sh,
        &mut entries,
        records.iter().map(|r| r.partition_key.as_deref()),
    );
    let now = sh.now();
    let time = SystemTime::now();
    let mut outcomes = Vec::with_capacity(n);
    let mut tally = Tally::default();
    let mut w = PutRecordsWriter::new(n);
    {
        let mut model = sh.model();
        let name = model.resolve(req.stream_name.as_deref(), req.stream_arn.as_deref())?;
        let account = model.account().to_owned();
        let stream = model.put(name, &mut entries, now, time, request, &mut outcomes)?;
        for (o, e) in outcomes.iter().zip(&entries) {
            tally.count(o, e);
            match *o {
                Outcome::Accepted { shard, seq } => w.ok(seq, stream.shard_id(shard)),
                Outcome::Throttled { shard } => w.err(
                    "ProvisionedThroughputExceededException",
                    &throttle_message(stream.shard_id(shard), name, &account),
                ),
                Outcome::InternalFailure => w.err("InternalFailure", INTERNAL_MESSAGE),
            }
        }
    }
    tally.publish(&sh.counters);
    Ok(w.finish())
}

fn put_record(sh: &Shared, body: &[u8], request: u64) -> Result<Vec<u8>, ApiError> {
    let req: json::PutRecordReq<'_> = serde_json::from_slice(body).map_err(serialization)?;
    let mut entries = [prepare_entry(
        sh,
        &req.entry,
        Field::Single,
        !sh.count_only,
    )?];
    draw_entry_faults(
        sh,
        &mut entries,
        std::iter::once(req.entry.partition_key.as_deref()),
    );
    let now = sh.now();
    let time = SystemTime::now();
    let mut outcomes = Vec::with_capacity(1);
    let mut tally = Tally::default();
    let answer = {
        let mut model = sh.model();
        let name = model.resolve(req.stream_name.as_deref(), req.stream_arn.as_deref())?;
        let account = model.account().to_owned();
        let stream = model.put(name, &mut entries, now, time, request, &mut outcomes)?;
        tally.count(&outcomes[0], &entries[0]);
        match outcomes[0] {
            Outcome::Accepted { shard, seq } => Ok(json::to_body(&json::PutRecordOut {
                shard_id: stream.shard_id(shard).to_owned(),
                sequence_number: super::model::seq_string(seq),
                encryption_type: "NONE",
            })),
            Outcome::Throttled { shard } => Err(ApiError::new(
                "ProvisionedThroughputExceededException",
                throttle_message(stream.shard_id(shard), name, &account),
            )),
            Outcome::InternalFailure => Err(ApiError::new("InternalFailure", INTERNAL_MESSAGE)),
        }
    };
    tally.publish(&sh.counters);
    answer
}

fn list_shards(sh: &Shared, body: &[u8]) -> Result<Vec<u8>, ApiError> {
    let req: json::ListShardsReq = parse(body)?;
    let max = int_in_range(req.max_results, 1000, 10000, "maxResults")?;
    let model = sh.model();
    let (stream, open_only, after): (String, bool, Option<String>) = match &req.next_token {
        Some(token) => {
            for (given, name) in [
                (req.stream_name.is_some(), "StreamName"),
                (req.stream_arn.is_some(), "StreamARN"),
                (
                    req.exclusive_start_shard_id.is_some(),
                    "ExclusiveStartShardId",
                ),
                (
                    req.stream_creation_timestamp.is_some(),
                    "StreamCreationTimestamp",
                ),
            ] {
                if given {
                    return Err(ApiError::invalid_argument(format!(
                        "NextToken and {name} cannot be provided together."
                    )));
                }
            }
            let c = ListCursor::decode(token)
                .ok_or_else(|| ApiError::invalid_argument("Invalid NextToken."))?;
            (c.stream, c.open_only, Some(c.after))
        }
        None => {
            let name = model.resolve(req.stream_name.as_deref(), req.stream_arn.as_deref())?;
            let filter = req.shard_filter.as_ref();
            let kind = filter.and_then(|f| f.kind.as_deref());
            let (open_only, filter_after) = match kind {
                None => (false, None),
                Some("AT_LATEST") => (true, None),
                Some("AFTER_SHARD_ID") => {
                    let id = filter.and_then(|f| f.shard_id.clone()).ok_or_else(|| {
                        ApiError::invalid_argument(
                            "ShardId must be provided for the AFTER_SHARD_ID ShardFilter type.",
                        )
                    })?;
                    (false, Some(id))
                }
                Some(
                    "AT_TRIM_HORIZON" | "FROM_TRIM_HORIZON" | "AT_TIMESTAMP" | "FROM_TIMESTAMP",
                ) => (false, None),
                Some(other) => {
                    return Err(ApiError::validation(format!(
                        "1 validation error detected: Value '{other}' at 'shardFilter.type' \
                         failed to satisfy constraint: Member must satisfy enum value set: \
                         [AFTER_SHARD_ID, AT_TRIM_HORIZON, FROM_TRIM_HORIZON, AT_LATEST, \
                         AT_TIMESTAMP, FROM_TIMESTAMP]"
                    )))
                }
            };
            let after = match (req.exclusive_start_shard_id.clone(), filter_after) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
            (name.to_owned(), open_only, after)
        }
    };
    let (page, more) = model.list_shards(&stream, open_only, after.as_deref(), max)?;
    let next_token = match (more, page.last()) {
        (true, Some(last)) => Some(
            ListCursor {
                stream,
                open_only,
                after: last.shard_id.clone(),
            }
            .encode(),
        ),
        _ => None,
    };
    Ok(json::to_body(&json::ListShardsOut {
        shards: page.into_iter().map(Into::into).collect(),
        next_token,
    }))
}

fn describe_stream_summary(sh: &Shared, body: &[u8]) -> Result<Vec<u8>, ApiError> {
    let req: json::StreamReq = parse(body)?;
    let model = sh.model();
    let name = model.resolve(req.stream_name.as_deref(), req.stream_arn.as_deref())?;
    let s = model.stream(name)?;
    Ok(json::to_body(&json::DescribeStreamSummaryOut {
        stream_description_summary: json::StreamSummaryOut {
            stream_name: s.name().to_owned(),
            stream_arn: s.arn().to_owned(),
            stream_status: "ACTIVE",
            stream_mode_details: json::StreamModeOut {
                stream_mode: "PROVISIONED",
            },
            retention_period_hours: 24,
            stream_creation_timestamp: json::epoch_secs(s.created()),
            enhanced_monitoring: vec![json::EnhancedMetricsOut {
                shard_level_metrics: Vec::new(),
            }],
            encryption_type: "NONE",
            open_shard_count: s.open_shard_count(),
            consumer_count: 0,
        },
    }))
}

fn describe_stream(sh: &Shared, body: &[u8]) -> Result<Vec<u8>, ApiError> {
    let req: json::DescribeStreamReq = parse(body)?;
    let limit = int_in_range(req.limit, 100, 10000, "limit")?;
    let model = sh.model();
    let name = model.resolve(req.stream_name.as_deref(), req.stream_arn.as_deref())?;
    let (page, more) =
        model.list_shards(name, false, req.exclusive_start_shard_id.as_deref(), limit)?;
    let s = model.stream(name)?;
    Ok(json::to_body(&json::DescribeStreamOut {
        stream_description: json::StreamDescriptionOut {
            stream_name: s.name().to_owned(),
            stream_arn: s.arn().to_owned(),
            stream_status: "ACTIVE",
            stream_mode_details: json::StreamModeOut {
                stream_mode: "PROVISIONED",
            },
            shards: page.into_iter().map(Into::into).collect(),
            has_more_shards: more,
            retention_period_hours: 24,
            stream_creation_timestamp: json::epoch_secs(s.created()),
            enhanced_monitoring: vec![json::EnhancedMetricsOut {
                shard_level_metrics: Vec::new(),
            }],
            encryption_type: "NONE",
        },
    }))
}

fn create_stream(sh: &Shared, body: &[u8]) -> Result<Vec<u8>, ApiError> {
    let req: json::CreateStreamReq = parse(body)?;
    let name = required(req.stream_name, "streamName")?;
    let count = req.shard_count.unwrap_or(4);
    if count < 1 {
        return Err(ApiError::validation(format!(
            "1 validation error detected: Value '{count}' at 'shardCount' failed to satisfy \
             constraint: Member must have value greater than or equal to 1"
        )));
    }
    sh.model()
        .create_stream(&name, count as usize, SystemTime::now())?;
    Ok(json::to_body(&json::EmptyOut {}))
}

fn delete_stream(sh: &Shared, body: &[u8]) -> Result<Vec<u8>, ApiError> {
    let req: json::StreamReq = parse(body)?;
    let mut model = sh.model();
    let name = model
        .resolve(req.stream_name.as_deref(), req.stream_arn.as_deref())?
        .to_owned();
    model.delete_stream(&name)?;
    Ok(json::to_body(&json::EmptyOut {}))
}

fn list_streams(sh: &Shared, body: &[u8]) -> Result<Vec<u8>, ApiError> {
    let req: json::ListStreamsReq = parse(body)?;
    let limit = int_in_range(req.limit, 100, 10000, "limit")?;
    let names: Vec<String> = sh
        .model()
        .stream_names()
        .into_iter()
        .filter(|n| {
            req.exclusive_start_stream_name
                .as_ref()
                .is_none_or(|a| n > a)
        })
        .collect();
    let more = names.len() > limit;
    Ok(json::to_body(&json::ListStreamsOut {
        stream_names: names.into_iter().take(limit).collect(),
        has_more_streams: more,
    }))
}

fn split_shard(sh: &Shared, body: &[u8]) -> Result<Vec<u8>, ApiError> {
    let req: json::SplitShardReq = parse(body)?;
    let shard = required(req.shard_to_split, "shardToSplit")?;
    let key_text = required(req.new_starting_hash_key, "newStartingHashKey")?;
    let key: u128 = key_text.parse().map_err(|_| {
        ApiError::invalid_argument(format!(
            "NewStartingHashKey {key_text} is not a decimal number in [0, 2^128-1]."
        ))
    })?;
    let mut model = sh.model();
    let name = model
        .resolve(req.stream_name.as_deref(), req.stream_arn.as_deref())?
        .to_owned();
    model.split_shard(&name, &shard, key)?;
    Ok(json::to_body(&json::EmptyOut {}))
}

fn merge_shards(sh: &Shared, body: &[u8]) -> Result<Vec<u8>, ApiError> {
    let req: json::MergeShardsReq = parse(body)?;
    let a = required(req.shard_to_merge, "shardToMerge")?;
    let b = required(req.adjacent_shard_to_merge, "adjacentShardToMerge")?;
    let mut model = sh.model();
    let name = model
        .resolve(req.stream_name.as_deref(), req.stream_arn.as_deref())?
        .to_owned();
    model.merge_shards(&name, &a, &b)?;
    Ok(json::to_body(&json::EmptyOut {}))
}

fn get_shard_iterator(sh: &Shared, body: &[u8]) -> Result<Vec<u8>, ApiError> {
    let req: json::GetShardIteratorReq = parse(body)?;
    let shard = required(req.shard_id, "shardId")?;
    let kind = required(req.shard_iterator_type, "shardIteratorType")?;
    let seq = || -> Result<u64, ApiError> {
        let text = required(
            req.starting_sequence_number.as_deref(),
            "startingSequenceNumber",
        )?;
        parse_seq(text).ok_or_else(|| {
            ApiError::invalid_argument(format!(
                "StartingSequenceNumber {text} used in GetShardIterator on shard {shard} is \
                 invalid."
            ))
        })
    };
    let start = match kind.as_str() {
        "TRIM_HORIZON" => IteratorStart::TrimHorizon,
        "LATEST" => IteratorStart::Latest,
        "AT_SEQUENCE_NUMBER" => IteratorStart::AtSequence(seq()?),
        "AFTER_SEQUENCE_NUMBER" => IteratorStart::AfterSequence(seq()?),
        "AT_TIMESTAMP" => {
            IteratorStart::AtTimestamp(json::from_epoch_secs(required(req.timestamp, "timestamp")?))
        }
        other => {
            return Err(ApiError::validation(format!(
                "1 validation error detected: Value '{other}' at 'shardIteratorType' failed to \
                 satisfy constraint: Member must satisfy enum value set: [AT_SEQUENCE_NUMBER, \
                 AFTER_SEQUENCE_NUMBER, TRIM_HORIZON, LATEST, AT_TIMESTAMP]"
            )))
        }
    };
    let model = sh.model();
    let name = model.resolve(req.stream_name.as_deref(), req.stream_arn.as_deref())?;
    let pos = model.iterator_position(name, &shard, &start)?;
    Ok(json::to_body(&json::GetShardIteratorOut {
        shard_iterator: IteratorToken {
            stream: name.to_owned(),
            shard_id: shard,
            pos,
        }
        .encode(),
    }))
}

fn get_records(sh: &Shared, body: &[u8]) -> Result<Vec<u8>, ApiError> {
    let req: json::GetRecordsReq = parse(body)?;
    let limit = int_in_range(req.limit, 10000, 10000, "limit")?;
    let token = required(req.shard_iterator, "shardIterator")?;
    let it = IteratorToken::decode(&token)
        .ok_or_else(|| ApiError::invalid_argument(format!("Invalid ShardIterator: {token}")))?;
    let page = sh
        .model()
        .get_records(&it.stream, &it.shard_id, it.pos, limit)?;
    let records = page
        .records
        .into_iter()
        .map(|e| json::RecordOut {
            sequence_number: e.sequence_number,
            approximate_arrival_timestamp: json::epoch_secs(e.time),
            data: json::b64_encode(&e.data),
            partition_key: e.partition_key,
        })
        .collect();
    let done = page.next.is_none();
    Ok(json::to_body(&json::GetRecordsOut {
        records,
        next_shard_iterator: page.next.map(|pos| {
            IteratorToken {
                stream: it.stream.clone(),
                shard_id: it.shard_id.clone(),
                pos,
            }
            .encode()
        }),
        millis_behind_latest: 0,
        child_shards: done.then(|| page.child_shards.into_iter().map(Into::into).collect()),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faults::{FaultDice, FaultPlan};
    use crate::model::Model;
    use crate::state::{CounterCells, RequestLimits};
    use std::borrow::Cow;
    use std::sync::Mutex;
    use std::time::Instant;

    fn cow(s: &str) -> Option<Cow<'_, str>> {
        Some(Cow::Borrowed(s))
    }

    fn shared(count_only: bool) -> Shared {
        let mut m = Model::new("us-east-1", "000000000000", None);
        m.create_stream("s", 2, SystemTime::now()).unwrap();
        Shared {
            model: Mutex::new(m),
            dice: Mutex::new(FaultDice::new(FaultPlan::none(), 1)),
            counters: CounterCells::default(),
            limits: RequestLimits::default(),
            count_only,
            require_auth: true,
            auto_create_shards: None,
            epoch: Instant::now(),
            access_key_ids: Mutex::default(),
        }
    }

    #[test]
    fn with_auto_create_a_stream_is_made_on_first_use_and_only_then() {
        let mut sh = shared(false);
        let body = br#"{"StreamName":"new-one"}"#;
        let e = dispatch(&sh, "ListShards", body, 0).unwrap_err();
        assert_eq!(e.code, "ResourceNotFoundException");
        sh.auto_create_shards = Some(3);
        let out: serde_json::Value =
            serde_json::from_slice(&dispatch(&sh, "ListShards", body, 1).unwrap()).unwrap();
        assert_eq!(out["Shards"].as_array().unwrap().len(), 3);
        // Deleting a stream that does not exist does not create it first.
        let e = dispatch(&sh, "DeleteStream", br#"{"StreamName":"other"}"#, 2).unwrap_err();
        assert_eq!(e.code, "ResourceNotFoundException");
    }

    #[test]
    fn hash_key_pattern_matches_the_service() {
        assert!(valid_hash_key_text("0"));
        assert!(valid_hash_key_text(
            "340282366920938463463374607431768211455"
        ));
        assert!(!valid_hash_key_text("01"));
        assert!(!valid_hash_key_text(""));
        assert!(!valid_hash_key_text("-1"));
        assert!(!valid_hash_key_text(
            "1234567890123456789012345678901234567890"
        ));
    }

    #[test]
    fn entries_are_validated_like_the_service() {
        let sh = shared(false);
        let ok = PutEntryReq {
            data: cow("YWJj"),
            partition_key: cow("k"),
            explicit_hash_key: None,
        };
        let e = prepare_entry(&sh, &ok, Field::Entry(1), true).unwrap();
        assert_eq!(e.bytes, 4);
        assert_eq!(&e.payload.unwrap().data[..], b"abc");
        let long_key = "é".repeat(256);
        let fine = PutEntryReq {
            partition_key: cow(&long_key),
            ..ok
        };
        assert!(prepare_entry(&sh, &fine, Field::Single, false).is_ok());
        let too_long = "k".repeat(257);
        let bad = PutEntryReq {
            data: cow(""),
            partition_key: cow(&too_long),
            explicit_hash_key: None,
        };
        assert_eq!(
            prepare_entry(&sh, &bad, Field::Single, false)
                .unwrap_err()
                .code,
            "ValidationException"
        );
        let over = PutEntryReq {
            data: cow("AAAA"),
            partition_key: cow("k"),
            explicit_hash_key: cow("340282366920938463463374607431768211456"),
        };
        assert_eq!(
            prepare_entry(&sh, &over, Field::Single, false)
                .unwrap_err()
                .code,
            "InvalidArgumentException"
        );
    }

    #[test]
    fn put_records_routes_by_md5_and_counts() {
        let sh = shared(true);
        let body = br#"{"StreamName":"s","Records":[{"Data":"YQ==","PartitionKey":"a"},{"Data":"YQ==","PartitionKey":"b","ExplicitHashKey":"0"}]}"#;
        let out = dispatch(&sh, "PutRecords", body, 1).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        // MD5("a") = 0cc175b9...: below 2^127, so shard 0.
        assert_eq!(v["Records"][0]["ShardId"], "shardId-000000000000");
        assert_eq!(v["Records"][1]["ShardId"], "shardId-000000000000");
        assert_eq!(v["FailedRecordCount"], 0);
        let c = sh.counters.snapshot();
        assert_eq!((c.entries_accepted, c.bytes_accepted), (2, 4));
        assert!(sh.model().log().is_empty());
    }

    #[test]
    fn validation_messages_name_the_entry() {
        let sh = shared(false);
        let body = br#"{"StreamName":"s","Records":[{"Data":"YQ==","PartitionKey":"a"},{"Data":"YQ==","PartitionKey":""}]}"#;
        let e = dispatch(&sh, "PutRecords", body, 1).unwrap_err();
        assert_eq!(e.code, "ValidationException");
        assert!(
            e.message.contains("'records.2.member.partitionKey'"),
            "{}",
            e.message
        );
        let body = br#"{"StreamName":"s","Records":[{"PartitionKey":"a"}]}"#;
        let e = dispatch(&sh, "PutRecords", body, 1).unwrap_err();
        assert!(
            e.message.contains("null at 'records.1.member.data'"),
            "{}",
            e.message
        );
    }

    #[test]
    fn unknown_stream_is_resource_not_found() {
        let sh = shared(false);
        let body = br#"{"StreamName":"nope","Records":[{"Data":"YQ==","PartitionKey":"a"}]}"#;
        let e = dispatch(&sh, "PutRecords", body, 1).unwrap_err();
        assert_eq!(e.code, "ResourceNotFoundException");
    }
}
