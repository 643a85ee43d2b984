//! Answers to `MetricsRequest`: the KPL's metric names and dimensions, with
//! count, sum, mean, min and max since the start, or over the last N
//! seconds (1 ..= 60, as the KPL keeps).
//!
//! kpld's registry keeps cumulative statistic sets per series; a sampler
//! takes them once a second into a ring of [`WINDOW_SECONDS`] + 1
//! snapshots, and a window's count and sum are the difference between now
//! and N seconds ago (exact, to the second). Min and max cannot be
//! differenced: a window's min and max are the series' since the start
//! (docs/kpl-mode.md says so). Series are rolled up the KPL's way: a shard
//! value counts in its stream's and the global series.
//!
//! Only metrics asked for with a window in the last [`INTEREST`] are
//! sampled (the 1.0.7 health check asks for one): a minute of snapshots of
//! every series of a stream with thousands of shards would be tens of MiB.
//! A metric's first windowed request therefore has no history yet; its
//! answer covers what there is (since the start), and `seconds` in each
//! `Metric` says the window it really covers.

use super::wire::{Dimension, Metric as WireMetric, MetricsRequest, MetricsResponse, Stats};
use crate::metrics::registry::{SeriesKey, Stat};
use crate::metrics::{Metric, MetricsHandle};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// The longest window a request may ask for (the KPL's).
pub const WINDOW_SECONDS: u64 = 60;

/// How long a windowed request keeps its metric sampled.
pub const INTEREST: Duration = Duration::from_secs(300);

/// Cumulative statistics of every series, rolled up.
pub type Totals = BTreeMap<SeriesKey, Stat>;

/// What the windows are asked about: one metric, or all of them.
type Wanted = Option<Metric>;

/// The snapshots of the last [`WINDOW_SECONDS`] seconds, of the metrics
/// asked for with a window lately.
#[derive(Default)]
pub struct Window {
    ring: VecDeque<(Instant, Arc<Totals>)>,
    /// Metric (None: all) -> (sampled since, last asked).
    wanted: HashMap<Wanted, (Instant, Instant)>,
}

impl Window {
    /// Notes a windowed request for `metric` (None: every metric).
    pub fn want(&mut self, metric: Wanted, now: Instant) {
        self.wanted
            .entry(metric)
            .and_modify(|(_, last)| *last = now)
            .or_insert((now, now));
    }

    /// What the sampler takes now: None when nothing is wanted (the ring is
    /// emptied then).
    pub fn filter(&mut self, now: Instant) -> Option<Vec<Wanted>> {
        self.wanted
            .retain(|_, (_, last)| now.saturating_duration_since(*last) < INTEREST);
        if self.wanted.is_empty() {
            self.ring.clear();
            return None;
        }
        Some(self.wanted.keys().copied().collect())
    }

    pub fn push(&mut self, at: Instant, totals: Totals) {
        self.ring.push_back((at, Arc::new(totals)));
        while self.ring.len() > WINDOW_SECONDS as usize + 1 {
            self.ring.pop_front();
        }
    }

    /// The newest snapshot at least `secs` seconds older than `now` that
    /// was taken while `metric` was sampled, else the oldest such one;
    /// with how many whole seconds before `now` it was taken.
    pub fn at_least(&self, now: Instant, secs: u64, metric: Wanted) -> Option<(u64, Arc<Totals>)> {
        let since = self
            .wanted
            .get(&metric)
            .map(|(since, _)| *since)
            .into_iter()
            .chain(self.wanted.get(&None).map(|(since, _)| *since))
            .min()?;
        let want = Duration::from_secs(secs);
        let usable = || self.ring.iter().filter(|(t, _)| *t >= since);
        usable()
            .rev()
            .find(|(t, _)| now.saturating_duration_since(*t) >= want)
            .or_else(|| usable().next())
            .map(|(t, s)| (now.saturating_duration_since(*t).as_secs(), s.clone()))
    }
}

/// The registry's cumulative totals of the metrics `only` names (None in
/// it: all), every leaf rolled up into each prefix of its dimension chain.
pub fn totals(handle: &MetricsHandle, only: Option<&[Wanted]>) -> Totals {
    let keep = |m: Metric| only.is_none_or(|w| w.iter().any(|x| x.is_none_or(|x| x == m)));
    handle.with_registry(|r| {
        let mut out = Totals::new();
        for (key, leaf) in &r.leaves {
            if leaf.total.is_empty() || !r.filter.records(key.metric) || !keep(key.metric) {
                continue;
            }
            for p in key.prefixes() {
                out.entry(p).or_default().merge(&leaf.total);
            }
        }
        out
    })
}

/// Samples the wanted totals once a second until the process ends.
pub async fn sample(handle: MetricsHandle, window: Arc<Mutex<Window>>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        let at = tick.tick().await;
        let lock = || window.lock().unwrap_or_else(|e| e.into_inner());
        let Some(only) = lock().filter(at) else {
            continue;
        };
        let t = totals(&handle, Some(&only));
        lock().push(at, t);
    }
}

/// The answer (pure). `before`: the totals at the window's start and how
/// many seconds ago that was (None: everything since the start,
/// `uptime_s` long).
pub fn answer(
    req: &MetricsRequest,
    now: &Totals,
    before: Option<(u64, &Totals)>,
    uptime_s: u64,
) -> MetricsResponse {
    let name = req.name.as_deref().filter(|n| !n.is_empty());
    let mut metrics = Vec::new();
    for (key, total) in now {
        if name.is_some_and(|n| n != key.metric.name()) {
            continue;
        }
        let (stat, seconds) = match before {
            // A series that is not in the snapshot began since.
            Some((secs, b)) => match b.get(key) {
                // A series forgotten and started again has smaller totals.
                Some(then) if then.count <= total.count => (
                    Stat {
                        count: total.count - then.count,
                        sum: total.sum - then.sum,
                        ..*total
                    },
                    secs,
                ),
                _ => (*total, secs),
            },
            None => (*total, uptime_s),
        };
        metrics.push(WireMetric {
            name: key.metric.name().to_string(),
            dimensions: key
                .dimensions()
                .into_iter()
                .map(|(k, v)| Dimension {
                    key: k.to_string(),
                    value: v.to_string(),
                })
                .collect(),
            stats: stats(&stat),
            seconds,
        });
    }
    MetricsResponse { metrics }
}

/// The window of a request: what `seconds` asks, in 1 ..= 60.
pub fn window_of(req: &MetricsRequest) -> Option<u64> {
    req.seconds.map(|s| s.clamp(1, WINDOW_SECONDS))
}

/// The metric a request names (`Some(None)`: all); None for a name kpld
/// does not know, whose answer is empty and needs no history.
pub fn wanted(req: &MetricsRequest) -> Option<Wanted> {
    match req.name.as_deref().filter(|n| !n.is_empty()) {
        None => Some(None),
        Some(n) => Metric::from_name(n).map(Some),
    }
}

fn stats(s: &Stat) -> Stats {
    let count = s.count as f64;
    let finite = |v: f64| if v.is_finite() { v } else { 0.0 };
    Stats {
        count,
        sum: s.sum,
        mean: s.mean().unwrap_or(0.0),
        min: finite(s.min),
        max: finite(s.max),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metric;

    fn key(m: Metric, stream: Option<&str>, shard: Option<&str>) -> SeriesKey {
        SeriesKey {
            metric: m,
            error_code: None,
            stream: stream.map(Arc::from),
            shard: shard.map(Arc::from),
            file: None,
        }
    }

    fn stat(count: u64, sum: f64, min: f64, max: f64) -> Stat {
        Stat {
            count,
            sum,
            min,
            max,
        }
    }

    #[test]
    fn a_window_is_the_difference_and_names_filter() {
        let k = key(
            Metric::UserRecordsPut,
            Some("s"),
            Some("shardId-000000000000"),
        );
        let g = key(Metric::RequestTime, None, None);
        let before: Totals = [(k.clone(), stat(10, 10.0, 1.0, 1.0))].into();
        let now: Totals = [
            (k.clone(), stat(25, 25.0, 1.0, 1.0)),
            (g.clone(), stat(2, 30.0, 10.0, 20.0)),
        ]
        .into();
        let req = MetricsRequest {
            name: Some("UserRecordsPut".into()),
            seconds: Some(5),
        };
        let r = answer(&req, &now, Some((5, &before)), 100);
        assert_eq!(r.metrics.len(), 1);
        let m = &r.metrics[0];
        assert_eq!(m.seconds, 5);
        assert_eq!(m.stats.count, 15.0);
        assert_eq!(m.stats.sum, 15.0);
        assert_eq!(m.stats.mean, 1.0);
        let dims: Vec<(&str, &str)> = m
            .dimensions
            .iter()
            .map(|d| (d.key.as_str(), d.value.as_str()))
            .collect();
        assert_eq!(
            dims,
            [("StreamName", "s"), ("ShardId", "shardId-000000000000")]
        );
        // Everything since the start, every metric.
        let all = answer(&MetricsRequest::default(), &now, None, 100);
        assert_eq!(all.metrics.len(), 2);
        assert!(all.metrics.iter().all(|m| m.seconds == 100));
        let rt = all
            .metrics
            .iter()
            .find(|m| m.name == "RequestTime")
            .unwrap();
        assert_eq!(
            (rt.stats.min, rt.stats.max, rt.stats.mean),
            (10.0, 20.0, 15.0)
        );
    }

    #[test]
    fn an_empty_window_has_finite_zeros() {
        let k = key(Metric::AllErrors, Some("s"), None);
        let t: Totals = [(k, stat(3, 3.0, 1.0, 1.0))].into();
        let r = answer(
            &MetricsRequest {
                name: None,
                seconds: Some(1),
            },
            &t,
            Some((1, &t)),
            9,
        );
        assert_eq!(r.metrics[0].stats.count, 0.0);
        assert_eq!(r.metrics[0].stats.mean, 0.0);
        assert!(r.metrics[0].stats.min.is_finite());
    }

    #[test]
    fn the_ring_keeps_a_minute_of_what_is_wanted() {
        let t0 = Instant::now();
        let mut w = Window::default();
        assert_eq!(w.filter(t0), None);
        w.want(Some(Metric::UserRecordsPut), t0);
        assert_eq!(w.filter(t0), Some(vec![Some(Metric::UserRecordsPut)]));
        for s in 0..100u64 {
            let mut t = Totals::new();
            t.insert(
                key(Metric::UserRecordsPut, None, None),
                stat(s, s as f64, 1.0, 1.0),
            );
            w.push(t0 + Duration::from_secs(s), t);
        }
        let now = t0 + Duration::from_secs(99);
        let (ago, five) = w.at_least(now, 5, Some(Metric::UserRecordsPut)).unwrap();
        assert_eq!((ago, five.values().next().unwrap().count), (5, 94));
        // Longer than kept: the oldest snapshot, and its real age.
        let (ago, old) = w.at_least(now, 600, Some(Metric::UserRecordsPut)).unwrap();
        assert_eq!((ago, old.values().next().unwrap().count), (60, 39));
        // Never asked for: no history.
        assert!(w.at_least(now, 5, Some(Metric::AllErrors)).is_none());
        // Interest runs out, and the ring is let go.
        assert_eq!(w.filter(t0 + INTEREST), None);
        assert!(w.ring.is_empty());
    }
}
