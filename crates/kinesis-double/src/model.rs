//! Pure model of Kinesis streams: shards, hash ranges, routing, sequence numbers, resharding
//! and the log of accepted entries. No I/O, no clocks: callers pass the time in.
//!
//! Invariants: the open shards of a stream cover `0..=2^128-1` exactly once; a closed shard
//! has an ending sequence number and receives nothing more; sequence numbers are issued from
//! one counter per stream, so they increase across the stream (and across resharding).

use std::collections::BTreeMap;
use std::time::SystemTime;

use bytes::Bytes;

use super::faults::{EntryFault, ShardBuckets, ShardLimits};

/// An error the service would answer with: `code` is the `__type` (e.g.
/// `ResourceNotFoundException`), `message` its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The error type the SDK matches on.
    pub code: &'static str,
    /// Human-readable text, in the service's wording where known.
    pub message: String,
}

impl ApiError {
    /// An error of type `code`.
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
        }
    }
    /// `ResourceNotFoundException`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new("ResourceNotFoundException", message)
    }
    /// `InvalidArgumentException`.
    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new("InvalidArgumentException", message)
    }
    /// `ValidationException` (constraint violations the service checks before anything else).
    pub fn validation(message: impl Into<String>) -> Self {
        Self::new("ValidationException", message)
    }
    /// `ResourceInUseException`.
    pub fn in_use(message: impl Into<String>) -> Self {
        Self::new("ResourceInUseException", message)
    }
    /// The HTTP status the service uses for this error.
    pub fn status(&self) -> u16 {
        match self.code {
            "InternalFailure" => 500,
            "ServiceUnavailable" => 503,
            _ => 400,
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

/// One entry the double accepted: what a test compares against what the producer reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptedEntry {
    /// Stream name.
    pub stream: String,
    /// Shard the entry went to.
    pub shard_id: String,
    /// Sequence number the double assigned.
    pub sequence_number: String,
    /// Partition key as sent.
    pub partition_key: String,
    /// Explicit hash key as sent, if any.
    pub explicit_hash_key: Option<String>,
    /// The hash key used for routing (explicit, or MD5 of the partition key).
    pub hash_key: u128,
    /// Decoded data.
    pub data: Bytes,
    /// When the double accepted it.
    pub time: SystemTime,
    /// Number of the HTTP request that carried it (1-based, across all operations), so
    /// duplicates from retried requests can be told apart.
    pub request: u64,
}

/// A shard as ListShards shows it, plus the double's counters for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardInfo {
    /// `shardId-000000000000` style id.
    pub shard_id: String,
    /// Parent (split or merge), if any.
    pub parent_shard_id: Option<String>,
    /// The other parent of a merge.
    pub adjacent_parent_shard_id: Option<String>,
    /// First hash key of the range.
    pub starting_hash_key: u128,
    /// Last hash key of the range (inclusive).
    pub ending_hash_key: u128,
    /// Starting sequence number.
    pub starting_sequence_number: String,
    /// Ending sequence number: set once the shard is closed by a split or merge.
    pub ending_sequence_number: Option<String>,
    /// Entries accepted into this shard.
    pub entries: u64,
    /// Bytes (data + partition key) accepted into this shard.
    pub bytes: u64,
    /// Entries refused with ProvisionedThroughputExceededException (limits or injected).
    pub throttled: u64,
}

impl ShardInfo {
    /// True while the shard accepts records.
    pub fn is_open(&self) -> bool {
        self.ending_sequence_number.is_none()
    }
}

/// Where a GetShardIterator starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IteratorStart {
    /// Oldest record.
    TrimHorizon,
    /// After the newest record.
    Latest,
    /// At the record with this sequence number (or the next one).
    AtSequence(u64),
    /// After the record with this sequence number.
    AfterSequence(u64),
    /// First record accepted at or after this time.
    AtTimestamp(SystemTime),
}

/// One entry of a put, prepared outside the lock.
#[derive(Debug, Clone)]
pub struct EntryIn {
    /// Routing hash key.
    pub hash: u128,
    /// Data + partition key bytes (what the limits count).
    pub bytes: u64,
    /// Injected fault, decided beforehand.
    pub fault: EntryFault,
    /// What to log when accepted; `None` in count-only mode.
    pub payload: Option<Payload>,
}

/// The parts of an entry kept in the log.
#[derive(Debug, Clone)]
pub struct Payload {
    /// Partition key.
    pub partition_key: String,
    /// Explicit hash key as sent.
    pub explicit_hash_key: Option<String>,
    /// Decoded data.
    pub data: Bytes,
}

/// What happened to one entry of a put.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Accepted into shard number `shard` (index in the stream) with sequence `seq`.
    Accepted {
        /// Shard index.
        shard: usize,
        /// Sequence counter value.
        seq: u64,
    },
    /// Refused by the shard's limits (or an injected throttle).
    Throttled {
        /// Shard index.
        shard: usize,
    },
    /// Injected InternalFailure.
    InternalFailure,
}

/// Format a sequence counter as the service's 56-digit decimal sequence number.
pub fn seq_string(n: u64) -> String {
    format!("49{n:054}")
}

/// Parse a sequence number made by [`seq_string`].
pub fn parse_seq(s: &str) -> Option<u64> {
    if s.len() != 56 || !s.starts_with("49") || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s[2..].parse().ok()
}

/// Format a shard id from its number.
pub fn shard_id(n: usize) -> String {
    format!("shardId-{n:012}")
}

/// Hash ranges of `n` shards splitting `0..=2^128-1` evenly, as CreateStream does.
pub fn even_ranges(n: usize) -> Vec<(u128, u128)> {
    assert!(n > 0, "a stream has at least one shard");
    if n == 1 {
        return vec![(0, u128::MAX)];
    }
    let n128 = n as u128;
    // floor(2^128 / n) without overflowing u128 (n >= 2, so it fits).
    let step = u128::MAX / n128 + u128::from(u128::MAX % n128 == n128 - 1);
    (0..n128)
        .map(|i| {
            let start = i * step;
            let end = if i == n128 - 1 {
                u128::MAX
            } else {
                (i + 1) * step - 1
            };
            (start, end)
        })
        .collect()
}

#[derive(Debug)]
struct Shard {
    id: String,
    parent: Option<String>,
    adjacent_parent: Option<String>,
    start_hash: u128,
    end_hash: u128,
    start_seq: u64,
    end_seq: Option<u64>,
    entries: u64,
    bytes: u64,
    throttled: u64,
    buckets: Option<ShardBuckets>,
    /// Indices into the model's log, in acceptance order.
    log: Vec<usize>,
}

impl Shard {
    fn info(&self) -> ShardInfo {
        ShardInfo {
            shard_id: self.id.clone(),
            parent_shard_id: self.parent.clone(),
            adjacent_parent_shard_id: self.adjacent_parent.clone(),
            starting_hash_key: self.start_hash,
            ending_hash_key: self.end_hash,
            starting_sequence_number: seq_string(self.start_seq),
            ending_sequence_number: self.end_seq.map(seq_string),
            entries: self.entries,
            bytes: self.bytes,
            throttled: self.throttled,
        }
    }
}

/// One stream.
#[derive(Debug)]
pub struct Stream {
    name: String,
    arn: String,
    created: SystemTime,
    /// Every shard ever created; index = shard number.
    shards: Vec<Shard>,
    /// (ending hash key, shard index) of the open shards, sorted by ending hash key.
    routes: Vec<(u128, usize)>,
    next_seq: u64,
}

impl Stream {
    /// Stream name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Stream ARN.
    pub fn arn(&self) -> &str {
        &self.arn
    }
    /// Creation time.
    pub fn created(&self) -> SystemTime {
        self.created
    }
    /// Number of open shards.
    pub fn open_shard_count(&self) -> usize {
        self.routes.len()
    }
    /// Id of shard number `idx`.
    pub fn shard_id(&self, idx: usize) -> &str {
        &self.shards[idx].id
    }
    /// All shards, oldest first.
    pub fn shards(&self) -> Vec<ShardInfo> {
        self.shards.iter().map(Shard::info).collect()
    }

    /// Index of the open shard whose range holds `hash`.
    pub fn route(&self, hash: u128) -> usize {
        let i = self.routes.partition_point(|&(end, _)| end < hash);
        // Open ranges cover the whole space, so the last one ends at u128::MAX.
        self.routes[i].1
    }

    fn index_of(&self, shard_id: &str) -> Option<usize> {
        self.shards.iter().position(|s| s.id == shard_id)
    }

    fn shard_not_found(&self, shard_id: &str, account: &str) -> ApiError {
        ApiError::not_found(format!(
            "Could not find shard {shard_id} in stream {} under account {account}.",
            self.name
        ))
    }

    fn rebuild_routes(&mut self) {
        self.routes = self
            .shards
            .iter()
            .enumerate()
            .filter(|(_, s)| s.end_seq.is_none())
            .map(|(i, s)| (s.end_hash, i))
            .collect();
        self.routes.sort_unstable();
    }

    fn new_shard(
        &mut self,
        range: (u128, u128),
        parent: Option<String>,
        adjacent: Option<String>,
    ) -> usize {
        let idx = self.shards.len();
        self.shards.push(Shard {
            id: shard_id(idx),
            parent,
            adjacent_parent: adjacent,
            start_hash: range.0,
            end_hash: range.1,
            start_seq: self.next_seq,
            end_seq: None,
            entries: 0,
            bytes: 0,
            throttled: 0,
            buckets: None,
            log: Vec::new(),
        });
        idx
    }

    fn close(&mut self, idx: usize) {
        self.shards[idx].end_seq = Some(self.next_seq);
        self.next_seq += 1;
    }

    fn open_index(&self, shard_id: &str, account: &str, verb: &str) -> Result<usize, ApiError> {
        let idx = self
            .index_of(shard_id)
            .ok_or_else(|| self.shard_not_found(shard_id, account))?;
        if self.shards[idx].end_seq.is_some() {
            return Err(ApiError::invalid_argument(format!(
                "Shard {shard_id} in stream {} under account {account} has already been merged \
                 or split, and thus is not eligible for {verb}.",
                self.name
            )));
        }
        Ok(idx)
    }

    /// Children of shard `idx` (shards naming it as a parent).
    fn children(&self, idx: usize) -> Vec<usize> {
        let id = &self.shards[idx].id;
        (0..self.shards.len())
            .filter(|&i| {
                let s = &self.shards[i];
                s.parent.as_ref() == Some(id) || s.adjacent_parent.as_ref() == Some(id)
            })
            .collect()
    }
}

/// Children of a closed shard, as GetRecords reports them at the end of the shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildShard {
    /// Child id.
    pub shard_id: String,
    /// Its parents.
    pub parent_shards: Vec<String>,
    /// Its hash range.
    pub hash_range: (u128, u128),
}

/// A page of GetRecords.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordsPage {
    /// Records, oldest first.
    pub records: Vec<AcceptedEntry>,
    /// Position of the next read; `None` when the shard is closed and fully read.
    pub next: Option<usize>,
    /// Children, when the shard is closed and fully read.
    pub child_shards: Vec<ChildShard>,
}

/// Every stream of the double, the accepted-entry log and the shard limits.
#[derive(Debug)]
pub struct Model {
    region: String,
    account: String,
    streams: BTreeMap<String, Stream>,
    log: Vec<AcceptedEntry>,
    limits: Option<ShardLimits>,
}

fn valid_stream_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
}

impl Model {
    /// An empty model for `region` and `account`, enforcing `limits` when given.
    pub fn new(region: &str, account: &str, limits: Option<ShardLimits>) -> Self {
        Model {
            region: region.to_owned(),
            account: account.to_owned(),
            streams: BTreeMap::new(),
            log: Vec::new(),
            limits,
        }
    }

    /// Account id used in ARNs and messages.
    pub fn account(&self) -> &str {
        &self.account
    }

    /// Change the per-shard limits (`None`: unlimited). Buckets restart full.
    pub fn set_limits(&mut self, limits: Option<ShardLimits>) {
        self.limits = limits;
        for s in self.streams.values_mut() {
            for sh in &mut s.shards {
                sh.buckets = None;
            }
        }
    }

    /// The current per-shard limits.
    pub fn limits(&self) -> Option<ShardLimits> {
        self.limits
    }

    /// The stream called `name`.
    pub fn stream(&self, name: &str) -> Result<&Stream, ApiError> {
        self.streams
            .get(name)
            .ok_or_else(|| self.stream_not_found(name))
    }

    fn stream_mut(&mut self, name: &str) -> Result<&mut Stream, ApiError> {
        if !self.streams.contains_key(name) {
            return Err(self.stream_not_found(name));
        }
        Ok(self.streams.get_mut(name).expect("checked above"))
    }

    fn stream_not_found(&self, name: &str) -> ApiError {
        ApiError::not_found(format!(
            "Stream {name} under account {} not found.",
            self.account
        ))
    }

    /// Names of all streams, sorted.
    pub fn stream_names(&self) -> Vec<String> {
        self.streams.keys().cloned().collect()
    }

    /// The stream name a request means, from its StreamName and/or StreamARN.
    pub fn resolve<'a>(
        &self,
        name: Option<&'a str>,
        arn: Option<&'a str>,
    ) -> Result<&'a str, ApiError> {
        let from_arn = match arn {
            None => None,
            Some(arn) => {
                let prefix = format!("arn:aws:kinesis:{}:{}:stream/", self.region, self.account);
                match arn.strip_prefix(prefix.as_str()) {
                    Some(n) if !n.is_empty() => Some(n),
                    _ => {
                        return Err(ApiError::not_found(format!(
                            "Stream {arn} under account {} not found.",
                            self.account
                        )))
                    }
                }
            }
        };
        match (name, from_arn) {
            (Some(n), Some(a)) if n != a => Err(ApiError::invalid_argument(format!(
                "StreamName {n} does not match the stream in StreamARN {}.",
                arn.unwrap_or_default()
            ))),
            (Some(n), _) => Ok(n),
            (None, Some(a)) => Ok(a),
            (None, None) => Err(ApiError::invalid_argument(
                "Either StreamName or StreamARN must be provided.",
            )),
        }
    }

    /// CreateStream: a new ACTIVE stream with `shard_count` evenly split shards.
    pub fn create_stream(
        &mut self,
        name: &str,
        shard_count: usize,
        now: SystemTime,
    ) -> Result<(), ApiError> {
        if !valid_stream_name(name) {
            return Err(ApiError::validation(format!(
                "1 validation error detected: Value '{name}' at 'streamName' failed to satisfy \
                 constraint: Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+"
            )));
        }
        if shard_count == 0 {
            return Err(ApiError::validation(
                "1 validation error detected: Value '0' at 'shardCount' failed to satisfy \
                 constraint: Member must have value greater than or equal to 1",
            ));
        }
        if self.streams.contains_key(name) {
            return Err(ApiError::in_use(format!(
                "Stream {name} under account {} already exists.",
                self.account
            )));
        }
        let mut s = Stream {
            name: name.to_owned(),
            arn: format!(
                "arn:aws:kinesis:{}:{}:stream/{name}",
                self.region, self.account
            ),
            created: now,
            shards: Vec::with_capacity(shard_count),
            routes: Vec::new(),
            next_seq: 0,
        };
        for r in even_ranges(shard_count) {
            s.new_shard(r, None, None);
        }
        s.rebuild_routes();
        self.streams.insert(name.to_owned(), s);
        Ok(())
    }

    /// DeleteStream. Logged entries stay in the log.
    pub fn delete_stream(&mut self, name: &str) -> Result<(), ApiError> {
        self.streams
            .remove(name)
            .map(|_| ())
            .ok_or_else(|| self.stream_not_found(name))
    }

    /// SplitShard: close `shard_id`, open two children `[start, new_start-1]` and
    /// `[new_start, end]`. Returns the children's ids (lower range first).
    pub fn split_shard(
        &mut self,
        stream: &str,
        shard_id: &str,
        new_start: u128,
    ) -> Result<[String; 2], ApiError> {
        let account = self.account.clone();
        let s = self.stream_mut(stream)?;
        let idx = s.open_index(shard_id, &account, "splitting")?;
        let (start, end) = (s.shards[idx].start_hash, s.shards[idx].end_hash);
        if new_start <= start || new_start > end {
            return Err(ApiError::invalid_argument(format!(
                "NewStartingHashKey {new_start} used in SplitShard() on shard {shard_id} in \
                 stream {stream} under account {account} is not both greater than the shard's \
                 StartingHashKey {start} and not greater than the shard's EndingHashKey {end}."
            )));
        }
        s.close(idx);
        let parent = Some(shard_id.to_owned());
        let a = s.new_shard((start, new_start - 1), parent.clone(), None);
        let b = s.new_shard((new_start, end), parent, None);
        s.rebuild_routes();
        Ok([s.shards[a].id.clone(), s.shards[b].id.clone()])
    }

    /// MergeShards: close two adjacent open shards, open one child covering both. The
    /// child's parent is `shard_id`, its adjacent parent `adjacent_id`. Returns the child id.
    pub fn merge_shards(
        &mut self,
        stream: &str,
        shard_id: &str,
        adjacent_id: &str,
    ) -> Result<String, ApiError> {
        let account = self.account.clone();
        let s = self.stream_mut(stream)?;
        let a = s.open_index(shard_id, &account, "merging")?;
        let b = s.open_index(adjacent_id, &account, "merging")?;
        let (sa, sb) = (&s.shards[a], &s.shards[b]);
        let range = if sa.end_hash.checked_add(1) == Some(sb.start_hash) {
            (sa.start_hash, sb.end_hash)
        } else if sb.end_hash.checked_add(1) == Some(sa.start_hash) {
            (sb.start_hash, sa.end_hash)
        } else {
            return Err(ApiError::invalid_argument(format!(
                "Shards {shard_id} and {adjacent_id} in stream {stream} under account {account} \
                 are not an adjacent pair of shards eligible for merging"
            )));
        };
        s.close(a);
        s.close(b);
        let c = s.new_shard(
            range,
            Some(shard_id.to_owned()),
            Some(adjacent_id.to_owned()),
        );
        s.rebuild_routes();
        Ok(s.shards[c].id.clone())
    }

    /// ListShards: shards in id order after `after` (exclusive), open ones only if
    /// `open_only`, at most `max`. Returns the page and whether more follow.
    pub fn list_shards(
        &self,
        stream: &str,
        open_only: bool,
        after: Option<&str>,
        max: usize,
    ) -> Result<(Vec<ShardInfo>, bool), ApiError> {
        let s = self.stream(stream)?;
        let mut it = s
            .shards
            .iter()
            .filter(|sh| !open_only || sh.end_seq.is_none())
            .filter(|sh| after.is_none_or(|a| sh.id.as_str() > a));
        let page: Vec<ShardInfo> = it.by_ref().take(max).map(Shard::info).collect();
        let more = it.next().is_some();
        Ok((page, more))
    }

    /// PutRecords core: route, limit and sequence every entry of `entries` into `stream`,
    /// logging accepted ones that carry a payload. `now` is seconds on a monotonic clock
    /// (for the token buckets), `time` the wall-clock time logged. Outcomes go to `out`
    /// (cleared first), one per entry, in order.
    pub fn put(
        &mut self,
        stream: &str,
        entries: &mut [EntryIn],
        now: f64,
        time: SystemTime,
        request: u64,
        out: &mut Vec<Outcome>,
    ) -> Result<&Stream, ApiError> {
        out.clear();
        if !self.streams.contains_key(stream) {
            return Err(self.stream_not_found(stream));
        }
        let limits = self.limits;
        let Model { streams, log, .. } = self;
        let s = streams.get_mut(stream).expect("checked above");
        for e in entries.iter_mut() {
            if e.fault == EntryFault::InternalFailure {
                out.push(Outcome::InternalFailure);
                continue;
            }
            let idx = s.route(e.hash);
            let sh = &mut s.shards[idx];
            let allowed = e.fault != EntryFault::Throttle
                && match &limits {
                    None => true,
                    Some(l) => sh
                        .buckets
                        .get_or_insert_with(|| ShardBuckets::full(l, now))
                        .try_take(l, e.bytes, now),
                };
            if !allowed {
                sh.throttled += 1;
                out.push(Outcome::Throttled { shard: idx });
                continue;
            }
            let seq = s.next_seq;
            s.next_seq += 1;
            sh.entries += 1;
            sh.bytes += e.bytes;
            if let Some(p) = e.payload.take() {
                sh.log.push(log.len());
                log.push(AcceptedEntry {
                    stream: s.name.clone(),
                    shard_id: sh.id.clone(),
                    sequence_number: seq_string(seq),
                    partition_key: p.partition_key,
                    explicit_hash_key: p.explicit_hash_key,
                    hash_key: e.hash,
                    data: p.data,
                    time,
                    request,
                });
            }
            out.push(Outcome::Accepted { shard: idx, seq });
        }
        Ok(s)
    }

    /// The accepted-entry log.
    pub fn log(&self) -> &[AcceptedEntry] {
        &self.log
    }

    /// Position in `shard_id` where an iterator of kind `start` begins.
    pub fn iterator_position(
        &self,
        stream: &str,
        shard_id: &str,
        start: &IteratorStart,
    ) -> Result<usize, ApiError> {
        let s = self.stream(stream)?;
        let idx = s
            .index_of(shard_id)
            .ok_or_else(|| s.shard_not_found(shard_id, &self.account))?;
        let recs = &s.shards[idx].log;
        let seq_of = |i: usize| parse_seq(&self.log[i].sequence_number).unwrap_or(0);
        Ok(match start {
            IteratorStart::TrimHorizon => 0,
            IteratorStart::Latest => recs.len(),
            IteratorStart::AtSequence(n) => recs.partition_point(|&i| seq_of(i) < *n),
            IteratorStart::AfterSequence(n) => recs.partition_point(|&i| seq_of(i) <= *n),
            IteratorStart::AtTimestamp(t) => recs.partition_point(|&i| self.log[i].time < *t),
        })
    }

    /// GetRecords: up to `limit` records of `shard_id` from position `pos`.
    pub fn get_records(
        &self,
        stream: &str,
        shard_id: &str,
        pos: usize,
        limit: usize,
    ) -> Result<RecordsPage, ApiError> {
        let s = self.stream(stream)?;
        let idx = s
            .index_of(shard_id)
            .ok_or_else(|| s.shard_not_found(shard_id, &self.account))?;
        let sh = &s.shards[idx];
        let from = pos.min(sh.log.len());
        let to = from.saturating_add(limit).min(sh.log.len());
        let records = sh.log[from..to]
            .iter()
            .map(|&i| self.log[i].clone())
            .collect();
        let done = sh.end_seq.is_some() && to == sh.log.len();
        let child_shards = if done {
            s.children(idx)
                .into_iter()
                .map(|c| {
                    let c = &s.shards[c];
                    ChildShard {
                        shard_id: c.id.clone(),
                        parent_shards: c
                            .parent
                            .iter()
                            .chain(c.adjacent_parent.iter())
                            .cloned()
                            .collect(),
                        hash_range: (c.start_hash, c.end_hash),
                    }
                })
                .collect()
        } else {
            Vec::new()
        };
        Ok(RecordsPage {
            records,
            next: (!done).then_some(to),
            child_shards,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(streams: &[(&str, usize)]) -> Model {
        let mut m = Model::new("us-east-1", "000000000000", None);
        for (n, c) in streams {
            m.create_stream(n, *c, SystemTime::UNIX_EPOCH).unwrap();
        }
        m
    }

    fn entry(hash: u128) -> EntryIn {
        EntryIn {
            hash,
            bytes: 10,
            fault: EntryFault::None,
            payload: None,
        }
    }

    #[test]
    fn even_ranges_match_the_service() {
        assert_eq!(
            even_ranges(2),
            vec![(0, (1u128 << 127) - 1), (1u128 << 127, u128::MAX)]
        );
        let r3 = even_ranges(3);
        assert_eq!(r3[0].1, 113427455640312821154458202477256070484);
        assert_eq!(r3[1].0, 113427455640312821154458202477256070485);
        assert_eq!(r3[2].1, u128::MAX);
        for n in 1..40 {
            let r = even_ranges(n);
            assert_eq!(r[0].0, 0);
            assert_eq!(r[n - 1].1, u128::MAX);
            for w in r.windows(2) {
                assert_eq!(w[0].1 + 1, w[1].0);
            }
        }
    }

    #[test]
    fn routing_finds_the_shard_holding_the_hash() {
        let m = model(&[("s", 4)]);
        let s = m.stream("s").unwrap();
        for (i, (lo, hi)) in even_ranges(4).into_iter().enumerate() {
            assert_eq!(s.route(lo), i);
            assert_eq!(s.route(hi), i);
            assert_eq!(s.route(lo / 2 + hi / 2), i);
        }
    }

    #[test]
    fn split_then_merge_names_children_and_closes_parents() {
        let mut m = model(&[("s", 4)]);
        let (lo, hi) = even_ranges(4)[0];
        let mid = lo / 2 + hi / 2;
        let kids = m.split_shard("s", "shardId-000000000000", mid).unwrap();
        assert_eq!(kids, ["shardId-000000000004", "shardId-000000000005"]);
        let merged = m
            .merge_shards("s", "shardId-000000000005", "shardId-000000000004")
            .unwrap();
        assert_eq!(merged, "shardId-000000000006");
        let shards = m.stream("s").unwrap().shards();
        assert!(!shards[0].is_open() && !shards[4].is_open() && !shards[5].is_open());
        assert_eq!(shards[4].starting_hash_key, lo);
        assert_eq!(shards[4].ending_hash_key, mid - 1);
        assert_eq!(shards[5].starting_hash_key, mid);
        assert_eq!(shards[5].ending_hash_key, hi);
        assert_eq!(
            (shards[6].starting_hash_key, shards[6].ending_hash_key),
            (lo, hi)
        );
        assert_eq!(
            shards[6].parent_shard_id.as_deref(),
            Some("shardId-000000000005")
        );
        assert_eq!(
            shards[6].adjacent_parent_shard_id.as_deref(),
            Some("shardId-000000000004")
        );
        let (open, more) = m.list_shards("s", true, None, 100).unwrap();
        assert!(!more);
        let ids: Vec<_> = open.iter().map(|s| s.shard_id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "shardId-000000000001",
                "shardId-000000000002",
                "shardId-000000000003",
                "shardId-000000000006"
            ]
        );
        // A closed shard cannot be split again; non-adjacent shards cannot merge.
        assert!(m.split_shard("s", "shardId-000000000000", 5).is_err());
        assert!(m
            .merge_shards("s", "shardId-000000000001", "shardId-000000000003")
            .is_err());
    }

    #[test]
    fn closed_shards_receive_nothing_and_sequences_increase() {
        let mut m = model(&[("s", 1)]);
        let mut out = Vec::new();
        let mut es = vec![entry(1), entry(u128::MAX)];
        m.put("s", &mut es, 0.0, SystemTime::UNIX_EPOCH, 1, &mut out)
            .unwrap();
        assert_eq!(
            out,
            [
                Outcome::Accepted { shard: 0, seq: 0 },
                Outcome::Accepted { shard: 0, seq: 1 }
            ]
        );
        m.split_shard("s", "shardId-000000000000", 1 << 127)
            .unwrap();
        m.put("s", &mut es, 0.0, SystemTime::UNIX_EPOCH, 2, &mut out)
            .unwrap();
        let (s1, s2) = match (out[0], out[1]) {
            (Outcome::Accepted { shard: a, seq: x }, Outcome::Accepted { shard: b, seq: y }) => {
                assert!(x > 1 && y > x);
                (a, b)
            }
            other => panic!("{other:?}"),
        };
        assert_eq!((s1, s2), (1, 2));
        assert_eq!(m.stream("s").unwrap().shards()[0].entries, 2);
    }

    #[test]
    fn limits_throttle_per_shard() {
        let mut m = model(&[("s", 2)]);
        m.set_limits(Some(ShardLimits {
            records_per_sec: 3.0,
            bytes_per_sec: 1e9,
            burst_secs: 1.0,
        }));
        let mut es: Vec<_> = (0..5).map(|_| entry(0)).chain([entry(u128::MAX)]).collect();
        let mut out = Vec::new();
        m.put("s", &mut es, 0.0, SystemTime::UNIX_EPOCH, 1, &mut out)
            .unwrap();
        let throttled = out
            .iter()
            .filter(|o| matches!(o, Outcome::Throttled { .. }))
            .count();
        assert_eq!(throttled, 2);
        assert!(matches!(out[5], Outcome::Accepted { shard: 1, .. }));
    }

    #[test]
    fn list_shards_pages_after_a_shard_id() {
        let m = model(&[("s", 5)]);
        let (p1, more) = m.list_shards("s", true, None, 2).unwrap();
        assert!(more);
        let (p2, more) = m.list_shards("s", true, Some(&p1[1].shard_id), 2).unwrap();
        assert!(more);
        assert_eq!(p2[0].shard_id, "shardId-000000000002");
        let (p3, more) = m.list_shards("s", true, Some(&p2[1].shard_id), 2).unwrap();
        assert!(!more);
        assert_eq!(p3.len(), 1);
    }

    #[test]
    fn resolve_accepts_name_or_arn() {
        let m = model(&[("s", 1)]);
        assert_eq!(m.resolve(Some("s"), None).unwrap(), "s");
        let arn = m.stream("s").unwrap().arn().to_owned();
        assert_eq!(m.resolve(None, Some(&arn)).unwrap(), "s");
        assert!(m.resolve(Some("t"), Some(&arn)).is_err());
        assert!(m.resolve(None, None).is_err());
    }

    #[test]
    fn sequence_numbers_round_trip() {
        let s = seq_string(12345);
        assert_eq!(s.len(), 56);
        assert_eq!(parse_seq(&s), Some(12345));
        assert!(seq_string(9) < seq_string(10));
    }
}
