//! Which probes watch which streams: a pure function of the fleet's view (the stream
//! catalog and the online members) that every probe computes alike, with no coordinator.
//!
//! ```
//! use vqprobe::app::fleet::assign::{assign, Member};
//!
//! let streams: Vec<String> = (1..=9).map(|i| format!("cam-{i}")).collect();
//! let members: Vec<Member> = ["probe-a", "probe-b", "probe-c"]
//!     .iter()
//!     .map(|id| Member { id: id.to_string(), capacity: 32 })
//!     .collect();
//! let a = assign(&streams, &members, 2);
//! // 18 placements over 3 equal members: a fair share of 6, within ±10% rounded outwards.
//! for m in &members {
//!     assert!((5..=7).contains(&a.streams_of(&m.id).len()));
//! }
//! assert_eq!(a.placed.values().map(Vec::len).sum::<usize>(), 18);
//! assert!(a.short.is_empty());
//! ```
//!
//! # Algorithm
//!
//! 1. **Canonical view.** Stream and probe ids are sorted and deduplicated (a probe listed
//!    twice keeps its larger capacity); probes of capacity 0 are dropped. Nothing below
//!    depends on the order of the input.
//! 2. **Ranking: weighted rendezvous hashing.** A (stream, probe) pair scores
//!    `-ln(u) / capacity`, `u` uniform from a stable hash of the pair: an Exp(capacity)
//!    draw, so a probe ranks first for a stream with probability capacity / Σ capacity.
//!    A stream ranks the probes by increasing score.
//! 3. **Bounds.** The fair share of a probe is demand × capacity / Σ capacity (demand =
//!    streams × replicas), water-filled when a probe is limited by its capacity or by the
//!    stream count (one replica of a stream per probe). A probe's load must stay in the 10%
//!    band around it, rounded outwards to whole streams: `[floor(0.9 f), ceil(1.1 f)]`.
//!    Below a fair share of 10 that is about ±1 stream (3 probes share 9 streams 2 to 4
//!    each). A tighter `[floor(f), ceil(f)]` for small fleets was tried and dropped: it
//!    forces survivors to even out the last stream when a member leaves (2 members of 10
//!    streams must hold exactly 5 each), so their own streams move too.
//! 4. **Upper bound: stable matching.** Streams propose to their probes in ranking order
//!    and a probe accepts while under its upper bound, all proposals taken in increasing
//!    score order. Probes and streams rank a pair by the same score, so this is the unique
//!    stable matching, independent of any processing order.
//! 5. **Lower bound.** A probe still under its lower bound takes, from holders above
//!    theirs, the streams it came nearest to winning (lowest ratio of its score to the
//!    holder's: the streams a small raise of its weight would capture), all such steals
//!    in increasing ratio order.
//! 6. **Safety nets** the first passes almost never need (tiny fleets, replicas > 1):
//!    augmenting paths (p takes from q, q from r, ...) lift what is still under its lower
//!    bound and place what is still short, until no path is left: as many placements are
//!    made as the capacities allow (`min(demand, Σ min(capacity, streams))`, checked by
//!    a property test), and a stream is listed in [`Assignment::short`] only then.
//!
//! # Why bounded loads, and what they cost
//!
//! Plain weighted HRW puts each stream independently, so a probe's load is binomial: a
//! probe of capacity 50 in the fleet of the simulation test (1 000 probes of capacity 50
//! to 400, 100 000 streams, fair share ~28) is off by ~19% at one sigma. Measured there:
//! load / fair share from 0.44 to 1.57, 270 probes of 1 000 outside the band. Bounded,
//! every probe is inside it (extremes 0.878 and 1.134, the band rounded outwards for fair
//! shares near 28), about 20% of the probes sit at their upper bound and 16% at their
//! lower one.
//!
//! The price is movement. The assignment has no memory, so a probe held at a bound
//! passes every change on: a stream that arrives at (or leaves) a full probe, a short
//! probe, or a bound that steps by one (fair shares move with every join and leave; the
//! probes of one capacity step together) moves one more stream. Placements changed per
//! ideal (the leaver's load; the joiner's final load), with the test's capacities, one
//! event at a time:
//!
//! | fleet | replicas | leave: mean / worst | join: mean / worst | events |
//! | --- | --- | --- | --- | --- |
//! | 1 000 probes, 100 000 streams | 1 | 1.28 / 1.44 | 1.24 / 1.37 | 30 + 30 |
//! | 1 000 probes, 50 000 streams | 2 | 1.34 / 1.45 | 1.30 / 1.48 | 30 + 30 |
//! | 500 probes, 50 000 streams | 1 | 1.36 / 1.53 | 1.42 / 1.84 | 20 + 20 |
//! | 200 probes, 10 000 streams | 2 | 1.40 / 1.65 | 1.30 / 1.65 | 20 + 20 |
//! | 100 probes, 10 000 streams | 1 | 1.35 / 1.79 | 1.27 / 1.55 | 20 + 20 |
//!
//! So 1.5x the ideal holds for fleets of ~1 000 probes but not for every event of smaller
//! ones: the worst cases are small joiners (ideal ~27 streams) on the event where a whole
//! capacity class's bound steps. Variants measured and dropped (same simulations):
//! bands rounded inwards (means +0.04 to +0.1); a per-probe dithered rounding, which
//! spreads the steps of a class but narrows the band by half a stream on average (means
//! 1.42 to 1.53 at 500 probes); filling lower bounds first in the stable matching (1.4 to
//! 2.7, and 14 times slower); prices (optimal transport) by coordinate ascent (did not
//! converge). A pure function cannot promise that survivors keep all their streams on a
//! leave (it would have to know who leaves); with 3 probes and 9 streams they do on
//! every leave, one replica or two (a test checks all six).
//!
//! # Determinism
//!
//! The hash is hand-written (FNV-1a and SplitMix64's finaliser, stable forever, pinned by
//! a test). Scores use IEEE 754 `+ - * /` only, correctly rounded on every platform (no
//! `f64::ln`: libm implementations may differ in the last bit and swap two probes), and
//! compare by their bits with the probe's index (ids sorted) breaking exact ties. All
//! bounds are integer arithmetic. The same view therefore gives the same [`Assignment`]
//! on every machine, whatever the order its parts were received in.
//!
//! # Cost
//!
//! O(streams × probes) hash evaluations (a multiply-xorshift each; the logarithm only for
//! the ~23 candidates per stream that can still enter its top ranks), O(streams ×
//! replicas + probes) memory. 1 000 × 100 000 takes 0.6 to 0.7 s in the test profile
//! (opt-level 1) on this machine.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

/// One online member of the fleet as seen from the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The probe id (unique in the fleet).
    pub id: String,
    /// How many streams this probe may watch at most; 0 watches nothing.
    pub capacity: u32,
}

/// The assignment of a view.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Assignment {
    /// stream id -> the probes that watch it (its ranking order), for every placed stream.
    pub placed: BTreeMap<String, Vec<String>>,
    /// streams with fewer than `replicas` probes: (stream id, replicas missing).
    pub short: Vec<(String, u32)>,
}

impl Assignment {
    /// The streams assigned to `probe`, sorted.
    pub fn streams_of(&self, probe: &str) -> Vec<String> {
        self.placed
            .iter()
            .filter(|(_, probes)| probes.iter().any(|p| p == probe))
            .map(|(stream, _)| stream.clone())
            .collect()
    }

    /// Per probe: how many streams it watches (probes that watch nothing are absent).
    pub fn loads(&self) -> BTreeMap<String, usize> {
        let mut loads = BTreeMap::new();
        for probe in self.placed.values().flatten() {
            *loads.entry(probe.clone()).or_insert(0) += 1;
        }
        loads
    }
}

// ---------------------------------------------------------------------------------------
// The hash. Hand-written on purpose: every probe of a fleet, on every machine and every
// future version, must rank probes the same way, so this function is part of the fleet's
// protocol. std's `DefaultHasher` may change between Rust releases and `RandomState` is
// seeded per process; FNV-1a plus SplitMix64's finaliser is 15 lines, needs no crate and is
// pinned by the test `hash_and_score_are_pinned`. Each id is hashed once and a pair is the
// finaliser of both halves: an assignment of 1 000 probes x 100 000 streams hashes 10^8
// pairs, and FNV over "stream, 0xff, probe" for each would cost a multiply per byte.

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a over `bytes`, starting from `state`.
fn fnv1a(state: u64, bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(state, |h, &b| (h ^ u64::from(b)).wrapping_mul(FNV_PRIME))
}

/// SplitMix64's finaliser (Stafford's "mix13"): every input bit flips every output bit
/// with probability ~1/2, which FNV alone does not give.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A stream's half of the pair hash.
fn stream_key(stream: &str) -> u64 {
    mix(fnv1a(FNV_OFFSET, stream.as_bytes()))
}

/// A probe's half of the pair hash: FNV-1a over 0xff (a byte UTF-8 never contains, so a
/// probe key never equals a stream key) then the id.
fn probe_key(probe: &str) -> u64 {
    mix(fnv1a(fnv1a(FNV_OFFSET, &[0xff]), probe.as_bytes()))
}

/// The pair hash from both halves.
fn pair(stream_key: u64, probe_key: u64) -> u64 {
    mix(stream_key ^ probe_key)
}

/// The stable 64-bit hash of a (stream, probe) pair that ranks the probes of a stream.
pub fn pair_hash(stream: &str, probe: &str) -> u64 {
    pair(stream_key(stream), probe_key(probe))
}

// ---------------------------------------------------------------------------------------
// The score.

/// 2^-53.
const TWO_POW_M53: f64 = 1.0 / 9_007_199_254_740_992.0;

/// atanh(s)/s = sum of s^(2n)/(2n+1): enough terms for |s| <= 0.2 to 2^-53.
const ATANH: [f64; 12] = [
    1.0 / 3.0,
    1.0 / 5.0,
    1.0 / 7.0,
    1.0 / 9.0,
    1.0 / 11.0,
    1.0 / 13.0,
    1.0 / 15.0,
    1.0 / 17.0,
    1.0 / 19.0,
    1.0 / 21.0,
    1.0 / 23.0,
    1.0 / 25.0,
];

/// The uniform in [0, 1) of a hash: its top 53 bits, exact in an f64.
fn unit(h: u64) -> f64 {
    (h >> 11) as f64 * TWO_POW_M53
}

/// -ln(1 - t) for `t` from [`unit`]: an Exp(1) draw.
///
/// Written with IEEE 754 `+ - * /` only (each correctly rounded, hence the same bits on
/// every platform), not `f64::ln`, which calls the platform's libm: glibc, musl and
/// others may differ in the last bit, and one bit can swap two probes of a ranking.
fn exp1(t: f64) -> f64 {
    // u = 1 - t is exact (t is a multiple of 2^-53 below 1); u = m * 2^-e, m in [0.75, 1.5).
    let mut m = 1.0 - t;
    let mut e = 0.0;
    while m < 0.75 {
        m *= 2.0;
        e += 1.0;
    }
    // ln m = 2 atanh(s), s = (m - 1)/(m + 1) in [-1/7, 1/5]; m - 1 is exact (Sterbenz).
    let s = (m - 1.0) / (m + 1.0);
    let z = s * s;
    let mut p = 0.0;
    for c in ATANH.iter().rev() {
        p = (p + c) * z;
    }
    let ln_m = 2.0 * s * (1.0 + p);
    // -ln(1 - t) >= t: keep it so after rounding too (the scans' filters rely on it).
    (e * std::f64::consts::LN_2 - ln_m).max(t)
}

/// A ranking entry: (score bits, index). Scores are finite and >= 0, so their bits sort
/// like the scores; the index breaks exact ties.
type Ranked = (u64, usize);

/// The canonical view: sorted, deduplicated ids and the precomputed hash halves.
struct View<'a> {
    streams: Vec<&'a str>,
    stream_key: Vec<u64>,
    /// Probes with a capacity > 0, sorted by id.
    probes: Vec<&'a str>,
    probe_key: Vec<u64>,
    capacity: Vec<u32>,
    /// 1 / capacity: the score of a pair is exp1(pair) / capacity, an Exp(capacity) draw,
    /// so a probe ranks first for a stream with probability capacity / sum of capacities.
    inv_w: Vec<f64>,
}

impl View<'_> {
    /// The score of (stream `s`, probe `p`): lower ranks first.
    fn score(&self, s: usize, p: usize) -> f64 {
        exp1(unit(pair(self.stream_key[s], self.probe_key[p]))) * self.inv_w[p]
    }

    /// The next (at most) `k` probes of stream `s`'s ranking after `after`, best first.
    fn ranking(&self, s: usize, after: Option<Ranked>, k: usize, out: &mut Vec<Ranked>) {
        out.clear();
        let sk = self.stream_key[s];
        let mut worst = f64::INFINITY;
        for (p, (&pk, &inv_w)) in self.probe_key.iter().zip(&self.inv_w).enumerate() {
            let t = unit(pair(sk, pk));
            // score >= t * inv_w: skip without the logarithm when that is already worse.
            if out.len() == k && t * inv_w > worst {
                continue;
            }
            let key = ((exp1(t) * inv_w).to_bits(), p);
            if after.is_some_and(|a| key <= a) {
                continue;
            }
            if out.len() == k {
                if key >= out[k - 1] {
                    continue;
                }
                out.pop();
            }
            let at = out.partition_point(|&x| x < key);
            out.insert(at, key);
            if out.len() == k {
                worst = f64::from_bits(out[k - 1].0);
            }
        }
    }
}

/// Who holds what, as the passes build it.
struct State {
    /// Replicas per stream actually possible: min(replicas, probes).
    r: usize,
    /// Stream `s` is held by `hold[s * r .. s * r + held[s]]`: (score bits, probe).
    hold: Vec<Ranked>,
    held: Vec<usize>,
    load: Vec<u32>,
}

impl State {
    fn holders(&self, s: usize) -> &[Ranked] {
        &self.hold[s * self.r..s * self.r + self.held[s]]
    }

    fn holds(&self, s: usize, p: usize) -> bool {
        self.holders(s).iter().any(|&(_, q)| q == p)
    }

    fn add(&mut self, s: usize, entry: Ranked) {
        self.hold[s * self.r + self.held[s]] = entry;
        self.held[s] += 1;
        self.load[entry.1] += 1;
    }

    /// Moves stream `s` from probe `from` to probe `to` (which scores it `e`).
    fn shift(&mut self, s: usize, from: usize, to: usize, e: f64) {
        let base = s * self.r;
        if let Some(i) = (0..self.held[s]).find(|&i| self.hold[base + i].1 == from) {
            self.hold[base + i] = (e.to_bits(), to);
            self.load[from] -= 1;
            self.load[to] += 1;
        }
    }

    /// The streams of each probe, in stream order.
    fn by_probe(&self, probes: usize) -> Vec<Vec<usize>> {
        let mut out = vec![Vec::new(); probes];
        for s in 0..self.held.len() {
            for &(_, p) in self.holders(s) {
                out[p].push(s);
            }
        }
        out
    }
}

/// Per-probe load bounds.
struct Bounds {
    lo: Vec<u32>,
    hi: Vec<u32>,
}

/// The allowed deviation from the fair share: 1/10.
const SLACK_NUM: u128 = 1;
const SLACK_DEN: u128 = 10;

/// Fair shares by water-filling (a probe holds at most its capacity and at most one
/// replica of each stream; demand is streams x replicas), then the bounds: the 10% band
/// around the fair share rounded outwards to whole streams; a band narrower than one
/// stream (fair share below 10) collapses to floor/ceil of the fair share. Integer
/// arithmetic only.
fn bounds(view: &View, r: usize) -> Bounds {
    let n = view.streams.len() as u128;
    let cap: Vec<u128> = view.capacity.iter().map(|&c| u128::from(c)).collect();
    let top: Vec<u128> = cap.iter().map(|&c| c.min(n)).collect();
    let demand = n * r as u128;
    let everyone_full = demand >= top.iter().sum::<u128>();
    let mut saturated = vec![everyone_full; top.len()];
    // fair_p = top_p when saturated, else cap_p * num / den.
    let (mut num, mut den) = (0u128, 1u128);
    if !everyone_full {
        loop {
            let (mut rest, mut weight) = (demand, 0u128);
            for p in 0..top.len() {
                if saturated[p] {
                    rest = rest.saturating_sub(top[p]);
                } else {
                    weight += cap[p];
                }
            }
            (num, den) = (rest, weight.max(1));
            let mut changed = false;
            for p in 0..top.len() {
                if !saturated[p] && cap[p] * num >= top[p] * den {
                    saturated[p] = true;
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
    }
    let (mut lo, mut hi) = (Vec::with_capacity(top.len()), Vec::with_capacity(top.len()));
    for p in 0..top.len() {
        // fair = a / b
        let (a, b) = if saturated[p] {
            (top[p], 1)
        } else {
            (cap[p] * num, den)
        };
        // Below a fair share of 10 this is about ±1 stream: tiny fleets are balanced to
        // a stream, and a member leaving need not move a survivor's stream to even out
        // the last one (`[floor(f), ceil(f)]` would: 2 members of 10 streams must hold
        // exactly 5 each).
        let (l, h) = (
            a * (SLACK_DEN - SLACK_NUM) / (b * SLACK_DEN),
            (a * (SLACK_DEN + SLACK_NUM)).div_ceil(b * SLACK_DEN),
        );
        let h = h.min(top[p]);
        hi.push(u32::try_from(h).unwrap_or(u32::MAX));
        lo.push(u32::try_from(l.min(h)).unwrap_or(u32::MAX));
    }
    Bounds { lo, hi }
}

/// Phase 1: every stream proposes down its ranking and a probe accepts while below
/// `bound`, all proposals taken in increasing score order. As probes and streams both
/// rank a pair by its score, this is the unique stable matching of streams and probes.
fn propose(view: &View, st: &mut State, bound: &[u32]) {
    let n = view.streams.len();
    let k = (st.r + 2).min(view.probes.len());
    // The first `k` of each ranking, flat; a stream that walks further keeps its next
    // batch (twice as long each time) in `more`.
    let mut first = vec![(0u64, 0usize); n * k];
    let mut len = vec![0usize; n];
    let mut pos = vec![0usize; n];
    let mut more: Vec<Vec<Ranked>> = vec![Vec::new(); n];
    let mut batch = vec![k; n];
    let mut open = (0..view.probes.len())
        .filter(|&p| st.load[p] < bound[p])
        .count();
    let mut heap = BinaryHeap::with_capacity(n);
    let mut buf = Vec::with_capacity(k);
    for s in 0..n {
        view.ranking(s, None, k, &mut buf);
        first[s * k..s * k + buf.len()].copy_from_slice(&buf);
        len[s] = buf.len();
        if let Some(&(e, p)) = buf.first() {
            heap.push(Reverse((e, p, s)));
        }
    }
    while let Some(Reverse((e, p, s))) = heap.pop() {
        if open == 0 {
            break; // every probe is full: the rest stays short
        }
        if !st.holds(s, p) && st.load[p] < bound[p] {
            st.add(s, (e, p));
            if st.load[p] == bound[p] {
                open -= 1;
            }
        }
        // The next candidate worth a proposal: probes only fill up, so a full probe
        // rejects every later (worse) proposal and is skipped.
        if st.held[s] == st.r {
            continue;
        }
        loop {
            pos[s] += 1;
            if pos[s] == len[s] {
                if len[s] < batch[s] {
                    break; // every probe seen
                }
                let last = if more[s].is_empty() {
                    first[s * k + k - 1]
                } else {
                    more[s][len[s] - 1]
                };
                batch[s] *= 2;
                let mut next = Vec::with_capacity(batch[s]);
                view.ranking(s, Some(last), batch[s], &mut next);
                len[s] = next.len();
                pos[s] = 0;
                more[s] = next;
                if len[s] == 0 {
                    break;
                }
            }
            let (e, p) = if more[s].is_empty() {
                first[s * k + pos[s]]
            } else {
                more[s][pos[s]]
            };
            if st.load[p] < bound[p] && !st.holds(s, p) {
                heap.push(Reverse((e, p, s)));
                break;
            }
        }
    }
}

/// Phase 2: every probe below its lower bound takes, from holders above their own lower
/// bound, the streams it came nearest to winning: lowest ratio of its score to the
/// holder's, i.e. the streams a small increase of its weight would capture. All steals in
/// increasing ratio order, so the outcome does not depend on the order of the probes.
fn raise(view: &View, st: &mut State, lo: &[u32]) {
    let short: Vec<usize> = (0..view.probes.len())
        .filter(|&p| st.load[p] < lo[p])
        .collect();
    if short.is_empty() {
        return;
    }
    // 1 / the worst holder's score, per stream (0: nothing to take).
    let inv_worst: Vec<f64> = (0..view.streams.len())
        .map(|s| match st.holders(s).iter().map(|&(e, _)| e).max() {
            Some(e) if f64::from_bits(e) > 0.0 => 1.0 / f64::from_bits(e),
            _ => 0.0,
        })
        .collect();
    // The next `k` candidates of probe `p` after `after`: ((ratio bits, stream), score).
    let scan = |p: usize, after: Option<Ranked>, k: usize, st: &State| {
        let pk = view.probe_key[p];
        let inv_w = view.inv_w[p];
        let mut out: Vec<(Ranked, f64)> = Vec::with_capacity(k);
        let mut worst = f64::INFINITY;
        for (s, (&sk, &iw)) in view.stream_key.iter().zip(&inv_worst).enumerate() {
            if iw == 0.0 {
                continue;
            }
            let t = unit(pair(sk, pk));
            // ratio >= t * inv_w * iw, as for `ranking`.
            if out.len() == k && t * inv_w * iw > worst {
                continue;
            }
            let e = exp1(t) * inv_w;
            let key = ((e * iw).to_bits(), s);
            if after.is_some_and(|a| key <= a) || st.holds(s, p) {
                continue;
            }
            if out.len() == k {
                if key >= out[k - 1].0 {
                    continue;
                }
                out.pop();
            }
            let at = out.partition_point(|x| x.0 < key);
            out.insert(at, (key, e));
            if out.len() == k {
                worst = f64::from_bits(out[k - 1].0 .0);
            }
        }
        out
    };
    let want = |p: usize, st: &State| (lo[p] - st.load[p]) as usize + 4;
    let mut lists: Vec<Vec<(Ranked, f64)>> = Vec::with_capacity(short.len());
    let mut full = Vec::with_capacity(short.len());
    let mut pos = vec![0usize; short.len()];
    let mut heap = BinaryHeap::new();
    for (j, &p) in short.iter().enumerate() {
        let k = want(p, st);
        let list = scan(p, None, k, st);
        full.push(list.len() == k);
        if let Some(&(key, _)) = list.first() {
            heap.push(Reverse((key, j)));
        }
        lists.push(list);
    }
    while let Some(Reverse(((_, s), j))) = heap.pop() {
        let p = short[j];
        if st.load[p] >= lo[p] {
            continue;
        }
        let e = lists[j][pos[j]].1;
        if !st.holds(s, p) {
            // The giver: the holder above its lower bound that ranks the stream worst.
            let giver = st
                .holders(s)
                .iter()
                .filter(|&&(_, q)| st.load[q] > lo[q])
                .max()
                .map(|&(_, q)| q);
            if let Some(q) = giver {
                st.shift(s, q, p, e);
                if st.load[p] >= lo[p] {
                    continue;
                }
            }
        }
        pos[j] += 1;
        if pos[j] == lists[j].len() {
            if !full[j] {
                continue; // every stream seen
            }
            let k = want(p, st);
            let next = scan(p, lists[j].last().map(|x| x.0), k, st);
            full[j] = next.len() == k;
            lists[j] = next;
            pos[j] = 0;
            if lists[j].is_empty() {
                continue;
            }
        }
        heap.push(Reverse((lists[j][pos[j]].0, j)));
    }
}

/// A step of an augmenting path: probe `from` hands stream `stream` to probe `to`.
#[derive(Clone, Copy)]
struct Hand {
    from: usize,
    stream: usize,
    to: usize,
}

/// A stream of `y` that `x` does not hold (the first in stream order).
fn transferable(st: &State, streams_of: &[Vec<usize>], y: usize, x: usize) -> Option<usize> {
    streams_of[y].iter().copied().find(|&t| !st.holds(t, x))
}

/// Carries out `path`. Each step hands a stream to a probe that did not hold it and no
/// probe appears twice on a path, so the steps commute.
fn augment(view: &View, st: &mut State, path: &[Hand]) {
    for h in path {
        st.shift(h.stream, h.from, h.to, view.score(h.stream, h.to));
    }
}

/// Phase 3, a safety net the first two phases almost never need (tiny fleets, several
/// replicas): a probe still below its lower bound takes a stream along an augmenting
/// path (it takes from y1, y1 from y2, ..., from a probe above its lower bound).
fn repair_low(view: &View, st: &mut State, lo: &[u32]) {
    let np = view.probes.len();
    for p in 0..np {
        while st.load[p] < lo[p] {
            let streams_of = st.by_probe(np);
            // parent[y] = the step that hands a stream of y towards p.
            let mut parent: Vec<Option<Hand>> = vec![None; np];
            let mut seen = vec![false; np];
            seen[p] = true;
            let mut queue = std::collections::VecDeque::from([p]);
            let mut end = None;
            'bfs: while let Some(x) = queue.pop_front() {
                for y in 0..np {
                    if seen[y] {
                        continue;
                    }
                    if let Some(t) = transferable(st, &streams_of, y, x) {
                        seen[y] = true;
                        parent[y] = Some(Hand {
                            from: y,
                            stream: t,
                            to: x,
                        });
                        if st.load[y] > lo[y] {
                            end = Some(y);
                            break 'bfs;
                        }
                        queue.push_back(y);
                    }
                }
            }
            let Some(mut y) = end else {
                break; // nothing left to take for p
            };
            let mut path = Vec::new();
            while let Some(h) = parent[y] {
                path.push(h);
                y = h.to;
            }
            augment(view, st, &path);
        }
    }
}

/// Phase 4: streams still short of replicas get a probe below `bound`, directly or along
/// an augmenting path (the probe hands one of its streams on, ..., to a probe with room),
/// until no path is left: then as many placements as the bounds allow are made.
fn fill(view: &View, st: &mut State, bound: &[u32]) {
    let np = view.probes.len();
    let short: Vec<usize> = (0..view.streams.len())
        .filter(|&s| st.held[s] < st.r)
        .collect();
    let mut next = 0;
    while next < short.len() {
        // Probes that can take one more stream, with the path that frees the slot
        // (None for a probe with room).
        let streams_of = st.by_probe(np);
        let mut parent: Vec<Option<Option<Hand>>> = vec![None; np];
        let mut queue = std::collections::VecDeque::new();
        for x in 0..np {
            if st.load[x] < bound[x] {
                parent[x] = Some(None);
                queue.push_back(x);
            }
        }
        if queue.is_empty() {
            return;
        }
        while let Some(x) = queue.pop_front() {
            for (y, slot) in parent.iter_mut().enumerate() {
                if slot.is_none() {
                    if let Some(t) = transferable(st, &streams_of, y, x) {
                        *slot = Some(Some(Hand {
                            from: y,
                            stream: t,
                            to: x,
                        }));
                        queue.push_back(y);
                    }
                }
            }
        }
        let reach = parent.iter().filter(|p| p.is_some()).count();
        let mut placed = false;
        while next < short.len() && !placed {
            let s = short[next];
            if st.held[s] == st.r {
                next += 1;
                continue;
            }
            // Every reachable probe already holds s: nothing to do for it.
            if reach <= st.held[s] && (0..np).all(|q| parent[q].is_none() || st.holds(s, q)) {
                next += 1;
                continue;
            }
            let q = (0..np)
                .filter(|&q| parent[q].is_some() && !st.holds(s, q))
                .min_by_key(|&q| (view.score(s, q).to_bits(), q));
            let Some(q) = q else {
                next += 1;
                continue;
            };
            let mut path = Vec::new();
            let mut y = q;
            while let Some(Some(h)) = parent[y] {
                path.push(h);
                y = h.to;
            }
            augment(view, st, &path);
            let e = view.score(s, q);
            st.add(s, (e.to_bits(), q));
            placed = true;
        }
    }
}

/// The assignment of `streams` over `members` with `replicas` probes per stream.
pub fn assign(streams: &[String], members: &[Member], replicas: u32) -> Assignment {
    let mut ids: Vec<&str> = streams.iter().map(String::as_str).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut ms: Vec<(&str, u32)> = members
        .iter()
        .map(|m| (m.id.as_str(), m.capacity))
        .collect();
    ms.sort_unstable();
    // A probe listed twice with two capacities keeps the larger (the later once sorted).
    ms.dedup_by(|later, earlier| {
        let same = later.0 == earlier.0;
        if same {
            *earlier = *later;
        }
        same
    });
    ms.retain(|&(_, c)| c > 0);
    let view = View {
        stream_key: ids.iter().map(|s| stream_key(s)).collect(),
        streams: ids,
        probe_key: ms.iter().map(|m| probe_key(m.0)).collect(),
        probes: ms.iter().map(|m| m.0).collect(),
        capacity: ms.iter().map(|m| m.1).collect(),
        inv_w: ms.iter().map(|m| 1.0 / f64::from(m.1)).collect(),
    };
    let n = view.streams.len();
    let r = (replicas as usize).min(view.probes.len());
    let mut st = State {
        r,
        hold: vec![(0, 0); n * r],
        held: vec![0; n],
        load: vec![0; view.probes.len()],
    };
    if r > 0 && n > 0 {
        let b = bounds(&view, r);
        propose(&view, &mut st, &b.hi);
        raise(&view, &mut st, &b.lo);
        repair_low(&view, &mut st, &b.lo);
        fill(&view, &mut st, &b.hi);
    }
    let mut out = Assignment::default();
    for s in 0..n {
        let mut holders = st.holders(s).to_vec();
        holders.sort_unstable();
        let missing = replicas - holders.len() as u32;
        if missing > 0 {
            out.short.push((view.streams[s].to_string(), missing));
        }
        if !holders.is_empty() {
            out.placed.insert(
                view.streams[s].to_string(),
                holders
                    .iter()
                    .map(|&(_, p)| view.probes[p].to_string())
                    .collect(),
            );
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::print_stderr)] // the simulations print their measurements
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;
    use std::time::Instant;

    fn ids(prefix: &str, n: usize) -> Vec<String> {
        (0..n).map(|i| format!("{prefix}-{i:06}")).collect()
    }

    fn member(id: &str, capacity: u32) -> Member {
        Member {
            id: id.to_string(),
            capacity,
        }
    }

    /// `n` probes with capacities drawn (deterministically) from {50, 100, 150, 200, 400}.
    fn fleet(n: usize) -> Vec<Member> {
        const CAPS: [u32; 5] = [50, 100, 150, 200, 400];
        (0..n)
            .map(|i| member(&format!("probe-{i:04}"), CAPS[(mix(i as u64) % 5) as usize]))
            .collect()
    }

    /// Placements of `before` that `after` no longer has.
    fn moved(before: &Assignment, after: &Assignment) -> usize {
        before
            .placed
            .iter()
            .map(|(s, probes)| {
                let now: BTreeSet<&String> = after
                    .placed
                    .get(s)
                    .map(|v| v.iter().collect())
                    .unwrap_or_default();
                probes.iter().filter(|p| !now.contains(p)).count()
            })
            .sum()
    }

    /// Asserts every probe within capacity and within 10% of its fair share
    /// (total x capacity / sum of capacities) rounded outwards; returns the extreme
    /// load / fair ratios.
    fn assert_balanced(a: &Assignment, members: &[Member], total: usize) -> (f64, f64) {
        let sum: u64 = members.iter().map(|m| u64::from(m.capacity)).sum();
        let loads = a.loads();
        let (mut max, mut min) = (0f64, f64::INFINITY);
        for m in members {
            let load = loads.get(&m.id).copied().unwrap_or(0);
            assert!(load <= m.capacity as usize, "{} over capacity", m.id);
            let fair = total as f64 * f64::from(m.capacity) / sum as f64;
            let (lo, hi) = ((0.9 * fair).floor(), (1.1 * fair).ceil());
            assert!(
                (lo..=hi).contains(&(load as f64)),
                "{}: load {load}, fair {fair:.2}",
                m.id
            );
            max = max.max(load as f64 / fair);
            min = min.min(load as f64 / fair);
        }
        (max, min)
    }

    fn assert_replicas(a: &Assignment, replicas: usize) {
        for (s, probes) in &a.placed {
            let distinct: BTreeSet<&String> = probes.iter().collect();
            assert_eq!(distinct.len(), probes.len(), "{s}: a probe twice");
            assert_eq!(probes.len(), replicas, "{s}");
        }
    }

    /// A permutation of the same view: reversed, rotated, some entries twice.
    fn scrambled(streams: &[String], members: &[Member]) -> (Vec<String>, Vec<Member>) {
        let mut s: Vec<String> = streams.iter().rev().cloned().collect();
        s.extend(streams.iter().take(100).cloned());
        let mut m = members.to_vec();
        m.rotate_left(members.len() / 3);
        m.extend(members.iter().step_by(97).cloned());
        (s, m)
    }

    /// One join and one leave on a fleet: movement against the ideal.
    fn churn(
        streams: &[String],
        members: &[Member],
        replicas: u32,
        base: &Assignment,
    ) -> (f64, f64) {
        let mut less = members.to_vec();
        let gone = less.remove(members.len() / 2);
        let after = assign(streams, &less, replicas);
        assert_balanced(&after, &less, streams.len() * replicas as usize);
        assert_replicas(&after, replicas as usize);
        let leave = moved(base, &after) as f64 / base.streams_of(&gone.id).len() as f64;

        let mut more = members.to_vec();
        more.push(member("probe-joiner", 150));
        let after = assign(streams, &more, replicas);
        assert_balanced(&after, &more, streams.len() * replicas as usize);
        assert_replicas(&after, replicas as usize);
        let join = moved(base, &after) as f64 / after.streams_of("probe-joiner").len() as f64;
        (leave, join)
    }

    #[test]
    fn fleet_of_1000_probes_and_100k_streams() {
        let streams = ids("stream", 100_000);
        let members = fleet(1000);
        let t = Instant::now();
        let a = assign(&streams, &members, 1);
        let took = t.elapsed();
        assert!(a.short.is_empty());
        assert_replicas(&a, 1);
        let (max, min) = assert_balanced(&a, &members, streams.len());
        let (leave, join) = churn(&streams, &members, 1, &a);
        eprintln!(
            "1000 probes x 100000 streams, replicas 1: assign {took:?}; load/fair max {max:.3} \
             min {min:.3}; moved/ideal on a leave {leave:.3}, on a join {join:.3}"
        );
        assert!(leave <= 1.5, "leave moved {leave:.3} x the ideal");
        assert!(join <= 1.5, "join moved {join:.3} x the ideal");

        // Every probe computes the same, whatever order it learnt the view in.
        let (s, m) = scrambled(&streams, &members);
        assert_eq!(assign(&s, &m, 1), a);
    }

    #[test]
    fn fleet_with_two_replicas() {
        let streams = ids("stream", 50_000);
        let members = fleet(1000);
        let t = Instant::now();
        let a = assign(&streams, &members, 2);
        let took = t.elapsed();
        assert!(a.short.is_empty());
        assert_replicas(&a, 2);
        let (max, min) = assert_balanced(&a, &members, 2 * streams.len());
        let (leave, join) = churn(&streams, &members, 2, &a);
        eprintln!(
            "1000 probes x 50000 streams, replicas 2: assign {took:?}; load/fair max {max:.3} \
             min {min:.3}; moved/ideal on a leave {leave:.3}, on a join {join:.3}"
        );
        assert!(leave <= 1.5, "leave moved {leave:.3} x the ideal");
        assert!(join <= 1.5, "join moved {join:.3} x the ideal");
    }

    #[test]
    fn three_probes_share_nine_streams_evenly() {
        let members: Vec<Member> = ["probe-a", "probe-b", "probe-c"]
            .iter()
            .map(|id| member(id, 32))
            .collect();
        let streams: Vec<String> = (1..=9).map(|i| format!("cam-{i}")).collect();
        let one = assign(&streams, &members, 1);
        let two = assign(&streams, &members, 2);
        // Fair shares 3 and 6: within ±10% rounded outwards, [2, 4] and [5, 7].
        for m in &members {
            let (l1, l2) = (one.streams_of(&m.id).len(), two.streams_of(&m.id).len());
            assert!((2..=4).contains(&l1), "{}: {l1}", m.id);
            assert!((5..=7).contains(&l2), "{}: {l2}", m.id);
        }
        assert_replicas(&one, 1);
        assert_replicas(&two, 2);
    }

    #[test]
    fn a_leaver_s_streams_go_to_the_survivors() {
        let members: Vec<Member> = ["probe-a", "probe-b", "probe-c"]
            .iter()
            .map(|id| member(id, 32))
            .collect();
        let streams: Vec<String> = (1..=9).map(|i| format!("cam-{i}")).collect();
        for replicas in [1, 2] {
            let before = assign(&streams, &members, replicas);
            for gone in 0..3 {
                let mut less = members.clone();
                let leaver = less.remove(gone);
                let after = assign(&streams, &less, replicas);
                assert_replicas(&after, replicas as usize);
                let loads = after.loads();
                // 9 x replicas over two probes: 4 or 5 each (replicas 1), 8 to 10 (2).
                for m in &less {
                    let load = loads[&m.id];
                    assert!(load.abs_diff(9 * replicas as usize / 2) <= 1, "{load}");
                }
                let kept = less.iter().all(|m| {
                    let now = after.streams_of(&m.id);
                    before.streams_of(&m.id).iter().all(|s| now.contains(s))
                });
                let ideal = before.streams_of(&leaver.id).len();
                let extra = moved(&before, &after) - ideal;
                eprintln!(
                    "{} left, replicas {replicas}: kept {kept}, extra {extra}",
                    leaver.id
                );
                assert!(kept, "{} left, replicas {replicas}", leaver.id);
                assert_eq!(extra, 0);
            }
        }
    }

    #[test]
    fn over_capacity_places_what_fits() {
        let members = vec![
            member("probe-a", 2),
            member("probe-b", 3),
            member("probe-c", 4),
        ];
        let streams = ids("cam", 12);
        let a = assign(&streams, &members, 1);
        assert_eq!(a.placed.len(), 9);
        assert_eq!(a.loads().values().sum::<usize>(), 9);
        for m in &members {
            assert_eq!(a.streams_of(&m.id).len(), m.capacity as usize);
        }
        assert_eq!(a.short.len(), 3);
        assert!(a
            .short
            .iter()
            .all(|(s, missing)| *missing == 1 && !a.placed.contains_key(s)));
        // Which streams are short is part of the deterministic result.
        let rev: Vec<String> = streams.iter().rev().cloned().collect();
        assert_eq!(assign(&rev, &members, 1), a);

        // Two replicas, 9 slots for 24 placements: every slot used, each stream on
        // distinct probes, the rest reported per stream.
        let a = assign(&streams, &members, 2);
        assert_eq!(a.loads().values().sum::<usize>(), 9);
        for m in &members {
            assert_eq!(a.streams_of(&m.id).len(), m.capacity as usize);
        }
        let missing: u32 = a.short.iter().map(|(_, m)| m).sum();
        assert_eq!(missing, 24 - 9);
        for (s, probes) in &a.placed {
            let short = a.short.iter().find(|(x, _)| x == s).map_or(0, |(_, m)| *m);
            assert_eq!(probes.len() as u32 + short, 2, "{s}");
        }
    }

    #[test]
    fn no_members_places_nothing() {
        let streams = ids("cam", 4);
        let a = assign(&streams, &[], 2);
        assert!(a.placed.is_empty());
        assert_eq!(
            a.short,
            streams.iter().map(|s| (s.clone(), 2)).collect::<Vec<_>>()
        );
        let a = assign(&streams, &[member("probe-a", 0)], 1);
        assert!(a.placed.is_empty());
        assert_eq!(a.short.len(), 4);
    }

    #[test]
    fn fewer_probes_than_replicas_puts_every_stream_on_every_probe() {
        let members = vec![member("probe-a", 10), member("probe-b", 10)];
        let streams = ids("cam", 5);
        let a = assign(&streams, &members, 3);
        for s in &streams {
            let mut probes = a.placed[s].clone();
            probes.sort();
            assert_eq!(probes, ["probe-a", "probe-b"]);
        }
        assert_eq!(
            a.short,
            streams.iter().map(|s| (s.clone(), 1)).collect::<Vec<_>>()
        );
    }

    #[test]
    fn capacity_zero_gets_nothing() {
        let members = vec![
            member("probe-a", 5),
            member("probe-idle", 0),
            member("probe-b", 5),
        ];
        let streams = ids("cam", 8);
        let a = assign(&streams, &members, 1);
        assert!(a.streams_of("probe-idle").is_empty());
        assert!(!a.loads().contains_key("probe-idle"));
        assert!(a.short.is_empty());
        // The same as without it.
        let without = [members[0].clone(), members[2].clone()];
        assert_eq!(assign(&streams, &without, 1), a);
    }

    #[test]
    fn duplicates_are_ignored() {
        let members = fleet(20);
        let streams = ids("cam", 200);
        let a = assign(&streams, &members, 2);
        let mut s2 = streams.clone();
        s2.extend(streams.iter().step_by(3).cloned());
        let mut m2 = members.clone();
        m2.extend(members.iter().take(5).cloned());
        assert_eq!(assign(&s2, &m2, 2), a);
        // A probe announced twice with two capacities counts with the larger one.
        let mut m3 = members.clone();
        m3.push(member(&members[0].id, 1));
        assert_eq!(assign(&streams, &m3, 2), a);
    }

    #[test]
    fn zero_replicas_places_nothing_and_misses_nothing() {
        let a = assign(&ids("cam", 3), &fleet(3), 0);
        assert_eq!(a, Assignment::default());
    }

    /// The hash, the score and the algorithm are part of the fleet's protocol: probes of
    /// different versions must agree. These values were computed once; if this fails,
    /// a change broke compatibility with every deployed probe.
    #[test]
    fn hash_and_score_are_pinned() {
        assert_eq!(pair_hash("cam-1", "probe-a"), 0x33b0_3c71_0c53_e065);
        assert_eq!(pair_hash("", ""), 0xdee7_a02f_efa7_f8de);
        assert_eq!(
            pair_hash("rtsp://10.0.0.1/main", "edge-paris-01"),
            0xcf1a_d8c8_ef75_d763
        );
        assert_eq!(
            pair_hash("stream-000042", "probe-0007"),
            0x2272_d174_2dae_3190
        );
        let exp = |h: u64| exp1(unit(h)).to_bits();
        assert_eq!(exp(0), 0);
        assert_eq!(exp(1 << 11), 0x3ca0_0000_0000_0000); // 2^-53
        assert_eq!(exp(1 << 63), 0x3fe6_2e42_fefa_39ef); // ln 2
        assert_eq!(exp(u64::MAX), 0x4042_5e4f_7b27_37fa); // 53 ln 2
        assert_eq!(exp(0x0123_4567_89ab_cdef), 0x3f72_3eb9_9135_4e4c);
    }

    #[test]
    fn assignment_is_pinned() {
        let members = vec![
            member("probe-a", 4),
            member("probe-b", 8),
            member("probe-c", 2),
            member("probe-d", 6),
            member("probe-e", 0),
        ];
        let streams: Vec<String> = (1..=8).map(|i| format!("cam-{i}")).collect();
        let a = assign(&streams, &members, 2);
        let expected = [
            ("cam-1", ["probe-a", "probe-b"]),
            ("cam-2", ["probe-b", "probe-d"]),
            ("cam-3", ["probe-d", "probe-c"]),
            ("cam-4", ["probe-a", "probe-b"]),
            ("cam-5", ["probe-b", "probe-d"]),
            ("cam-6", ["probe-b", "probe-d"]),
            ("cam-7", ["probe-a", "probe-b"]),
            ("cam-8", ["probe-c", "probe-b"]),
        ];
        let expected: BTreeMap<String, Vec<String>> = expected
            .iter()
            .map(|(s, p)| (s.to_string(), p.iter().map(|p| p.to_string()).collect()))
            .collect();
        assert_eq!(a.placed, expected);
        assert!(a.short.is_empty());
    }

    proptest! {
        /// Small random views: capacities hold, replicas are distinct, every stream is
        /// placed in full or reported short by exactly what it misses, as many placements
        /// are made as the capacities allow, the balance holds whenever no probe is
        /// limited by its capacity or the stream count, and the input order is irrelevant.
        #[test]
        fn small_views(
            ms in proptest::collection::vec((0u8..8, 0u32..12), 0..8),
            ss in proptest::collection::vec(0u8..40, 0..40),
            replicas in 0u32..4,
        ) {
            let members: Vec<Member> = ms.iter().map(|&(i, c)| member(&format!("p{i}"), c)).collect();
            let streams: Vec<String> = ss.iter().map(|i| format!("s{i}")).collect();
            let a = assign(&streams, &members, replicas);

            let mut cap: BTreeMap<&str, u32> = BTreeMap::new();
            for m in &members {
                let c = cap.entry(m.id.as_str()).or_insert(0);
                *c = (*c).max(m.capacity);
            }
            let unique: BTreeSet<&String> = streams.iter().collect();
            let n = unique.len() as u64;
            for (p, load) in a.loads() {
                prop_assert!(load as u64 <= u64::from(cap.get(p.as_str()).copied().unwrap_or(0)));
            }
            let mut total = 0u64;
            for s in &unique {
                let held = a.placed.get(*s).map_or(0, |v| {
                    let distinct: BTreeSet<&String> = v.iter().collect();
                    assert_eq!(distinct.len(), v.len());
                    v.len() as u32
                });
                let short = a.short.iter().find(|(x, _)| x == *s).map_or(0, |(_, m)| *m);
                prop_assert_eq!(held + short, replicas, "{}", s);
                total += u64::from(held);
            }
            for s in a.placed.keys().chain(a.short.iter().map(|(s, _)| s)) {
                prop_assert!(unique.contains(s));
            }
            let short: BTreeSet<&String> = a.short.iter().map(|(s, _)| s).collect();
            prop_assert_eq!(short.len(), a.short.len());
            // As many placements as fit: min(demand, sum of min(capacity, streams)).
            let room: u64 = cap.values().map(|&c| u64::from(c).min(n)).sum();
            prop_assert_eq!(total, (n * u64::from(replicas)).min(room));
            // Balance when the fair shares are plain proportions.
            let demand = n * u64::from(replicas);
            let sum: u64 = cap.values().map(|&c| u64::from(c)).sum();
            if demand > 0 && sum > 0 && cap.values().all(|&c| demand * u64::from(c) <= sum * u64::from(c).min(n)) {
                let loads = a.loads();
                for (p, &c) in &cap {
                    let load = loads.get(*p).copied().unwrap_or(0) as u64;
                    let c = u64::from(c);
                    prop_assert!(load >= 9 * demand * c / (10 * sum), "{} low", p);
                    prop_assert!(load <= (11 * demand * c).div_ceil(10 * sum), "{} high", p);
                }
            }
            let rs: Vec<String> = streams.iter().rev().cloned().collect();
            let rm: Vec<Member> = members.iter().rev().cloned().collect();
            prop_assert_eq!(assign(&rs, &rm, replicas), a);
        }
    }
}
