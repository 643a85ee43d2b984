//! Metrics: the KPL's CloudWatch metrics, plus what operators need beyond
//! them (hot shards, heavy partition keys, a live `kpld stats` view).
//!
//! # Layout
//! - [`registry`]: the KPL metrics as statistic sets and HDR histograms per
//!   series, the KPL's roll-up of shard values into stream and global
//!   series, level and granularity filtering (pure).
//! - [`recorder`]: [`StreamMetrics`], the record path's API, owned by one
//!   stream actor: local counters, committed to the registry about once a
//!   second. No locks and no allocation per record.
//! - [`hot`]: per-shard rates against the shard limits, throttles, and a
//!   bounded heavy-hitters summary of partition keys (pure).
//! - [`cloudwatch`]: PutMetricData uploads (batched within the API limits;
//!   failures logged and retried next interval).
//! - [`emf`]: the same metrics as CloudWatch Embedded Metric Format lines.
//! - [`files`]: the `[[files]]` readers' counters as series (FileLinesRead,
//!   FileBytesBehind, ...) per stream and file path, taken as each interval
//!   closes (pure).
//! - [`prometheus`]: a small HTTP endpoint in Prometheus text format.
//! - [`stats`]: the JSON snapshot behind `kpld stats` and its table view.
//!
//! # Data flow
//! ```text
//! stream actor ──StreamMetrics (local)──commit ≤1/s──▶ Registry (mutex)
//!                                                        │ close_interval every metrics_upload_delay_ms
//!                                 ┌──────────────────────┼──────────────────────┐
//!                           PutMetricData            EMF lines            Prometheus scrape,
//!                          (cloudwatch.rs)            (emf.rs)            stats JSON (read)
//! ```
//! The record path never waits on an upload: uploads run in their own task
//! and hold the registry lock only while an interval is closed (no I/O).
//!
//! # Lifecycle
//! 1. [`MetricsHandle::new`] (pure; the producer creates its recorders from it).
//! 2. [`Metrics::start`] binds the Prometheus listener, opens the EMF file
//!    and starts the uploader task.
//! 3. On shutdown, after the producer drained: [`Metrics::shutdown`] waits
//!    (bounded) for the stream actors to drop their recorders (each commits
//!    on drop), closes the last interval, uploads or writes it (bounded),
//!    and stops the endpoint.

pub mod cloudwatch;
pub mod emf;
pub mod files;
pub mod hot;
pub mod prometheus;
pub mod recorder;
pub mod registry;
pub mod stats;

pub use recorder::{EntryOutcome, StreamMetrics};
pub use registry::{Filter, Granularity, Level, Metric};
// Config values, kept here under their old names for the metrics code.
pub use crate::config::values::{
    parse_prometheus_addr, validate_namespace, DEFAULT_NAMESPACE, DEFAULT_UPLOAD_DELAY_MS,
    UPLOAD_DELAY_RANGE_MS,
};

use registry::{IntervalReport, Registry};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How long shutdown waits for stream actors to drop their recorders.
const RECORDERS_GONE_TIMEOUT: Duration = Duration::from_secs(2);
/// Upper bound of the final upload at shutdown.
const FINAL_PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------
// configuration

/// Where EMF lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EmfTarget {
    Stdout,
    File(PathBuf),
}

/// The metrics part of the configuration, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsConfig {
    pub level: Level,
    pub granularity: Granularity,
    pub namespace: String,
    pub upload_delay: Duration,
    /// PutMetricData at all (`metrics_cloudwatch`).
    pub cloudwatch: bool,
    /// None: the AWS default (or AWS_ENDPOINT_URL_CLOUDWATCH).
    pub cloudwatch_endpoint: Option<String>,
    /// When set, metrics go to EMF lines *instead of* PutMetricData (the
    /// lines reach CloudWatch through the logs; uploading as well would
    /// count every value twice in the namespace).
    pub emf: Option<EmfTarget>,
    pub prometheus_addr: Option<SocketAddr>,
}

impl Default for MetricsConfig {
    /// The KPL's defaults.
    fn default() -> Self {
        MetricsConfig {
            level: Level::Detailed,
            granularity: Granularity::Shard,
            namespace: DEFAULT_NAMESPACE.to_string(),
            upload_delay: Duration::from_millis(DEFAULT_UPLOAD_DELAY_MS),
            cloudwatch: true,
            cloudwatch_endpoint: None,
            emf: None,
            prometheus_addr: None,
        }
    }
}

impl MetricsConfig {
    /// Whether metrics go to CloudWatch with PutMetricData.
    pub fn uploads_to_cloudwatch(&self) -> bool {
        self.cloudwatch && self.level != Level::None && self.emf.is_none()
    }

    /// From the daemon's validated configuration.
    pub fn from_config(c: &crate::config::Config) -> MetricsConfig {
        MetricsConfig {
            level: c.metrics_level,
            granularity: c.metrics_granularity,
            namespace: c.metrics_namespace.clone(),
            upload_delay: Duration::from_millis(c.metrics_upload_delay_ms),
            cloudwatch: c.metrics_cloudwatch,
            cloudwatch_endpoint: c.cloudwatch_endpoint.clone(),
            emf: c.metrics_emf_path.as_deref().map(parse_emf_path),
            prometheus_addr: c
                .metrics_prometheus_addr
                .as_deref()
                .map(|a| parse_prometheus_addr(a).expect("validated by the config")),
        }
    }
}

/// `metrics_emf_path`: "-" or "stdout" for standard output, else a file.
pub fn parse_emf_path(s: &str) -> EmfTarget {
    match s {
        "-" | "stdout" => EmfTarget::Stdout,
        p => EmfTarget::File(PathBuf::from(p)),
    }
}

// ---------------------------------------------------------------------------
// the shared registry and the handle the pipeline holds

/// What recorders and readers share.
pub(crate) struct Shared {
    pub(crate) filter: Filter,
    pub(crate) registry: Mutex<Registry>,
    pub(crate) commit_every: Duration,
    pub(crate) started: Instant,
    /// Recorders alive (touched when a stream actor starts or ends, never
    /// per record), so shutdown can wait for their last commits.
    live: AtomicUsize,
    gone: Notify,
    /// Per-file stats of the `[[files]]` readers (`files::FileSources`).
    files: std::sync::OnceLock<FilesStats>,
    spool: std::sync::OnceLock<FilesStats>,
    /// Their counters since the previous interval, for the file metrics.
    files_sampler: std::sync::OnceLock<files::FilesSampler>,
}

/// Gives the `[[files]]` readers' per-file stats as a JSON array.
pub type FilesStats = Box<dyn Fn() -> serde_json::Value + Send + Sync>;

impl Shared {
    pub(crate) fn recorder_started(&self) {
        self.live.fetch_add(1, Ordering::AcqRel);
    }

    pub(crate) fn recorder_finished(&self) {
        if self.live.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.gone.notify_waiters();
        }
    }
}

/// The metrics registry as the pipeline and the readers see it. Cheap to clone.
#[derive(Clone)]
pub struct MetricsHandle {
    shared: Arc<Shared>,
}

impl MetricsHandle {
    /// A registry with the configured level and granularity. Nothing is
    /// uploaded or served until [`Metrics::start`].
    pub fn new(cfg: &MetricsConfig) -> MetricsHandle {
        let filter = Filter {
            level: cfg.level,
            granularity: cfg.granularity,
        };
        MetricsHandle {
            shared: Arc::new(Shared {
                filter,
                registry: Mutex::new(Registry::new(filter)),
                commit_every: recorder::COMMIT_EVERY,
                started: Instant::now(),
                live: AtomicUsize::new(0),
                gone: Notify::new(),
                files: std::sync::OnceLock::new(),
                spool: std::sync::OnceLock::new(),
                files_sampler: std::sync::OnceLock::new(),
            }),
        }
    }

    /// Where `kpld stats` and Prometheus take the per-file stats from (set once).
    pub fn set_files_stats(&self, f: FilesStats) {
        let _ = self.shared.files.set(f);
    }

    /// Where the file metrics come from (set once). Each interval's close
    /// takes one sample.
    pub fn set_files_sampler(&self, f: files::FilesSampler) {
        let _ = self.shared.files_sampler.set(f);
    }

    /// Where Prometheus takes the spool's state from (set once).
    pub fn set_spool_stats(&self, f: FilesStats) {
        let _ = self.shared.spool.set(f);
    }

    /// The spool's state (`kpld stats`' `spool`), when a spool is open.
    pub fn spool_stats(&self) -> Option<serde_json::Value> {
        self.shared
            .spool
            .get()
            .map(|f| f())
            .filter(|v| !v.is_null())
    }

    /// The per-file stats, when log files are configured.
    pub fn files_stats(&self) -> Option<serde_json::Value> {
        self.shared.files.get().map(|f| f())
    }

    pub fn filter(&self) -> Filter {
        self.shared.filter
    }

    /// The recorder for one stream's actor.
    pub fn stream(&self, name: &Arc<str>) -> StreamMetrics {
        StreamMetrics::new(self.shared.clone(), name.clone())
    }

    /// Ends the current upload interval and returns its published series
    /// (the files' counters are taken now, before the registry is locked).
    pub fn close_interval(&self) -> IntervalReport {
        let filter = self.filter();
        let file_leaves = match self.shared.files_sampler.get() {
            Some(sample) if filter.level != Level::None => files::leaves(&sample(), filter),
            _ => Vec::new(),
        };
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        self.with_registry(|r| {
            for (k, st) in file_leaves {
                r.add_leaf(k, &st);
            }
            r.close_interval(ts)
        })
    }

    /// The `kpld stats` JSON document (`outstanding`: the producer's count
    /// of records not yet final).
    pub fn stats_json(&self, outstanding: u64) -> String {
        stats::snapshot(self, outstanding).to_string()
    }

    /// The same document as a value, for callers that add fields to it.
    pub fn stats_value(&self, outstanding: u64) -> serde_json::Value {
        stats::snapshot(self, outstanding)
    }

    /// The Prometheus text exposition.
    pub fn prometheus_text(&self) -> String {
        prometheus::render(self)
    }

    /// Drops an evicted stream's `kpld stats` state (pending count, shards'
    /// hot samples). Its KPL series need nothing here: leaves and
    /// histograms already drop out after idle intervals.
    pub fn forget_stream(&self, stream: &Arc<str>) {
        self.with_registry(|r| r.streams.remove(stream));
    }

    /// Recorders (stream actors) alive.
    pub fn live_recorders(&self) -> usize {
        self.shared.live.load(Ordering::Acquire)
    }

    pub(crate) fn with_registry<T>(&self, f: impl FnOnce(&mut Registry) -> T) -> T {
        let mut r = self
            .shared
            .registry
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        f(&mut r)
    }

    pub(crate) fn started(&self) -> Instant {
        self.shared.started
    }

    pub(crate) fn commit_every(&self) -> Duration {
        self.shared.commit_every
    }

    /// Waits until every recorder is dropped, at most `timeout`.
    pub async fn wait_recorders_gone(&self, timeout: Duration) -> bool {
        let wait = async {
            loop {
                let notified = self.shared.gone.notified();
                if self.live_recorders() == 0 {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok()
    }
}

// ---------------------------------------------------------------------------
// the running outputs

/// Why metrics could not start; each names the config key.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("config key `metrics_emf_path`: cannot open {path}: {source}")]
    EmfOpen {
        path: String,
        source: std::io::Error,
    },
    #[error("config key `metrics_prometheus_addr`: cannot listen on {addr}: {source}")]
    PrometheusBind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// The running uploader and endpoint.
pub struct Metrics {
    handle: MetricsHandle,
    cancel: CancellationToken,
    uploader: Option<JoinHandle<()>>,
    server: Option<JoinHandle<()>>,
    prometheus_addr: Option<SocketAddr>,
}

impl Metrics {
    /// Starts what the configuration asks for: the uploader (CloudWatch or
    /// EMF) unless `metrics_level = "none"`, and the Prometheus endpoint when
    /// `metrics_prometheus_addr` is set. `aws` is the shared AWS config
    /// (region, credentials, HTTP client) the Kinesis client uses.
    pub async fn start(
        handle: MetricsHandle,
        cfg: &MetricsConfig,
        aws: &aws_config::SdkConfig,
    ) -> Result<Metrics, MetricsError> {
        let cancel = CancellationToken::new();
        let mut server = None;
        let mut prometheus_addr = None;
        if let Some(addr) = cfg.prometheus_addr {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| MetricsError::PrometheusBind { addr, source })?;
            let bound = listener.local_addr().unwrap_or(addr);
            prometheus_addr = Some(bound);
            tracing::info!(addr = %bound, "Prometheus metrics at http://{bound}/metrics");
            server = Some(tokio::spawn(prometheus::serve(
                listener,
                handle.clone(),
                cancel.clone(),
            )));
        }
        let mut uploader = None;
        if cfg.level != Level::None {
            let emf = match &cfg.emf {
                Some(t) => Some(emf::EmfWriter::open(t, &cfg.namespace).map_err(|source| {
                    MetricsError::EmfOpen {
                        path: match t {
                            EmfTarget::Stdout => "stdout".into(),
                            EmfTarget::File(p) => p.display().to_string(),
                        },
                        source,
                    }
                })?),
                None => None,
            };
            let cw = cfg.uploads_to_cloudwatch().then(|| {
                cloudwatch::CloudWatchSink::new(
                    aws,
                    cfg.cloudwatch_endpoint.as_deref(),
                    &cfg.namespace,
                )
            });
            tracing::info!(
                level = cfg.level.as_str(),
                granularity = cfg.granularity.as_str(),
                namespace = %cfg.namespace,
                upload_delay_ms = cfg.upload_delay.as_millis() as u64,
                cloudwatch = cw.is_some(),
                emf = emf.is_some(),
                "metrics on"
            );
            let sinks = Sinks {
                cloudwatch: cw,
                emf,
            };
            uploader = Some(tokio::spawn(run_uploader(
                handle.clone(),
                sinks,
                cfg.upload_delay,
                cancel.clone(),
            )));
        }
        Ok(Metrics {
            handle,
            cancel,
            uploader,
            server,
            prometheus_addr,
        })
    }

    pub fn handle(&self) -> &MetricsHandle {
        &self.handle
    }

    /// The address the Prometheus endpoint listens on (useful with port 0).
    pub fn prometheus_addr(&self) -> Option<SocketAddr> {
        self.prometheus_addr
    }

    /// Final upload and stop. Call after the producer drained.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        if let Some(u) = self.uploader {
            let bound = RECORDERS_GONE_TIMEOUT + FINAL_PUBLISH_TIMEOUT + Duration::from_secs(1);
            if tokio::time::timeout(bound, u).await.is_err() {
                tracing::warn!("the final metrics upload did not finish in time; abandoned");
            }
        }
        if let Some(s) = self.server {
            s.abort();
            let _ = s.await;
        }
    }
}

struct Sinks {
    cloudwatch: Option<cloudwatch::CloudWatchSink>,
    emf: Option<emf::EmfWriter>,
}

impl Sinks {
    /// Writes or uploads one interval. `last`: at shutdown (nothing is
    /// retried after it).
    async fn publish(&mut self, report: &IntervalReport, within: Duration, last: bool) {
        if let Some(e) = &mut self.emf {
            e.write(report).await;
        }
        let Some(cw) = &mut self.cloudwatch else {
            return;
        };
        let then = if last {
            "lost: kpld is exiting"
        } else {
            "retried next interval"
        };
        match tokio::time::timeout(within, cw.upload(report)).await {
            Err(_) => tracing::warn!(
                timeout_ms = within.as_millis() as u64,
                queued = cw.queued(),
                "metrics upload to CloudWatch timed out; its data is {then}"
            ),
            Ok(r) => match &r.first_error {
                None => tracing::debug!(
                    calls = r.calls,
                    datums = r.datums_sent,
                    "metrics uploaded to CloudWatch"
                ),
                Some(err) => tracing::warn!(
                    calls = r.calls,
                    failed_calls = r.failed_calls,
                    datums_sent = r.datums_sent,
                    queued = r.datums_queued_for_retry,
                    dropped = r.datums_dropped,
                    error = %err,
                    "metrics upload to CloudWatch failed; its data is {then}"
                ),
            },
        }
    }
}

async fn run_uploader(
    handle: MetricsHandle,
    mut sinks: Sinks,
    every: Duration,
    cancel: CancellationToken,
) {
    let mut ticker = tokio::time::interval_at(Instant::now() + every, every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = ticker.tick() => {
                let report = handle.close_interval();
                sinks.publish(&report, every.max(Duration::from_secs(1)), false).await;
            }
        }
    }
    // Shutdown: the stream actors commit what they hold when they end.
    if !handle.wait_recorders_gone(RECORDERS_GONE_TIMEOUT).await {
        tracing::warn!(
            live = handle.live_recorders(),
            "stream actors still running at the final metrics upload"
        );
    }
    let report = handle.close_interval();
    sinks.publish(&report, FINAL_PUBLISH_TIMEOUT, true).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_values_parse_as_the_kpl_spells_them() {
        assert_eq!("DETAILED".parse::<Level>(), Ok(Level::Detailed));
        assert_eq!("none".parse::<Level>(), Ok(Level::None));
        assert!("verbose".parse::<Level>().is_err());
        assert_eq!("Shard".parse::<Granularity>(), Ok(Granularity::Shard));
        assert!("host".parse::<Granularity>().is_err());
        assert_eq!(
            parse_prometheus_addr("9464").unwrap().to_string(),
            "127.0.0.1:9464"
        );
        assert_eq!(
            parse_prometheus_addr("[::1]:9").unwrap().to_string(),
            "[::1]:9"
        );
        assert!(parse_prometheus_addr("localhost:9464").is_err());
        assert_eq!(parse_emf_path("-"), EmfTarget::Stdout);
        assert_eq!(
            parse_emf_path("/var/log/kpld.emf"),
            EmfTarget::File("/var/log/kpld.emf".into())
        );
        assert!(validate_namespace("KinesisProducerLibrary").is_ok());
        assert!(validate_namespace("").is_err());
        assert!(validate_namespace("AWS/Kinesis").is_err());
        assert!(validate_namespace(&"x".repeat(256)).is_err());
        let d = MetricsConfig::default();
        assert!(d.uploads_to_cloudwatch());
        let emf = MetricsConfig {
            emf: Some(EmfTarget::Stdout),
            ..MetricsConfig::default()
        };
        assert!(!emf.uploads_to_cloudwatch(), "EMF replaces the API upload");
    }

    #[test]
    fn file_counters_become_series_with_their_path_when_an_interval_closes() {
        use std::sync::atomic::AtomicU64;
        let h = MetricsHandle::new(&MetricsConfig::default());
        let lines = Arc::new(AtomicU64::new(0));
        let l = lines.clone();
        h.set_files_sampler(Box::new(move || {
            vec![files::FileSample {
                stream: "logs".into(),
                path: "/var/log/app.log".into(),
                lines: l.swap(0, Ordering::Relaxed),
                bytes_behind: 42,
                ..Default::default()
            }]
        }));
        lines.store(10, Ordering::Relaxed);
        let rep = h.close_interval();
        let per_file = |rep: &IntervalReport, m: Metric| {
            rep.data
                .iter()
                .find(|d| d.key.metric == m && d.key.file.is_some())
                .map(|d| d.stat)
        };
        assert_eq!(per_file(&rep, Metric::FileLinesRead).unwrap().sum, 10.0);
        assert_eq!(per_file(&rep, Metric::FileBytesBehind).unwrap().sum, 42.0);
        // The EMF line of the file names it, as a dimension.
        let lines = emf::render(&rep, "NS");
        let doc: serde_json::Value = lines
            .iter()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .find(|d| d.get("FilePath").is_some())
            .expect("an EMF document per file");
        assert_eq!(doc["FilePath"], "/var/log/app.log");
        assert_eq!(doc["StreamName"], "logs");
        assert_eq!(
            doc["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0],
            serde_json::json!(["StreamName", "FilePath"])
        );
        assert_eq!(doc["FileLinesRead"]["Sum"], 10);
        assert_eq!(doc["FileBytesBehind"]["Sum"], 42);
        // Nothing more read: no lines, but the lag is still reported.
        let rep = h.close_interval();
        assert!(per_file(&rep, Metric::FileLinesRead).is_none());
        assert!(per_file(&rep, Metric::FileBytesBehind).is_some());
        // Prometheus has the files from their stats, not as KPL summaries.
        assert!(!h.prometheus_text().contains("kpld_file_lines_read"));
    }
}
