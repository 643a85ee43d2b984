//! The KPL's `Configuration` message onto kpld's settings, field by field
//! (pure). Each field the KPL names is found in the key table
//! (`config::keys`, `Kpl::Name`) and becomes that key's value, as if a
//! config file had said it; `KPLD_*` variables are applied over it, so an
//! operator's environment wins. Fields kpld has no key for are listed with
//! the reason, for one log line at start.
//!
//! Integers out of kpld's range for a key are brought into it (and noted):
//! the Java side accepts larger values (a `recordTtl` of `Long.MAX_VALUE`
//! means "never expire"), and refusing them would stop a working
//! application.

use super::wire::Configuration;
use crate::config::keys::{self, Allowed, Bound, Kpl};
use crate::config::{Config, ConfigError, RawConfig};
use std::path::Path;

/// What [`map`] made of a `Configuration`.
#[derive(Debug, Default, PartialEq)]
pub struct Mapped {
    /// kpld key -> value, the "file" the `KPLD_*` variables override.
    pub table: toml::Table,
    /// `Field(value)` and why kpld does not use it, one per ignored field
    /// that the message holds.
    pub ignored: Vec<(String, &'static str)>,
    /// Values changed to fit kpld's ranges, in words.
    pub adjusted: Vec<String>,
}

/// Why a field has no kpld key.
const IGNORED: &[(&str, &str)] = &[
    (
        "EnableCoreDumps",
        "kpld does not change the core dump limit",
    ),
    (
        "MinConnections",
        "kpld opens connections on demand and keeps them pooled",
    ),
    (
        "VerifyCertificate",
        "kpld always verifies TLS certificates (an http:// endpoint needs no certificate)",
    ),
    ("ProxyHost", "no proxy support in KPL mode"),
    ("ProxyPort", "no proxy support in KPL mode"),
    ("ProxyUserName", "no proxy support in KPL mode"),
    ("ProxyPassword", "no proxy support in KPL mode"),
    ("ThreadingModel", "kpld runs on a fixed pool of threads"),
    ("ThreadPoolSize", "kpld runs on a fixed pool of threads"),
    ("StsEndpoint", "credentials come from the Java side"),
    ("StsPort", "credentials come from the Java side"),
    (
        "AdditionalMetricsDimension",
        "kpld's metrics have the KPL's fixed dimensions only",
    ),
];

fn why_ignored(field: &str) -> &'static str {
    IGNORED
        .iter()
        .find(|(f, _)| *f == field)
        .map(|(_, why)| *why)
        .expect("every ignored field has a reason")
}

/// The kpld key whose KPL name list holds `kpl_name`.
fn key_for(kpl_name: &str) -> &'static keys::KeyDef {
    keys::KEYS
        .iter()
        .find(|k| matches!(k.kpl, Kpl::Name(names) if names.contains(&kpl_name)))
        .unwrap_or_else(|| panic!("no key in config::keys names KPL setting {kpl_name}"))
}

/// `https://host:port` from the KPL's endpoint host and port; an endpoint
/// that already has a scheme (what tests and local servers use) is kept,
/// with the port added if it has none. Empty: unset.
pub fn endpoint_url(host: &str, port: Option<u64>) -> Option<String> {
    let host = host.trim();
    if host.is_empty() {
        return None;
    }
    let (scheme, rest) = match host.split_once("://") {
        Some((s, r)) => (s.to_string(), r),
        None => ("https".to_string(), host),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let has_port = authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        && !authority.ends_with(']');
    let default_port = if scheme == "http" { 80 } else { 443 };
    let authority = match port {
        Some(p) if !has_port && p != default_port => format!("{authority}:{p}"),
        _ => authority.to_string(),
    };
    Some(format!("{scheme}://{authority}{path}"))
}

/// The KPL's log levels onto kpld's (`warning` and `fatal` are the KPL's).
pub fn log_level(level: &str) -> String {
    match level.trim().to_ascii_lowercase().as_str() {
        "warning" => "warn".into(),
        "fatal" => "error".into(),
        other => other.into(),
    }
}

impl Mapped {
    fn set(&mut self, kpl_name: &str, value: toml::Value) {
        let key = key_for(kpl_name);
        self.table.insert(key.name.into(), value);
    }

    fn set_int(&mut self, kpl_name: &str, v: u64) {
        let key = key_for(kpl_name);
        let (lo, hi) = match key.allowed {
            Allowed::Range(Bound::Lit(lo), Bound::Lit(hi)) => (lo, hi),
            // The other bound depends on another key; the config checks it.
            Allowed::Range(Bound::Lit(lo), _) => (lo, u64::MAX),
            _ => (0, u64::MAX),
        };
        // TOML integers are i64.
        let hi = hi.min(i64::MAX as u64);
        let fitted = v.clamp(lo, hi);
        if fitted != v {
            self.adjusted.push(format!(
                "{kpl_name} {v} is outside kpld's range {lo}..={hi} for {}; using {fitted}",
                key.name
            ));
        }
        self.table
            .insert(key.name.into(), toml::Value::Integer(fitted as i64));
    }

    fn ignore(&mut self, field: &str, shown: String) {
        self.ignored
            .push((format!("{field}({shown})"), why_ignored(field)));
    }
}

/// The settings a `Configuration` message holds, as kpld keys.
pub fn map(c: &Configuration) -> Mapped {
    let mut m = Mapped::default();
    if let Some(v) = c.aggregation_enabled {
        m.set("AggregationEnabled", toml::Value::Boolean(v));
    }
    let ints = [
        ("AggregationMaxCount", c.aggregation_max_count),
        ("AggregationMaxSize", c.aggregation_max_size),
        ("CollectionMaxCount", c.collection_max_count),
        ("CollectionMaxSize", c.collection_max_size),
        ("ConnectTimeout", c.connect_timeout),
        ("MaxConnections", c.max_connections),
        ("MetricsUploadDelay", c.metrics_upload_delay),
        ("RateLimit", c.rate_limit),
        ("RecordMaxBufferedTime", c.record_max_buffered_time),
        ("RecordTtl", c.record_ttl),
        ("RequestTimeout", c.request_timeout),
    ];
    for (name, v) in ints {
        if let Some(v) = v {
            m.set_int(name, v);
        }
    }
    if let Some(v) = c.fail_if_throttled {
        m.set("FailIfThrottled", toml::Value::Boolean(v));
    }
    if let Some(url) = c
        .kinesis_endpoint
        .as_deref()
        .and_then(|h| endpoint_url(h, c.kinesis_port))
    {
        m.set("KinesisEndpoint", toml::Value::String(url));
    }
    if let Some(url) = c
        .cloudwatch_endpoint
        .as_deref()
        .and_then(|h| endpoint_url(h, c.cloudwatch_port))
    {
        m.set("CloudwatchEndpoint", toml::Value::String(url));
    }
    let strings = [
        ("LogLevel", c.log_level.as_deref().map(log_level)),
        (
            "MetricsGranularity",
            c.metrics_granularity
                .as_deref()
                .map(str::to_ascii_lowercase),
        ),
        (
            "MetricsLevel",
            c.metrics_level.as_deref().map(str::to_ascii_lowercase),
        ),
        ("MetricsNamespace", c.metrics_namespace.clone()),
        ("Region", c.region.clone()),
    ];
    for (name, v) in strings {
        // The Java side sends "" for a setting it was not given.
        if let Some(v) = v.filter(|v| !v.trim().is_empty()) {
            m.set(name, toml::Value::String(v));
        }
    }
    if let Some(v) = c.enable_core_dumps {
        m.ignore("EnableCoreDumps", v.to_string());
    }
    if let Some(v) = c.min_connections {
        m.ignore("MinConnections", v.to_string());
    }
    if let Some(v) = c.verify_certificate {
        m.ignore("VerifyCertificate", v.to_string());
    }
    if let Some(v) = c.proxy_host.as_deref().filter(|v| !v.is_empty()) {
        m.ignore("ProxyHost", v.to_string());
    }
    if let Some(v) = c.proxy_port {
        m.ignore("ProxyPort", v.to_string());
    }
    if let Some(v) = c.proxy_user_name.as_deref().filter(|v| !v.is_empty()) {
        m.ignore("ProxyUserName", v.to_string());
    }
    if c.proxy_password.as_deref().is_some_and(|v| !v.is_empty()) {
        m.ignore("ProxyPassword", "not shown".into());
    }
    if let Some(v) = c.thread_config {
        m.ignore(
            "ThreadingModel",
            if v == 1 { "POOLED" } else { "PER_REQUEST" }.into(),
        );
    }
    if let Some(v) = c.thread_pool_size {
        m.ignore("ThreadPoolSize", v.to_string());
    }
    if let Some(v) = c.sts_endpoint.as_deref().filter(|v| !v.is_empty()) {
        m.ignore("StsEndpoint", v.to_string());
    }
    if let Some(v) = c.sts_port {
        m.ignore("StsPort", v.to_string());
    }
    for d in &c.additional_metric_dims {
        m.ignore(
            "AdditionalMetricsDimension",
            format!("{}={} at {}", d.key, d.value, d.granularity),
        );
    }
    m
}

/// Where config errors say the values came from.
pub const ORIGIN: &str = "the KPL's Configuration message";

/// The validated config: the mapped table, then `env`'s `KPLD_*` variables
/// over it.
pub fn to_config(
    mapped: &Mapped,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, ConfigError> {
    let raw = RawConfig::parse(&mapped.table.to_string(), Path::new(ORIGIN), env)?;
    Config::from_raw(raw)
}

/// What the Java wrapper sends when the application configured nothing but
/// `region` (its defaults, every field but 9, 31 and 128). For tests and the
/// benchmark, which play the wrapper.
#[doc(hidden)]
pub fn java_wrapper_defaults(region: &str) -> Configuration {
    Configuration {
        aggregation_enabled: Some(true),
        aggregation_max_count: Some(4_294_967_295),
        aggregation_max_size: Some(51_200),
        cloudwatch_endpoint: Some(String::new()),
        cloudwatch_port: Some(443),
        collection_max_count: Some(500),
        collection_max_size: Some(5_242_880),
        connect_timeout: Some(6_000),
        fail_if_throttled: Some(false),
        kinesis_endpoint: Some(String::new()),
        kinesis_port: Some(443),
        log_level: Some("info".into()),
        max_connections: Some(24),
        metrics_granularity: Some("shard".into()),
        metrics_level: Some("detailed".into()),
        metrics_namespace: Some("KinesisProducerLibrary".into()),
        metrics_upload_delay: Some(60_000),
        min_connections: Some(1),
        rate_limit: Some(150),
        record_max_buffered_time: Some(100),
        record_ttl: Some(30_000),
        region: Some(region.into()),
        request_timeout: Some(6_000),
        verify_certificate: Some(true),
        proxy_host: Some(String::new()),
        proxy_port: Some(443),
        proxy_user_name: Some(String::new()),
        proxy_password: Some(String::new()),
        thread_config: Some(0),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn java_defaults() -> Configuration {
        java_wrapper_defaults("eu-west-1")
    }

    #[test]
    fn java_defaults_give_kpld_defaults_and_the_region() {
        let m = map(&java_defaults());
        assert!(m.adjusted.is_empty(), "{:?}", m.adjusted);
        let cfg = to_config(&m, Vec::new()).unwrap();
        let plain = Config::load(None, Vec::new()).unwrap();
        assert_eq!(cfg.region.as_deref(), Some("eu-west-1"));
        assert_eq!(cfg.kinesis_endpoint, None);
        assert_eq!(cfg.cloudwatch_endpoint, plain.cloudwatch_endpoint);
        assert_eq!(cfg.record_ttl_ms, plain.record_ttl_ms);
        assert_eq!(cfg.aggregation_max_size, plain.aggregation_max_size);
        assert_eq!(cfg.max_connections, plain.max_connections);
        assert_eq!(cfg.metrics_namespace, plain.metrics_namespace);
        let ignored: Vec<&str> = m.ignored.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            ignored,
            [
                "MinConnections(1)",
                "VerifyCertificate(true)",
                "ProxyPort(443)",
                "ThreadingModel(PER_REQUEST)"
            ]
        );
    }

    #[test]
    fn every_field_maps_to_its_key() {
        let c = Configuration {
            aggregation_enabled: Some(false),
            aggregation_max_count: Some(10),
            aggregation_max_size: Some(4096),
            collection_max_count: Some(7),
            collection_max_size: Some(100_000),
            connect_timeout: Some(1_000),
            fail_if_throttled: Some(true),
            kinesis_endpoint: Some("kinesis.example.com".into()),
            kinesis_port: Some(4443),
            cloudwatch_endpoint: Some("http://127.0.0.1:9999".into()),
            cloudwatch_port: Some(443),
            log_level: Some("warning".into()),
            max_connections: Some(3),
            metrics_granularity: Some("stream".into()),
            metrics_level: Some("summary".into()),
            metrics_namespace: Some("MyApp".into()),
            metrics_upload_delay: Some(5_000),
            rate_limit: Some(80),
            record_max_buffered_time: Some(250),
            record_ttl: Some(9_000),
            region: Some("us-west-2".into()),
            request_timeout: Some(2_000),
            ..Default::default()
        };
        let cfg = to_config(&map(&c), Vec::new()).unwrap();
        assert!(!cfg.aggregation_enabled);
        assert_eq!(cfg.aggregation_max_count, 10);
        assert_eq!(cfg.aggregation_max_size, 4096);
        assert_eq!(cfg.collection_max_count, 7);
        assert_eq!(cfg.collection_max_size, 100_000);
        assert_eq!(cfg.connect_timeout_ms, 1_000);
        assert!(cfg.fail_if_throttled);
        assert_eq!(
            cfg.kinesis_endpoint.as_deref(),
            Some("https://kinesis.example.com:4443")
        );
        assert_eq!(
            cfg.cloudwatch_endpoint.as_deref(),
            Some("http://127.0.0.1:9999")
        );
        assert_eq!(cfg.log_level, "warn");
        assert_eq!(cfg.max_connections, 3);
        assert_eq!(cfg.metrics_namespace, "MyApp");
        assert_eq!(cfg.metrics_upload_delay_ms, 5_000);
        assert_eq!(cfg.rate_limit, 80);
        assert_eq!(cfg.record_max_buffered_time_ms, 250);
        assert_eq!(cfg.record_ttl_ms, 9_000);
        assert_eq!(cfg.region.as_deref(), Some("us-west-2"));
        assert_eq!(cfg.request_timeout_ms, 2_000);
    }

    #[test]
    fn kpld_variables_win_over_the_message() {
        let mut c = java_defaults();
        c.kinesis_endpoint = Some("kinesis.example.com".into());
        let env = vec![
            (
                "KPLD_KINESIS_ENDPOINT".to_string(),
                "http://127.0.0.1:4567".to_string(),
            ),
            ("KPLD_RECORD_TTL_MS".to_string(), "1234".to_string()),
        ];
        let cfg = to_config(&map(&c), env).unwrap();
        assert_eq!(
            cfg.kinesis_endpoint.as_deref(),
            Some("http://127.0.0.1:4567")
        );
        assert_eq!(cfg.record_ttl_ms, 1234);
    }

    #[test]
    fn huge_values_are_brought_into_range_and_noted() {
        let c = Configuration {
            record_ttl: Some(i64::MAX as u64),
            max_connections: Some(100_000),
            ..Default::default()
        };
        let m = map(&c);
        assert_eq!(m.adjusted.len(), 2, "{:?}", m.adjusted);
        assert!(m.adjusted[0].contains("MaxConnections 100000"));
        let cfg = to_config(&m, Vec::new()).unwrap();
        assert_eq!(cfg.max_connections, 1024);
        assert_eq!(cfg.record_ttl_ms, 7 * 24 * 3_600_000);
    }

    #[test]
    fn a_bad_value_names_the_key_and_the_message() {
        let c = Configuration {
            metrics_level: Some("verbose".into()),
            ..Default::default()
        };
        let e = to_config(&map(&c), Vec::new()).unwrap_err().to_string();
        assert!(e.contains("metrics_level"), "{e}");
    }

    #[test]
    fn endpoints_become_urls() {
        assert_eq!(endpoint_url("", Some(443)), None);
        assert_eq!(
            endpoint_url("kinesis.us-east-1.amazonaws.com", Some(443)).as_deref(),
            Some("https://kinesis.us-east-1.amazonaws.com")
        );
        assert_eq!(
            endpoint_url("localhost", Some(4567)).as_deref(),
            Some("https://localhost:4567")
        );
        assert_eq!(
            endpoint_url("http://127.0.0.1:1234", Some(443)).as_deref(),
            Some("http://127.0.0.1:1234")
        );
        assert_eq!(
            endpoint_url("http://127.0.0.1", Some(4567)).as_deref(),
            Some("http://127.0.0.1:4567")
        );
    }

    #[test]
    fn ignored_fields_have_their_reason() {
        let c = Configuration {
            proxy_host: Some("proxy.local".into()),
            proxy_password: Some("secret".into()),
            ..Default::default()
        };
        let m = map(&c);
        assert_eq!(m.ignored.len(), 2);
        assert_eq!(m.ignored[0].0, "ProxyHost(proxy.local)");
        assert!(!m.ignored[1].0.contains("secret"));
        assert!(m.ignored.iter().all(|(_, why)| !why.is_empty()));
    }
}
