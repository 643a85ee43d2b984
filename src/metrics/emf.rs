//! The metrics as CloudWatch Embedded Metric Format (EMF) lines, one JSON
//! document per line, for hosts that ship logs instead of calling the API.
//!
//! One document per closed interval and dimension set (the same series the
//! PutMetricData upload would send, so the same level and granularity):
//! ```json
//! {"_aws":{"Timestamp":1764100000000,"CloudWatchMetrics":[{"Namespace":"KinesisProducerLibrary",
//!   "Dimensions":[["StreamName"]],"Metrics":[{"Name":"UserRecordsPut","Unit":"Count"},..]}]},
//!  "StreamName":"orders",
//!  "UserRecordsPut":{"Max":1,"Min":0,"Count":10,"Sum":9},
//!  "BufferingTime":{"Values":[..],"Counts":[..],"Max":..,"Min":..,"Count":..,"Sum":..}}
//! ```
//! Values are statistic sets (`Max`/`Min`/`Count`/`Sum`), and time metrics
//! of stream and global series carry their HDR histogram as at most 100
//! `Values`/`Counts` bins, the forms AWS's own EMF libraries emit and
//! CloudWatch aggregates (so percentiles work). Global series have an empty
//! dimension set.

use super::registry::{Datum, IntervalReport, Stat};
use super::EmfTarget;
use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex};

/// EMF limits: metrics per document, values per metric.
pub const MAX_METRICS_PER_DOCUMENT: usize = 100;
pub const MAX_VALUES_PER_METRIC: usize = 100;

/// Up to `max_bins` (value, count) pairs summarising `h`, with values kept
/// inside [min, max] of the exact statistic set.
pub fn histogram_bins(h: &Histogram<u64>, stat: &Stat, max_bins: usize) -> (Vec<f64>, Vec<u64>) {
    let points: Vec<(f64, u64)> = h
        .iter_recorded()
        .map(|v| {
            (
                h.median_equivalent(v.value_iterated_to()) as f64,
                v.count_at_value(),
            )
        })
        .collect();
    let clamp = |v: f64| v.max(stat.min).min(stat.max);
    if points.len() <= max_bins {
        return points.iter().map(|(v, c)| (clamp(*v), *c)).unzip();
    }
    // Geometric bins between the smallest and largest value; a bin's value
    // is the count-weighted mean of what fell into it.
    let lo = points.first().map_or(1.0, |p| p.0).max(1.0);
    let hi = points.last().map_or(1.0, |p| p.0).max(lo + 1.0);
    let step = (hi / lo).ln() / (max_bins - 1) as f64;
    let mut bins: Vec<(f64, u64)> = vec![(0.0, 0); max_bins];
    for (v, c) in points {
        let i = if v <= lo {
            0
        } else {
            (((v / lo).ln() / step).round() as usize).min(max_bins - 1)
        };
        bins[i].0 += v * c as f64;
        bins[i].1 += c;
    }
    bins.into_iter()
        .filter(|(_, c)| *c > 0)
        .map(|(s, c)| (clamp(s / c as f64), c))
        .unzip()
}

fn number(v: f64) -> Value {
    // Whole numbers as integers keep the lines short and exact.
    if v.fract() == 0.0 && v.abs() < 9.0e15 {
        json!(v as i64)
    } else {
        json!(v)
    }
}

fn value_of(d: &Datum) -> Value {
    let mut m = Map::new();
    if let Some(h) = &d.hist {
        let (values, counts) = histogram_bins(h, &d.stat, MAX_VALUES_PER_METRIC);
        m.insert(
            "Values".into(),
            Value::Array(values.into_iter().map(number).collect()),
        );
        m.insert(
            "Counts".into(),
            Value::Array(counts.into_iter().map(|c| json!(c)).collect()),
        );
    }
    m.insert("Max".into(), number(d.stat.max));
    m.insert("Min".into(), number(d.stat.min));
    m.insert("Count".into(), json!(d.stat.count));
    m.insert("Sum".into(), number(d.stat.sum));
    Value::Object(m)
}

/// The EMF documents of one interval, one per dimension set.
pub fn render(report: &IntervalReport, namespace: &str) -> Vec<String> {
    let mut groups: BTreeMap<Vec<(&'static str, &str)>, Vec<&Datum>> = BTreeMap::new();
    for d in &report.data {
        groups.entry(d.key.dimensions()).or_default().push(d);
    }
    let mut lines = Vec::new();
    for (dims, data) in groups {
        for chunk in data.chunks(MAX_METRICS_PER_DOCUMENT) {
            let names: Vec<&str> = dims.iter().map(|(n, _)| *n).collect();
            let metrics: Vec<Value> = chunk
                .iter()
                .map(|d| json!({"Name": d.key.metric.name(), "Unit": d.key.metric.unit().as_str()}))
                .collect();
            let mut root = Map::new();
            root.insert(
                "_aws".into(),
                json!({
                    "Timestamp": report.timestamp_ms,
                    "CloudWatchMetrics": [{
                        "Namespace": namespace,
                        "Dimensions": [names],
                        "Metrics": metrics,
                    }],
                }),
            );
            for (n, v) in &dims {
                root.insert((*n).into(), json!(v));
            }
            for d in chunk {
                root.insert(d.key.metric.name().into(), value_of(d));
            }
            lines.push(Value::Object(root).to_string());
        }
    }
    lines
}

/// Appends EMF lines to a file or standard output.
pub struct EmfWriter {
    out: Arc<Mutex<Box<dyn Write + Send>>>,
    namespace: String,
}

impl EmfWriter {
    /// Opens (creates, appends to) the file now, so a bad path stops the
    /// daemon at start.
    pub fn open(target: &EmfTarget, namespace: &str) -> std::io::Result<EmfWriter> {
        let out: Box<dyn Write + Send> = match target {
            EmfTarget::Stdout => Box::new(std::io::stdout()),
            EmfTarget::File(p) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)?,
            ),
        };
        Ok(EmfWriter {
            out: Arc::new(Mutex::new(out)),
            namespace: namespace.to_string(),
        })
    }

    /// Writes one interval (off the async threads: a full pipe may block).
    pub async fn write(&mut self, report: &IntervalReport) {
        let lines = render(report, &self.namespace);
        if lines.is_empty() {
            return;
        }
        let out = self.out.clone();
        let r = tokio::task::spawn_blocking(move || {
            let mut o = out.lock().unwrap_or_else(|e| e.into_inner());
            let mut buf = String::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
            for l in lines {
                buf.push_str(&l);
                buf.push('\n');
            }
            o.write_all(buf.as_bytes())?;
            o.flush()
        })
        .await;
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot write EMF metrics (metrics_emf_path)"),
            Err(e) => tracing::warn!(error = %e, "EMF writer task failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::registry::{
        new_time_histogram, Filter, Granularity, Level, Metric, Registry, SeriesKey,
    };
    use super::*;
    use std::sync::Arc;

    fn report() -> IntervalReport {
        let mut r = Registry::new(Filter {
            level: Level::Detailed,
            granularity: Granularity::Shard,
        });
        let stream: Arc<str> = "orders".into();
        let mut h = new_time_histogram();
        let mut st = Stat::EMPTY;
        for v in 0..5000u64 {
            h.record(v).unwrap();
            st.put(v as f64);
        }
        r.add_hist(Metric::BufferingTime, &stream, &h);
        r.add_leaf(
            SeriesKey {
                metric: Metric::BufferingTime,
                error_code: None,
                stream: Some(stream.clone()),
                shard: Some("shardId-000000000000".into()),
                file: None,
            },
            &st,
        );
        let mut e = Stat::EMPTY;
        e.put(1.0);
        r.add_leaf(
            SeriesKey {
                metric: Metric::ErrorsByCode,
                error_code: Some("ProvisionedThroughputExceededException".into()),
                stream: Some(stream),
                shard: None,
                file: None,
            },
            &e,
        );
        r.close_interval(1_764_100_000_000)
    }

    #[test]
    fn one_document_per_dimension_set_with_statistic_sets() {
        let lines = render(&report(), "KinesisProducerLibrary");
        let docs: Vec<Value> = lines
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        // BufferingTime: global, stream, shard; ErrorsByCode: 3 more sets
        // ([] is shared with BufferingTime's global series).
        assert_eq!(docs.len(), 5, "{lines:#?}");
        for d in &docs {
            let directive = &d["_aws"]["CloudWatchMetrics"][0];
            assert_eq!(d["_aws"]["Timestamp"], 1_764_100_000_000i64);
            assert_eq!(directive["Namespace"], "KinesisProducerLibrary");
            for name in directive["Dimensions"][0].as_array().unwrap() {
                assert!(d[name.as_str().unwrap()].is_string());
            }
            for m in directive["Metrics"].as_array().unwrap() {
                let v = &d[m["Name"].as_str().unwrap()];
                assert!(v["Count"].as_u64().unwrap() > 0);
                assert!(v["Min"].as_f64().unwrap() <= v["Max"].as_f64().unwrap());
            }
        }
        let global = docs
            .iter()
            .find(|d| {
                d["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0]
                    .as_array()
                    .unwrap()
                    .is_empty()
            })
            .unwrap();
        let bt = &global["BufferingTime"];
        assert_eq!(bt["Count"], 5000);
        assert_eq!(bt["Sum"], 12_497_500);
        let values = bt["Values"].as_array().unwrap();
        let counts = bt["Counts"].as_array().unwrap();
        assert!(values.len() <= MAX_VALUES_PER_METRIC && values.len() == counts.len());
        assert_eq!(
            counts.iter().map(|c| c.as_u64().unwrap()).sum::<u64>(),
            5000
        );
        assert_eq!(global["ErrorsByCode"]["Sum"], 1);
        let shard = docs
            .iter()
            .find(|d| d.get("ShardId").is_some())
            .expect("a shard document");
        assert!(
            shard["BufferingTime"].get("Values").is_none(),
            "shard series carry no histogram"
        );
    }

    #[test]
    fn bins_keep_counts_and_stay_within_min_max() {
        let mut h = new_time_histogram();
        let mut st = Stat::EMPTY;
        for v in [3u64, 3, 3, 70, 1_000_000] {
            h.record(v).unwrap();
            st.put(v as f64);
        }
        let (values, counts) = histogram_bins(&h, &st, 100);
        assert_eq!(counts, vec![3, 1, 1]);
        assert_eq!(values[0], 3.0);
        assert!(values.iter().all(|v| *v >= st.min && *v <= st.max));
        let (values, counts) = histogram_bins(&h, &st, 2);
        assert_eq!(counts.iter().sum::<u64>(), 5);
        assert!(values.len() <= 2);
    }

    #[tokio::test]
    async fn lines_are_appended_to_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("emf.log");
        let mut w = EmfWriter::open(&EmfTarget::File(path.clone()), "NS").unwrap();
        w.write(&report()).await;
        w.write(&report()).await;
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 10);
        assert!(text
            .lines()
            .all(|l| serde_json::from_str::<Value>(l).is_ok()));
        assert!(EmfWriter::open(&EmfTarget::File(dir.path().join("no/such/dir/x")), "NS").is_err());
    }
}
