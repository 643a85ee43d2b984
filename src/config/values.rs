//! The types of config values and how each is read from what the user wrote:
//! a type check (the error names the type expected), then a check of the
//! value on its own, giving the canonical TOML form `--check` prints.
//! Checks that involve other keys are ranges in `keys.rs`.
//!
//! Leaf of the config module: `metrics` uses these types, never the reverse.
//! `[[files]]` tables are checked by `files::settings` (their own module).

use crate::access::{IdSetting, ModeSetting, SocketMode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Why a value cannot be used. The two kinds are reported differently:
/// a wrong type names where the value came from, a bad value only the key
/// (as documented in docs/configuration.md, "Errors name the key").
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Bad {
    Type(String),
    Value(String),
}

/// Reads one value: `Ok(None)` means the key is unset (an empty string for
/// the optional strings).
pub(super) type Read = fn(toml::Value) -> Result<Option<toml::Value>, Bad>;

fn typed<T: DeserializeOwned>(v: toml::Value) -> Result<T, Bad> {
    v.try_into()
        .map_err(|e: toml::de::Error| Bad::Type(e.message().trim().to_string()))
}

fn canonical<T: Serialize>(v: T) -> toml::Value {
    toml::Value::try_from(v).expect("a config value serialises")
}

/// A value of type `T` as written (numbers, booleans, strings, lists).
pub(super) fn plain<T: DeserializeOwned + Serialize>(
    v: toml::Value,
) -> Result<Option<toml::Value>, Bad> {
    Ok(Some(canonical(typed::<T>(v)?)))
}

/// A string where `""` means unset.
pub(super) fn optional(v: toml::Value) -> Result<Option<toml::Value>, Bad> {
    let s: String = typed(v)?;
    Ok((!s.is_empty()).then(|| s.into()))
}

pub(super) fn socket_path(v: toml::Value) -> Result<Option<toml::Value>, Bad> {
    let p: PathBuf = typed(v)?;
    if p.as_os_str().is_empty() {
        return Err(Bad::Value("must not be empty".into()));
    }
    // The kernel's sockaddr_un holds 108 bytes with the final NUL.
    let len = p.as_os_str().len();
    if len > MAX_SOCKET_PATH {
        return Err(Bad::Value(format!(
            "is {len} bytes long; a Unix socket path may be at most {MAX_SOCKET_PATH} bytes \
             (the kernel's limit): choose a shorter one"
        )));
    }
    Ok(Some(canonical(p)))
}

pub(super) fn state_dir(v: toml::Value) -> Result<Option<toml::Value>, Bad> {
    let p: PathBuf = typed(v)?;
    if !p.is_absolute() {
        return Err(Bad::Value(format!(
            "{:?} is not an absolute path",
            p.display()
        )));
    }
    Ok(Some(canonical(p)))
}

pub(super) fn spool_dir(v: toml::Value) -> Result<Option<toml::Value>, Bad> {
    if v.as_str() == Some("") {
        return Ok(None);
    }
    state_dir(v)
}

pub(super) fn durability(v: toml::Value) -> Result<Option<toml::Value>, Bad> {
    let s: String = typed(v)?;
    let d: Durability = match s.as_str() {
        "memory" => Durability::Memory,
        "disk" => Durability::Disk,
        other => {
            return Err(Bad::Value(format!(
                "must be \"memory\" or \"disk\", not {other:?}"
            )))
        }
    };
    Ok(Some(canonical(d)))
}

pub(super) fn spool_fsync(v: toml::Value) -> Result<Option<toml::Value>, Bad> {
    let s: String = typed(v)?;
    let f: SpoolFsync = match s.as_str() {
        "batch" => SpoolFsync::Batch,
        "always" => SpoolFsync::Always,
        "never" => SpoolFsync::Never,
        other => {
            return Err(Bad::Value(format!(
                "must be \"batch\", \"always\" or \"never\", not {other:?}"
            )))
        }
    };
    Ok(Some(canonical(f)))
}

/// `[[files]]` tables: each read with its defaults and checked whole
/// (globs, regex, partition key, processing), the error naming the table.
pub(super) fn files(v: toml::Value) -> Result<Option<toml::Value>, Bad> {
    let tables: Vec<toml::Value> = typed(v)?;
    let host = crate::files::host_name();
    let mut out = Vec::with_capacity(tables.len());
    for (i, t) in tables.into_iter().enumerate() {
        let stream = t
            .get("stream")
            .and_then(|s| s.as_str())
            .unwrap_or("?")
            .to_string();
        let name = format!("[[files]] number {} (stream {stream:?})", i + 1);
        let table: crate::files::FilesTable = typed(t).map_err(|e| match e {
            Bad::Type(m) | Bad::Value(m) => Bad::Value(format!("{name}: {m}")),
        })?;
        table
            .compile(&host)
            .map_err(|m| Bad::Value(format!("{name}: {m}")))?;
        out.push(table);
    }
    Ok(Some(canonical(out)))
}

pub(super) fn socket_mode(v: toml::Value) -> Result<Option<toml::Value>, Bad> {
    let m: ModeSetting = typed(v)?;
    let mode = m.resolve().map_err(Bad::Value)?;
    Ok(Some(canonical(SocketMode(mode))))
}

pub(super) fn group(v: toml::Value) -> Result<Option<toml::Value>, Bad> {
    let g: IdSetting = typed(v)?;
    let gid = g.resolve_group().map_err(|e| Bad::Value(e.to_string()))?;
    Ok(Some(canonical(gid)))
}

pub(super) fn users(v: toml::Value) -> Result<Option<toml::Value>, Bad> {
    ids(v, IdSetting::resolve_user)
}

pub(super) fn groups(v: toml::Value) -> Result<Option<toml::Value>, Bad> {
    ids(v, IdSetting::resolve_group)
}

fn ids(
    v: toml::Value,
    resolve: fn(&IdSetting) -> Result<u32, crate::access::UnknownName>,
) -> Result<Option<toml::Value>, Bad> {
    let ids: Vec<IdSetting> = typed(v)?;
    let ids = ids
        .iter()
        .map(resolve)
        .collect::<Result<Vec<u32>, _>>()
        .map_err(|e| Bad::Value(e.to_string()))?;
    Ok(Some(canonical(ids)))
}

/// `kinesis_endpoint`, `cloudwatch_endpoint`: unset, or an http(s) URL.
pub(super) fn endpoint(v: toml::Value) -> Result<Option<toml::Value>, Bad> {
    let Some(e) = optional(v)? else {
        return Ok(None);
    };
    let s = e.as_str().expect("a string");
    if !(s.starts_with("http://") || s.starts_with("https://")) {
        return Err(Bad::Value(format!(
            "{s:?} must be a URL starting with http:// or https://"
        )));
    }
    Ok(Some(e))
}

pub(super) fn role_arn(v: toml::Value) -> Result<Option<toml::Value>, Bad> {
    let Some(a) = optional(v)? else {
        return Ok(None);
    };
    let s = a.as_str().expect("a string");
    if !s.starts_with("arn:") {
        return Err(Bad::Value(format!(
            "{s:?} is not an ARN (arn:aws:iam::ACCOUNT:role/NAME)"
        )));
    }
    Ok(Some(a))
}

/// The longest socket path `bind` takes (`sun_path` is 108 bytes with its NUL).
pub(crate) const MAX_SOCKET_PATH: usize = 107;

const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

pub(super) fn log_level(v: toml::Value) -> Result<Option<toml::Value>, Bad> {
    let s: String = typed(v)?;
    // EnvFilter takes a bare word as a target name ("warning" would log only
    // the target `warning`, that is nothing): every directive must be a
    // level, or `target=level`.
    let level_ok = |l: &str| LEVELS.contains(&l.trim().to_ascii_lowercase().as_str());
    let directive_ok = |d: &str| match d.split_once('=') {
        None => level_ok(d),
        Some((target, level)) => !target.trim().is_empty() && level_ok(level),
    };
    let ok = !s.trim().is_empty()
        && s.split(',').all(directive_ok)
        && tracing_subscriber::EnvFilter::try_new(&s).is_ok();
    if !ok {
        return Err(Bad::Value(format!(
            "{s:?} is not a level (off, error, warn, info, debug, trace) or a list of \
             target=level filters (e.g. \"info,kpld=debug\")"
        )));
    }
    Ok(Some(s.into()))
}

pub(super) fn log_format(v: toml::Value) -> Result<Option<toml::Value>, Bad> {
    let s: String = typed(v)?;
    let f = match s.as_str() {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        other => {
            return Err(Bad::Value(format!(
                "must be \"text\" or \"json\", not {other:?}"
            )))
        }
    };
    Ok(Some(canonical(f)))
}

pub(super) fn compression(v: toml::Value) -> Result<Option<toml::Value>, Bad> {
    let s: String = typed(v)?;
    let c = match s.as_str() {
        "none" => Compression::None,
        "gzip" => Compression::Gzip,
        "zlib" => Compression::Zlib,
        other => {
            return Err(Bad::Value(format!(
                "must be \"none\", \"gzip\" or \"zlib\", not {other:?}"
            )))
        }
    };
    Ok(Some(canonical(c)))
}

pub(super) fn metrics_level(v: toml::Value) -> Result<Option<toml::Value>, Bad> {
    let s: String = typed(v)?;
    let l: Level = s.parse().map_err(Bad::Value)?;
    Ok(Some(l.as_str().into()))
}

pub(super) fn metrics_granularity(v: toml::Value) -> Result<Option<toml::Value>, Bad> {
    let s: String = typed(v)?;
    let g: Granularity = s.parse().map_err(Bad::Value)?;
    Ok(Some(g.as_str().into()))
}

pub(super) fn metrics_namespace(v: toml::Value) -> Result<Option<toml::Value>, Bad> {
    let s: String = typed(v)?;
    validate_namespace(&s).map_err(Bad::Value)?;
    Ok(Some(s.into()))
}

/// Normalised to "IP:PORT", so the metrics module needs no second check.
pub(super) fn prometheus_addr(v: toml::Value) -> Result<Option<toml::Value>, Bad> {
    let Some(a) = optional(v)? else {
        return Ok(None);
    };
    let addr = parse_prometheus_addr(a.as_str().expect("a string")).map_err(Bad::Value)?;
    Ok(Some(addr.to_string().into()))
}

pub(super) fn patterns(v: toml::Value) -> Result<Option<toml::Value>, Bad> {
    let p: Vec<String> = typed(v)?;
    if p.iter().any(|x| x.is_empty()) {
        return Err(Bad::Value("holds an empty pattern".into()));
    }
    Ok(Some(canonical(p)))
}

/// How each user record's data is compressed before aggregation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
    Zlib,
}

/// Where a stream's accepted records live until they are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    Memory,
    Disk,
}

/// When the spool syncs what it wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SpoolFsync {
    Batch,
    Always,
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// `metrics_level`: which metrics are recorded and published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    None,
    Summary,
    Detailed,
}

/// `metrics_granularity`: the most specific dimensions published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Granularity {
    Global,
    Stream,
    Shard,
}

pub const DEFAULT_NAMESPACE: &str = "KinesisProducerLibrary";
pub const DEFAULT_UPLOAD_DELAY_MS: u64 = 60_000;
/// Allowed `metrics_upload_delay_ms`.
pub const UPLOAD_DELAY_RANGE_MS: std::ops::RangeInclusive<u64> = 100..=3_600_000;

impl std::str::FromStr for Level {
    type Err = String;
    fn from_str(s: &str) -> Result<Level, String> {
        match s.to_ascii_lowercase().as_str() {
            "none" => Ok(Level::None),
            "summary" => Ok(Level::Summary),
            "detailed" => Ok(Level::Detailed),
            _ => Err(format!(
                "{s:?} is not one of \"none\", \"summary\", \"detailed\""
            )),
        }
    }
}

impl std::str::FromStr for Granularity {
    type Err = String;
    fn from_str(s: &str) -> Result<Granularity, String> {
        match s.to_ascii_lowercase().as_str() {
            "global" => Ok(Granularity::Global),
            "stream" => Ok(Granularity::Stream),
            "shard" => Ok(Granularity::Shard),
            _ => Err(format!(
                "{s:?} is not one of \"global\", \"stream\", \"shard\""
            )),
        }
    }
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::None => "none",
            Level::Summary => "summary",
            Level::Detailed => "detailed",
        }
    }
}

impl Granularity {
    pub fn as_str(self) -> &'static str {
        match self {
            Granularity::Global => "global",
            Granularity::Stream => "stream",
            Granularity::Shard => "shard",
        }
    }
}

impl Serialize for Level {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl Serialize for Granularity {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Level {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl<'de> Deserialize<'de> for Granularity {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// `metrics_namespace`: what CloudWatch accepts for a custom namespace.
pub fn validate_namespace(ns: &str) -> Result<(), String> {
    let n = ns.chars().count();
    if !(1..=255).contains(&n) {
        return Err(format!("{ns:?} must have 1 to 255 characters"));
    }
    if ns.starts_with(':') {
        return Err(format!("{ns:?} must not start with ':'"));
    }
    if ns.starts_with("AWS/") {
        return Err(format!(
            "{ns:?}: namespaces starting with \"AWS/\" are reserved for AWS services"
        ));
    }
    if !ns.chars().all(|c| c.is_ascii() && !c.is_ascii_control()) {
        return Err(format!("{ns:?} must be printable ASCII"));
    }
    Ok(())
}

/// `metrics_prometheus_addr`: "IP:PORT", or a bare port (then loopback).
pub fn parse_prometheus_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    s.parse::<SocketAddr>()
        .map_err(|_| format!("{s:?} is not an address like \"127.0.0.1:9464\" (or a port number)"))
}
