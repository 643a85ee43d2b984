//! Every config key, defined once in [`KEYS`]: its name, type, default,
//! allowed values, what SIGHUP does with it, whether a `[streams."NAME"]`
//! table may hold it, its KPL name and its line of documentation.
//!
//! Everything else is derived from the table: the known keys (unknown-key
//! errors, `KPLD_*` recognition), reading and checking each value
//! (`resolve.rs`), defaults, ranges, the SIGHUP report
//! (`producer::Reload`) and what a reload keeps (`main.rs`), and the key
//! table of docs/configuration.md (checked by a test below). Adding a key
//! means one entry here and its typed field in `Config` (and in
//! `StreamSettings` for a stream key); the order here is the order
//! `--check` prints, which a test checks against `Config`'s fields. Only
//! what a value does is code elsewhere (a key that picks a stream's Kinesis
//! client, for one, is used in send.rs and `StreamSettings::has_own_client`).

use super::values::{
    self, Read, DEFAULT_NAMESPACE, DEFAULT_UPLOAD_DELAY_MS, UPLOAD_DELAY_RANGE_MS,
};
use std::fmt::Write;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const HOUR_MS: u64 = 3_600_000;
const DAY_MS: u64 = 24 * HOUR_MS;

/// One config key.
pub struct KeyDef {
    pub name: &'static str,
    /// The type as the docs name it; for numbers the last word is the unit
    /// (`bytes`, `ms`), which the docs use to show sizes and durations.
    pub ty: &'static str,
    pub default: DefaultValue,
    pub allowed: Allowed,
    pub sighup: Sighup,
    pub scope: Scope,
    pub kpl: Kpl,
    /// One line for the docs' table.
    pub doc: &'static str,
    /// Type-checks what the user wrote and turns it into the canonical form.
    read: Read,
}

/// What a key is when the user does not set it.
pub enum DefaultValue {
    Int(u64),
    Bool(bool),
    Str(&'static str),
    EmptyList,
    /// Unset (left out of `--check`); the text says what that means.
    Unset(&'static str),
    /// Computed from other keys, once every key has been read.
    Derived(Derived),
}

/// A default computed from other keys.
pub struct Derived {
    pub doc: &'static str,
    global: fn(&Values) -> u64,
    /// In a stream table that does not set the key; None: the global value.
    stream: Option<fn(&Values) -> u64>,
}

/// One end of a range: a number, or another key's value plus an offset.
#[derive(Debug, Clone, Copy)]
pub enum Bound {
    Lit(u64),
    Key(&'static str, i64),
}

/// What values a key accepts.
pub enum Allowed {
    /// Any value of its type.
    Any,
    /// An integer within these bounds, checked once defaults are known.
    Range(Bound, Bound),
    /// Like `Range`, with other bounds in a `[streams."NAME"]` table.
    Ranges {
        global: (Bound, Bound),
        stream: (Bound, Bound),
    },
    /// One of these strings (the key's reader checks).
    OneOf(&'static [&'static str]),
    /// What the key's reader accepts, in words.
    Text(&'static str),
}

/// What SIGHUP does with a changed key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sighup {
    /// Applied at once.
    Live,
    /// Logged; the running value stays until a restart.
    Restart,
}

/// Where a key may be set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Global,
    /// Global, and a stream table may override it; unset there, the stream
    /// has the global value.
    Stream,
    /// Global, and a stream table may set its own, which gives the stream a
    /// Kinesis client of its own; unset there, the stream has none.
    StreamClient,
    /// Only in a stream table, like `StreamClient`.
    StreamClientOnly,
}

/// The KPL's name for the setting, or why it has none.
pub enum Kpl {
    Name(&'static [&'static str]),
    None(&'static str),
}

/// The name of the key that holds the `[streams."NAME"]` tables.
pub const STREAMS: &str = "streams";

/// The name of the key that holds the `[[files]]` tables.
pub const FILES: &str = "files";

/// Every key, in the order `--check` prints them.
pub static KEYS: &[KeyDef] = &[
    KeyDef {
        name: "socket_path",
        ty: "path",
        default: DefaultValue::Str("/run/kpld/kpld.sock"),
        allowed: Allowed::Text("not empty, at most 107 bytes (the kernel's limit)"),
        sighup: Sighup::Restart,
        scope: Scope::Global,
        kpl: Kpl::None("the KPL uses two named pipes"),
        doc: "Unix socket the daemon listens on",
        read: values::socket_path,
    },
    KeyDef {
        name: "socket_mode",
        ty: "octal string or integer",
        default: DefaultValue::Str("0660"),
        allowed: Allowed::Text(
            "`\"0000\"` ..= `\"0777\"`; TOML `0o660`; a bare `660` is refused",
        ),
        sighup: Sighup::Restart,
        scope: Scope::Global,
        kpl: Kpl::None(""),
        doc: "Mode of the socket file kpld creates",
        read: values::socket_mode,
    },
    KeyDef {
        name: "socket_group",
        ty: "group name or gid",
        default: DefaultValue::Unset("kpld's group"),
        allowed: Allowed::Text("a group name the system knows (getgrnam), or a number"),
        sighup: Sighup::Restart,
        scope: Scope::Global,
        kpl: Kpl::None(""),
        doc: "Group of the socket file kpld creates",
        read: values::group,
    },
    KeyDef {
        name: "allowed_uids",
        ty: "array of user names or uids",
        default: DefaultValue::EmptyList,
        allowed: Allowed::Text("user names the system knows (getpwnam: files, LDAP, sssd, ...), or numbers"),
        sighup: Sighup::Live,
        scope: Scope::Global,
        kpl: Kpl::None(""),
        doc: "With `allowed_gids`: who may connect (SO_PEERCRED); both empty = anyone who can open the socket",
        read: values::users,
    },
    KeyDef {
        name: "allowed_gids",
        ty: "array of group names or gids",
        default: DefaultValue::EmptyList,
        allowed: Allowed::Text("group names the system knows (getgrnam), or numbers"),
        sighup: Sighup::Live,
        scope: Scope::Global,
        kpl: Kpl::None(""),
        doc: "Primary or supplementary groups that may connect",
        read: values::groups,
    },
    KeyDef {
        name: "region",
        ty: "string",
        default: DefaultValue::Unset("AWS chain"),
        allowed: Allowed::Text("any; `\"\"` = unset"),
        sighup: Sighup::Restart,
        scope: Scope::StreamClient,
        kpl: Kpl::Name(&["Region"]),
        doc: "AWS region of the Kinesis client",
        read: values::optional,
    },
    KeyDef {
        name: "kinesis_endpoint",
        ty: "URL",
        default: DefaultValue::Unset("AWS default"),
        allowed: Allowed::Text("`http://…` or `https://…`; `\"\"` = unset"),
        sighup: Sighup::Restart,
        scope: Scope::StreamClient,
        kpl: Kpl::Name(&["KinesisEndpoint", "KinesisPort"]),
        doc: "Kinesis API endpoint, e.g. a local server",
        read: values::endpoint,
    },
    KeyDef {
        name: "aggregation_enabled",
        ty: "bool",
        default: DefaultValue::Bool(true),
        allowed: Allowed::Any,
        sighup: Sighup::Live,
        scope: Scope::Stream,
        kpl: Kpl::Name(&["AggregationEnabled"]),
        doc: "Pack user records into KPL aggregated records",
        read: values::plain::<bool>,
    },
    KeyDef {
        name: "aggregation_max_count",
        ty: "u64",
        default: DefaultValue::Int(4_294_967_295),
        allowed: Allowed::Range(Bound::Lit(1), Bound::Lit(u64::MAX)),
        sighup: Sighup::Live,
        scope: Scope::Stream,
        kpl: Kpl::Name(&["AggregationMaxCount"]),
        doc: "Most user records in one aggregate",
        read: values::plain::<u64>,
    },
    KeyDef {
        name: "aggregation_max_size",
        ty: "u64 bytes",
        default: DefaultValue::Derived(Derived {
            doc: "`51200`, or `max_record_size` if that is smaller",
            global: |v| 51_200.min(v.int("max_record_size")),
            // The stream's own max_record_size may be smaller than the global one.
            stream: Some(|v| v.int("aggregation_max_size").min(v.int("max_record_size"))),
        }),
        allowed: Allowed::Range(Bound::Lit(64), Bound::Key("max_record_size", 0)),
        sighup: Sighup::Live,
        scope: Scope::Stream,
        kpl: Kpl::Name(&["AggregationMaxSize"]),
        doc: "Largest aggregate (magic + protobuf + MD5)",
        read: values::plain::<u64>,
    },
    KeyDef {
        name: "collection_max_count",
        ty: "u64",
        default: DefaultValue::Int(500),
        allowed: Allowed::Range(Bound::Lit(1), Bound::Lit(500)),
        sighup: Sighup::Restart,
        scope: Scope::Global,
        kpl: Kpl::Name(&["CollectionMaxCount"]),
        doc: "Most entries in one PutRecords call",
        read: values::plain::<u64>,
    },
    KeyDef {
        name: "collection_max_size",
        ty: "u64 bytes",
        default: DefaultValue::Int(5 * MIB),
        allowed: Allowed::Range(Bound::Lit(1), Bound::Lit(64 * MIB)),
        sighup: Sighup::Restart,
        scope: Scope::Global,
        kpl: Kpl::Name(&["CollectionMaxSize"]),
        doc: "Most data + partition-key bytes in one PutRecords call",
        read: values::plain::<u64>,
    },
    KeyDef {
        name: "record_max_buffered_time_ms",
        ty: "u64 ms",
        default: DefaultValue::Int(100),
        allowed: Allowed::Range(Bound::Lit(0), Bound::Lit(HOUR_MS)),
        sighup: Sighup::Live,
        scope: Scope::Stream,
        kpl: Kpl::Name(&["RecordMaxBufferedTime"]),
        doc: "Longest a record waits in a buffer before it is sent",
        read: values::plain::<u64>,
    },
    KeyDef {
        name: "record_ttl_ms",
        ty: "u64 ms",
        default: DefaultValue::Int(30_000),
        allowed: Allowed::Range(Bound::Lit(1), Bound::Lit(7 * DAY_MS)),
        sighup: Sighup::Live,
        scope: Scope::Stream,
        kpl: Kpl::Name(&["RecordTtl"]),
        doc: "Time after arrival when the record stops being retried (\"Expired\")",
        read: values::plain::<u64>,
    },
    KeyDef {
        name: "fail_if_throttled",
        ty: "bool",
        default: DefaultValue::Bool(false),
        allowed: Allowed::Any,
        sighup: Sighup::Live,
        scope: Scope::Stream,
        kpl: Kpl::Name(&["FailIfThrottled"]),
        doc: "Fail a record at once on throttling instead of retrying",
        read: values::plain::<bool>,
    },
    KeyDef {
        name: "ordered",
        ty: "bool",
        default: DefaultValue::Bool(false),
        allowed: Allowed::Any,
        sighup: Sighup::Restart,
        scope: Scope::Stream,
        kpl: Kpl::None("the KPL has no ordering option"),
        doc: "Records of one partition key (or explicit hash key) from one connection land in the order kpld accepted them, through retries and reshards: one PutRecords entry in flight per shard",
        read: values::plain::<bool>,
    },
    KeyDef {
        name: "rate_limit",
        ty: "u64 %",
        default: DefaultValue::Int(150),
        allowed: Allowed::Range(Bound::Lit(1), Bound::Lit(100_000)),
        sighup: Sighup::Live,
        scope: Scope::Stream,
        kpl: Kpl::Name(&["RateLimit"]),
        doc: "Per-shard send rate ceiling, in % of the shard limits; lowered per shard while Kinesis throttles it",
        read: values::plain::<u64>,
    },
    KeyDef {
        name: "max_connections",
        ty: "u64",
        default: DefaultValue::Int(24),
        allowed: Allowed::Range(Bound::Lit(1), Bound::Lit(1024)),
        sighup: Sighup::Restart,
        scope: Scope::Global,
        kpl: Kpl::Name(&["MaxConnections"]),
        doc: "Most PutRecords calls in flight, all streams together",
        read: values::plain::<u64>,
    },
    KeyDef {
        name: "request_timeout_ms",
        ty: "u64 ms",
        default: DefaultValue::Int(6_000),
        allowed: Allowed::Range(Bound::Lit(100), Bound::Lit(600_000)),
        sighup: Sighup::Restart,
        scope: Scope::Global,
        kpl: Kpl::Name(&["RequestTimeout"]),
        doc: "Timeout of one Kinesis API call attempt",
        read: values::plain::<u64>,
    },
    KeyDef {
        name: "connect_timeout_ms",
        ty: "u64 ms",
        default: DefaultValue::Int(6_000),
        allowed: Allowed::Range(Bound::Lit(100), Bound::Lit(600_000)),
        sighup: Sighup::Restart,
        scope: Scope::Global,
        kpl: Kpl::Name(&["ConnectTimeout"]),
        doc: "Timeout to open a connection to Kinesis",
        read: values::plain::<u64>,
    },
    KeyDef {
        name: "max_record_size",
        ty: "u64 bytes",
        default: DefaultValue::Int(MIB),
        allowed: Allowed::Ranges {
            global: (Bound::Lit(1), Bound::Lit(10 * MIB)),
            // A stream whose MaxRecordSizeInKiB was raised further; the
            // frame must still hold one record.
            stream: (Bound::Lit(1), Bound::Key("max_frame_size", -1024)),
        },
        sighup: Sighup::Live,
        scope: Scope::Stream,
        kpl: Kpl::None("fixed at 1 MiB in the KPL"),
        doc: "Largest user record: data (after compression) + partition key",
        read: values::plain::<u64>,
    },
    KeyDef {
        name: "max_frame_size",
        ty: "u64 bytes",
        default: DefaultValue::Derived(Derived {
            doc: "larger of `8388608` (8 MiB) and `max_record_size` + 65536",
            global: |v| (8 * MIB).max(v.int("max_record_size") + 64 * KIB),
            stream: None,
        }),
        allowed: Allowed::Range(
            Bound::Key("max_record_size", 1024),
            Bound::Lit(256 * MIB),
        ),
        sighup: Sighup::Restart,
        scope: Scope::Global,
        kpl: Kpl::None(""),
        doc: "Largest socket frame the daemon accepts",
        read: values::plain::<u64>,
    },
    KeyDef {
        name: "max_buffered_bytes",
        ty: "u64 bytes",
        default: DefaultValue::Int(256 * MIB),
        allowed: Allowed::Range(Bound::Key("max_frame_size", 0), Bound::Lit(u64::MAX >> 4)),
        sighup: Sighup::Restart,
        scope: Scope::Global,
        kpl: Kpl::None("the KPL's queues are unbounded"),
        doc: "Memory bound: records accepted and not yet final, each counted as 5 x (data + key) + 2 KiB",
        read: values::plain::<u64>,
    },
    KeyDef {
        name: "max_outstanding_records",
        ty: "u64",
        default: DefaultValue::Int(1_000_000),
        allowed: Allowed::Range(Bound::Lit(1), Bound::Lit(u64::MAX >> 4)),
        sighup: Sighup::Restart,
        scope: Scope::Global,
        kpl: Kpl::None(""),
        doc: "Count bound: records accepted and not yet final",
        read: values::plain::<u64>,
    },
    KeyDef {
        name: "max_clients",
        ty: "u64",
        default: DefaultValue::Int(1024),
        allowed: Allowed::Range(Bound::Lit(1), Bound::Lit(1_000_000)),
        sighup: Sighup::Restart,
        scope: Scope::Global,
        kpl: Kpl::None("the KPL serves one channel"),
        doc: "Concurrent client connections (`kpld stats` counts); one more gets a fatal `TooManyClients` error. 1024: far above a sidecar's handful, one per process of a busy host",
        read: values::plain::<u64>,
    },
    KeyDef {
        name: "max_client_pending_results",
        ty: "u64",
        default: DefaultValue::Int(131_072),
        allowed: Allowed::Range(Bound::Lit(1), Bound::Lit(u64::MAX >> 4)),
        sighup: Sighup::Restart,
        scope: Scope::Global,
        kpl: Kpl::None("the KPL serves one channel"),
        doc: "Per connection: records accepted whose results are not yet written to the client (in flight or waiting for it to read), and replies not yet written; past it kpld stops reading that connection until it reads. 131072: more than the default budget holds, so only a client that does not read meets it",
        read: values::plain::<u64>,
    },
    KeyDef {
        name: "max_streams",
        ty: "u64",
        default: DefaultValue::Int(1000),
        allowed: Allowed::Range(Bound::Lit(1), Bound::Lit(1_000_000)),
        sighup: Sighup::Restart,
        scope: Scope::Global,
        kpl: Kpl::None("the KPL keeps every stream it saw"),
        doc: "Streams with a live actor; past it a record for another stream fails with `TooManyStreams` (streams already live go on). 1000: far above what one application writes to, while a flood of made-up names stays bounded",
        read: values::plain::<u64>,
    },
    KeyDef {
        name: "stream_idle_timeout_ms",
        ty: "u64 ms",
        default: DefaultValue::Int(600_000),
        allowed: Allowed::Range(Bound::Lit(1), Bound::Lit(30 * DAY_MS)),
        sighup: Sighup::Restart,
        scope: Scope::Global,
        kpl: Kpl::None("the KPL keeps every stream it saw"),
        doc: "A stream with no record held and none put for this long is forgotten (its actor, shard map and `kpld stats` entry); its next record starts afresh with a ListShards",
        read: values::plain::<u64>,
    },
    KeyDef {
        name: "retry_backoff_base_ms",
        ty: "u64 ms",
        default: DefaultValue::Int(100),
        allowed: Allowed::Range(Bound::Lit(1), Bound::Lit(600_000)),
        sighup: Sighup::Restart,
        scope: Scope::Global,
        kpl: Kpl::None("the KPL retries without backoff"),
        doc: "Ceiling of the first retry's random delay",
        read: values::plain::<u64>,
    },
    KeyDef {
        name: "retry_backoff_max_ms",
        ty: "u64 ms",
        default: DefaultValue::Int(5_000),
        allowed: Allowed::Range(
            Bound::Key("retry_backoff_base_ms", 0),
            Bound::Lit(600_000),
        ),
        sighup: Sighup::Restart,
        scope: Scope::Global,
        kpl: Kpl::None(""),
        doc: "Largest ceiling of a retry delay",
        read: values::plain::<u64>,
    },
    KeyDef {
        name: "shutdown_grace_ms",
        ty: "u64 ms",
        default: DefaultValue::Int(30_000),
        allowed: Allowed::Range(Bound::Lit(0), Bound::Lit(HOUR_MS)),
        sighup: Sighup::Restart,
        scope: Scope::Global,
        kpl: Kpl::None("the KPL has `flushSync()`"),
        doc: "How long SIGTERM waits for records to finish",
        read: values::plain::<u64>,
    },
    KeyDef {
        name: "log_level",
        ty: "string",
        default: DefaultValue::Str("info"),
        allowed: Allowed::Text("`off`, `error`, `warn`, `info`, `debug`, `trace`, or `target=level` filters (`info,kpld=debug`)"),
        sighup: Sighup::Live,
        scope: Scope::Global,
        kpl: Kpl::Name(&["LogLevel"]),
        doc: "Log verbosity on stderr (`RUST_LOG` overrides it)",
        read: values::log_level,
    },
    KeyDef {
        name: "log_format",
        ty: "string",
        default: DefaultValue::Str("text"),
        allowed: Allowed::OneOf(&["text", "json"]),
        sighup: Sighup::Restart,
        scope: Scope::Global,
        kpl: Kpl::None(""),
        doc: "Log line format on stderr",
        read: values::log_format,
    },
    KeyDef {
        name: "metrics_level",
        ty: "string",
        default: DefaultValue::Str("detailed"),
        allowed: Allowed::OneOf(&["none", "summary", "detailed"]),
        sighup: Sighup::Restart,
        scope: Scope::Global,
        kpl: Kpl::Name(&["MetricsLevel"]),
        doc: "Which metrics are recorded and uploaded (`none`: no upload), as the KPL defines them",
        read: values::metrics_level,
    },
    KeyDef {
        name: "metrics_granularity",
        ty: "string",
        default: DefaultValue::Str("shard"),
        allowed: Allowed::OneOf(&["global", "stream", "shard"]),
        sighup: Sighup::Restart,
        scope: Scope::Global,
        kpl: Kpl::Name(&["MetricsGranularity"]),
        doc: "The finest dimensions uploaded; a shard-level value also counts in its stream and global series",
        read: values::metrics_granularity,
    },
    KeyDef {
        name: "metrics_namespace",
        ty: "string",
        default: DefaultValue::Str(DEFAULT_NAMESPACE),
        allowed: Allowed::Text(
            "1 to 255 printable ASCII characters, not starting with `AWS/` or `:`",
        ),
        sighup: Sighup::Restart,
        scope: Scope::Global,
        kpl: Kpl::Name(&["MetricsNamespace"]),
        doc: "The CloudWatch namespace of the metrics",
        read: values::metrics_namespace,
    },
    KeyDef {
        name: "metrics_upload_delay_ms",
        ty: "u64 ms",
        default: DefaultValue::Int(DEFAULT_UPLOAD_DELAY_MS),
        allowed: Allowed::Range(
            Bound::Lit(*UPLOAD_DELAY_RANGE_MS.start()),
            Bound::Lit(*UPLOAD_DELAY_RANGE_MS.end()),
        ),
        sighup: Sighup::Restart,
        scope: Scope::Global,
        kpl: Kpl::Name(&["MetricsUploadDelay"]),
        doc: "How often the metrics are uploaded with PutMetricData (or written as EMF)",
        read: values::plain::<u64>,
    },
    KeyDef {
        name: "metrics_cloudwatch",
        ty: "bool",
        default: DefaultValue::Bool(true),
        allowed: Allowed::Any,
        sighup: Sighup::Restart,
        scope: Scope::Global,
        kpl: Kpl::None("the KPL uploads whenever metrics_level is not none"),
        doc: "Upload the metrics to CloudWatch with PutMetricData; `false` keeps them for Prometheus and `kpld stats` only (a local setup); `metrics_emf_path` replaces the upload",
        read: values::plain::<bool>,
    },
    KeyDef {
        name: "cloudwatch_endpoint",
        ty: "URL",
        default: DefaultValue::Unset("AWS default"),
        allowed: Allowed::Text("`http://…` or `https://…`; `\"\"` = unset"),
        sighup: Sighup::Restart,
        scope: Scope::Global,
        kpl: Kpl::Name(&["CloudwatchEndpoint", "CloudwatchPort"]),
        doc: "CloudWatch endpoint (same region and credential chain as Kinesis)",
        read: values::endpoint,
    },
    KeyDef {
        name: "metrics_emf_path",
        ty: "path",
        default: DefaultValue::Unset(""),
        allowed: Allowed::Text("a file, or `-` / `stdout`; `\"\"` = unset"),
        sighup: Sighup::Restart,
        scope: Scope::Global,
        kpl: Kpl::None(""),
        doc: "Write the metrics as CloudWatch Embedded Metric Format lines here instead of uploading them",
        read: values::optional,
    },
    KeyDef {
        name: "metrics_prometheus_addr",
        ty: "address",
        default: DefaultValue::Unset(""),
        allowed: Allowed::Text("`IP:PORT`, or a port (on 127.0.0.1); `\"\"` = unset"),
        sighup: Sighup::Restart,
        scope: Scope::Global,
        kpl: Kpl::None(""),
        doc: "Serve the metrics in Prometheus text format on this address",
        read: values::prometheus_addr,
    },
    KeyDef {
        name: "compression",
        ty: "string",
        default: DefaultValue::Str("none"),
        allowed: Allowed::OneOf(&["none", "gzip", "zlib"]),
        sighup: Sighup::Live,
        scope: Scope::Stream,
        kpl: Kpl::None(""),
        doc: "Compress each record's data before aggregation",
        read: values::compression,
    },
    KeyDef {
        name: "compression_level",
        ty: "u32",
        default: DefaultValue::Int(6),
        allowed: Allowed::Range(Bound::Lit(0), Bound::Lit(9)),
        sighup: Sighup::Live,
        scope: Scope::Stream,
        kpl: Kpl::None(""),
        doc: "gzip/zlib level",
        read: values::plain::<u32>,
    },
    KeyDef {
        name: "state_dir",
        ty: "path",
        default: DefaultValue::Str("/var/lib/kpld"),
        allowed: Allowed::Text("an absolute path; created when `[[files]]` tables exist"),
        sighup: Sighup::Restart,
        scope: Scope::Global,
        kpl: Kpl::None("the Kinesis Agent's checkpoint file"),
        doc: "Log file checkpoints and dead letters (not a tmpfs such as /run)",
        read: values::state_dir,
    },
    KeyDef {
        name: "durability",
        ty: "string",
        default: DefaultValue::Str("memory"),
        allowed: Allowed::OneOf(&["memory", "disk"]),
        sighup: Sighup::Live,
        scope: Scope::Stream,
        kpl: Kpl::None("the KPL keeps records in memory only"),
        doc: "`disk`: a record is accepted only once it is in the spool, and replayed after a crash",
        read: values::durability,
    },
    KeyDef {
        name: "spool_dir",
        ty: "path",
        default: DefaultValue::Unset("`<state_dir>/spool`"),
        allowed: Allowed::Text("an absolute path; `\"\"` = unset"),
        sighup: Sighup::Restart,
        scope: Scope::Global,
        kpl: Kpl::None(""),
        doc: "Where records of `disk` streams are spooled (not a tmpfs such as /run)",
        read: values::spool_dir,
    },
    KeyDef {
        name: "max_spool_bytes",
        ty: "u64 bytes",
        default: DefaultValue::Int(1024 * MIB),
        allowed: Allowed::Range(Bound::Lit(4 * MIB), Bound::Lit(u64::MAX)),
        sighup: Sighup::Restart,
        scope: Scope::Global,
        kpl: Kpl::None(""),
        doc: "Disk bound of the spool: past it, puts of `disk` streams wait (or get `Busy`)",
        read: values::plain::<u64>,
    },
    KeyDef {
        name: "spool_fsync",
        ty: "string",
        default: DefaultValue::Str("batch"),
        allowed: Allowed::OneOf(&["batch", "always", "never"]),
        sighup: Sighup::Restart,
        scope: Scope::Global,
        kpl: Kpl::None(""),
        doc: "`batch`: one fdatasync per `spool_fsync_interval_ms` for every record before it; `always`: none accepted before its own; `never`: accepted once written",
        read: values::spool_fsync,
    },
    KeyDef {
        name: "spool_fsync_interval_ms",
        ty: "u64 ms",
        default: DefaultValue::Int(10),
        allowed: Allowed::Range(Bound::Lit(1), Bound::Lit(1000)),
        sighup: Sighup::Restart,
        scope: Scope::Global,
        kpl: Kpl::None(""),
        doc: "Group commit interval of `spool_fsync = \"batch\"`",
        read: values::plain::<u64>,
    },
    KeyDef {
        name: "streams_allowed",
        ty: "array of strings",
        default: DefaultValue::Unset("all streams"),
        allowed: Allowed::Text("names or globs (`*`, `?`), none empty"),
        sighup: Sighup::Live,
        scope: Scope::Global,
        kpl: Kpl::None(""),
        doc: "Refuse records for other streams",
        read: values::patterns,
    },
    KeyDef {
        name: STREAMS,
        ty: "tables",
        default: DefaultValue::Unset(""),
        allowed: Allowed::Text("see below"),
        // Each stream's keys say what SIGHUP does with them.
        sighup: Sighup::Live,
        scope: Scope::Global,
        kpl: Kpl::None("one KPL instance = one config"),
        doc: "Per-stream overrides",
        // Its tables and their keys are checked as they are read (raw.rs).
        read: values::plain::<toml::Table>,
    },
    KeyDef {
        name: FILES,
        ty: "array of tables",
        default: DefaultValue::EmptyList,
        allowed: Allowed::Text("see docs/files.md"),
        sighup: Sighup::Live,
        scope: Scope::Global,
        kpl: Kpl::None("the Kinesis Agent's flows"),
        doc: "Log files to ship: `[[files]]` tables",
        read: values::files,
    },
    KeyDef {
        name: "role_arn",
        ty: "string",
        default: DefaultValue::Unset(""),
        allowed: Allowed::Text("starts with `arn:`"),
        sighup: Sighup::Restart,
        scope: Scope::StreamClientOnly,
        kpl: Kpl::None("the KPL takes a credentials provider"),
        doc: "IAM role to assume for this stream",
        read: values::role_arn,
    },
];

impl KeyDef {
    /// Whether the key may be set outside a stream table.
    pub fn is_global(&self) -> bool {
        self.scope != Scope::StreamClientOnly
    }

    /// Whether a `[streams."NAME"]` table may hold the key.
    pub fn in_streams(&self) -> bool {
        self.scope != Scope::Global
    }

    /// Whether a stream takes the global value when its table does not set the key.
    pub fn inherited(&self) -> bool {
        self.scope == Scope::Stream
    }

    pub(super) fn read(&self, v: toml::Value) -> Result<Option<toml::Value>, values::Bad> {
        (self.read)(v)
    }

    /// The default as a value the reader takes; None: unset or derived.
    pub(super) fn default_value(&self) -> Option<toml::Value> {
        match self.default {
            DefaultValue::Int(n) => Some(int_value(n)),
            DefaultValue::Bool(b) => Some(b.into()),
            DefaultValue::Str(s) => Some(s.into()),
            DefaultValue::EmptyList => Some(toml::Value::Array(Vec::new())),
            DefaultValue::Unset(_) | DefaultValue::Derived(_) => None,
        }
    }

    /// The derived default, in a stream table when `in_stream`.
    pub(super) fn derived(&self, values: &Values, in_stream: bool) -> Option<u64> {
        let DefaultValue::Derived(d) = &self.default else {
            return None;
        };
        if in_stream {
            d.stream.map(|f| f(values))
        } else {
            Some((d.global)(values))
        }
    }

    /// The bounds of the key's range, in a stream table when `in_stream`.
    pub(super) fn range(&self, in_stream: bool) -> Option<(Bound, Bound)> {
        match self.allowed {
            Allowed::Range(lo, hi) => Some((lo, hi)),
            Allowed::Ranges { global, stream } => Some(if in_stream { stream } else { global }),
            _ => None,
        }
    }
}

/// A non-negative integer as TOML holds it (every value kpld reads came
/// from a TOML integer, so it fits).
pub(super) fn int_value(n: u64) -> toml::Value {
    toml::Value::Integer(i64::try_from(n).unwrap_or(i64::MAX))
}

/// The key named `name`, global or stream-only.
pub fn key(name: &str) -> Option<&'static KeyDef> {
    KEYS.iter().find(|k| k.name == name)
}

/// The keys of the top level of a config file, in table order.
pub fn global_keys() -> impl Iterator<Item = &'static KeyDef> {
    KEYS.iter().filter(|k| k.is_global())
}

/// The keys a `[streams."NAME"]` table may hold, in table order.
pub fn stream_keys() -> impl Iterator<Item = &'static KeyDef> {
    KEYS.iter().filter(|k| k.in_streams())
}

/// Keys in the order their ranges are checked: table order, except that a
/// key comes after the keys its bounds name, so an error names the key the
/// user got wrong rather than one whose bound it moved.
pub(super) fn check_order(in_stream: bool) -> Vec<&'static KeyDef> {
    fn visit(k: &'static KeyDef, in_stream: bool, out: &mut Vec<&'static KeyDef>) {
        if out.iter().any(|o| o.name == k.name) {
            return;
        }
        if let Some((lo, hi)) = k.range(in_stream) {
            for b in [lo, hi] {
                if let Bound::Key(name, _) = b {
                    match key(name) {
                        Some(dep) if dep.in_streams() || !in_stream => visit(dep, in_stream, out),
                        _ => {}
                    }
                }
            }
        }
        out.push(k);
    }
    let mut out = Vec::new();
    for k in KEYS.iter().filter(|k| {
        if in_stream {
            k.in_streams()
        } else {
            k.is_global()
        }
    }) {
        visit(k, in_stream, &mut out);
    }
    out
}

/// The values read so far, for bounds and derived defaults. In a stream
/// table `own` is the stream's values and `global` the global ones.
pub(super) struct Values<'a> {
    pub(super) own: &'a toml::Table,
    pub(super) global: Option<&'a toml::Table>,
}

impl Values<'_> {
    /// The integer value of `key`.
    pub(super) fn int(&self, key: &str) -> u64 {
        self.own
            .get(key)
            .or_else(|| self.global.and_then(|g| g.get(key)))
            .and_then(toml::Value::as_integer)
            .and_then(|i| u64::try_from(i).ok())
            .unwrap_or_else(|| {
                panic!("`{key}`, named by a bound or a derived default, has no integer value")
            })
    }

    pub(super) fn bound(&self, b: Bound) -> u64 {
        match b {
            Bound::Lit(n) => n,
            Bound::Key(k, off) => self.int(k).saturating_add_signed(off),
        }
    }
}

// ---------------------------------------------------------------------------
// docs/configuration.md

/// The "Every key" table of docs/configuration.md.
pub fn markdown_table() -> String {
    let mut out = String::from(
        "| Key | Type | Default | Allowed | Stream | SIGHUP | KPL equivalent | Meaning |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for k in KEYS {
        let name = match k.scope {
            Scope::StreamClientOnly => format!("`[streams.\"NAME\"].{}`", k.name),
            _ => format!("`{}`", k.name),
        };
        let stream = match k.scope {
            Scope::Global => "",
            Scope::Stream | Scope::StreamClient => "yes",
            Scope::StreamClientOnly => "stream only",
        };
        let sighup = match k.sighup {
            Sighup::Live => "live",
            Sighup::Restart => "restart",
        };
        let kpl = match k.kpl {
            Kpl::Name(names) => names
                .iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(" + "),
            Kpl::None("") => "(none)".into(),
            Kpl::None(why) => format!("(none: {why})"),
        };
        let cells = [
            name,
            k.ty.into(),
            k.default_doc(),
            k.allowed_doc(),
            stream.into(),
            sighup.into(),
            kpl,
            k.doc.into(),
        ];
        let cells: Vec<String> = cells
            .iter()
            .map(|c| {
                if c.is_empty() {
                    " ".into()
                } else {
                    format!(" {c} ")
                }
            })
            .collect();
        let _ = writeln!(out, "|{}|", cells.join("|"));
    }
    out
}

/// The list of keys a stream table may hold, for docs/configuration.md.
pub fn markdown_stream_keys() -> String {
    let names: Vec<String> = stream_keys().map(|k| format!("`{}`", k.name)).collect();
    format!("{}.\n", names.join(", "))
}

impl KeyDef {
    fn unit(&self) -> &'static str {
        self.ty.rsplit(' ').next().unwrap_or("")
    }

    /// A number as the docs show it: with its size or duration when round.
    fn number(&self, n: u64) -> String {
        if n == u64::MAX {
            return "u64 max".into();
        }
        if n == u64::MAX >> 4 {
            return "2^60-1".into();
        }
        let plural = |n: u64, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
        let human = match self.unit() {
            "bytes" if n >= MIB && n % MIB == 0 => Some(format!("{} MiB", n / MIB)),
            "ms" if n >= DAY_MS && n % DAY_MS == 0 => Some(plural(n / DAY_MS, "day")),
            "ms" if n >= HOUR_MS && n % HOUR_MS == 0 => Some(plural(n / HOUR_MS, "hour")),
            _ => None,
        };
        match human {
            Some(h) => format!("{n} ({h})"),
            None => n.to_string(),
        }
    }

    fn bound_doc(&self, b: Bound) -> String {
        match b {
            Bound::Lit(n) => self.number(n),
            Bound::Key(k, 0) => format!("`{k}`"),
            Bound::Key(k, off) if off > 0 => format!("`{k}` + {off}"),
            Bound::Key(k, off) => format!("`{k}` − {}", off.unsigned_abs()),
        }
    }

    fn default_doc(&self) -> String {
        match &self.default {
            DefaultValue::Int(n) => {
                let shown = self.number(*n);
                match shown.split_once(' ') {
                    Some((n, rest)) => format!("`{n}` {rest}"),
                    None => format!("`{shown}`"),
                }
            }
            DefaultValue::Bool(b) => format!("`{b}`"),
            DefaultValue::Str(s) => format!("`\"{s}\"`"),
            DefaultValue::EmptyList => "`[]`".into(),
            DefaultValue::Unset("") => "unset".into(),
            DefaultValue::Unset(why) => format!("unset ({why})"),
            DefaultValue::Derived(d) => d.doc.into(),
        }
    }

    fn allowed_doc(&self) -> String {
        let range =
            |(lo, hi): (Bound, Bound)| format!("{} ..= {}", self.bound_doc(lo), self.bound_doc(hi));
        match self.allowed {
            Allowed::Any => String::new(),
            Allowed::Range(lo, hi) => range((lo, hi)),
            Allowed::Ranges { global, stream } => {
                format!("{}; per stream {}", range(global), range(stream))
            }
            Allowed::OneOf(values) => values
                .iter()
                .map(|v| format!("`\"{v}\"`"))
                .collect::<Vec<_>>()
                .join(", "),
            Allowed::Text(t) => t.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// Replaces what is between `<!-- NAME:begin -->` and `<!-- NAME:end -->`.
    fn replace_section(doc: &str, name: &str, body: &str) -> String {
        let (begin, end) = (
            format!("<!-- {name}:begin -->\n"),
            format!("<!-- {name}:end -->"),
        );
        let start = doc
            .find(&begin)
            .unwrap_or_else(|| panic!("docs/configuration.md has no {begin:?}"))
            + begin.len();
        let stop = start
            + doc[start..]
                .find(&end)
                .unwrap_or_else(|| panic!("docs/configuration.md has no {end:?}"));
        format!("{}{body}{}", &doc[..start], &doc[stop..])
    }

    #[test]
    fn docs_key_table_matches_the_definitions() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/configuration.md");
        let doc = std::fs::read_to_string(&path).unwrap();
        let want = replace_section(&doc, "keys", &markdown_table());
        let want = replace_section(&want, "stream-keys", &markdown_stream_keys());
        if want == doc {
            return;
        }
        if std::env::var_os("KPLD_UPDATE_DOCS").is_some_and(|v| v == "1") {
            std::fs::write(&path, &want).unwrap();
            return;
        }
        panic!(
            "docs/configuration.md's key tables differ from src/config/keys.rs; regenerate them \
             with `KPLD_UPDATE_DOCS=1 cargo test --lib config::keys`. The table should read:\n\n{}\n{}",
            markdown_table(),
            markdown_stream_keys()
        );
    }

    #[test]
    fn names_are_unique_and_every_bound_names_an_integer_key() {
        for (i, k) in KEYS.iter().enumerate() {
            assert!(
                KEYS[..i].iter().all(|o| o.name != k.name),
                "{} is defined twice",
                k.name
            );
            for in_stream in [false, true] {
                for b in k.range(in_stream).into_iter().flat_map(|(lo, hi)| [lo, hi]) {
                    if let Bound::Key(name, _) = b {
                        let dep = key(name).unwrap_or_else(|| panic!("{}: no key {name}", k.name));
                        assert!(
                            dep.range(false).is_some(),
                            "{}: {name} is no integer",
                            k.name
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn each_listed_value_is_accepted_and_others_are_not() {
        for k in KEYS {
            if let Allowed::OneOf(values) = k.allowed {
                for v in values {
                    assert!(k.read((*v).into()).is_ok(), "{}: {v}", k.name);
                }
                assert!(k.read("surely-not".into()).is_err(), "{}", k.name);
            }
        }
    }

    #[test]
    fn bounds_are_checked_before_the_keys_that_name_them() {
        let names: Vec<_> = check_order(false).iter().map(|k| k.name).collect();
        let at = |n| names.iter().position(|x| *x == n).unwrap();
        assert!(at("max_record_size") < at("aggregation_max_size"));
        assert!(at("max_record_size") < at("max_frame_size"));
        assert!(at("max_frame_size") < at("max_buffered_bytes"));
        assert_eq!(names.len(), global_keys().count());
        let in_stream: Vec<_> = check_order(true).iter().map(|k| k.name).collect();
        assert_eq!(in_stream.len(), stream_keys().count());
        assert!(!in_stream.contains(&"max_frame_size"));
    }

    #[test]
    fn docs_show_round_sizes_and_durations() {
        let k = |n| key(n).unwrap();
        assert_eq!(k("collection_max_size").default_doc(), "`5242880` (5 MiB)");
        assert_eq!(k("record_ttl_ms").allowed_doc(), "1 ..= 604800000 (7 days)");
        assert_eq!(
            k("max_record_size").allowed_doc(),
            "1 ..= 10485760 (10 MiB); per stream 1 ..= `max_frame_size` − 1024"
        );
        assert_eq!(k("max_outstanding_records").allowed_doc(), "1 ..= 2^60-1");
        assert_eq!(k("aggregation_max_count").default_doc(), "`4294967295`");
    }
}
