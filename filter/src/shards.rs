//! Which shard of the all-processes cluster a matchmaking request goes to. Pure.
//!
//! The agent may split the all-processes cluster in S shards (`routing::cluster`); Envoy
//! balances inside a shard by the hosts' weights, so the filter picks the shard in
//! proportion to the summed weights of its active processes, as this worker last heard
//! them from `/processes`. There is no random source in proxy-wasm: a per-worker position
//! walks `0..total` with a step coprime to `total` (each value once per cycle, so the
//! proportions are exact over `total` requests, and spread rather than in runs), and the
//! value falls in one shard's range of the cumulative weights (binary search, no
//! allocation per request).

use std::cell::Cell;
use std::collections::HashMap;

use routing::cluster::shard_of;
use routing::ClusterNames;

/// The active processes' matchmaking weights by shard, as this worker last heard them,
/// kept by whole answers and deltas alike (a delta costs the rows it carries, not the
/// fleet), and the picker made from them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Matchmaking {
    /// processId -> (its shard under `count`, its weight).
    active: HashMap<String, (u16, u32)>,
    /// Summed weight of each shard (index = shard).
    sums: Vec<u64>,
    /// The shard count `active` and `sums` are computed for; 0 counts as 1.
    count: u16,
    picker: ShardPicker,
}

impl Matchmaking {
    /// Replaces every active process (a whole answer).
    pub fn replace(&mut self, active: impl IntoIterator<Item = (String, u32)>) {
        self.active.clear();
        self.sums = vec![0; usize::from(self.count.max(1))];
        for (pid, weight) in active {
            self.upsert(&pid, Some(weight));
        }
    }

    /// A process's new weight; `None`: it takes no matchmaking (draining, dead, gone).
    pub fn upsert(&mut self, process_id: &str, weight: Option<u32>) {
        if let Some((k, w)) = self.active.remove(process_id) {
            if let Some(sum) = self.sums.get_mut(usize::from(k)) {
                *sum = sum.saturating_sub(u64::from(w));
            }
        }
        if let Some(w) = weight {
            let k = shard_of(process_id, self.count.max(1));
            if let Some(sum) = self.sums.get_mut(usize::from(k)) {
                *sum = sum.saturating_add(u64::from(w));
            }
            self.active.insert(process_id.to_owned(), (k, w));
        }
    }

    /// Makes the picker for `shards` shards of `names` (re-placing every process if the
    /// count changed), continuing the previous walk.
    pub fn reshard(&mut self, names: &ClusterNames, shards: u16) {
        if shards.max(1) != self.count.max(1) {
            self.count = shards;
            let active: Vec<(String, u32)> =
                self.active.drain().map(|(pid, (_, w))| (pid, w)).collect();
            self.replace(active);
        }
        self.picker = ShardPicker::from_sums(names, &self.sums).continue_from(&self.picker);
    }

    /// Forgets every process: matchmaking goes to shard 0.
    pub fn clear(&mut self) {
        *self = Self::default();
    }

    /// See [`ShardPicker::pick`].
    pub fn pick(&self) -> Option<&str> {
        self.picker.pick()
    }
}

/// The matchmaking shares of the shards, from one `/processes` answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShardPicker {
    /// (end of the shard's range in `0..total`, shard name), for shards with weight only,
    /// in shard order; empty: no shard has weight, matchmaking goes to shard 0.
    ranges: Vec<(u64, String)>,
    total: u64,
    step: u64,
    /// Where the walk is in `0..total`.
    position: Cell<u64>,
}

impl ShardPicker {
    /// The shares of `shards` shards (1 or more) of `names`, given the active processes
    /// and their weights. One shard, or no weight anywhere: an empty picker.
    pub fn new<'a>(
        names: &ClusterNames,
        shards: u16,
        active: impl IntoIterator<Item = (&'a str, u32)>,
    ) -> Self {
        if shards <= 1 {
            return Self::default();
        }
        let mut weights = vec![0u64; usize::from(shards)];
        for (pid, weight) in active {
            if let Some(w) = weights.get_mut(usize::from(shard_of(pid, shards))) {
                *w = w.saturating_add(u64::from(weight));
            }
        }
        Self::from_sums(names, &weights)
    }

    /// The shares of shards whose summed weights are `weights` (index = shard). One
    /// shard, or no weight anywhere: an empty picker.
    pub fn from_sums(names: &ClusterNames, weights: &[u64]) -> Self {
        if weights.len() <= 1 {
            return Self::default();
        }
        let mut ranges = Vec::new();
        let mut total: u64 = 0;
        for (k, w) in weights.iter().enumerate().filter(|(_, w)| **w > 0) {
            total = total.saturating_add(*w);
            ranges.push((total, names.all_shard(u16::try_from(k).unwrap_or(0))));
        }
        Self {
            ranges,
            total,
            step: coprime_step(total),
            position: Cell::new(0),
        }
    }

    /// Continues `previous`'s walk: each `/processes` answer makes a new picker, and one
    /// that started at 0 every time would favour the first shard in a fleet that changes
    /// more often than this worker matchmakes.
    pub fn continue_from(self, previous: &Self) -> Self {
        if self.total > 0 {
            self.position.set(previous.position.get() % self.total);
        }
        self
    }

    /// The shard the next matchmaking request goes to; `None`: shard 0 (the plain
    /// all-processes cluster), as without shards.
    pub fn pick(&self) -> Option<&str> {
        if self.ranges.len() <= 1 {
            return self.ranges.first().map(|(_, name)| name.as_str());
        }
        let at = self.position.get();
        // (at + step) mod total, without overflowing whatever the total.
        let rest = self.total - self.step;
        self.position.set(if at >= rest {
            at - rest
        } else {
            at + self.step
        });
        let i = self.ranges.partition_point(|(end, _)| *end <= at);
        self.ranges.get(i).map(|(_, name)| name.as_str())
    }
}

/// A step near `total` x 0.618 (the golden ratio spreads consecutive picks) that shares no
/// factor with `total`, so a walk of `total` steps visits every value once.
fn coprime_step(total: u64) -> u64 {
    if total <= 1 {
        return 1;
    }
    let mut step = (total / 1000).saturating_mul(618) + (total % 1000) * 618 / 1000;
    step = step.clamp(1, total - 1);
    while gcd(step, total) != 1 {
        step = if step + 1 < total { step + 1 } else { 1 };
    }
    step
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// Ids spread over 3 shards: shard -> the first ids found in it.
    fn ids_by_shard(shards: u16, per_shard: usize) -> Vec<Vec<String>> {
        let mut by = vec![Vec::new(); usize::from(shards)];
        for i in 0.. {
            let id = format!("p{i}");
            let k = usize::from(shard_of(&id, shards));
            if by[k].len() < per_shard {
                by[k].push(id);
            }
            if by.iter().all(|v| v.len() == per_shard) {
                break;
            }
        }
        by
    }

    fn counts(picker: &ShardPicker, n: usize) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for _ in 0..n {
            *out.entry(picker.pick().unwrap_or("(none)").to_owned())
                .or_default() += 1;
        }
        out
    }

    #[test]
    fn proportions_are_exact_over_a_cycle() {
        let names = ClusterNames::default();
        let by = ids_by_shard(3, 2);
        // Shard 0: weights 10 + 20, shard 1: 5 + 5, shard 2: 30 + 30.
        let active = [
            (by[0][0].as_str(), 10),
            (by[0][1].as_str(), 20),
            (by[1][0].as_str(), 5),
            (by[1][1].as_str(), 5),
            (by[2][0].as_str(), 30),
            (by[2][1].as_str(), 30),
        ];
        let picker = ShardPicker::new(&names, 3, active);
        let c = counts(&picker, 100 * 3);
        assert_eq!(
            c,
            [
                ("colyseus-all".to_owned(), 90),
                ("colyseus-all-1".to_owned(), 30),
                ("colyseus-all-2".to_owned(), 180)
            ]
            .into()
        );
        // Spread, not in runs: no shard twice in a row more than its share makes necessary.
        let picks: Vec<String> = (0..100)
            .map(|_| picker.pick().unwrap().to_owned())
            .collect();
        let longest_run = picks
            .chunk_by(|a, b| a == b)
            .map(<[String]>::len)
            .max()
            .unwrap();
        assert!(longest_run <= 4, "{picks:?}");
    }

    #[test]
    fn a_new_answer_continues_the_walk() {
        let names = ClusterNames::default();
        let by = ids_by_shard(2, 1);
        let active = [(by[0][0].as_str(), 1), (by[1][0].as_str(), 1)];
        // A new picker (same shares) after every request: still half each.
        let mut picker = ShardPicker::new(&names, 2, active);
        let mut c = BTreeMap::<String, usize>::new();
        for _ in 0..100 {
            *c.entry(picker.pick().unwrap().to_owned()).or_default() += 1;
            picker = ShardPicker::new(&names, 2, active).continue_from(&picker);
        }
        assert_eq!(
            c,
            [
                ("colyseus-all".to_owned(), 50),
                ("colyseus-all-1".to_owned(), 50)
            ]
            .into()
        );
    }

    #[test]
    fn deltas_keep_the_shares_as_a_whole_answer_would() {
        let names = ClusterNames::default();
        let by = ids_by_shard(3, 2);
        let mut m = Matchmaking::default();
        m.replace([(by[0][0].clone(), 2), (by[1][0].clone(), 1)]);
        m.reshard(&names, 3);
        // A new process in shard 2, shard 1's drains, shard 0's weight changes.
        m.upsert(&by[2][0], Some(4));
        m.upsert(&by[1][0], None);
        m.upsert(&by[0][0], Some(1));
        m.upsert("never-seen", None);
        m.reshard(&names, 3);
        let fresh = ShardPicker::new(&names, 3, [(by[0][0].as_str(), 1), (by[2][0].as_str(), 4)]);
        let picked = |p: &dyn Fn() -> Option<String>| {
            let mut c = BTreeMap::<String, usize>::new();
            for _ in 0..50 {
                *c.entry(p().unwrap()).or_default() += 1;
            }
            c
        };
        assert_eq!(
            picked(&|| m.pick().map(str::to_owned)),
            picked(&|| fresh.pick().map(str::to_owned))
        );
        assert_eq!(m.sums, [1, 0, 4]);
        // A new count re-places every process; clearing goes back to shard 0.
        m.reshard(&names, 1);
        assert_eq!((m.sums.len(), m.pick()), (1, None));
        m.reshard(&names, 3);
        assert_eq!(m.sums, [1, 0, 4]);
        m.clear();
        assert_eq!(m.pick(), None);
    }

    #[test]
    fn shards_without_weight_are_never_picked() {
        let names = ClusterNames::default();
        let by = ids_by_shard(4, 1);
        // Shard 1 has a process of weight 0 (drained by balance), shard 3 none at all.
        let active = [
            (by[0][0].as_str(), 3),
            (by[1][0].as_str(), 0),
            (by[2][0].as_str(), 1),
        ];
        let picker = ShardPicker::new(&names, 4, active);
        let c = counts(&picker, 400);
        assert_eq!(
            c,
            [
                ("colyseus-all".to_owned(), 300),
                ("colyseus-all-2".to_owned(), 100)
            ]
            .into()
        );
        // Only one shard with weight: always that one.
        let only = ShardPicker::new(&names, 4, [(by[3][0].as_str(), 7)]);
        assert_eq!(
            counts(&only, 10),
            [("colyseus-all-3".to_owned(), 10)].into()
        );
    }

    #[test]
    fn nothing_known_or_one_shard_goes_to_shard_zero() {
        let names = ClusterNames::default();
        assert_eq!(ShardPicker::default().pick(), None);
        assert_eq!(ShardPicker::new(&names, 3, []).pick(), None);
        assert_eq!(ShardPicker::new(&names, 3, [("p1", 0)]).pick(), None);
        assert_eq!(ShardPicker::new(&names, 1, [("p1", 5)]).pick(), None);
    }

    #[test]
    fn steps_visit_every_value_once() {
        for total in [1u64, 2, 3, 4, 10, 97, 100, 1000, 65_536, 1_000_003] {
            let step = coprime_step(total);
            assert!(step >= 1 && (total == 1 || step < total), "{total}");
            assert_eq!(gcd(step, total), 1, "{total}");
        }
        let (total, step) = (12u64, coprime_step(12));
        let mut seen: Vec<u64> = (0..total).map(|i| i * step % total).collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..total).collect::<Vec<_>>());
        // Huge totals (10,000 processes at u32::MAX each) do not overflow.
        let big = 10_000 * u64::from(u32::MAX);
        assert_eq!(gcd(coprime_step(big), big), 1);
    }
}
