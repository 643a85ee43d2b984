//! The stream's shard map as a state machine: not loaded yet, ready, or
//! failed for good (unknown stream, access denied); when to load it again
//! (at once on a wrong-shard landing, with the KPL's backoff after a failed
//! load: 1 s, x1.5, up to 30 s); the records waiting for it; and the
//! aggregates that landed on an unexpected shard, judged once the next map
//! is there (pure; time is passed in).

use super::record::{KinesisRecord, UserRecord};
use crate::error_code::ErrorCode;
use crate::kinesis::ApiError;
use crate::retry::ErrorClass;
use crate::shard_map::ShardMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How long a stream found unusable fails records at once before kpld
/// asks Kinesis again.
const FAILED_FAST_FOR: Duration = Duration::from_secs(1);

pub enum MapState {
    /// Never loaded yet (a load is in flight).
    Loading,
    Ready(ShardMap),
    /// The stream cannot be used: records fail at once until a load succeeds.
    Failed {
        code: ErrorCode,
        message: String,
        at: Instant,
    },
}

/// An aggregate that landed on `shard` (sequence number `seq`) instead of
/// its predicted shard.
pub struct Misrouted {
    pub k: KinesisRecord,
    pub shard: Arc<str>,
    pub seq: String,
}

/// What a successful load changed.
pub enum Loaded {
    /// The same shards as before: nothing to route again.
    Same,
    /// A new map (generation bumped): everything not yet sent must be
    /// routed again.
    Changed,
}

/// Where a record goes while there is no usable map.
pub enum NoMap {
    /// Fail it now with this code and message.
    Fail(ErrorCode, String),
    /// It waits for the load in flight (or one to start).
    Wait,
}

pub struct Shards {
    pub state: MapState,
    /// Bumped on every new map; Kinesis records remember the one they were
    /// built for.
    pub generation: u64,
    loading: bool,
    reload_at: Option<Instant>,
    failures: u32,
    /// Why the last load failed, until one succeeds: named when records
    /// that waited for the map expire.
    pub last_error: Option<ApiError>,
    /// Records waiting for a map.
    pub waiting: Vec<UserRecord>,
    pub misrouted: Vec<Misrouted>,
    /// A flush came while records waited for the map.
    pub flush_after_load: bool,
}

impl Default for Shards {
    fn default() -> Self {
        Shards {
            state: MapState::Loading,
            generation: 0,
            loading: false,
            reload_at: None,
            failures: 0,
            last_error: None,
            waiting: Vec::new(),
            misrouted: Vec::new(),
            flush_after_load: false,
        }
    }
}

impl Shards {
    pub fn map(&self) -> Option<&ShardMap> {
        match &self.state {
            MapState::Ready(m) => Some(m),
            _ => None,
        }
    }

    /// True when a load should start now (none is in flight): the caller
    /// starts it and answers with [`loaded`](Self::loaded).
    pub fn start_load(&mut self) -> bool {
        if self.loading {
            return false;
        }
        self.loading = true;
        self.reload_at = None;
        true
    }

    /// A record that found no usable map at `now`.
    pub fn no_map(&self, now: Instant) -> NoMap {
        match &self.state {
            MapState::Failed { code, message, at }
                if !self.loading && now.saturating_duration_since(*at) < FAILED_FAST_FOR =>
            {
                NoMap::Fail(code.clone(), message.clone())
            }
            _ => NoMap::Wait,
        }
    }

    /// A call failed with ResourceNotFound: the stream may be gone.
    pub fn forget(&mut self, e: &ApiError, now: Instant) {
        self.state = MapState::Failed {
            code: e.code.clone(),
            message: e.message.clone(),
            at: now,
        };
    }

    /// A load succeeded.
    pub fn loaded(&mut self, map: ShardMap) -> Loaded {
        self.loading = false;
        self.failures = 0;
        self.last_error = None;
        let changed = match &self.state {
            MapState::Ready(old) => old.shards() != map.shards(),
            _ => true,
        };
        self.state = MapState::Ready(map);
        if changed {
            self.generation += 1;
            Loaded::Changed
        } else {
            Loaded::Same
        }
    }

    /// A load failed at `now`: a fatal error marks the stream unusable
    /// (unless a map is there); any other is tried again after a backoff,
    /// which is returned.
    pub fn load_failed(&mut self, e: &ApiError, now: Instant) -> Option<Duration> {
        self.loading = false;
        self.last_error = Some(e.clone());
        if e.class == ErrorClass::Fatal {
            if self.map().is_none() {
                self.forget(e, now);
            }
            return None;
        }
        let delay = Duration::from_millis(1000)
            .mul_f64(1.5f64.powi(self.failures.min(20) as i32))
            .min(Duration::from_secs(30));
        self.failures += 1;
        self.reload_at = Some(now + delay);
        Some(delay)
    }

    /// Whether the backed-off reload is due at `now`.
    pub fn reload_due(&mut self, now: Instant) -> bool {
        if self.reload_at.is_some_and(|at| at <= now) && !self.loading {
            self.reload_at = None;
            return true;
        }
        false
    }

    /// The next time something here needs attention: a reload, or the
    /// first TTL among the waiting records.
    pub fn next_wake(&self) -> Option<Instant> {
        let waiting = self.waiting.iter().map(|u| u.expiry).min();
        match (self.reload_at, waiting) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Takes out the waiting records whose TTL ran out at `now`.
    pub fn expire_waiting(&mut self, now: Instant) -> Vec<UserRecord> {
        if self.waiting.iter().all(|u| u.expiry > now) {
            return Vec::new();
        }
        let (expired, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|u| u.expiry <= now);
        self.waiting = keep;
        expired
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::testkit::even_shards;

    fn map(n: usize) -> ShardMap {
        ShardMap::new(even_shards(n)).unwrap()
    }

    #[test]
    fn failed_loads_back_off_like_the_kpl_and_a_fatal_one_fails_records_fast() {
        let t0 = Instant::now();
        let mut s = Shards::default();
        assert!(s.start_load());
        assert!(!s.start_load(), "one load at a time");
        let e = ApiError::new(ErrorCode::InternalFailure, "try later");
        let delays: Vec<u64> = (0..4)
            .map(|_| {
                let d = s.load_failed(&e, t0).unwrap().as_millis() as u64;
                assert!(s.start_load());
                d
            })
            .collect();
        assert_eq!(delays, vec![1000, 1500, 2250, 3375]);
        let gone = ApiError::new(ErrorCode::ResourceNotFound, "no such stream");
        assert_eq!(s.load_failed(&gone, t0), None);
        assert!(matches!(
            s.no_map(t0),
            NoMap::Fail(ErrorCode::ResourceNotFound, _)
        ));
        assert!(matches!(s.no_map(t0 + FAILED_FAST_FOR), NoMap::Wait));
    }

    #[test]
    fn only_a_different_map_bumps_the_generation() {
        let mut s = Shards::default();
        s.start_load();
        assert!(matches!(s.loaded(map(2)), Loaded::Changed));
        assert_eq!(s.generation, 1);
        s.start_load();
        assert!(matches!(s.loaded(map(2)), Loaded::Same));
        s.start_load();
        assert!(matches!(s.loaded(map(3)), Loaded::Changed));
        assert_eq!(s.generation, 2);
    }
}
