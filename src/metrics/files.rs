//! The `[[files]]` readers' counters as series of the registry (pure):
//! FileLinesRead, FileRecordsSent, FileParseErrors, FileLongLines and
//! FileRotations (counts: every line, record, ... is a sample of 1, as the
//! KPL counts records), and FileBytesBehind (bytes: one sample per file
//! each time an interval closes, 0 included, so a stalled file shows; a
//! file closed since, by rotation or shutdown, gives what it left behind).
//!
//! Leaves have the dimensions `StreamName, FilePath`, so the registry's
//! roll-up gives per stream and global totals too, and its filter applies:
//! `metrics_level` picks the metrics, and `metrics_granularity = "stream"`
//! keeps the per-stream totals of the files and drops the per-file series,
//! as it drops the per-shard ones (series per file, like series per shard,
//! grow with what the host has: every container's log under
//! /var/log/containers is a file).
//!
//! The source ([`FileSample`]) gives counts since its previous sample: a
//! file closed between two intervals still hands over its last counts, and
//! nothing here remembers files that are gone.

use super::registry::{Filter, Metric, SeriesKey, Stat};
use std::collections::BTreeMap;
use std::sync::Arc;

/// One open (or just closed) file since the previous sample.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileSample {
    pub stream: String,
    pub path: String,
    pub lines: u64,
    pub records: u64,
    pub parse_errors: u64,
    pub long_lines: u64,
    pub rotations: u64,
    /// Size minus the offset acknowledged, now (for a file closed since: when
    /// it was closed).
    pub bytes_behind: u64,
}

/// Takes the samples of the files open now and of those closed since.
pub type FilesSampler = Box<dyn Fn() -> Vec<FileSample> + Send + Sync>;

/// The leaves of one interval. Files with the same stream and path (a file
/// rotated by rename, still read, and its successor) make one series: their
/// counts and the bytes behind of both add up.
pub fn leaves(samples: &[FileSample], filter: Filter) -> Vec<(SeriesKey, Stat)> {
    let mut by_file: BTreeMap<(&str, &str), FileSample> = BTreeMap::new();
    for s in samples {
        let acc = by_file.entry((&s.stream, &s.path)).or_default();
        acc.lines += s.lines;
        acc.records += s.records;
        acc.parse_errors += s.parse_errors;
        acc.long_lines += s.long_lines;
        acc.rotations += s.rotations;
        acc.bytes_behind += s.bytes_behind;
    }
    let mut out = Vec::new();
    for ((stream, path), acc) in by_file {
        let (stream, file): (Arc<str>, Arc<str>) = (stream.into(), path.into());
        let mut push = |metric: Metric, stat: Stat| {
            if filter.records(metric) && !stat.is_empty() {
                out.push((
                    SeriesKey {
                        metric,
                        error_code: None,
                        stream: Some(stream.clone()),
                        shard: None,
                        file: Some(file.clone()),
                    },
                    stat,
                ));
            }
        };
        let count = |n: u64| {
            let mut st = Stat::EMPTY;
            st.put_n(1.0, n);
            st
        };
        push(Metric::FileLinesRead, count(acc.lines));
        push(Metric::FileRecordsSent, count(acc.records));
        push(Metric::FileParseErrors, count(acc.parse_errors));
        push(Metric::FileLongLines, count(acc.long_lines));
        push(Metric::FileRotations, count(acc.rotations));
        let mut behind = Stat::EMPTY;
        behind.put(acc.bytes_behind as f64);
        push(Metric::FileBytesBehind, behind);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::registry::{Granularity, Level, Registry};
    use super::*;

    fn sample(path: &str, lines: u64, behind: u64) -> FileSample {
        FileSample {
            stream: "logs".into(),
            path: path.into(),
            lines,
            records: lines,
            parse_errors: 1,
            long_lines: 0,
            rotations: 0,
            bytes_behind: behind,
        }
    }

    fn filter(level: Level, granularity: Granularity) -> Filter {
        Filter { level, granularity }
    }

    /// A published series: metric, dimensions, values.
    type Published = (Metric, Vec<(&'static str, String)>, Stat);

    fn published(samples: &[FileSample], f: Filter) -> Vec<Published> {
        let mut r = Registry::new(f);
        for (k, st) in leaves(samples, f) {
            r.add_leaf(k, &st);
        }
        r.close_interval(0)
            .data
            .into_iter()
            .map(|d| {
                let dims = d
                    .key
                    .dimensions()
                    .into_iter()
                    .map(|(n, v)| (n, v.to_string()))
                    .collect();
                (d.key.metric, dims, d.stat)
            })
            .collect()
    }

    #[test]
    fn each_file_has_its_series_and_counts_in_its_stream_and_the_global_one() {
        let got = published(
            &[sample("/l/a.log", 700, 10), sample("/l/b.log", 300, 0)],
            filter(Level::Detailed, Granularity::Shard),
        );
        let find = |m: Metric, dims: &[(&str, &str)]| {
            got.iter()
                .find(|(gm, gd, _)| {
                    *gm == m
                        && gd.len() == dims.len()
                        && gd.iter().zip(dims).all(|(a, b)| a.0 == b.0 && a.1 == b.1)
                })
                .map(|(_, _, s)| *s)
                .unwrap_or_else(|| panic!("no {m:?} {dims:?} in {got:#?}"))
        };
        let a = find(
            Metric::FileLinesRead,
            &[("StreamName", "logs"), ("FilePath", "/l/a.log")],
        );
        assert_eq!((a.sum, a.count), (700.0, 700));
        let stream = find(Metric::FileLinesRead, &[("StreamName", "logs")]);
        assert_eq!(stream.sum, 1000.0);
        assert_eq!(find(Metric::FileLinesRead, &[]).sum, 1000.0);
        let b = find(
            Metric::FileBytesBehind,
            &[("StreamName", "logs"), ("FilePath", "/l/b.log")],
        );
        assert_eq!((b.sum, b.count), (0.0, 1), "a file caught up still says so");
        assert_eq!(
            find(Metric::FileBytesBehind, &[("StreamName", "logs")]).max,
            10.0
        );
        assert!(
            !got.iter().any(|(m, _, _)| *m == Metric::FileLongLines),
            "nothing counted, nothing sent"
        );
    }

    #[test]
    fn a_rotated_file_and_its_successor_make_one_series() {
        let got = published(
            &[
                sample("/l/a.log", 5, 100),
                sample("/l/a.log", 7, 20),
                sample("/l/c.log", 3, 0),
            ],
            filter(Level::Detailed, Granularity::Shard),
        );
        let file = |m: Metric, path: &str| {
            got.iter()
                .filter(|(gm, d, _)| {
                    *gm == m && d.iter().any(|(n, v)| *n == "FilePath" && v == path)
                })
                .map(|(_, _, s)| *s)
                .collect::<Vec<_>>()
        };
        let lines = file(Metric::FileLinesRead, "/l/a.log");
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].sum, 12.0);
        assert_eq!(file(Metric::FileBytesBehind, "/l/a.log")[0].sum, 120.0);
        assert_eq!(file(Metric::FileLinesRead, "/l/c.log")[0].sum, 3.0);
    }

    #[test]
    fn stream_granularity_keeps_the_files_totals_without_a_series_per_file() {
        let got = published(
            &[sample("/l/a.log", 700, 10), sample("/l/b.log", 300, 5)],
            filter(Level::Detailed, Granularity::Stream),
        );
        assert!(got
            .iter()
            .all(|(_, d, _)| d.iter().all(|(n, _)| *n != "FilePath")));
        let s = got
            .iter()
            .find(|(m, d, _)| *m == Metric::FileLinesRead && d.len() == 1)
            .unwrap();
        assert_eq!(s.2.sum, 1000.0);
        let behind = got
            .iter()
            .find(|(m, d, _)| *m == Metric::FileBytesBehind && d.len() == 1)
            .unwrap();
        assert_eq!((behind.2.sum, behind.2.count), (15.0, 2));
    }

    #[test]
    fn the_level_picks_the_file_metrics() {
        let samples = [FileSample {
            long_lines: 2,
            rotations: 1,
            ..sample("/l/a.log", 10, 0)
        }];
        let metrics = |l: Level| {
            let mut m: Vec<Metric> = published(&samples, filter(l, Granularity::Shard))
                .into_iter()
                .map(|(m, _, _)| m)
                .collect();
            m.dedup();
            m.sort();
            m.dedup();
            m
        };
        assert_eq!(
            metrics(Level::Summary),
            [
                Metric::FileLinesRead,
                Metric::FileBytesBehind,
                Metric::FileParseErrors
            ]
        );
        assert_eq!(metrics(Level::Detailed).len(), 6);
        assert!(metrics(Level::None).is_empty());
    }
}
