//! A small HTTP endpoint serving the metrics in the Prometheus text format
//! (version 0.0.4) at `GET /metrics`.
//!
//! What it shows:
//! - Each recorded KPL metric as a summary `kpld_<metric>[_bytes|_seconds]`
//!   with cumulative `_sum` and `_count` per series, at the configured
//!   granularity only (Prometheus aggregates by itself, so the KPL's
//!   stream and global roll-ups would be counted twice). Labels: `stream`,
//!   `shard`, `error_code`. A value recorded without a shard has no `shard`
//!   label. Times are in seconds.
//! - The two time metrics per stream (or globally at `global` granularity)
//!   with quantiles 0.5, 0.9, 0.99 and 0.999 from their HDR histograms over
//!   the current and the previous upload interval.
//! - Hot shards: `kpld_shard_records_per_second`, `kpld_shard_bytes_per_second`,
//!   their `_limit_ratio` against the shard limits, `kpld_shard_throttles_total`,
//!   `kpld_stream_pending_records`, and `kpld_partition_key_share` for the
//!   heavy partition keys (those the summary can vouch for; bounded).

use super::registry::{truncate, Granularity, Metric, SeriesKey, Stat, Unit};
use super::MetricsHandle;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::Value;
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt::Write as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
const QUANTILES: [f64; 4] = [0.5, 0.9, 0.99, 0.999];

/// `UserRecordsPerKinesisRecord` → `user_records_per_kinesis_record`.
pub fn snake(name: &str) -> String {
    let mut s = String::with_capacity(name.len() + 8);
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                s.push('_');
            }
            s.push(c.to_ascii_lowercase());
        } else {
            s.push(c);
        }
    }
    s
}

/// The Prometheus family name of a KPL metric.
pub fn family(m: Metric) -> String {
    let base = format!("kpld_{}", snake(m.name()));
    match m.unit() {
        Unit::Bytes => base + "_bytes",
        Unit::Milliseconds => base + "_seconds",
        Unit::Count => base,
    }
}

/// Escapes a label value (backslash, double quote, newline).
pub fn escape(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

fn labels(pairs: &[(&str, &str)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    format!("{{{}}}", inner.join(","))
}

fn key_labels(k: &SeriesKey) -> Vec<(&'static str, &str)> {
    let mut v = Vec::new();
    if let Some(s) = &k.stream {
        v.push(("stream", &**s));
    }
    if let Some(s) = &k.shard {
        v.push(("shard", &**s));
    }
    if let Some(c) = &k.error_code {
        v.push(("error_code", &**c));
    }
    v
}

fn fmt_num(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

/// The whole exposition.
pub fn render(handle: &MetricsHandle) -> String {
    let mut out = String::new();
    let (filter, totals, hists) = handle.with_registry(|reg| {
        let filter = reg.filter;
        let mut by_metric: BTreeMap<Metric, BTreeMap<SeriesKey, Stat>> = BTreeMap::new();
        let totals = reg.totals_at(filter.granularity);
        for (k, st) in totals {
            if k.metric.is_file() {
                // The files have their own families below (`kpld_file_*`), from
                // the readers' counters, at every granularity.
                continue;
            }
            let g = if k.metric.is_time() {
                filter.granularity.min(Granularity::Stream)
            } else {
                filter.granularity
            };
            by_metric
                .entry(k.metric)
                .or_default()
                .entry(truncate(&k, g))
                .or_default()
                .merge(&st);
        }
        let mut hists = BTreeMap::new();
        for (m, series) in &by_metric {
            if !m.is_time() {
                continue;
            }
            for k in series.keys() {
                if let Some(h) = reg.recent_hist(*m, k.stream.as_ref()) {
                    let q: Vec<(f64, u64)> = QUANTILES
                        .iter()
                        .map(|q| (*q, h.value_at_quantile(*q)))
                        .collect();
                    hists.insert(k.clone(), q);
                }
            }
        }
        (filter, by_metric, hists)
    });
    for (m, series) in &totals {
        let fam = family(*m);
        let scale = if m.unit() == Unit::Milliseconds {
            1e-3
        } else {
            1.0
        };
        let _ = writeln!(
            out,
            "# HELP {fam} KPL metric {} ({}), summed since start at {} granularity.",
            m.name(),
            m.unit().as_str(),
            filter.granularity.as_str()
        );
        let _ = writeln!(out, "# TYPE {fam} summary");
        for (k, st) in series {
            let l = key_labels(k);
            if let Some(qs) = hists.get(k) {
                for (q, v) in qs {
                    let mut lq = l.clone();
                    let qs = q.to_string();
                    lq.push(("quantile", &qs));
                    let _ = writeln!(out, "{fam}{} {}", labels(&lq), fmt_num(*v as f64 * scale));
                }
            }
            let _ = writeln!(out, "{fam}_sum{} {}", labels(&l), fmt_num(st.sum * scale));
            let _ = writeln!(out, "{fam}_count{} {}", labels(&l), st.count);
        }
    }
    render_hot(&mut out, &super::stats::snapshot(handle, 0));
    if let Some(files) = handle.files_stats() {
        render_files(&mut out, &files);
    }
    if let Some(spool) = handle.spool_stats() {
        render_spool(&mut out, &spool);
    }
    out
}

/// The spool of `durability = "disk"` streams (docs/spool.md).
fn render_spool(out: &mut String, spool: &Value) {
    const SERIES: &[(&str, &str, &str, &str)] = &[
        ("bytes", "bytes", "gauge", "Bytes of live segment files."),
        ("segments", "segments", "gauge", "Live segment files."),
        (
            "entries_pending",
            "entries_pending",
            "gauge",
            "Spooled records not yet final.",
        ),
        (
            "entries_appended",
            "entries_appended",
            "counter",
            "Records spooled since start.",
        ),
        (
            "fsyncs",
            "fsyncs",
            "counter",
            "fdatasync calls of the spool.",
        ),
        (
            "full_events",
            "full_events",
            "counter",
            "Appends that found the spool or the disk full.",
        ),
        (
            "dead_lettered",
            "dead_lettered",
            "counter",
            "Spooled records that failed for good (in the dead-letter file).",
        ),
    ];
    for (name, field, ty, help) in SERIES {
        let fam = format!("kpld_spool_{name}");
        let _ = writeln!(out, "# HELP {fam} {help}");
        let _ = writeln!(out, "# TYPE {fam} {ty}");
        let _ = writeln!(out, "{fam} {}", spool[*field].as_u64().unwrap_or(0));
    }
    let fam = "kpld_spool_replayed";
    let _ = writeln!(
        out,
        "# HELP {fam} Records replayed from the spool at start, by outcome (pending: not yet final)."
    );
    let _ = writeln!(out, "# TYPE {fam} gauge");
    for outcome in [
        "replayed",
        "landed",
        "dead_lettered",
        "left_in_spool",
        "pending",
    ] {
        let v = spool["replay"][outcome].as_u64().unwrap_or(0);
        let _ = writeln!(out, "{fam}{} {v}", labels(&[("outcome", outcome)]));
    }
}

/// Per open log file (`[[files]]`): offsets, bytes behind and counts.
fn render_files(out: &mut String, files: &Value) {
    const GAUGES: &[(&str, &str, &str)] = &[
        ("offset_read", "gauge", "Offset read up to."),
        (
            "offset_acked",
            "gauge",
            "Offset before which every record is final (the checkpoint).",
        ),
        (
            "bytes_behind",
            "gauge",
            "File size minus the offset acknowledged.",
        ),
        ("lines", "counter", "Lines read."),
        ("records", "counter", "Records handed to the pipeline."),
        (
            "parse_errors",
            "counter",
            "Lines a processor could not parse.",
        ),
        (
            "long_lines",
            "counter",
            "Lines longer than max_line_bytes (split).",
        ),
        (
            "rotations",
            "counter",
            "Rotations, deletions and truncations seen.",
        ),
        (
            "dead_letters",
            "counter",
            "Records written to the dead-letter file.",
        ),
        (
            "closed_unacked",
            "counter",
            "Rotated files closed at rotated_max_open_ms with records unacknowledged.",
        ),
    ];
    let Some(files) = files.as_array() else {
        return;
    };
    if files.is_empty() {
        return;
    }
    for (field, ty, help) in GAUGES {
        let fam = format!("kpld_file_{field}");
        let _ = writeln!(out, "# HELP {fam} {help}");
        let _ = writeln!(out, "# TYPE {fam} {ty}");
        for f in files {
            let path = f["path"].as_str().unwrap_or("");
            let stream = f["stream"].as_str().unwrap_or("");
            let l = labels(&[("path", path), ("stream", stream)]);
            let _ = writeln!(out, "{fam}{l} {}", f[field].as_u64().unwrap_or(0));
        }
    }
}

fn render_hot(out: &mut String, snap: &Value) {
    let empty = vec![];
    let streams = snap["streams"].as_array().unwrap_or(&empty);
    let gauge = |out: &mut String, name: &str, help: &str, kind: &str, field: &str| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for s in streams {
            let stream = s["name"].as_str().unwrap_or("");
            for sh in s["shards"].as_array().unwrap_or(&empty) {
                let shard = sh["shard_id"].as_str().unwrap_or("");
                let v = sh[field].as_f64().unwrap_or(0.0);
                let _ = writeln!(
                    out,
                    "{name}{} {}",
                    labels(&[("stream", stream), ("shard", shard)]),
                    fmt_num(v)
                );
            }
        }
    };
    gauge(
        out,
        "kpld_shard_records_per_second",
        "Kinesis records per second the shard accepted (aggregates count once), over about the last second.",
        "gauge",
        "records_per_s",
    );
    gauge(
        out,
        "kpld_shard_bytes_per_second",
        "Bytes (data and partition keys) per second the shard accepted, over about the last second.",
        "gauge",
        "bytes_per_s",
    );
    gauge(
        out,
        "kpld_shard_records_limit_ratio",
        "Records per second over the shard limit of 1000 records/s.",
        "gauge",
        "records_utilization",
    );
    gauge(
        out,
        "kpld_shard_bytes_limit_ratio",
        "Bytes per second over the shard limit of 1 MiB/s.",
        "gauge",
        "bytes_utilization",
    );
    gauge(
        out,
        "kpld_shard_throttles_total",
        "Kinesis records refused with ProvisionedThroughputExceededException.",
        "counter",
        "throttles_total",
    );
    let _ = writeln!(
        out,
        "# HELP kpld_stream_pending_records User records of the stream not yet final."
    );
    let _ = writeln!(out, "# TYPE kpld_stream_pending_records gauge");
    for s in streams {
        let _ = writeln!(
            out,
            "kpld_stream_pending_records{} {}",
            labels(&[("stream", s["name"].as_str().unwrap_or(""))]),
            s["pending"].as_u64().unwrap_or(0)
        );
    }
    let _ = writeln!(
        out,
        "# HELP kpld_partition_key_share Share of a shard's bytes (recent window) from one heavy partition key."
    );
    let _ = writeln!(out, "# TYPE kpld_partition_key_share gauge");
    for s in streams {
        let stream = s["name"].as_str().unwrap_or("");
        for sh in s["shards"].as_array().unwrap_or(&empty) {
            let shard = sh["shard_id"].as_str().unwrap_or("");
            for k in sh["top_keys"].as_array().unwrap_or(&empty) {
                let _ = writeln!(
                    out,
                    "kpld_partition_key_share{} {}",
                    labels(&[
                        ("stream", stream),
                        ("shard", shard),
                        ("key", k["key"].as_str().unwrap_or(""))
                    ]),
                    fmt_num(k["share"].as_f64().unwrap_or(0.0))
                );
            }
        }
    }
}

async fn respond(
    handle: MetricsHandle,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, ctype, body) = match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => (StatusCode::OK, CONTENT_TYPE, handle.prometheus_text()),
        (&Method::GET, "/") => (
            StatusCode::OK,
            "text/plain; charset=utf-8",
            "kpld: metrics at /metrics\n".to_string(),
        ),
        (&Method::GET, _) => (
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found\n".into(),
        ),
        _ => (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "only GET\n".into(),
        ),
    };
    let resp = Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, ctype)
        .body(Full::new(Bytes::from(body)))
        .expect("static response parts are valid");
    Ok(resp)
}

/// Serves until `stop` is cancelled.
pub async fn serve(listener: TcpListener, handle: MetricsHandle, stop: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            a = listener.accept() => a,
        };
        let (stream, _) = match accepted {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "Prometheus endpoint: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let handle = handle.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let io = hyper_util::rt::TokioIo::new(stream);
            let svc = hyper::service::service_fn(move |req| respond(handle.clone(), req));
            let conn = hyper::server::conn::http1::Builder::new().serve_connection(io, svc);
            tokio::select! {
                _ = conn => {}
                _ = stop.cancelled() => {}
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::super::recorder::EntryOutcome;
    use super::super::{MetricsConfig, MetricsHandle};
    use super::*;
    use crate::ipc::Attempt;
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn the_spool_is_rendered_with_its_replay_outcomes_once_a_spool_is_open() {
        let h = MetricsHandle::new(&MetricsConfig::default());
        assert!(!render(&h).contains("kpld_spool_"), "no spool, no series");
        h.set_spool_stats(Box::new(|| {
            serde_json::json!({
                "bytes": 4096, "segments": 1, "entries_pending": 7, "entries_appended": 9,
                "fsyncs": 3, "full_events": 0, "dead_lettered": 1,
                "replay": {"replayed": 5, "landed": 4, "dead_lettered": 1, "left_in_spool": 0, "pending": 0},
            })
        }));
        let text = render(&h);
        for line in [
            "kpld_spool_bytes 4096",
            "kpld_spool_entries_pending 7",
            "kpld_spool_fsyncs 3",
            "kpld_spool_dead_lettered 1",
            "kpld_spool_replayed{outcome=\"landed\"} 4",
            "# TYPE kpld_spool_entries_appended counter",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing from:\n{text}"
            );
        }
    }

    #[test]
    fn names_follow_prometheus_conventions() {
        assert_eq!(family(Metric::UserRecordsPut), "kpld_user_records_put");
        assert_eq!(
            family(Metric::KinesisRecordsDataPut),
            "kpld_kinesis_records_data_put_bytes"
        );
        assert_eq!(family(Metric::BufferingTime), "kpld_buffering_time_seconds");
        assert_eq!(
            family(Metric::KinesisRecordsPerPutRecordsRequest),
            "kpld_kinesis_records_per_put_records_request"
        );
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[tokio::test]
    async fn the_endpoint_serves_the_exposition() {
        let h = MetricsHandle::new(&MetricsConfig::default());
        let stream: Arc<str> = "s\"1".into();
        let shard: Arc<str> = "shardId-0".into();
        let mut m = h.stream(&stream);
        m.kinesis_record(&shard, 2, 300, EntryOutcome::Put);
        m.user_record_final(
            Some(&shard),
            true,
            "",
            100,
            &[Attempt {
                delay_ms: 250,
                ..Default::default()
            }],
        );
        m.put_records_result(9, 1, 2, Some("InternalFailure"));
        m.commit(tokio::time::Instant::now());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let server = tokio::spawn(serve(listener, h.clone(), stop.clone()));
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut resp = String::new();
        c.read_to_string(&mut resp).await.unwrap();
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
        assert!(resp.contains(CONTENT_TYPE));
        assert!(
            resp.contains("kpld_user_records_put_count{stream=\"s\\\"1\",shard=\"shardId-0\"} 1"),
            "{resp}"
        );
        assert!(
            resp.contains("kpld_buffering_time_seconds{stream=\"s\\\"1\",quantile=\"0.5\"} 0.25"),
            "{resp}"
        );
        assert!(resp.contains(
            "kpld_errors_by_code_count{stream=\"s\\\"1\",error_code=\"InternalFailure\"} 1"
        ));
        assert!(
            resp.contains("kpld_shard_records_per_second{stream=\"s\\\"1\",shard=\"shardId-0\"}")
        );
        stop.cancel();
        server.await.unwrap();
        drop(m);
    }
}
