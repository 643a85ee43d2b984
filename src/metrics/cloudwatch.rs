//! Uploads closed intervals to CloudWatch with PutMetricData, as the KPL
//! does: one `StatisticValues` datum per series, batched within the API's
//! limits (1000 datums and 1 MB per call). A failed call is logged and its
//! datums are sent again with the next interval (bounded: the oldest are
//! dropped first); errors that resending cannot fix are logged and dropped.
//!
//! aws-sdk-cloudwatch is pinned to the last release that speaks the awsQuery
//! protocol (1.99.0): later ones speak only Smithy RPCv2 CBOR, which moto, the
//! CloudWatch-compatible server the tests use, does not serve. CloudWatch
//! itself accepts both.

use super::registry::{Datum, IntervalReport};
use aws_sdk_cloudwatch::error::ProvideErrorMetadata;
use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit, StatisticSet};
use std::collections::VecDeque;
use std::ops::Range;
use std::time::Duration;

/// PutMetricData limits.
pub const MAX_DATUMS_PER_CALL: usize = 1000;
pub const MAX_BYTES_PER_CALL: usize = 1_000_000;
/// Datums kept for resending after failures (about 20 full intervals).
pub const MAX_RETRY_DATUMS: usize = 20_000;

/// A conservative estimate of a datum's size in a form-encoded
/// (awsQuery) PutMetricData body: every member name repeats the
/// `MetricData.member.N.` prefix, and values may be percent-encoded (x3).
pub fn estimated_size(d: &Datum) -> usize {
    let mut n = 420 + 3 * d.key.metric.name().len();
    for (name, value) in d.key.dimensions() {
        n += 110 + 3 * (name.len() + value.len());
    }
    n
}

/// Splits items of the given sizes into consecutive batches of at most
/// `max_count` items and `max_bytes` bytes (an item larger than `max_bytes`
/// goes alone).
pub fn plan_batches(sizes: &[usize], max_count: usize, max_bytes: usize) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (i, s) in sizes.iter().enumerate() {
        let n = i - start;
        if n > 0 && (n == max_count || bytes + s > max_bytes) {
            out.push(start..i);
            start = i;
            bytes = 0;
        }
        bytes += s;
    }
    if start < sizes.len() {
        out.push(start..sizes.len());
    }
    out
}

fn to_datum(d: &Datum, timestamp_ms: i64) -> MetricDatum {
    let dims = d
        .key
        .dimensions()
        .into_iter()
        .map(|(n, v)| Dimension::builder().name(n).value(v).build())
        .collect();
    MetricDatum::builder()
        .metric_name(d.key.metric.name())
        .set_dimensions(Some(dims))
        .statistic_values(
            StatisticSet::builder()
                .sample_count(d.stat.count as f64)
                .sum(d.stat.sum)
                .minimum(d.stat.min)
                .maximum(d.stat.max)
                .build(),
        )
        .unit(StandardUnit::from(d.key.metric.unit().as_str()))
        .timestamp(DateTime::from_millis(timestamp_ms))
        .build()
}

/// Error codes a resend cannot fix.
fn permanent(code: Option<&str>) -> bool {
    matches!(
        code,
        Some("InvalidParameterValue" | "InvalidParameterCombination" | "MissingRequiredParameter")
    )
}

/// PutMetricData through aws-sdk-cloudwatch.
pub struct CloudWatchSink {
    client: aws_sdk_cloudwatch::Client,
    namespace: String,
    /// Datums of failed calls, oldest first, with their size estimates.
    retry: VecDeque<(MetricDatum, usize)>,
}

/// What one upload did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UploadReport {
    pub calls: usize,
    pub failed_calls: usize,
    pub datums_sent: usize,
    pub datums_queued_for_retry: usize,
    pub datums_dropped: usize,
    /// The first failure, for the log.
    pub first_error: Option<String>,
}

/// An error and its sources on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        let m = x.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        src = x.source();
    }
    s
}

impl CloudWatchSink {
    /// A client from the shared AWS config (region, credentials, HTTP
    /// client), with its own endpoint when given.
    pub fn new(
        shared: &aws_config::SdkConfig,
        endpoint: Option<&str>,
        namespace: &str,
    ) -> CloudWatchSink {
        let mut b = aws_sdk_cloudwatch::config::Builder::from(shared)
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(3))
                    .operation_attempt_timeout(Duration::from_secs(10))
                    .build(),
            )
            .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(2));
        if let Some(ep) = endpoint {
            b = b.endpoint_url(ep);
        }
        CloudWatchSink {
            client: aws_sdk_cloudwatch::Client::from_conf(b.build()),
            namespace: namespace.to_string(),
            retry: VecDeque::new(),
        }
    }

    /// Datums waiting to be sent again.
    pub fn queued(&self) -> usize {
        self.retry.len()
    }

    /// Sends the interval's datums, after those left from failed calls.
    pub async fn upload(&mut self, report: &IntervalReport) -> UploadReport {
        let mut todo: Vec<(MetricDatum, usize)> = self.retry.drain(..).collect();
        todo.extend(
            report
                .data
                .iter()
                .map(|d| (to_datum(d, report.timestamp_ms), estimated_size(d))),
        );
        let mut rep = UploadReport::default();
        if todo.is_empty() {
            return rep;
        }
        let sizes: Vec<usize> = todo.iter().map(|(_, s)| *s).collect();
        // Leave room for Action, Version and Namespace.
        let budget = MAX_BYTES_PER_CALL - 1024 - 3 * self.namespace.len();
        for range in plan_batches(&sizes, MAX_DATUMS_PER_CALL, budget) {
            let batch: Vec<MetricDatum> =
                todo[range.clone()].iter().map(|(d, _)| d.clone()).collect();
            rep.calls += 1;
            let n = batch.len();
            match self
                .client
                .put_metric_data()
                .namespace(&self.namespace)
                .set_metric_data(Some(batch))
                .send()
                .await
            {
                Ok(_) => rep.datums_sent += n,
                Err(e) => {
                    rep.failed_calls += 1;
                    let code = e.code().map(str::to_string);
                    if rep.first_error.is_none() {
                        rep.first_error = Some(match &code {
                            Some(c) => format!("{c}: {}", e.message().unwrap_or("")),
                            None => error_chain(&e),
                        });
                    }
                    if permanent(code.as_deref()) {
                        rep.datums_dropped += n;
                    } else {
                        self.retry.extend(todo[range].iter().cloned());
                    }
                }
            }
        }
        while self.retry.len() > MAX_RETRY_DATUMS {
            self.retry.pop_front();
            rep.datums_dropped += 1;
        }
        rep.datums_queued_for_retry = self.retry.len();
        rep
    }
}

#[cfg(test)]
mod tests {
    use super::super::registry::{Filter, Granularity, Level, Metric, Registry, SeriesKey, Stat};
    use super::*;
    use proptest::prelude::*;
    use std::sync::Arc;

    #[test]
    fn batches_respect_count_and_bytes() {
        assert_eq!(plan_batches(&[], 3, 10), Vec::<Range<usize>>::new());
        assert_eq!(plan_batches(&[1, 1, 1, 1], 3, 10), vec![0..3, 3..4]);
        assert_eq!(
            plan_batches(&[6, 6, 20, 1], 10, 10),
            vec![0..1, 1..2, 2..3, 3..4]
        );
    }

    proptest! {
        #[test]
        fn no_batch_over_a_limit_and_nothing_lost(
            sizes in proptest::collection::vec(1usize..5000, 0..3000),
            max_count in 1usize..1001,
        ) {
            let ranges = plan_batches(&sizes, max_count, MAX_BYTES_PER_CALL);
            let mut next = 0;
            for r in ranges {
                prop_assert_eq!(r.start, next);
                prop_assert!(!r.is_empty() && r.len() <= max_count);
                let bytes: usize = sizes[r.clone()].iter().sum();
                prop_assert!(r.len() == 1 || bytes <= MAX_BYTES_PER_CALL);
                next = r.end;
            }
            prop_assert_eq!(next, sizes.len());
        }
    }

    #[test]
    fn the_size_estimate_covers_the_real_form_encoding() {
        // The longest names: a 128-character stream and error code, percent
        // encoding expanding nothing here, so the estimate must exceed the
        // encoded length of every member with margin.
        let d = Datum {
            key: SeriesKey {
                metric: Metric::KinesisRecordsPerPutRecordsRequest,
                error_code: Some(Arc::from("E".repeat(128))),
                stream: Some(Arc::from("s".repeat(128))),
                shard: Some(Arc::from("shardId-000000001000")),
                file: None,
            },
            stat: Stat {
                count: u64::MAX,
                sum: -1.234_567_890_123_456_7e300,
                min: -1.234_567_890_123_456_7e300,
                max: 1.234_567_890_123_456_7e300,
            },
            hist: None,
        };
        let p = "MetricData.member.1000.";
        let mut encoded = format!("&{p}MetricName={}", d.key.metric.name());
        for (i, (n, v)) in d.key.dimensions().iter().enumerate() {
            encoded += &format!(
                "&{p}Dimensions.member.{}.Name={n}&{p}Dimensions.member.{}.Value={v}",
                i + 1,
                i + 1
            );
        }
        for s in ["SampleCount", "Sum", "Minimum", "Maximum"] {
            // The SDK writes doubles in their shortest form (ryu), as `{:e}` does.
            encoded += &format!("&{p}StatisticValues.{s}={:e}", d.stat.sum);
        }
        encoded += &format!("&{p}Unit=Count&{p}Timestamp=2026-11-25T20%3A49%3A31.409Z");
        assert!(
            estimated_size(&d) > encoded.len() + 100,
            "{} vs {}",
            estimated_size(&d),
            encoded.len()
        );
    }

    /// A real round trip against moto (`moto_server -p PORT`); runs when
    /// KPLD_TEST_MOTO_ENDPOINT is set (scripts/test.sh starts one), and
    /// fails under CI=true when it is not.
    #[tokio::test]
    async fn uploads_reach_a_cloudwatch_compatible_server() {
        let Ok(endpoint) = std::env::var("KPLD_TEST_MOTO_ENDPOINT") else {
            assert!(
                std::env::var("CI").map_or(true, |v| v != "true"),
                "KPLD_TEST_MOTO_ENDPOINT must be set under CI"
            );
            eprintln!("skipped: KPLD_TEST_MOTO_ENDPOINT is not set");
            return;
        };
        let shared = test_sdk_config().await;
        let namespace = format!("kpld-test-{}", std::process::id());
        let mut r = Registry::new(Filter {
            level: Level::Detailed,
            granularity: Granularity::Shard,
        });
        let mut st = Stat::EMPTY;
        for v in [1.0, 1.0, 0.0] {
            st.put(v);
        }
        // 1500 shards: more datums than one call may carry.
        for i in 0..1500 {
            r.add_leaf(
                SeriesKey {
                    metric: Metric::UserRecordsPut,
                    error_code: None,
                    stream: Some("orders".into()),
                    shard: Some(format!("shardId-{i:012}").into()),
                    file: None,
                },
                &st,
            );
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let report = r.close_interval(now);
        assert_eq!(report.data.len(), 1502);
        let mut sink = CloudWatchSink::new(&shared, Some(&endpoint), &namespace);
        let up = sink.upload(&report).await;
        assert!(up.calls >= 2, "1502 datums need two calls: {up:?}");
        // moto on a busy machine can answer past the attempt timeout; the
        // sink keeps what failed for the next interval, as it would in the
        // daemon, so a few empty intervals must send the rest.
        let mut sent = up.datums_sent;
        for _ in 0..3 {
            if sink.queued() == 0 {
                break;
            }
            let empty = IntervalReport {
                timestamp_ms: now,
                data: Vec::new(),
            };
            sent += sink.upload(&empty).await.datums_sent;
        }
        assert_eq!((sent, sink.queued()), (1502, 0), "first upload: {up:?}");

        let cw = aws_sdk_cloudwatch::Client::from_conf(
            aws_sdk_cloudwatch::config::Builder::from(&shared)
                .endpoint_url(&endpoint)
                .build(),
        );
        // Every series arrived, with the KPL's dimension sets. A call sent
        // again after a timeout leaves moto a second copy of its datums:
        // count each series (its dimension names and values) once.
        let mut series: std::collections::BTreeSet<Vec<(String, String)>> = Default::default();
        let mut pages = cw
            .list_metrics()
            .namespace(&namespace)
            .metric_name("UserRecordsPut")
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            for m in page.expect("list_metrics").metrics() {
                series.insert(
                    m.dimensions()
                        .iter()
                        .map(|d| {
                            let name = d.name().unwrap_or("").to_string();
                            (name, d.value().unwrap_or("").to_string())
                        })
                        .collect(),
                );
            }
        }
        let sets: Vec<Vec<String>> = series
            .iter()
            .map(|dims| dims.iter().map(|(name, _)| name.clone()).collect())
            .collect();
        assert_eq!(sets.len(), 1502);
        assert_eq!(sets.iter().filter(|d| d.is_empty()).count(), 1);
        assert_eq!(sets.iter().filter(|d| *d == &["StreamName"]).count(), 1);
        assert_eq!(
            sets.iter()
                .filter(|d| *d == &["StreamName", "ShardId"])
                .count(),
            1500
        );
        // A shard series holds exactly its statistic set. (moto matches
        // dimension supersets, so only the most specific series can be
        // read back exactly.)
        let stats = cw
            .get_metric_statistics()
            .namespace(&namespace)
            .metric_name("UserRecordsPut")
            .dimensions(
                Dimension::builder()
                    .name("StreamName")
                    .value("orders")
                    .build(),
            )
            .dimensions(
                Dimension::builder()
                    .name("ShardId")
                    .value("shardId-000000000777")
                    .build(),
            )
            .start_time(DateTime::from_millis(now - 600_000))
            .end_time(DateTime::from_millis(now + 600_000))
            .period(60)
            .statistics(aws_sdk_cloudwatch::types::Statistic::Sum)
            .statistics(aws_sdk_cloudwatch::types::Statistic::SampleCount)
            .statistics(aws_sdk_cloudwatch::types::Statistic::Minimum)
            .statistics(aws_sdk_cloudwatch::types::Statistic::Maximum)
            .send()
            .await
            .expect("get_metric_statistics");
        let dp = &stats.datapoints()[0];
        // Once, or once more for each time its call was sent again after a
        // timeout (the first upload and at most three more above).
        let copies = dp.sample_count().unwrap_or(0.0) / 3.0;
        assert!(
            copies.fract() == 0.0 && (1.0..=4.0).contains(&copies),
            "{dp:?}"
        );
        assert_eq!(
            (dp.sample_count(), dp.sum(), dp.minimum(), dp.maximum()),
            (Some(3.0 * copies), Some(2.0 * copies), Some(0.0), Some(1.0))
        );
        assert_eq!(dp.unit(), Some(&StandardUnit::Count));
    }

    /// The same HTTP client setup as the daemon (kinesis.rs load_shared_config),
    /// with the static credentials local servers need.
    async fn test_sdk_config() -> aws_config::SdkConfig {
        use aws_smithy_http_client::{tls, Builder};
        let http = Builder::new()
            .tls_provider(tls::Provider::Rustls(
                tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .http_client(http)
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_credential_types::Credentials::new(
                "test",
                "test",
                None,
                None,
                "kpld-test",
            ))
            .load()
            .await
    }
}
