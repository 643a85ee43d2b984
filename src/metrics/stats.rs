//! The `kpld stats` snapshot: one JSON document describing every stream
//! and shard (served in a StatsReply), and its table rendering for the CLI.
//!
//! Shape (documented in docs/protocol.md; keys are only ever added):
//! ```json
//! { "version": "0.1.0", "uptime_s": 12.5, "outstanding_records": 0,
//!   "metrics": {"level": "detailed", "granularity": "shard", "intervals_closed": 3},
//!   "limits": {"shard_bytes_per_s": 1048576, "shard_records_per_s": 1000},
//!   "streams": [ { "name": "orders", "pending": 0, "received_total": 10,
//!       "user_records_put_total": 10, "user_records_failed_total": 0,
//!       "requests_total": 2, "request_errors_total": 0,
//!       "records_per_s": 3.0, "bytes_per_s": 300.0,
//!       "buffering_time_ms": {"count": 10, "p50": 101, "p90": .., "p99": .., "p999": .., "max": ..} | null,
//!       "request_time_ms": {..} | null,
//!       "shards": [ { "shard_id": "shardId-000000000000", "idle": false,
//!           "records_per_s": 3.0, "bytes_per_s": 300.0,
//!           "records_utilization": 0.003, "bytes_utilization": 0.0003,
//!           "throttles_per_s": 0.0, "throttles_total": 0, "errors_total": 0,
//!           "kinesis_records_total": 2, "bytes_total": 600,
//!           "user_records_put_total": 10, "user_records_failed_total": 0,
//!           "top_keys": [{"key": "user-1", "bytes": 500, "error_bytes": 0, "share": 0.83}],
//!           "top_keys_window_s": 10.0 } ] } ] }
//! ```
//! Rates are per second since the stream actor's previous commit (about a
//! second); a shard without a commit for a few seconds is `idle` with zero
//! rates. `records_per_s` counts Kinesis records (aggregates count once), as
//! the shard limit does. Percentiles cover the current and the previous
//! upload interval and are null when `metrics_level` does not record the
//! metric.

use super::hot::{KEY_SLOTS, SHARD_BYTES_PER_S, SHARD_RECORDS_PER_S};
use super::registry::Metric;
use super::MetricsHandle;
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::time::Duration;
use tokio::time::Instant;

fn percentiles(h: Option<Histogram<u64>>) -> Value {
    match h {
        None => Value::Null,
        Some(h) => json!({
            "count": h.len(),
            "p50": h.value_at_quantile(0.5),
            "p90": h.value_at_quantile(0.9),
            "p99": h.value_at_quantile(0.99),
            "p999": h.value_at_quantile(0.999),
            "max": h.max(),
        }),
    }
}

/// A commit older than this means the shard (or stream) is idle.
fn stale_after(commit_every: Duration) -> Duration {
    commit_every * 2 + Duration::from_millis(500)
}

/// The snapshot. `outstanding`: the producer's count of records not yet final.
pub fn snapshot(handle: &MetricsHandle, outstanding: u64) -> Value {
    let now = Instant::now();
    let stale = stale_after(handle.commit_every());
    let uptime = now
        .saturating_duration_since(handle.started())
        .as_secs_f64();
    handle.with_registry(|reg| {
        let filter = reg.filter;
        let mut streams = Vec::new();
        for (name, st) in &reg.streams {
            let mut shards = Vec::new();
            let (mut rps, mut bps, mut put, mut failed) = (0.0, 0.0, 0u64, 0u64);
            for (id, sh) in &st.shards {
                let s = &sh.hot;
                let idle = now.saturating_duration_since(s.at) > stale;
                let (r, b, t) = if idle {
                    (0.0, 0.0, 0.0)
                } else {
                    (s.records_per_s, s.bytes_per_s, s.throttles_per_s)
                };
                rps += r;
                bps += b;
                put += s.user_records_put_total;
                failed += s.user_records_failed_total;
                let total = s.keys_total_bytes.max(1) as f64;
                let top: Vec<Value> = s
                    .top_keys
                    .iter()
                    // Only keys certainly above the summary's 1/KEY_SLOTS
                    // threshold: with many small keys, none is "heavy".
                    .filter(|k| (k.bytes - k.error) as f64 * KEY_SLOTS as f64 >= total)
                    .map(|k| {
                        json!({
                            "key": k.key,
                            "bytes": k.bytes,
                            "error_bytes": k.error,
                            "share": k.bytes as f64 / total,
                        })
                    })
                    .collect();
                shards.push(json!({
                    "shard_id": &**id,
                    "idle": idle,
                    "records_per_s": r,
                    "bytes_per_s": b,
                    "records_utilization": r / SHARD_RECORDS_PER_S,
                    "bytes_utilization": b / SHARD_BYTES_PER_S,
                    "throttles_per_s": t,
                    "throttles_total": s.throttles_total,
                    "errors_total": s.errors_total,
                    "kinesis_records_total": s.kinesis_records_total,
                    "bytes_total": s.bytes_total,
                    "user_records_put_total": s.user_records_put_total,
                    "user_records_failed_total": s.user_records_failed_total,
                    "top_keys": top,
                    "top_keys_window_s": s.keys_window.as_secs_f64(),
                }));
            }
            let bt = filter
                .records(Metric::BufferingTime)
                .then(|| reg.recent_hist(Metric::BufferingTime, Some(name)))
                .flatten();
            let rt = filter
                .records(Metric::RequestTime)
                .then(|| reg.recent_hist(Metric::RequestTime, Some(name)))
                .flatten();
            streams.push(json!({
                "name": &**name,
                "pending": st.pending,
                "received_total": st.received_total,
                "user_records_put_total": put,
                "user_records_failed_total": failed + st.failed_unrouted_total,
                "requests_total": st.requests_total,
                "request_errors_total": st.request_errors_total,
                "records_per_s": rps,
                "bytes_per_s": bps,
                "buffering_time_ms": percentiles(bt),
                "request_time_ms": percentiles(rt),
                "shards": shards,
            }));
        }
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_s": uptime,
            "outstanding_records": outstanding,
            "metrics": {
                "level": filter.level.as_str(),
                "granularity": filter.granularity.as_str(),
                "intervals_closed": reg.intervals_closed,
            },
            "limits": {
                "shard_bytes_per_s": SHARD_BYTES_PER_S,
                "shard_records_per_s": SHARD_RECORDS_PER_S,
            },
            "streams": streams,
        })
    })
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or(0.0)
}

/// An integer cell (a JSON value's Display would ignore the column width).
fn int(v: &Value) -> String {
    v.as_u64()
        .map_or_else(|| "-".to_string(), |x| x.to_string())
}

fn human_bytes(b: f64) -> String {
    if b >= 1_048_576.0 {
        format!("{:.1}M", b / 1_048_576.0)
    } else if b >= 1024.0 {
        format!("{:.1}K", b / 1024.0)
    } else {
        format!("{b:.0}")
    }
}

fn ms(v: &Value, q: &str) -> String {
    v.get(q)
        .and_then(Value::as_u64)
        .map_or("-".into(), |x| x.to_string())
}

/// The table `kpld stats` prints: one line per stream, then its shards,
/// hottest first (by the larger of the two limit utilisations).
pub fn render_table(v: &Value) -> String {
    let mut out = String::new();
    let up = num(&v["uptime_s"]) as u64;
    let _ = writeln!(
        out,
        "kpld {} · up {}h{:02}m{:02}s · outstanding {} · refused {} (invalid records, streams not allowed) · failed calls {} · retries {} · metrics {}/{}",
        v["version"].as_str().unwrap_or("?"),
        up / 3600,
        up / 60 % 60,
        up % 60,
        int(&v["outstanding_records"]),
        int(&v["counters"]["user_records_refused"]),
        int(&v["counters"]["requests_failed"]),
        int(&v["counters"]["retries"]),
        v["metrics"]["level"].as_str().unwrap_or("?"),
        v["metrics"]["granularity"].as_str().unwrap_or("?"),
    );
    let _ = writeln!(
        out,
        "{:<28} {:>9} {:>5} {:>8} {:>5} {:>7} {:>10} {:>8} {:>8}  TOP KEYS (share of bytes)",
        "STREAM / SHARD", "KREC/S", "%REC", "BYTES/S", "%B", "THROT/S", "PUT", "FAILED", "PENDING"
    );
    let _ = writeln!(
        out,
        "(KREC/S, %REC, BYTES/S, %B: Kinesis records and bytes against the shard limits, an aggregate \
         counting once; PUT, FAILED, PENDING: user records)"
    );
    let empty = vec![];
    for s in v["streams"].as_array().unwrap_or(&empty) {
        let bt = &s["buffering_time_ms"];
        let rt = &s["request_time_ms"];
        let _ = writeln!(
            out,
            "{:<28} {:>9.1} {:>5} {:>8} {:>5} {:>7} {:>10} {:>8} {:>8}  buffering p50/p99 {}/{} ms · request p50/p99 {}/{} ms",
            truncate(s["name"].as_str().unwrap_or("?"), 28),
            num(&s["records_per_s"]),
            "",
            human_bytes(num(&s["bytes_per_s"])),
            "",
            "",
            int(&s["user_records_put_total"]),
            int(&s["user_records_failed_total"]),
            int(&s["pending"]),
            ms(bt, "p50"),
            ms(bt, "p99"),
            ms(rt, "p50"),
            ms(rt, "p99"),
        );
        let mut shards: Vec<&Value> = s["shards"].as_array().unwrap_or(&empty).iter().collect();
        let heat = |x: &Value| num(&x["records_utilization"]).max(num(&x["bytes_utilization"]));
        shards.sort_by(|a, b| heat(b).total_cmp(&heat(a)));
        for sh in shards {
            let keys: Vec<String> = sh["top_keys"]
                .as_array()
                .unwrap_or(&empty)
                .iter()
                .map(|k| {
                    format!(
                        "{} ({:.0}%)",
                        truncate(k["key"].as_str().unwrap_or("?"), 24),
                        num(&k["share"]) * 100.0
                    )
                })
                .collect();
            let _ = writeln!(
                out,
                "  {:<26} {:>9.1} {:>4.0}% {:>8} {:>4.0}% {:>7.1} {:>10} {:>8} {:>8}  {}",
                truncate(sh["shard_id"].as_str().unwrap_or("?"), 26),
                num(&sh["records_per_s"]),
                num(&sh["records_utilization"]) * 100.0,
                human_bytes(num(&sh["bytes_per_s"])),
                num(&sh["bytes_utilization"]) * 100.0,
                num(&sh["throttles_per_s"]),
                int(&sh["user_records_put_total"]),
                int(&sh["user_records_failed_total"]),
                "",
                if sh["idle"].as_bool() == Some(true) && keys.is_empty() {
                    "(idle)".to_string()
                } else {
                    keys.join(", ")
                },
            );
        }
    }
    render_files(&mut out, &v["files"]);
    out
}

/// The `[[files]]` part of the table: one line per open file.
fn render_files(out: &mut String, files: &Value) {
    let Some(files) = files.as_array().filter(|f| !f.is_empty()) else {
        return;
    };
    let _ = writeln!(
        out,
        "\nfiles: {:<40} {:>12} {:>12} {:>10} {:>9} {:>8} {:>6} {:>6} {:>5} {:>4}",
        "path -> stream",
        "read",
        "acked",
        "behind",
        "lines",
        "lines/s",
        "parse",
        "long",
        "rot",
        "dead"
    );
    for f in files {
        let _ = writeln!(
            out,
            "       {:<40} {:>12} {:>12} {:>10} {:>9} {:>8.1} {:>6} {:>6} {:>5} {:>4}",
            format!(
                "{} -> {}",
                f["path"].as_str().unwrap_or("?"),
                f["stream"].as_str().unwrap_or("?")
            ),
            int(&f["offset_read"]),
            int(&f["offset_acked"]),
            int(&f["bytes_behind"]),
            int(&f["lines"]),
            num(&f["lines_per_s"]),
            int(&f["parse_errors"]),
            int(&f["long_lines"]),
            int(&f["rotations"]),
            int(&f["dead_letters"]),
        );
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

#[cfg(test)]
mod tests {
    use super::super::recorder::{EntryOutcome, THROTTLED};
    use super::super::{MetricsConfig, MetricsHandle};
    use super::*;
    use crate::ipc::Attempt;
    use std::sync::Arc;

    #[tokio::test(start_paused = true)]
    async fn snapshot_shows_rates_heavy_keys_and_goes_idle() {
        let h = MetricsHandle::new(&MetricsConfig::default());
        let stream: Arc<str> = "orders".into();
        let hot: Arc<str> = "shardId-000000000001".into();
        let cold: Arc<str> = "shardId-000000000000".into();
        let mut m = h.stream(&stream);
        m.user_records_received(601);
        for i in 0..500u128 {
            m.kinesis_record(&hot, 1, 1000, EntryOutcome::Put);
            m.user_record_final(
                Some(&hot),
                true,
                "",
                990,
                &[Attempt {
                    success: true,
                    delay_ms: 100,
                    ..Default::default()
                }],
            );
            let key = if i % 2 == 0 {
                "celebrity".to_string()
            } else {
                format!("user-{i}")
            };
            // The pipeline passes the key's MD5-derived hash: equal keys, equal hashes.
            let hash = key
                .bytes()
                .fold(0u128, |a, b| a.wrapping_mul(31).wrapping_add(b as u128));
            m.partition_key(&hot, key.as_bytes(), hash, 1000);
        }
        m.kinesis_record(&hot, 1, 1000, EntryOutcome::Failed(THROTTLED));
        m.kinesis_record(&cold, 100, 50_000, EntryOutcome::Put);
        m.put_records_result(12, 502, 601, None);
        tokio::time::advance(Duration::from_secs(1)).await;
        m.maybe_commit(Instant::now());
        let v = snapshot(&h, 7);
        assert_eq!(v["outstanding_records"], 7);
        let s = &v["streams"][0];
        assert_eq!(s["name"], "orders");
        assert_eq!(s["pending"], 101);
        assert_eq!(s["buffering_time_ms"]["p50"], 100);
        assert_eq!(s["request_time_ms"]["max"], 12);
        let shards = s["shards"].as_array().unwrap();
        let h1 = shards
            .iter()
            .find(|x| x["shard_id"] == "shardId-000000000001")
            .unwrap();
        assert_eq!(h1["records_per_s"], 500.0);
        assert_eq!(h1["records_utilization"], 0.5);
        assert_eq!(h1["throttles_total"], 1);
        assert_eq!(h1["throttles_per_s"], 1.0);
        let keys = h1["top_keys"].as_array().unwrap();
        assert_eq!(keys.len(), 1, "only the heavy key: {keys:?}");
        assert_eq!(keys[0]["key"], "celebrity");
        assert!((num(&keys[0]["share"]) - 0.5).abs() < 0.05);
        let table = render_table(&v);
        assert!(table.contains("celebrity (50%)"), "{table}");
        // Which columns count Kinesis records and which user records is said.
        assert!(table.contains(" KREC/S ") && table.contains("PUT, FAILED, PENDING: user records"));
        // Errors and retries are in the header (without counters: "-").
        assert!(table.contains("failed calls - · retries -"), "{table}");
        let hot_line = table
            .lines()
            .find(|l| l.contains("shardId-000000000001"))
            .unwrap();
        assert!(
            hot_line.contains("       500        0"),
            "columns stay aligned: {table}"
        );
        assert!(
            table.find("shardId-000000000001").unwrap()
                < table.find("shardId-000000000000").unwrap()
        );
        // Nothing more: the shards go idle.
        tokio::time::advance(Duration::from_secs(10)).await;
        let v = snapshot(&h, 0);
        assert!(v["streams"][0]["shards"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["idle"] == true));
        assert_eq!(v["streams"][0]["records_per_s"], 0.0);
        drop(m);
    }
}

#[cfg(test)]
mod files_table_tests {
    use super::*;

    #[test]
    fn the_files_table_shows_each_file_with_its_lines_per_second() {
        let v = json!({
            "version": "0.1.0", "uptime_s": 1.0, "metrics": {}, "streams": [],
            "files": [{"path": "/var/log/a.log", "stream": "logs", "offset_read": 4096,
                "offset_acked": 4000, "bytes_behind": 96, "lines": 123, "lines_per_s": 41.26,
                "parse_errors": 2, "long_lines": 0, "rotations": 1, "dead_letters": 0}],
        });
        let table = render_table(&v);
        let header = table.lines().find(|l| l.starts_with("files:")).unwrap();
        assert!(header.contains("lines/s"), "{table}");
        let row = table
            .lines()
            .find(|l| l.contains("/var/log/a.log -> logs"))
            .unwrap();
        assert!(row.contains(" 123     41.3 "), "{row}");
        // Columns line up with the header's.
        assert_eq!(
            header.find("lines/s").unwrap() + "lines/s".len(),
            row.find("41.3").unwrap() + 4
        );
    }
}
