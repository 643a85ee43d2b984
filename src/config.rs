//! Configuration: what the user wrote (TOML file + `KPLD_*` environment
//! variables) and the validated form the daemon runs with.
//!
//! Two layers, as in ripgrep: [`RawConfig`] mirrors the file (every key
//! optional, unknown keys refused) and [`Config`] is built from it by
//! [`Config::from_raw`], which applies the KPL defaults and checks every value,
//! naming the key in any error.

use crate::access::{AccessPolicy, IdSetting, ModeSetting, SocketMode, SocketPerms};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Every key a config file may hold, in the order `--check` prints them.
pub const KEYS: &[&str] = &[
    "socket_path",
    "socket_mode",
    "socket_group",
    "allowed_uids",
    "allowed_gids",
    "region",
    "kinesis_endpoint",
    "aggregation_enabled",
    "aggregation_max_count",
    "aggregation_max_size",
    "collection_max_count",
    "collection_max_size",
    "record_max_buffered_time_ms",
    "record_ttl_ms",
    "fail_if_throttled",
    "rate_limit",
    "max_connections",
    "request_timeout_ms",
    "connect_timeout_ms",
    "max_record_size",
    "max_frame_size",
    "max_buffered_bytes",
    "max_outstanding_records",
    "retry_backoff_base_ms",
    "retry_backoff_max_ms",
    "shutdown_grace_ms",
    "log_level",
    "log_format",
    "metrics_level",
    "metrics_granularity",
    "metrics_namespace",
    "metrics_upload_delay_ms",
    "cloudwatch_endpoint",
    "metrics_emf_path",
    "metrics_prometheus_addr",
    "compression",
    "compression_level",
    "streams_allowed",
    "streams",
];

/// Keys a `[streams."NAME"]` table may hold.
pub const STREAM_KEYS: &[&str] = &[
    "aggregation_enabled",
    "aggregation_max_count",
    "aggregation_max_size",
    "record_max_buffered_time_ms",
    "record_ttl_ms",
    "rate_limit",
    "fail_if_throttled",
    "max_record_size",
    "compression",
    "compression_level",
    "region",
    "kinesis_endpoint",
    "role_arn",
];

/// The stream keys that choose a stream's Kinesis client (built at start).
pub const STREAM_CLIENT_KEYS: &[&str] = &["region", "kinesis_endpoint", "role_arn"];

/// The config file as written. See `kpld --help` and docs/configuration.md
/// (or `systemd/kpld.toml.example`) for what each key means.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub socket_path: Option<PathBuf>,
    /// Octal string ("0660") or integer (TOML 0o660).
    pub socket_mode: Option<ModeSetting>,
    /// Group name (from /etc/group) or gid.
    pub socket_group: Option<IdSetting>,
    /// User names (from /etc/passwd) or uids.
    pub allowed_uids: Option<Vec<IdSetting>>,
    /// Group names (from /etc/group) or gids.
    pub allowed_gids: Option<Vec<IdSetting>>,
    pub region: Option<String>,
    pub kinesis_endpoint: Option<String>,
    pub aggregation_enabled: Option<bool>,
    pub aggregation_max_count: Option<u64>,
    pub aggregation_max_size: Option<u64>,
    pub collection_max_count: Option<u64>,
    pub collection_max_size: Option<u64>,
    pub record_max_buffered_time_ms: Option<u64>,
    pub record_ttl_ms: Option<u64>,
    pub fail_if_throttled: Option<bool>,
    pub rate_limit: Option<u64>,
    pub max_connections: Option<u64>,
    pub request_timeout_ms: Option<u64>,
    pub connect_timeout_ms: Option<u64>,
    pub max_record_size: Option<u64>,
    pub max_frame_size: Option<u64>,
    pub max_buffered_bytes: Option<u64>,
    pub max_outstanding_records: Option<u64>,
    pub retry_backoff_base_ms: Option<u64>,
    pub retry_backoff_max_ms: Option<u64>,
    pub shutdown_grace_ms: Option<u64>,
    pub log_level: Option<String>,
    pub log_format: Option<String>,
    pub metrics_level: Option<String>,
    pub metrics_granularity: Option<String>,
    pub metrics_namespace: Option<String>,
    pub metrics_upload_delay_ms: Option<u64>,
    pub cloudwatch_endpoint: Option<String>,
    pub metrics_emf_path: Option<String>,
    pub metrics_prometheus_addr: Option<String>,
    pub compression: Option<String>,
    pub compression_level: Option<u32>,
    pub streams_allowed: Option<Vec<String>>,
    pub streams: Option<BTreeMap<String, RawStream>>,
}

/// A `[streams."NAME"]` table as written: overrides for one stream.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStream {
    pub aggregation_enabled: Option<bool>,
    pub aggregation_max_count: Option<u64>,
    pub aggregation_max_size: Option<u64>,
    pub record_max_buffered_time_ms: Option<u64>,
    pub record_ttl_ms: Option<u64>,
    pub rate_limit: Option<u64>,
    pub fail_if_throttled: Option<bool>,
    pub max_record_size: Option<u64>,
    pub compression: Option<String>,
    pub compression_level: Option<u32>,
    pub region: Option<String>,
    pub kinesis_endpoint: Option<String>,
    pub role_arn: Option<String>,
}

/// How each user record's data is compressed before aggregation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
    Zlib,
}

impl Compression {
    fn parse(key: &'static str, v: Option<&str>) -> Result<Option<Self>, ConfigError> {
        match v {
            None => Ok(None),
            Some("none") => Ok(Some(Compression::None)),
            Some("gzip") => Ok(Some(Compression::Gzip)),
            Some("zlib") => Ok(Some(Compression::Zlib)),
            Some(other) => Err(ConfigError::Invalid {
                key,
                message: format!("must be \"none\", \"gzip\" or \"zlib\", not {other:?}"),
            }),
        }
    }
}

/// The settings one stream runs with: the global keys overlaid by its
/// `[streams."NAME"]` table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StreamSettings {
    pub aggregation_enabled: bool,
    pub aggregation_max_count: u64,
    pub aggregation_max_size: u64,
    pub record_max_buffered_time_ms: u64,
    pub record_ttl_ms: u64,
    pub rate_limit: u64,
    pub fail_if_throttled: bool,
    pub max_record_size: u64,
    pub compression: Compression,
    pub compression_level: u32,
    /// A Kinesis client of its own when any of these is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kinesis_endpoint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role_arn: Option<String>,
}

impl StreamSettings {
    pub fn record_max_buffered_time(&self) -> Duration {
        Duration::from_millis(self.record_max_buffered_time_ms)
    }
    pub fn record_ttl(&self) -> Duration {
        Duration::from_millis(self.record_ttl_ms)
    }
    /// True when the stream needs a Kinesis client other than the default.
    pub fn has_own_client(&self) -> bool {
        self.region.is_some() || self.kinesis_endpoint.is_some() || self.role_arn.is_some()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// The validated configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    pub socket_path: PathBuf,
    /// Mode of the socket file kpld creates (not used when systemd passes the socket).
    pub socket_mode: SocketMode,
    /// Group of the socket file kpld creates; None: kpld's own group.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub socket_group: Option<u32>,
    /// Who may connect (SO_PEERCRED): a listed uid, or a listed primary or
    /// supplementary gid. Both empty: anyone who can open the socket file.
    pub allowed_uids: Vec<u32>,
    pub allowed_gids: Vec<u32>,
    /// None: from the AWS chain (AWS_REGION, profile, IMDS).
    pub region: Option<String>,
    /// None: the AWS default, or AWS_ENDPOINT_URL_KINESIS.
    pub kinesis_endpoint: Option<String>,
    pub aggregation_enabled: bool,
    pub aggregation_max_count: u64,
    pub aggregation_max_size: u64,
    pub collection_max_count: u64,
    pub collection_max_size: u64,
    pub record_max_buffered_time_ms: u64,
    pub record_ttl_ms: u64,
    pub fail_if_throttled: bool,
    /// Percent of the per-shard limits (1000 records/s, 1 MiB/s) kpld sends at most.
    pub rate_limit: u64,
    pub max_connections: u64,
    pub request_timeout_ms: u64,
    pub connect_timeout_ms: u64,
    pub max_record_size: u64,
    pub max_frame_size: u64,
    pub max_buffered_bytes: u64,
    pub max_outstanding_records: u64,
    pub retry_backoff_base_ms: u64,
    pub retry_backoff_max_ms: u64,
    pub shutdown_grace_ms: u64,
    pub log_level: String,
    pub log_format: LogFormat,
    /// none | summary | detailed (the KPL's MetricsLevel).
    pub metrics_level: crate::metrics::Level,
    /// global | stream | shard (the KPL's MetricsGranularity).
    pub metrics_granularity: crate::metrics::Granularity,
    pub metrics_namespace: String,
    pub metrics_upload_delay_ms: u64,
    /// None: the AWS default, or AWS_ENDPOINT_URL_CLOUDWATCH.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cloudwatch_endpoint: Option<String>,
    /// EMF lines to this file ("-" or "stdout": standard output) instead of
    /// PutMetricData.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_emf_path: Option<String>,
    /// "IP:PORT" of the Prometheus endpoint (normalised: a bare port means
    /// 127.0.0.1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_prometheus_addr: Option<String>,
    pub compression: Compression,
    pub compression_level: u32,
    /// When set, records for streams matching none of these names or glob
    /// patterns (`*`, `?`) are refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub streams_allowed: Option<Vec<String>>,
    /// Per-stream settings, fully resolved (kept last: TOML tables follow values).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub streams: BTreeMap<String, StreamSettings>,
}

/// A config that cannot be used; the message names the key or file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("unknown config key `{key}` (from {origin}); known keys: {}", KEYS.join(", "))]
    UnknownKey { key: String, origin: String },
    #[error("bad value for config key `{key}` (from {origin}): {message}")]
    BadValue {
        key: String,
        origin: String,
        message: String,
    },
    #[error("config key `{key}`: {message}")]
    Invalid { key: &'static str, message: String },
    #[error("config key `{key}` of [streams.{stream:?}]: {message}")]
    InvalidStream {
        stream: String,
        key: String,
        message: String,
    },
}

const MIB: u64 = 1024 * 1024;

impl Config {
    /// Reads `path` (if any), applies `KPLD_*` overrides from `env`, validates.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut table = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.to_owned(),
                    source,
                })?;
                text.parse::<toml::Table>()
                    .map_err(|e| ConfigError::Syntax {
                        path: p.to_owned(),
                        message: e.to_string(),
                    })?
            }
            None => toml::Table::new(),
        };
        let file_origin = path.map_or_else(|| "defaults".to_string(), |p| p.display().to_string());
        let mut origins: std::collections::HashMap<String, String> = table
            .keys()
            .map(|k| (k.clone(), file_origin.clone()))
            .collect();
        for (name, value) in env {
            let Some(key) = name.strip_prefix("KPLD_") else {
                continue;
            };
            let key = key.to_ascii_lowercase();
            if !KEYS.contains(&key.as_str()) {
                // KPLD_SOCKET and the like belong to the clients.
                continue;
            }
            table.insert(key.clone(), env_value(&value));
            origins.insert(key, format!("environment variable {name}"));
        }
        let mut raw = RawConfig::default();
        for (key, value) in table {
            let origin = origins.remove(&key).unwrap_or_default();
            if !KEYS.contains(&key.as_str()) {
                return Err(ConfigError::UnknownKey { key, origin });
            }
            if key == "streams" {
                raw.streams = Some(parse_streams(value, &origin)?);
                continue;
            }
            let mut one = toml::Table::new();
            one.insert(key.clone(), value);
            let parsed: RawConfig =
                toml::Value::Table(one)
                    .try_into()
                    .map_err(|e: toml::de::Error| ConfigError::BadValue {
                        key: key.clone(),
                        origin,
                        message: e.message().trim().to_string(),
                    })?;
            raw.merge(parsed);
        }
        Config::from_raw(raw)
    }

    /// Applies the defaults and checks every value.
    pub fn from_raw(raw: RawConfig) -> Result<Config, ConfigError> {
        let max_record_size = raw.max_record_size.unwrap_or(MIB);
        let invalid =
            |key: &'static str| move |message: String| ConfigError::Invalid { key, message };
        let ids = |key: &'static str, v: &Option<Vec<IdSetting>>, group: bool| {
            v.iter()
                .flatten()
                .map(|id| {
                    if group {
                        id.resolve_group()
                    } else {
                        id.resolve_user()
                    }
                })
                .collect::<Result<Vec<u32>, _>>()
                .map_err(|e| invalid(key)(e.to_string()))
        };
        let c = Config {
            socket_path: raw
                .socket_path
                .unwrap_or_else(|| PathBuf::from("/run/kpld/kpld.sock")),
            socket_mode: match &raw.socket_mode {
                None => SocketMode::default(),
                Some(m) => SocketMode(m.resolve().map_err(invalid("socket_mode"))?),
            },
            socket_group: raw
                .socket_group
                .as_ref()
                .map(|g| g.resolve_group())
                .transpose()
                .map_err(|e| invalid("socket_group")(e.to_string()))?,
            allowed_uids: ids("allowed_uids", &raw.allowed_uids, false)?,
            allowed_gids: ids("allowed_gids", &raw.allowed_gids, true)?,
            region: raw.region.filter(|r| !r.is_empty()),
            kinesis_endpoint: raw.kinesis_endpoint.filter(|e| !e.is_empty()),
            aggregation_enabled: raw.aggregation_enabled.unwrap_or(true),
            aggregation_max_count: raw.aggregation_max_count.unwrap_or(4_294_967_295),
            aggregation_max_size: raw
                .aggregation_max_size
                .unwrap_or(51_200.min(max_record_size)),
            collection_max_count: raw.collection_max_count.unwrap_or(500),
            collection_max_size: raw.collection_max_size.unwrap_or(5 * MIB),
            record_max_buffered_time_ms: raw.record_max_buffered_time_ms.unwrap_or(100),
            record_ttl_ms: raw.record_ttl_ms.unwrap_or(30_000),
            fail_if_throttled: raw.fail_if_throttled.unwrap_or(false),
            rate_limit: raw.rate_limit.unwrap_or(150),
            max_connections: raw.max_connections.unwrap_or(24),
            request_timeout_ms: raw.request_timeout_ms.unwrap_or(6_000),
            connect_timeout_ms: raw.connect_timeout_ms.unwrap_or(6_000),
            max_record_size,
            max_frame_size: raw
                .max_frame_size
                .unwrap_or_else(|| (8 * MIB).max(max_record_size + 64 * 1024)),
            max_buffered_bytes: raw.max_buffered_bytes.unwrap_or(256 * MIB),
            max_outstanding_records: raw.max_outstanding_records.unwrap_or(1_000_000),
            retry_backoff_base_ms: raw.retry_backoff_base_ms.unwrap_or(100),
            retry_backoff_max_ms: raw.retry_backoff_max_ms.unwrap_or(5_000),
            shutdown_grace_ms: raw.shutdown_grace_ms.unwrap_or(30_000),
            log_level: raw.log_level.unwrap_or_else(|| "info".to_string()),
            metrics_level: match raw.metrics_level.as_deref() {
                None => crate::metrics::Level::Detailed,
                Some(v) => v.parse().map_err(|message| ConfigError::Invalid {
                    key: "metrics_level",
                    message,
                })?,
            },
            metrics_granularity: match raw.metrics_granularity.as_deref() {
                None => crate::metrics::Granularity::Shard,
                Some(v) => v.parse().map_err(|message| ConfigError::Invalid {
                    key: "metrics_granularity",
                    message,
                })?,
            },
            metrics_namespace: raw
                .metrics_namespace
                .unwrap_or_else(|| crate::metrics::DEFAULT_NAMESPACE.to_string()),
            metrics_upload_delay_ms: raw
                .metrics_upload_delay_ms
                .unwrap_or(crate::metrics::DEFAULT_UPLOAD_DELAY_MS),
            cloudwatch_endpoint: raw.cloudwatch_endpoint.filter(|e| !e.is_empty()),
            metrics_emf_path: raw.metrics_emf_path.filter(|p| !p.is_empty()),
            metrics_prometheus_addr: match raw.metrics_prometheus_addr.filter(|a| !a.is_empty()) {
                None => None,
                Some(a) => Some(
                    crate::metrics::parse_prometheus_addr(&a)
                        .map_err(|message| ConfigError::Invalid {
                            key: "metrics_prometheus_addr",
                            message,
                        })?
                        .to_string(),
                ),
            },
            log_format: match raw.log_format.as_deref() {
                None | Some("text") => LogFormat::Text,
                Some("json") => LogFormat::Json,
                Some(other) => {
                    return Err(ConfigError::Invalid {
                        key: "log_format",
                        message: format!("must be \"text\" or \"json\", not {other:?}"),
                    })
                }
            },
            compression: Compression::parse("compression", raw.compression.as_deref())?
                .unwrap_or(Compression::None),
            compression_level: raw.compression_level.unwrap_or(6),
            streams_allowed: raw.streams_allowed,
            streams: BTreeMap::new(),
        };
        c.validate()?;
        let mut c = c;
        for (name, rs) in raw.streams.unwrap_or_default() {
            let s = c.resolve_stream(&name, rs)?;
            c.streams.insert(name, s);
        }
        Ok(c)
    }

    /// The settings of a stream with no table of its own.
    pub fn default_stream_settings(&self) -> StreamSettings {
        StreamSettings {
            aggregation_enabled: self.aggregation_enabled,
            aggregation_max_count: self.aggregation_max_count,
            aggregation_max_size: self.aggregation_max_size,
            record_max_buffered_time_ms: self.record_max_buffered_time_ms,
            record_ttl_ms: self.record_ttl_ms,
            rate_limit: self.rate_limit,
            fail_if_throttled: self.fail_if_throttled,
            max_record_size: self.max_record_size,
            compression: self.compression,
            compression_level: self.compression_level,
            region: None,
            kinesis_endpoint: None,
            role_arn: None,
        }
    }

    /// The settings a stream runs with.
    pub fn stream_settings(&self, name: &str) -> StreamSettings {
        self.streams
            .get(name)
            .cloned()
            .unwrap_or_else(|| self.default_stream_settings())
    }

    /// Whether `streams_allowed` lets records for `name` through.
    pub fn stream_allowed(&self, name: &str) -> bool {
        match &self.streams_allowed {
            None => true,
            Some(pats) => pats.iter().any(|p| glob_match(p, name)),
        }
    }

    fn resolve_stream(&self, name: &str, r: RawStream) -> Result<StreamSettings, ConfigError> {
        let bad = |key: &str, message: String| ConfigError::InvalidStream {
            stream: name.to_string(),
            key: key.to_string(),
            message,
        };
        let d = self.default_stream_settings();
        let s = StreamSettings {
            aggregation_enabled: r.aggregation_enabled.unwrap_or(d.aggregation_enabled),
            aggregation_max_count: r.aggregation_max_count.unwrap_or(d.aggregation_max_count),
            aggregation_max_size: r.aggregation_max_size.unwrap_or(
                d.aggregation_max_size
                    .min(r.max_record_size.unwrap_or(d.max_record_size)),
            ),
            record_max_buffered_time_ms: r
                .record_max_buffered_time_ms
                .unwrap_or(d.record_max_buffered_time_ms),
            record_ttl_ms: r.record_ttl_ms.unwrap_or(d.record_ttl_ms),
            rate_limit: r.rate_limit.unwrap_or(d.rate_limit),
            fail_if_throttled: r.fail_if_throttled.unwrap_or(d.fail_if_throttled),
            max_record_size: r.max_record_size.unwrap_or(d.max_record_size),
            compression: Compression::parse("compression", r.compression.as_deref())
                .map_err(|e| bad("compression", e.to_string()))?
                .unwrap_or(d.compression),
            compression_level: r.compression_level.unwrap_or(d.compression_level),
            region: r.region.filter(|x| !x.is_empty()),
            kinesis_endpoint: r.kinesis_endpoint.filter(|x| !x.is_empty()),
            role_arn: r.role_arn.filter(|x| !x.is_empty()),
        };
        let range = |key: &str, v: u64, lo: u64, hi: u64| {
            if v < lo || v > hi {
                Err(bad(
                    key,
                    format!("{v} is outside the allowed range {lo}..={hi}"),
                ))
            } else {
                Ok(())
            }
        };
        range(
            "aggregation_max_count",
            s.aggregation_max_count,
            1,
            u64::MAX,
        )?;
        range(
            "max_record_size",
            s.max_record_size,
            1,
            self.max_frame_size - 1024,
        )?;
        range(
            "aggregation_max_size",
            s.aggregation_max_size,
            64,
            s.max_record_size,
        )?;
        range(
            "record_max_buffered_time_ms",
            s.record_max_buffered_time_ms,
            0,
            3_600_000,
        )?;
        range("record_ttl_ms", s.record_ttl_ms, 1, 7 * 24 * 3_600_000)?;
        range("rate_limit", s.rate_limit, 1, 100_000)?;
        range("compression_level", s.compression_level as u64, 0, 9)?;
        if let Some(e) = &s.kinesis_endpoint {
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                return Err(bad(
                    "kinesis_endpoint",
                    format!("{e:?} must be a URL starting with http:// or https://"),
                ));
            }
        }
        if let Some(a) = &s.role_arn {
            if !a.starts_with("arn:") {
                return Err(bad(
                    "role_arn",
                    format!("{a:?} is not an ARN (arn:aws:iam::ACCOUNT:role/NAME)"),
                ));
            }
        }
        if !self.stream_allowed(name) {
            return Err(bad(
                "-",
                "the stream has settings but streams_allowed does not allow it".into(),
            ));
        }
        Ok(s)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        fn range(key: &'static str, v: u64, lo: u64, hi: u64) -> Result<(), ConfigError> {
            if v < lo || v > hi {
                return Err(ConfigError::Invalid {
                    key,
                    message: format!("{v} is outside the allowed range {lo}..={hi}"),
                });
            }
            Ok(())
        }
        range(
            "aggregation_max_count",
            self.aggregation_max_count,
            1,
            u64::MAX,
        )?;
        range(
            "aggregation_max_size",
            self.aggregation_max_size,
            64,
            self.max_record_size,
        )?;
        range("collection_max_count", self.collection_max_count, 1, 500)?;
        range("collection_max_size", self.collection_max_size, 1, 64 * MIB)?;
        range(
            "record_max_buffered_time_ms",
            self.record_max_buffered_time_ms,
            0,
            3_600_000,
        )?;
        range("record_ttl_ms", self.record_ttl_ms, 1, 7 * 24 * 3_600_000)?;
        range("rate_limit", self.rate_limit, 1, 100_000)?;
        range("max_connections", self.max_connections, 1, 1024)?;
        range("request_timeout_ms", self.request_timeout_ms, 100, 600_000)?;
        range("connect_timeout_ms", self.connect_timeout_ms, 100, 600_000)?;
        range("max_record_size", self.max_record_size, 1, 10 * MIB)?;
        range(
            "max_frame_size",
            self.max_frame_size,
            self.max_record_size + 1024,
            256 * MIB,
        )?;
        range(
            "max_buffered_bytes",
            self.max_buffered_bytes,
            self.max_frame_size,
            u64::MAX >> 4,
        )?;
        range(
            "max_outstanding_records",
            self.max_outstanding_records,
            1,
            u64::MAX >> 4,
        )?;
        range(
            "retry_backoff_base_ms",
            self.retry_backoff_base_ms,
            1,
            600_000,
        )?;
        range(
            "retry_backoff_max_ms",
            self.retry_backoff_max_ms,
            self.retry_backoff_base_ms,
            600_000,
        )?;
        range("shutdown_grace_ms", self.shutdown_grace_ms, 0, 3_600_000)?;
        range(
            "metrics_upload_delay_ms",
            self.metrics_upload_delay_ms,
            *crate::metrics::UPLOAD_DELAY_RANGE_MS.start(),
            *crate::metrics::UPLOAD_DELAY_RANGE_MS.end(),
        )?;
        crate::metrics::validate_namespace(&self.metrics_namespace).map_err(|message| {
            ConfigError::Invalid {
                key: "metrics_namespace",
                message,
            }
        })?;
        if let Some(e) = &self.cloudwatch_endpoint {
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                return Err(ConfigError::Invalid {
                    key: "cloudwatch_endpoint",
                    message: format!("{e:?} must be a URL starting with http:// or https://"),
                });
            }
        }
        range("compression_level", self.compression_level as u64, 0, 9)?;
        if let Some(p) = &self.streams_allowed {
            if p.iter().any(|x| x.is_empty()) {
                return Err(ConfigError::Invalid {
                    key: "streams_allowed",
                    message: "holds an empty pattern".into(),
                });
            }
        }
        if self.socket_path.as_os_str().is_empty() {
            return Err(ConfigError::Invalid {
                key: "socket_path",
                message: "must not be empty".into(),
            });
        }
        if let Some(e) = &self.kinesis_endpoint {
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                return Err(ConfigError::Invalid {
                    key: "kinesis_endpoint",
                    message: format!("{e:?} must be a URL starting with http:// or https://"),
                });
            }
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log_level).is_err() {
            return Err(ConfigError::Invalid {
                key: "log_level",
                message: format!(
                    "{:?} is not a level (error, warn, info, debug, trace) or filter",
                    self.log_level
                ),
            });
        }
        Ok(())
    }

    /// Who may connect: `allowed_uids` / `allowed_gids`.
    pub fn access_policy(&self) -> AccessPolicy {
        AccessPolicy::new(self.allowed_uids.clone(), self.allowed_gids.clone())
    }

    /// Mode and group of the socket file kpld creates.
    pub fn socket_perms(&self) -> SocketPerms {
        SocketPerms {
            mode: self.socket_mode.0,
            group: self.socket_group,
        }
    }

    /// The effective configuration as TOML, as `--check` prints it.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("the config serialises")
    }

    pub fn record_max_buffered_time(&self) -> Duration {
        Duration::from_millis(self.record_max_buffered_time_ms)
    }
    pub fn record_ttl(&self) -> Duration {
        Duration::from_millis(self.record_ttl_ms)
    }
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }
}

/// Reads the `[streams."NAME"]` tables one key at a time, so an error names
/// the stream and the key.
fn parse_streams(
    value: toml::Value,
    origin: &str,
) -> Result<BTreeMap<String, RawStream>, ConfigError> {
    let bad = |stream: &str, key: &str, message: String| ConfigError::InvalidStream {
        stream: stream.to_string(),
        key: key.to_string(),
        message: format!("{message} (from {origin})"),
    };
    let toml::Value::Table(streams) = value else {
        return Err(ConfigError::BadValue {
            key: "streams".into(),
            origin: origin.into(),
            message: "must be tables: [streams.\"NAME\"]".into(),
        });
    };
    let mut out = BTreeMap::new();
    for (name, table) in streams {
        let toml::Value::Table(table) = table else {
            return Err(bad(&name, "-", "must be a table of settings".into()));
        };
        let mut raw = RawStream::default();
        for (key, v) in table {
            if !STREAM_KEYS.contains(&key.as_str()) {
                return Err(bad(
                    &name,
                    &key,
                    format!(
                        "unknown key; a stream table may hold {}",
                        STREAM_KEYS.join(", ")
                    ),
                ));
            }
            let mut one = toml::Table::new();
            one.insert(key.clone(), v);
            let parsed: RawStream = toml::Value::Table(one)
                .try_into()
                .map_err(|e: toml::de::Error| bad(&name, &key, e.message().trim().to_string()))?;
            raw.merge(parsed);
        }
        out.insert(name, raw);
    }
    Ok(out)
}

impl RawStream {
    fn merge(&mut self, o: RawStream) {
        macro_rules! take {
            ($($f:ident),*) => { $( if o.$f.is_some() { self.$f = o.$f; } )* };
        }
        take!(
            aggregation_enabled,
            aggregation_max_count,
            aggregation_max_size,
            record_max_buffered_time_ms,
            record_ttl_ms,
            rate_limit,
            fail_if_throttled,
            max_record_size,
            compression,
            compression_level,
            region,
            kinesis_endpoint,
            role_arn
        );
    }
}

/// `*` matches any run of characters, `?` any one character.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// An environment value is TOML when it parses as one (numbers, booleans),
/// else a plain string (paths, regions, URLs).
fn env_value(v: &str) -> toml::Value {
    format!("v = {v}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(v.to_string()))
}

impl RawConfig {
    fn merge(&mut self, o: RawConfig) {
        macro_rules! take {
            ($($f:ident),*) => { $( if o.$f.is_some() { self.$f = o.$f; } )* };
        }
        take!(
            socket_mode,
            socket_group,
            allowed_uids,
            allowed_gids,
            compression,
            compression_level,
            streams_allowed,
            socket_path,
            region,
            kinesis_endpoint,
            aggregation_enabled,
            aggregation_max_count,
            aggregation_max_size,
            collection_max_count,
            collection_max_size,
            record_max_buffered_time_ms,
            record_ttl_ms,
            fail_if_throttled,
            rate_limit,
            max_connections,
            request_timeout_ms,
            connect_timeout_ms,
            max_record_size,
            max_frame_size,
            max_buffered_bytes,
            max_outstanding_records,
            retry_backoff_base_ms,
            retry_backoff_max_ms,
            shutdown_grace_ms,
            log_level,
            log_format,
            metrics_level,
            metrics_granularity,
            metrics_namespace,
            metrics_upload_delay_ms,
            cloudwatch_endpoint,
            metrics_emf_path,
            metrics_prometheus_addr
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        Config::load(
            Some(f.path()),
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    #[test]
    fn defaults_are_the_kpl_defaults() {
        let c = load("", &[]).unwrap();
        assert!(c.aggregation_enabled);
        assert_eq!(c.aggregation_max_count, 4_294_967_295);
        assert_eq!(c.aggregation_max_size, 51_200);
        assert_eq!(c.collection_max_count, 500);
        assert_eq!(c.collection_max_size, 5_242_880);
        assert_eq!(c.record_max_buffered_time_ms, 100);
        assert_eq!(c.record_ttl_ms, 30_000);
        assert!(!c.fail_if_throttled);
        assert_eq!(c.max_connections, 24);
        assert_eq!(c.request_timeout_ms, 6_000);
        assert_eq!(c.connect_timeout_ms, 6_000);
        assert_eq!(c.max_record_size, 1_048_576);
    }

    #[test]
    fn every_key_is_accepted_and_printed() {
        let printed = load("", &[]).unwrap().to_toml();
        for key in KEYS {
            if [
                "region",
                "kinesis_endpoint",
                "streams_allowed",
                "streams",
                "socket_group",
                "cloudwatch_endpoint",
                "metrics_emf_path",
                "metrics_prometheus_addr",
            ]
            .contains(key)
            {
                continue; // unset options are not printed
            }
            assert!(
                printed.contains(&format!("{key} =")),
                "{key} missing from {printed}"
            );
        }
    }

    #[test]
    fn unknown_key_is_named() {
        let e = load("recordttl = 5", &[]).unwrap_err().to_string();
        assert!(e.contains("unknown config key `recordttl`"), "{e}");
    }

    #[test]
    fn bad_value_is_named() {
        let e = load("record_ttl_ms = \"soon\"", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("`record_ttl_ms`"), "{e}");
        let e = load("collection_max_count = 501", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("`collection_max_count`"), "{e}");
    }

    #[test]
    fn environment_overrides_the_file() {
        let c = load(
            "record_ttl_ms = 5\nregion = \"eu-west-1\"",
            &[
                ("KPLD_RECORD_TTL_MS", "7000"),
                ("KPLD_REGION", "us-east-2"),
                ("KPLD_FAIL_IF_THROTTLED", "true"),
                ("KPLD_SOCKET_PATH", "/tmp/x.sock"),
                ("KPLD_SOCKET", "ignored: the clients' variable"),
            ],
        )
        .unwrap();
        assert_eq!(c.record_ttl_ms, 7000);
        assert_eq!(c.region.as_deref(), Some("us-east-2"));
        assert!(c.fail_if_throttled);
        assert_eq!(c.socket_path, PathBuf::from("/tmp/x.sock"));
    }

    #[test]
    fn stream_tables_override_the_globals_for_that_stream_only() {
        let c = load(
            "record_ttl_ms = 1000\n[streams.audit]\nrecord_ttl_ms = 600000\ncompression = \"gzip\"\n",
            &[],
        )
        .unwrap();
        assert_eq!(c.stream_settings("audit").record_ttl_ms, 600_000);
        assert_eq!(c.stream_settings("audit").compression, Compression::Gzip);
        assert_eq!(c.stream_settings("other").record_ttl_ms, 1000);
        assert_eq!(c.stream_settings("other").compression, Compression::None);
        assert!(c.to_toml().contains("[streams.audit]"));
    }

    #[test]
    fn stream_table_errors_name_stream_and_key() {
        let e = load("[streams.logs]\ncompresion = \"gzip\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("compresion") && e.contains("logs"), "{e}");
        let e = load("[streams.logs]\ncompression = \"lz4\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("compression") && e.contains("logs"), "{e}");
    }

    #[test]
    fn streams_allowed_takes_globs() {
        let c = load("streams_allowed = [\"clicks\", \"logs-*\"]", &[]).unwrap();
        assert!(c.stream_allowed("clicks"));
        assert!(c.stream_allowed("logs-eu"));
        assert!(!c.stream_allowed("click"));
        assert!(!c.stream_allowed("audit"));
        assert!(glob_match("a?c*", "abcdef"));
        assert!(!glob_match("a?c", "ac"));
    }

    #[test]
    fn metrics_keys_have_the_kpl_defaults_and_are_checked() {
        use crate::metrics::{Granularity, Level};
        let c = load("", &[]).unwrap();
        assert_eq!(c.metrics_level, Level::Detailed);
        assert_eq!(c.metrics_granularity, Granularity::Shard);
        assert_eq!(c.metrics_namespace, "KinesisProducerLibrary");
        assert_eq!(c.metrics_upload_delay_ms, 60_000);
        assert_eq!(c.cloudwatch_endpoint, None);
        assert_eq!(c.metrics_emf_path, None);
        let c = load(
            "metrics_level = \"summary\"\nmetrics_granularity = \"stream\"\nmetrics_prometheus_addr = \"9464\"",
            &[("KPLD_METRICS_EMF_PATH", "-"), ("KPLD_METRICS_UPLOAD_DELAY_MS", "1000")],
        )
        .unwrap();
        assert_eq!(c.metrics_level, Level::Summary);
        assert_eq!(c.metrics_granularity, Granularity::Stream);
        assert_eq!(c.metrics_prometheus_addr.as_deref(), Some("127.0.0.1:9464"));
        assert_eq!(c.metrics_emf_path.as_deref(), Some("-"));
        assert_eq!(c.metrics_upload_delay_ms, 1000);
        for (text, key) in [
            ("metrics_level = \"loud\"", "metrics_level"),
            ("metrics_granularity = \"host\"", "metrics_granularity"),
            ("metrics_namespace = \"AWS/Kinesis\"", "metrics_namespace"),
            ("metrics_upload_delay_ms = 5", "metrics_upload_delay_ms"),
            (
                "cloudwatch_endpoint = \"localhost:4566\"",
                "cloudwatch_endpoint",
            ),
            (
                "metrics_prometheus_addr = \"localhost\"",
                "metrics_prometheus_addr",
            ),
        ] {
            let e = load(text, &[]).unwrap_err().to_string();
            assert!(e.contains(&format!("`{key}`")), "{text}: {e}");
        }
    }

    #[test]
    fn bad_environment_value_names_the_variable() {
        let e = load("", &[("KPLD_RECORD_TTL_MS", "abc")])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("KPLD_RECORD_TTL_MS") && e.contains("record_ttl_ms"),
            "{e}"
        );
    }

    #[test]
    fn socket_access_keys_take_octal_modes_and_names_or_ids() {
        let c = load(
            "socket_mode = \"0640\"\nsocket_group = \"root\"\n\
             allowed_uids = [0, 4242]\nallowed_gids = [\"root\", 7]",
            &[],
        )
        .unwrap();
        assert_eq!(c.socket_mode, SocketMode(0o640));
        assert_eq!(c.socket_group, Some(0));
        assert_eq!(c.allowed_uids, vec![0, 4242]);
        assert_eq!(c.allowed_gids, vec![0, 7]);
        let printed = c.to_toml();
        assert!(printed.contains("socket_mode = \"0640\""), "{printed}");
        assert!(printed.contains("allowed_uids = [0, 4242]"), "{printed}");
        let d = load("socket_mode = 0o600", &[("KPLD_ALLOWED_UIDS", "[1000]")]).unwrap();
        assert_eq!(d.socket_mode, SocketMode(0o600));
        assert_eq!(d.allowed_uids, vec![1000]);
        let e = load("", &[("KPLD_SOCKET_MODE", "0660")]).unwrap();
        assert_eq!(e.socket_mode, SocketMode(0o660));
        let dflt = load("", &[]).unwrap();
        assert_eq!(dflt.socket_mode, SocketMode(0o660));
        assert!(dflt.access_policy().is_open());
    }

    #[test]
    fn bad_socket_access_values_name_the_key() {
        let e = load("socket_mode = 660", &[]).unwrap_err().to_string();
        assert!(e.contains("`socket_mode`") && e.contains("decimal"), "{e}");
        let e = load("socket_group = \"no-such-group-kpld\"", &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`socket_group`") && e.contains("no-such-group-kpld"),
            "{e}"
        );
        let e = load("allowed_uids = [\"no-such-user-kpld\"]", &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`allowed_uids`") && e.contains("/etc/passwd"),
            "{e}"
        );
        let e = load("allowed_uids = 5", &[]).unwrap_err().to_string();
        assert!(e.contains("`allowed_uids`"), "{e}");
    }
}
