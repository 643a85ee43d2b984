//! Ordering (`ordered = true`): one lane per shard of the current map, a
//! queue of the Kinesis records built for it, of which one at a time is
//! out (paced, collected, in a call, waiting out a backoff, or landed on
//! another shard and waiting to be judged) (pure).
//!
//! The invariant, for records of one key on one connection: a record's
//! first copy is only sent once every earlier record of its key has a
//! final result (landed or failed) or is itself out in the same Kinesis
//! record. It holds because
//! - a key's records enter one lane (its predicted shard) in the order
//!   they were accepted, and a lane lets the next record out only when the
//!   one out is final ([`Lanes::give_back`]);
//! - a failed or unanswered entry stays out while it is retried, and what
//!   comes back of it loose (a part expired, a reshard dissolved it) goes
//!   to the head of its lane, ahead of everything newer
//!   ([`Lanes::push_front`]);
//! - on a new map, what was not out yet is taken apart and routed again
//!   in order, and no lane of the new map lets anything out while an entry
//!   of an older map is still out ([`Lanes::reset`]): that entry may come
//!   back and must go first, to whichever new lane its keys now hash to.
//!
//! A timeout or a dropped answer may have landed: the resend makes a
//! duplicate, never a reordering, since nothing newer went in between.

use super::record::KinesisRecord;
use std::collections::VecDeque;

/// A lane: the map generation and the shard's index in that map.
pub type Lane = (u64, usize);

#[derive(Default)]
pub struct Lanes {
    /// Per shard of the current map: records waiting for their turn.
    queues: Vec<VecDeque<KinesisRecord>>,
    /// Per shard: whether one of its records is out.
    busy: Vec<bool>,
    gen: u64,
    /// Records out for lanes of earlier maps: while any is, no lane lets
    /// anything out.
    stale: usize,
    /// Lanes that may have a record to let out.
    ready: Vec<usize>,
}

impl Lanes {
    /// Lanes for map generation `gen` of `n` shards. `pulled`: the lanes of
    /// records taken back before they were sent (no longer out). Returns
    /// the records that waited in the old lanes, in order per old shard.
    pub fn reset(
        &mut self,
        n: usize,
        gen: u64,
        pulled: impl Iterator<Item = Option<Lane>>,
    ) -> Vec<KinesisRecord> {
        for lane in pulled {
            self.give_back(lane);
        }
        self.stale += self.busy.iter().filter(|&&b| b).count();
        let old = std::mem::take(&mut self.queues);
        self.queues = (0..n).map(|_| VecDeque::new()).collect();
        self.busy = vec![false; n];
        self.gen = gen;
        self.ready.clear();
        old.into_iter().flatten().collect()
    }

    /// Queues a record built for the current map behind its lane's others.
    pub fn push(&mut self, k: KinesisRecord) {
        let idx = k.shard_idx;
        debug_assert_eq!(k.map_gen, self.gen, "built for the current map");
        if !self.busy[idx] && self.queues[idx].is_empty() {
            self.ready.push(idx);
        }
        self.queues[idx].push_back(k);
    }

    /// Puts `ks` (in their order) ahead of everything lane `idx` holds.
    pub fn push_front(&mut self, idx: usize, ks: Vec<KinesisRecord>) {
        for k in ks.into_iter().rev() {
            self.queues[idx].push_front(k);
        }
        if !self.busy[idx] {
            self.ready.push(idx);
        }
    }

    /// The record out for `lane` is final, or back in a queue.
    pub fn give_back(&mut self, lane: Option<Lane>) {
        match lane {
            None => {}
            Some((g, i)) if g == self.gen => {
                self.busy[i] = false;
                self.ready.push(i);
            }
            Some(_) => {
                debug_assert!(self.stale > 0, "a stale lane given back twice");
                self.stale = self.stale.saturating_sub(1);
                if self.stale == 0 {
                    self.ready.extend(0..self.queues.len());
                }
            }
        }
    }

    /// The next record a lane lets out, now holding that lane.
    pub fn next_ready(&mut self) -> Option<KinesisRecord> {
        if self.stale > 0 {
            return None;
        }
        while let Some(i) = self.ready.pop() {
            if self.busy[i] {
                continue;
            }
            if let Some(mut k) = self.queues[i].pop_front() {
                k.lane = Some((self.gen, i));
                self.busy[i] = true;
                return Some(k);
            }
        }
        None
    }

    /// Takes every waiting record out (the lanes stay, empty).
    pub fn drain(&mut self) -> Vec<KinesisRecord> {
        self.ready.clear();
        self.queues.iter_mut().flat_map(|q| q.drain(..)).collect()
    }
}
