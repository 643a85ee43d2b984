//! Configuration: what the user wrote (TOML file + `KPLD_*` environment
//! variables) and the validated form the daemon runs with.
//!
//! # Layout
//! - [`keys`]: every key defined once ([`KEYS`]): name, type, default,
//!   allowed values, what SIGHUP does, whether a stream table may hold it,
//!   KPL name, doc. All the rest is derived from it, including the key table
//!   of docs/configuration.md (a test keeps the two equal).
//! - [`raw`]: the first layer, as in ripgrep: what the user wrote
//!   ([`RawConfig`]: each key's value and its origin; unknown keys refused).
//! - `resolve.rs`: the second: each value read and checked, defaults and
//!   ranges applied, naming the key in any error, giving [`Config`].
//! - [`values`]: the value types (also the metrics module's `Level` and
//!   `Granularity`) and how each is read. This module depends on no other
//!   part of kpld but `access` (and `files::settings`, which checks `[[files]]`
//!   tables); `metrics` depends on it.

pub mod keys;
pub mod raw;
mod resolve;
pub mod values;

pub use keys::{KeyDef, Scope, Sighup, FILES, KEYS};
pub use raw::RawConfig;
pub use values::{Compression, Durability, Granularity, Level, LogFormat, SpoolFsync};

use crate::access::{AccessPolicy, SocketMode, SocketPerms};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The settings one stream runs with: the global keys overlaid by its
/// `[streams."NAME"]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamSettings {
    pub aggregation_enabled: bool,
    pub aggregation_max_count: u64,
    pub aggregation_max_size: u64,
    pub record_max_buffered_time_ms: u64,
    pub record_ttl_ms: u64,
    pub rate_limit: u64,
    pub fail_if_throttled: bool,
    /// Per-key order kept through retries and reshards (see the README's "Ordering").
    pub ordered: bool,
    pub max_record_size: u64,
    pub compression: Compression,
    pub compression_level: u32,
    pub durability: Durability,
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

/// The validated configuration. Each field is the typed value of the key
/// of the same name in [`KEYS`] (which says what it means); its order is
/// the order of `--check`. Deserialising is how `resolve.rs` builds it from
/// checked values, not a way to skip the checks: use [`Config::load`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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
    pub ordered: bool,
    /// Percent of the per-shard limits (1000 records/s, 1 MiB/s) kpld sends at most.
    pub rate_limit: u64,
    pub max_connections: u64,
    pub request_timeout_ms: u64,
    pub connect_timeout_ms: u64,
    pub max_record_size: u64,
    pub max_frame_size: u64,
    pub max_buffered_bytes: u64,
    pub max_outstanding_records: u64,
    pub max_clients: u64,
    pub max_client_pending_results: u64,
    pub max_streams: u64,
    pub stream_idle_timeout_ms: u64,
    pub retry_backoff_base_ms: u64,
    pub retry_backoff_max_ms: u64,
    pub shutdown_grace_ms: u64,
    pub log_level: String,
    pub log_format: LogFormat,
    /// none | summary | detailed (the KPL's MetricsLevel).
    pub metrics_level: Level,
    /// global | stream | shard (the KPL's MetricsGranularity).
    pub metrics_granularity: Granularity,
    pub metrics_namespace: String,
    pub metrics_upload_delay_ms: u64,
    /// Whether the metrics go to CloudWatch with PutMetricData (the level
    /// chooses the series; this, EMF and Prometheus choose the sinks).
    pub metrics_cloudwatch: bool,
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
    /// Where log file checkpoints and dead letters live.
    pub state_dir: PathBuf,
    pub durability: Durability,
    /// None: `state_dir/spool`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spool_dir: Option<PathBuf>,
    pub max_spool_bytes: u64,
    pub spool_fsync: SpoolFsync,
    pub spool_fsync_interval_ms: u64,
    /// When set, records for streams matching none of these names or glob
    /// patterns (`*`, `?`) are refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub streams_allowed: Option<Vec<String>>,
    /// Per-stream settings, fully resolved (kept last: TOML tables follow values).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub streams: BTreeMap<String, StreamSettings>,
    /// `[[files]]` tables, checked, with their defaults.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<crate::files::FilesTable>,
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
    #[error(
        "unknown config key `{key}` (from {origin}); known keys: {}",
        known_keys()
    )]
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

fn known_keys() -> String {
    keys::global_keys()
        .map(|k| k.name)
        .collect::<Vec<_>>()
        .join(", ")
}

impl Config {
    /// Reads `path` (if any), applies `KPLD_*` overrides from `env`, validates.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        Config::from_raw(RawConfig::read(path, env)?)
    }

    /// Applies the defaults and checks every value.
    pub fn from_raw(raw: RawConfig) -> Result<Config, ConfigError> {
        resolve::resolve(&raw)
    }

    /// The settings of a stream with no table of its own.
    pub fn default_stream_settings(&self) -> StreamSettings {
        toml::Value::Table(resolve::inherited(&self.table()))
            .try_into()
            .unwrap_or_else(|e| panic!("the stream keys and StreamSettings disagree: {e}"))
    }

    /// Where the spool lives: `spool_dir`, or `state_dir/spool`.
    pub fn spool_dir(&self) -> PathBuf {
        self.spool_dir
            .clone()
            .unwrap_or_else(|| self.state_dir.join("spool"))
    }

    /// Whether any stream is `durability = "disk"` (then kpld opens the spool).
    pub fn any_disk_stream(&self) -> bool {
        self.durability == Durability::Disk
            || self
                .streams
                .values()
                .any(|s| s.durability == Durability::Disk)
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

    /// The effective configuration as a TOML table: each key's value, unset
    /// keys absent.
    pub fn table(&self) -> toml::Table {
        toml::Table::try_from(self).expect("the config serialises")
    }

    /// Gives `keys` (the global ones) the values they have in `from`, unset
    /// where unset there; SIGHUP keeps the running values of the keys that
    /// need a restart this way.
    pub fn keep_keys<'a>(&mut self, from: &Config, keys: impl IntoIterator<Item = &'a KeyDef>) {
        let (mut table, from) = (self.table(), from.table());
        for k in keys.into_iter().filter(|k| k.is_global()) {
            match from.get(k.name) {
                Some(v) => table.insert(k.name.into(), v.clone()),
                None => table.remove(k.name),
            };
        }
        *self = resolve::into_config(table);
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
    fn an_unknown_log_level_is_refused_not_run_silent() {
        for bad in ["warning", "verbose", "", "info,kpld=loud"] {
            let e = load(&format!("log_level = {bad:?}"), &[])
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("log_level") && e.contains("is not a level"),
                "{bad}: {e}"
            );
        }
        for good in [
            "warn",
            "INFO",
            "off",
            "info,kpld=debug",
            "kpld::server=trace",
        ] {
            let c = load(&format!("log_level = {good:?}"), &[]).unwrap();
            assert_eq!(c.log_level, good);
        }
    }

    #[test]
    fn a_socket_path_past_the_kernels_limit_is_refused_at_check_time() {
        let long = format!("/tmp/{}/kpld.sock", "d".repeat(100));
        let e = load(&format!("socket_path = {long:?}"), &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("socket_path") && e.contains("at most 107 bytes"),
            "{e}"
        );
        let fits = format!("/tmp/{}.sock", "d".repeat(107 - 10));
        assert_eq!(fits.len(), 107);
        assert_eq!(
            load(&format!("socket_path = {fits:?}"), &[])
                .unwrap()
                .socket_path,
            PathBuf::from(fits)
        );
    }

    #[test]
    fn text_parses_as_the_file_would_with_its_path_in_errors() {
        let text = "record_ttl_ms = 5000\n[streams.a]\nmax_record_size = 100\n";
        let env = [("KPLD_MAX_CLIENTS".to_string(), "7".to_string())];
        let parsed =
            Config::from_raw(RawConfig::parse(text, Path::new("x.toml"), env.clone()).unwrap())
                .unwrap();
        let loaded = load(text, &[("KPLD_MAX_CLIENTS", "7")]).unwrap();
        assert_eq!(parsed.to_toml(), loaded.to_toml());
        assert_eq!(parsed.max_clients, 7);
        let e = RawConfig::parse("x = [", Path::new("/etc/kpld/y.toml"), []).unwrap_err();
        assert!(e.to_string().contains("/etc/kpld/y.toml"), "{e}");
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
        for key in keys::global_keys().map(|k| k.name) {
            if [
                "region",
                "kinesis_endpoint",
                "streams_allowed",
                "streams",
                "socket_group",
                "cloudwatch_endpoint",
                "metrics_emf_path",
                "metrics_prometheus_addr",
                "spool_dir",
                "files",
            ]
            .contains(&key)
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
    fn every_key_set_away_from_its_default_is_read_and_printed_with_that_value() {
        use keys::{Allowed, Bound, DefaultValue};
        let mut checked = 0;
        for k in keys::global_keys().filter(|k| ![keys::STREAMS, FILES].contains(&k.name)) {
            // Values to try, away from the default; keys whose bounds name
            // other keys may refuse some, so the first one that loads counts.
            let tries: Vec<String> = match (&k.default, &k.allowed) {
                (DefaultValue::Bool(b), _) => vec![(!b).to_string()],
                (DefaultValue::Str(d), Allowed::OneOf(vals)) => vals
                    .iter()
                    .filter(|v| *v != d)
                    .map(|v| format!("{v:?}"))
                    .collect(),
                (DefaultValue::Int(d), Allowed::Range(lo, hi))
                | (
                    DefaultValue::Int(d),
                    Allowed::Ranges {
                        global: (lo, hi), ..
                    },
                ) => {
                    let lit = |b: &Bound| match b {
                        Bound::Lit(v) => Some(*v),
                        Bound::Key(..) => None,
                    };
                    [d.checked_add(1), d.checked_sub(1), lit(hi), lit(lo)]
                        .into_iter()
                        .flatten()
                        .filter(|v| v != d)
                        .map(|v| v.to_string())
                        .collect()
                }
                _ => match k.name {
                    "socket_path" => vec!["\"/tmp/kpld-elsewhere.sock\"".into()],
                    "socket_mode" => vec!["\"0600\"".into()],
                    "socket_group" => vec!["0".into()],
                    "allowed_uids" | "allowed_gids" => vec!["[0]".into()],
                    "region" => vec!["\"eu-west-1\"".into()],
                    "kinesis_endpoint" | "cloudwatch_endpoint" => {
                        vec!["\"http://127.0.0.1:4567\"".into()]
                    }
                    "log_level" => vec!["\"debug\"".into()],
                    "metrics_namespace" => vec!["\"Elsewhere\"".into()],
                    "metrics_emf_path" => vec!["\"-\"".into()],
                    "metrics_prometheus_addr" => vec!["\"127.0.0.1:9464\"".into()],
                    "streams_allowed" => vec!["[\"a*\"]".into()],
                    "aggregation_max_size" => vec!["1000".into()],
                    "max_frame_size" => vec!["16777216".into()],
                    "role_arn" => vec!["\"arn:aws:iam::1:role/r\"".into()],
                    "state_dir" | "spool_dir" => vec!["\"/srv/kpld\"".into()],
                    _ => panic!("{}: no value to try; add one here", k.name),
                },
            };
            let read_back = tries.iter().find_map(|v| {
                let printed = load(&format!("{} = {v}", k.name), &[]).ok()?.to_toml();
                Some((v, printed))
            });
            let (v, printed) =
                read_back.unwrap_or_else(|| panic!("{}: none of {tries:?} is accepted", k.name));
            let line = format!("{} = {v}", k.name);
            assert!(
                printed.lines().any(|l| l == line),
                "{} set to {v} is not read back:\n{printed}",
                k.name
            );
            checked += 1;
        }
        assert_eq!(
            checked,
            keys::global_keys().count() - 2,
            "every key but `streams` and `files`"
        );
    }

    /// A config that sets every key, the optional ones too.
    const EVERY_KEY: &str = "socket_group = 0\nregion = \"eu-west-1\"\n\
        kinesis_endpoint = \"http://127.0.0.1:4567\"\nstreams_allowed = [\"a*\"]\n\
        cloudwatch_endpoint = \"http://127.0.0.1:4566\"\nmetrics_emf_path = \"-\"\n\
        metrics_prometheus_addr = \"9464\"\nspool_dir = \"/srv/spool\"\n[streams.a]\nrole_arn = \"arn:aws:iam::1:role/r\"\n\
        [[files]]\npaths = [\"/var/log/*.log\"]\nstream = \"a\"\n";

    #[test]
    fn check_prints_every_key_once_in_table_order() {
        let printed = load(EVERY_KEY, &[]).unwrap().to_toml();
        let top: Vec<&str> = printed
            .lines()
            .take_while(|l| !l.starts_with('['))
            .filter_map(|l| l.split_once(" = ").map(|(k, _)| k))
            .chain(printed.contains("[streams.").then_some("streams"))
            .chain(printed.contains("[[files]]").then_some("files"))
            .collect();
        let table: Vec<&str> = keys::global_keys().map(|k| k.name).collect();
        assert_eq!(
            top, table,
            "Config's fields and the key table differ:\n{printed}"
        );
    }

    #[test]
    fn what_check_prints_loads_back_to_the_same_config() {
        for text in [
            "",
            EVERY_KEY,
            "max_record_size = 2000000\n[streams.s]\nmax_record_size = 100",
        ] {
            let c = load(text, &[]).unwrap();
            let again = load(&c.to_toml(), &[]).unwrap();
            assert_eq!(again.to_toml(), c.to_toml());
        }
    }

    #[test]
    fn cross_key_defaults_and_ranges_hold() {
        let c = load("max_record_size = 1000", &[]).unwrap();
        assert_eq!(c.aggregation_max_size, 1000, "min(51200, max_record_size)");
        assert_eq!(c.max_frame_size, 8 * 1024 * 1024, "max(8 MiB, ...)");
        let c = load("max_record_size = 9437184", &[]).unwrap();
        assert_eq!(c.aggregation_max_size, 51_200);
        assert_eq!(
            c.max_frame_size,
            9_437_184 + 65_536,
            "max(..., max_record_size + 64 KiB)"
        );
        let s = load(
            "max_record_size = 1000\n[streams.s]\nmax_record_size = 500",
            &[],
        )
        .unwrap()
        .stream_settings("s");
        assert_eq!(
            s.aggregation_max_size, 500,
            "a stream's max_record_size bounds its default"
        );
        for (text, want) in [
            ("aggregation_max_size = 63", "`aggregation_max_size`: 63 is outside the allowed range 64..=1048576"),
            ("max_record_size = 2000\naggregation_max_size = 2001", "`aggregation_max_size`: 2001 is outside the allowed range 64..=2000"),
            ("max_frame_size = 1049599", "`max_frame_size`: 1049599 is outside the allowed range 1049600..=268435456"),
            ("max_frame_size = 9000000\nmax_buffered_bytes = 8999999", "`max_buffered_bytes`: 8999999 is outside the allowed range 9000000..=1152921504606846975"),
            ("retry_backoff_base_ms = 500\nretry_backoff_max_ms = 499", "`retry_backoff_max_ms`: 499 is outside the allowed range 500..=600000"),
            ("max_record_size = 0", "`max_record_size`: 0 is outside the allowed range 1..=10485760"),
            ("[streams.s]\nmax_record_size = 8388609", "`max_record_size` of [streams.\"s\"]: 8388609 is outside the allowed range 1..=8387584"),
            ("[streams.s]\nmax_record_size = 10\n", "`aggregation_max_size` of [streams.\"s\"]: 10 is outside the allowed range 64..=10"),
            ("streams_allowed = [\"a\"]\n[streams.b]\nrate_limit = 5", "the stream has settings but streams_allowed does not allow it"),
        ] {
            let e = load(text, &[]).unwrap_err().to_string();
            assert!(e.contains(want), "{text}: {e}");
        }
        let big = load(
            "max_frame_size = 33554432\n[streams.s]\nmax_record_size = 20971520",
            &[],
        )
        .unwrap();
        assert_eq!(
            big.stream_settings("s").max_record_size,
            20_971_520,
            "beyond the global 10 MiB"
        );
    }

    #[test]
    fn empty_strings_unset_the_optional_keys() {
        let c = load(
            "region = \"\"\nkinesis_endpoint = \"\"\ncloudwatch_endpoint = \"\"\n\
             metrics_emf_path = \"\"\nmetrics_prometheus_addr = \"\"\n\
             [streams.s]\nregion = \"\"\nrole_arn = \"\"",
            &[("KPLD_KINESIS_ENDPOINT", "")],
        )
        .unwrap();
        assert_eq!(c.region, None);
        assert_eq!(c.kinesis_endpoint, None);
        assert_eq!(c.cloudwatch_endpoint, None);
        assert_eq!(c.metrics_emf_path, None);
        assert_eq!(c.metrics_prometheus_addr, None);
        assert!(!c.stream_settings("s").has_own_client());
    }

    #[test]
    fn keep_keys_takes_the_running_values_and_unsets_what_is_unset_there() {
        let running = load("max_connections = 3", &[]).unwrap();
        let mut next = load(
            "max_connections = 9\nregion = \"eu-west-1\"\nrecord_ttl_ms = 5",
            &[],
        )
        .unwrap();
        let restart = KEYS.iter().filter(|k| k.sighup == Sighup::Restart);
        next.keep_keys(&running, restart);
        assert_eq!(next.max_connections, 3);
        assert_eq!(next.region, None);
        assert_eq!(next.record_ttl_ms, 5, "a live key keeps its new value");
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
                ("KPLD_ROLE_ARN", "ignored: only a stream table holds it"),
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
            e.contains("`allowed_uids`") && e.contains("passwd database"),
            "{e}"
        );
        let e = load("allowed_uids = 5", &[]).unwrap_err().to_string();
        assert!(e.contains("`allowed_uids`"), "{e}");
    }
}
