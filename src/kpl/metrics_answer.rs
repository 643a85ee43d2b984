//! Answers to `MetricsRequest`: the KPL's metric names and dimensions, with
//! count, sum, mean, min and max since the start, or over the last N
//! seconds (1 ..= 60, as the KPL keeps).
//!
//! kpld's registry keeps cumulative statistic sets per series; a sampler
//! takes them once a second into a ring of [`WINDOW_SECONDS`] + 1
//! snapshots, and a window's count and sum are the difference between now
//! and N seconds ago (exact, to the second). Min and max cannot be
//! differenced, so each snapshot also holds the statistics of the second
//! before it (the registry's `since_sample`, taken by the sampler), and a
//! window's min and max are those of its seconds and of the second under
//! way. Series are rolled up the KPL's way: a shard value counts in its
//! stream's and the global series.
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

/// One sample: the cumulative totals then, and the statistics of what came
/// since the sample before (that second's min and max).
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub at: Instant,
    pub totals: Arc<Totals>,
    pub second: Totals,
}

/// A window's start: its totals, how many whole seconds ago they were
/// taken, and the min and max of every second since (the caller adds the
/// second under way).
#[derive(Debug, Clone)]
pub struct Base {
    pub ago: u64,
    pub totals: Arc<Totals>,
    pub extremes: Totals,
}

/// The snapshots of the last [`WINDOW_SECONDS`] seconds, of the metrics
/// asked for with a window lately.
#[derive(Default)]
pub struct Window {
    ring: VecDeque<Snapshot>,
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

    pub fn push(&mut self, at: Instant, totals: Totals, second: Totals) {
        self.ring.push_back(Snapshot {
            at,
            totals: Arc::new(totals),
            second,
        });
        while self.ring.len() > WINDOW_SECONDS as usize + 1 {
            self.ring.pop_front();
        }
    }

    /// The newest snapshot at least `secs` seconds older than `now` that
    /// was taken while `metric` was sampled, else the oldest such one, as
    /// the [`Base`] of a window from it to now.
    pub fn at_least(&self, now: Instant, secs: u64, metric: Wanted) -> Option<Base> {
        let since = self
            .wanted
            .get(&metric)
            .map(|(since, _)| *since)
            .into_iter()
            .chain(self.wanted.get(&None).map(|(since, _)| *since))
            .min()?;
        let want = Duration::from_secs(secs);
        let taken = |s: &Snapshot| s.at;
        let usable: Vec<&Snapshot> = self.ring.iter().filter(|s| taken(s) >= since).collect();
        let base = usable
            .iter()
            .rposition(|s| now.saturating_duration_since(taken(s)) >= want)
            .or((!usable.is_empty()).then_some(0))?;
        let mut extremes = Totals::new();
        for s in &usable[base + 1..] {
            merge_into(&mut extremes, &s.second);
        }
        let b = usable[base];
        Some(Base {
            ago: now.saturating_duration_since(taken(b)).as_secs(),
            totals: b.totals.clone(),
            extremes,
        })
    }
}

/// Adds every series of `from` into `into`.
pub fn merge_into(into: &mut Totals, from: &Totals) {
    for (k, v) in from {
        into.entry(k.clone()).or_default().merge(v);
    }
}

/// The registry's cumulative totals of the metrics `only` names (None in
/// it: all), and what came since the last sample, every leaf rolled up into
/// each prefix of its dimension chain. `take`: the sampler's call, which
/// starts a new second for those metrics; a request only looks.
pub fn snapshot(handle: &MetricsHandle, only: Option<&[Wanted]>, take: bool) -> (Totals, Totals) {
    let keep = |m: Metric| only.is_none_or(|w| w.iter().any(|x| x.is_none_or(|x| x == m)));
    handle.with_registry(|r| {
        let mut totals = Totals::new();
        let mut second = Totals::new();
        let filter = r.filter;
        for (key, leaf) in r.leaves.iter_mut() {
            if leaf.total.is_empty() || !filter.records(key.metric) || !keep(key.metric) {
                continue;
            }
            let recent = if take {
                leaf.since_sample.take()
            } else {
                leaf.since_sample
            };
            for p in key.prefixes() {
                totals.entry(p.clone()).or_default().merge(&leaf.total);
                if !recent.is_empty() {
                    second.entry(p).or_default().merge(&recent);
                }
            }
        }
        (totals, second)
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
        let (t, second) = snapshot(&handle, Some(&only), true);
        lock().push(at, t, second);
    }
}

/// The answer (pure). `before`: the window's start, its extremes with the
/// second under way included (None: everything since the start,
/// `uptime_s` long).
pub fn answer(
    req: &MetricsRequest,
    now: &Totals,
    before: Option<&Base>,
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
            Some(b) => match b.totals.get(key) {
                // A series forgotten and started again has smaller totals.
                Some(then) if then.count <= total.count => {
                    let (min, max) = match b.extremes.get(key) {
                        Some(x) => (x.min, x.max),
                        None => (f64::INFINITY, f64::NEG_INFINITY),
                    };
                    (
                        Stat {
                            count: total.count - then.count,
                            sum: total.sum - then.sum,
                            min,
                            max,
                        },
                        b.ago,
                    )
                }
                _ => (*total, b.ago),
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
        let base = Base {
            ago: 5,
            totals: Arc::new(before),
            extremes: [(k.clone(), stat(15, 15.0, 1.0, 1.0))].into(),
        };
        let r = answer(&req, &now, Some(&base), 100);
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
        let base = Base {
            ago: 1,
            totals: Arc::new(t.clone()),
            extremes: Totals::new(),
        };
        let r = answer(
            &MetricsRequest {
                name: None,
                seconds: Some(1),
            },
            &t,
            Some(&base),
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
            // Second s saw one value, s.
            let second = [(
                key(Metric::UserRecordsPut, None, None),
                stat(1, s as f64, s as f64, s as f64),
            )]
            .into();
            w.push(t0 + Duration::from_secs(s), t, second);
        }
        let now = t0 + Duration::from_secs(99);
        let count = |b: &Base| b.totals.values().next().unwrap().count;
        let extremes = |b: &Base| {
            let x = b.extremes.values().next().unwrap();
            (x.min, x.max)
        };
        let five = w.at_least(now, 5, Some(Metric::UserRecordsPut)).unwrap();
        assert_eq!((five.ago, count(&five)), (5, 94));
        // The seconds after the base, not the base's own.
        assert_eq!(extremes(&five), (95.0, 99.0));
        // Longer than kept: the oldest snapshot, and its real age.
        let old = w.at_least(now, 600, Some(Metric::UserRecordsPut)).unwrap();
        assert_eq!((old.ago, count(&old)), (60, 39));
        assert_eq!(extremes(&old), (40.0, 99.0));
        // Never asked for: no history.
        assert!(w.at_least(now, 5, Some(Metric::AllErrors)).is_none());
        // Interest runs out, and the ring is let go.
        assert_eq!(w.filter(t0 + INTEREST), None);
        assert!(w.ring.is_empty());
    }

    #[test]
    fn a_windows_min_and_max_are_those_of_its_seconds_not_since_the_start() {
        use crate::metrics::MetricsConfig;
        let h = MetricsHandle::new(&MetricsConfig::default());
        let k = key(Metric::BufferingTime, Some("s"), None);
        let add = |v: f64| h.with_registry(|r| r.add_leaf(k.clone(), &stat(1, v, v, v)));
        let t0 = Instant::now();
        let mut w = Window::default();
        let metric = Some(Metric::BufferingTime);
        w.want(metric, t0);
        let only = w.filter(t0).unwrap();
        // Second 0: a spike long before the window; then 30 quiet seconds.
        add(5000.0);
        for s in 0..=30u64 {
            if s > 0 {
                add(10.0 + s as f64);
            }
            let (t, second) = snapshot(&h, Some(&only), true);
            w.push(t0 + Duration::from_secs(s), t, second);
        }
        // The second under way, not sampled yet.
        add(7.0);
        let now = t0 + Duration::from_secs(30);
        let mut base = w.at_least(now, 10, metric).unwrap();
        let (totals, under_way) = snapshot(&h, None, false);
        merge_into(&mut base.extremes, &under_way);
        let req = MetricsRequest {
            name: Some("BufferingTime".into()),
            seconds: Some(10),
        };
        let r = answer(&req, &totals, Some(&base), 30);
        let m = r
            .metrics
            .iter()
            .find(|m| m.dimensions.len() == 1)
            .expect("the stream's series");
        assert_eq!(m.seconds, 10);
        // Seconds 21..=30 (31..=40) and the 7 under way.
        assert_eq!(m.stats.count, 11.0);
        assert_eq!((m.stats.min, m.stats.max), (7.0, 40.0));
        // Looking did not take: the next sample still has the 7.
        let (_, second) = snapshot(&h, Some(&only), true);
        assert_eq!(second.get(&k).map(|s| (s.count, s.min)), Some((1, 7.0)));
        // Since the start, the spike is the max.
        let all = answer(&MetricsRequest::default(), &totals, None, 30);
        let m = all
            .metrics
            .iter()
            .find(|m| m.name == "BufferingTime" && m.dimensions.len() == 1)
            .unwrap();
        assert_eq!(m.stats.max, 5000.0);
    }
}
