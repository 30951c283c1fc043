//! Split taps: a worker's inputs from several capture threads merged into packet-time order.
//!
//! A passive tap (and many packet brokers) delivers the two directions of a link on two
//! ports, so `run --interface tapA --interface tapB` gets a connection's requests from one
//! capture thread and its responses from the other, with no common order: one side may run
//! ahead by milliseconds to seconds. The flow hash is symmetric, so both halves reach the
//! same worker; here each worker holds the batches of every input and releases segments in
//! packet-time order, up to the clock every input has passed (each batch carries its capture
//! thread's clock, which idle interfaces keep moving). Limits: an input lagging more than
//! `[capture] split_window_ms` of packet time behind the most advanced one is not waited for
//! (the segments released meanwhile count as `held-too-long`, and its own segments, now
//! behind the release point, as `arrived-late`), and at most `split_hold_max_mib` of held
//! payload per worker (past it the oldest segments are released, counted as a cap hit).
//! With one input nothing is held: batches pass straight through.

use std::collections::VecDeque;
use std::time::Duration;

use super::{Batch, BatchPool, SegMeta};
use crate::capture::{SplitStats, Timestamp};

/// One capture thread's batches, oldest first, with the next segment to release.
#[derive(Default)]
struct Input {
    /// The capture thread's clock: it will send no segment older than this (give or take
    /// an interface's own small reordering).
    clock: Timestamp,
    batches: VecDeque<(Batch, usize)>,
}

impl Input {
    fn head(&self) -> Option<Timestamp> {
        self.batches
            .front()
            .and_then(|(b, i)| b.segs.get(*i))
            .map(|m| m.ts)
    }
}

/// Why a segment is released.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Release {
    /// Every input's clock has passed it.
    InOrder,
    /// An input lags more than the window.
    Window,
    /// Held bytes over the cap.
    Cap,
    /// End of input: everything goes.
    Drain,
}

pub(super) struct Merger {
    inputs: Vec<Input>,
    window_nanos: u64,
    max_held_bytes: usize,
    held_bytes: usize,
    /// Packet time of the latest segment released (in-order or forced).
    released: Timestamp,
    /// The merged clock handed to reassembly and detection; never goes back.
    clock: Timestamp,
    pub stats: SplitStats,
}

impl Merger {
    pub fn new(inputs: usize, window: Duration, max_held_bytes: usize) -> Merger {
        Merger {
            inputs: (0..inputs.max(1)).map(|_| Input::default()).collect(),
            window_nanos: u64::try_from(window.as_nanos()).unwrap_or(u64::MAX),
            max_held_bytes,
            held_bytes: 0,
            released: Timestamp::ZERO,
            clock: Timestamp::ZERO,
            stats: SplitStats::default(),
        }
    }

    /// Takes a batch from capture thread `batch.source`.
    pub fn push(&mut self, batch: Batch) {
        let Some(input) = self.inputs.get_mut(batch.source) else {
            // Cannot happen (sources are numbered by the runtime); merge into input 0
            // rather than lose the segments.
            if let Some(first) = self.inputs.first_mut() {
                first.clock = first.clock.max(batch.now);
                self.held_bytes += batch.arena.len();
                first.batches.push_back((batch, 0));
            }
            return;
        };
        if batch.now > input.clock {
            input.clock = batch.now;
        }
        // Segments behind what was already released can no longer be put in order.
        for m in batch.segs.iter().filter(|m| m.ts < self.released) {
            self.stats.arrived_late += 1;
            let behind = (self.released.0 - m.ts.0) / 1_000;
            self.stats.arrived_late_by_max_us = self.stats.arrived_late_by_max_us.max(behind);
        }
        self.stats.segments += batch.segs.len() as u64;
        if batch.segs.is_empty() {
            return;
        }
        self.held_bytes += batch.arena.len();
        self.stats.held_bytes_peak = self.stats.held_bytes_peak.max(self.held_bytes as u64);
        input.batches.push_back((batch, 0));
    }

    /// Released bound: the clock every input that has ever spoken has passed. An input
    /// that never reported a clock is not waited for; live capture threads report the
    /// wall clock (less the delivery lag) from their start, so this is only an input whose
    /// capture thread has not opened its port yet.
    fn bound(&self) -> Timestamp {
        self.inputs
            .iter()
            .map(|i| i.clock)
            .filter(|c| *c > Timestamp::ZERO)
            .min()
            .unwrap_or(Timestamp::ZERO)
    }

    fn lead(&self) -> Timestamp {
        self.inputs
            .iter()
            .map(|i| i.clock)
            .max()
            .unwrap_or(Timestamp::ZERO)
    }

    /// Releases, in packet-time order, every segment that is due, calling `each` with the
    /// segment and the batch holding its payload. `drain` releases all.
    pub fn release(
        &mut self,
        drain: bool,
        pool: &BatchPool,
        each: &mut dyn FnMut(&SegMeta, &Batch),
    ) {
        let bound = self.bound();
        let lead = self.lead();
        while let Some((ix, ts)) = self
            .inputs
            .iter()
            .enumerate()
            .filter_map(|(i, inp)| inp.head().map(|t| (i, t)))
            .min_by_key(|&(i, t)| (t, i))
        {
            let why = if drain {
                Release::Drain
            } else if ts <= bound {
                Release::InOrder
            } else if lead.0.saturating_sub(ts.0) > self.window_nanos {
                Release::Window
            } else if self.held_bytes > self.max_held_bytes {
                Release::Cap
            } else {
                break;
            };
            match why {
                Release::Window => self.stats.held_too_long += 1,
                Release::Cap => self.stats.hold_cap_hits += 1,
                Release::InOrder | Release::Drain => {}
            }
            let input = &mut self.inputs[ix];
            let Some((batch, next)) = input.batches.front_mut() else {
                break;
            };
            if let Some(m) = batch.segs.get(*next) {
                each(m, batch);
            }
            *next += 1;
            if ts > self.released {
                self.released = ts;
            }
            if *next >= batch.segs.len()
                && let Some((done, _)) = input.batches.pop_front()
            {
                self.held_bytes = self.held_bytes.saturating_sub(done.arena.len());
                pool.give(done);
            }
        }
        // The merged clock: up to the bound (or the window's edge) but never past a segment
        // still held, so timeouts never fire before the segments that would have kept a
        // connection alive.
        let edge = bound.max(Timestamp(lead.0.saturating_sub(self.window_nanos)));
        let held = self.inputs.iter().filter_map(Input::head).min();
        let clock = match held {
            Some(h) => edge.min(h),
            None if drain => lead.max(edge),
            None => edge,
        };
        if clock > self.clock {
            self.clock = clock;
        }
    }

    pub fn clock(&self) -> Timestamp {
        self.clock
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::decode::{TcpFlags, TunnelId};

    fn meta(ts_ms: u64, tag: u8) -> SegMeta {
        SegMeta {
            ts: Timestamp(ts_ms * 1_000_000),
            tunnel: TunnelId(0),
            src: "10.0.0.1:1000".parse().expect("addr"),
            dst: "10.0.0.2:80".parse().expect("addr"),
            seq: u32::from(tag),
            ack: 0,
            flags: TcpFlags(TcpFlags::ACK),
            window: 0,
            wire_payload_len: 1,
            start: 0,
            len: 0,
            cut: false,
        }
    }

    /// A batch from capture thread `source` at clock `now_ms`, of segments (ms, tag).
    pub(in crate::runtime) fn batch(source: usize, now_ms: u64, segs: &[(u64, u8)]) -> Batch {
        Batch {
            segs: segs.iter().map(|&(t, tag)| meta(t, tag)).collect(),
            arena: vec![0; segs.len() * 100],
            now: Timestamp(now_ms * 1_000_000),
            created: None,
            source,
        }
    }

    fn run(m: &mut Merger, drain: bool) -> Vec<u8> {
        let pool = BatchPool::default();
        let mut out = Vec::new();
        m.release(drain, &pool, &mut |s, _| out.push(s.seq as u8));
        out
    }

    #[test]
    fn both_directions_of_a_connection_go_to_one_worker() {
        use crate::reassembly::FlowKey;
        use std::hash::BuildHasher;
        // Split taps rely on it: each capture thread shards by this hash on its own.
        let hasher = foldhash::fast::FixedState::with_seed(super::super::SHARD_SEED);
        for (a, b) in [
            ("10.0.0.1:40000", "10.0.0.2:80"),
            ("[2001:db8::9]:51000", "[2001:db8::1]:443"),
        ] {
            let (a, b) = (a.parse().expect("addr"), b.parse().expect("addr"));
            let there = hasher.hash_one(FlowKey::new(TunnelId(7), a, b));
            let back = hasher.hash_one(FlowKey::new(TunnelId(7), b, a));
            assert_eq!(there, back);
        }
    }

    #[test]
    fn interleaves_two_inputs_by_packet_time() {
        let mut m = Merger::new(2, Duration::from_millis(1000), 1 << 20);
        m.push(batch(0, 5, &[]));
        m.push(batch(1, 5, &[]));
        // Input 1 (responses) reaches the worker before input 0 (requests).
        m.push(batch(1, 30, &[(11, b'b'), (21, b'd')]));
        assert_eq!(run(&mut m, false), b"", "input 0 is only at 5 ms: wait");
        assert_eq!(m.clock(), Timestamp(5_000_000));
        m.push(batch(0, 25, &[(10, b'a'), (20, b'c')]));
        assert_eq!(run(&mut m, false), b"abcd");
        assert_eq!(m.clock(), Timestamp(25_000_000));
        assert_eq!(m.held_bytes, 0);
        assert_eq!(
            (
                m.stats.held_too_long,
                m.stats.arrived_late,
                m.stats.segments
            ),
            (0, 0, 4)
        );
    }

    #[test]
    fn an_input_lagging_past_the_window_is_not_waited_for_and_counted() {
        let mut m = Merger::new(2, Duration::from_millis(1000), 1 << 20);
        m.push(batch(0, 5, &[(5, b'a')]));
        m.push(batch(1, 5, &[(5, b'b')]));
        assert_eq!(run(&mut m, false), b"ab");
        // Input 0 stalls at 5 ms; input 1 runs on to 2 s.
        m.push(batch(1, 2000, &[(100, b'c'), (900, b'd'), (1500, b'e')]));
        assert_eq!(run(&mut m, false), b"cd", "older than lead - window");
        assert_eq!(m.stats.held_too_long, 2);
        assert_eq!(m.clock(), Timestamp(1_000_000_000));
        // Input 0's segment from 50 ms finally arrives: behind the release point.
        m.push(batch(0, 60, &[(50, b'f')]));
        assert_eq!(m.stats.arrived_late, 1);
        assert_eq!(
            m.stats.arrived_late_by_max_us, 850_000,
            "behind 'd' at 900 ms"
        );
        assert_eq!(run(&mut m, false), b"f");
        // It caught up: the rest is in order again.
        m.push(batch(0, 2100, &[(1400, b'g')]));
        assert_eq!(run(&mut m, false), b"ge");
        assert_eq!(m.clock(), Timestamp(2_000_000_000));
    }

    #[test]
    fn held_bytes_are_capped_oldest_first() {
        let mut m = Merger::new(2, Duration::from_secs(60), 250);
        m.push(batch(0, 1, &[(1, b'a')]));
        m.push(batch(1, 1, &[]));
        assert_eq!(run(&mut m, false), b"a");
        // Input 1 stays at 1 ms while input 0 piles up 300 bytes.
        m.push(batch(0, 10, &[(2, b'b'), (3, b'c'), (4, b'd')]));
        assert_eq!(run(&mut m, false), b"bcd", "the batch is freed whole");
        assert_eq!(m.stats.hold_cap_hits, 3);
        assert!(m.stats.held_bytes_peak >= 300);
    }

    #[test]
    fn a_silent_input_is_not_waited_for_and_drain_releases_all() {
        let mut m = Merger::new(3, Duration::from_millis(1000), 1 << 20);
        m.push(batch(1, 20, &[(20, b'b')]));
        m.push(batch(0, 10, &[(10, b'a'), (15, b'c')]));
        // Input 2 never spoke; input 0 is at 10 ms, so only what is older goes.
        assert_eq!(run(&mut m, false), b"a");
        assert_eq!(run(&mut m, true), b"cb");
        assert_eq!(m.held_bytes, 0);
    }
}
