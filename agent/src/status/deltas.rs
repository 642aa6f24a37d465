//! `/processes` answered as a delta against the set the caller holds
//! ([`routing::wire::PROCESSES_SINCE_PARAM`]): each Envoy worker long-polls the set, and at
//! 10,000 processes the whole set is about 1.5 MB of JSON to serialize here and parse in
//! the filter's wasm, per worker, on every registration.
//!
//! Each answer carries a digest of the set it shows; the last few sets answered are kept by
//! digest, so a caller naming one gets the rows that changed since. Keyed by content, not by
//! version: the sets of different Envoys (ACK-gated) and of one Envoy over time are told
//! apart exactly, and a caller whose set is gone (evicted, another agent) gets the whole set.
//! Pure; the API does the I/O.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

use imbl::ordmap::DiffItem;
use routing::wire::{ProcessRow, ProcessesDelta};

use super::rows::Rows;

/// Sets kept to answer deltas against: the newest few, enough for every worker of every
/// Envoy to be at most a few changes behind (a slower caller gets the whole set once).
const KEPT: usize = 8;

/// One answer to `/processes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The whole set.
    Full { digest: u64, rows: Rows },
    /// What changed since the set with digest `since`.
    Delta {
        digest: u64,
        since: u64,
        delta: ProcessesDelta,
    },
}

/// The recent sets, by digest, and how many answers of each kind were given.
#[derive(Debug, Default)]
pub struct Deltas {
    /// Persistent maps: keeping a set is an O(1) copy, and the sets of consecutive versions
    /// share all but their changed rows, so digests and deltas between them cost what
    /// changed.
    recent: Mutex<VecDeque<(u64, Rows)>>,
    pub full_answers: AtomicU64,
    pub delta_answers: AtomicU64,
}

impl Deltas {
    /// The answer showing `rows` to a caller holding the set `since` (if any): a delta when
    /// that set is kept, else the whole set. `rows` is remembered for later callers.
    pub fn answer(&self, rows: Rows, since: Option<u64>) -> Answer {
        let Ok(mut recent) = self.recent.lock() else {
            return Answer::Full {
                digest: digest(&rows),
                rows,
            };
        };
        let digest = digest_from(&recent, &rows);
        if !recent.iter().any(|(d, _)| *d == digest) {
            if recent.len() == KEPT {
                recent.pop_front();
            }
            recent.push_back((digest, rows.clone()));
        }
        let base = since.and_then(|s| recent.iter().find(|(d, _)| *d == s).map(|(_, r)| r.clone()));
        drop(recent);
        match (since, base) {
            (Some(since), Some(base)) => {
                self.delta_answers.fetch_add(1, Relaxed);
                Answer::Delta {
                    digest,
                    since,
                    delta: diff(&base, &rows),
                }
            }
            _ => {
                self.full_answers.fetch_add(1, Relaxed);
                Answer::Full { digest, rows }
            }
        }
    }

    /// Prometheus text for `/metrics`.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write;
        let _ = writeln!(
            out,
            "# HELP colyseus_envoy_processes_answers_total /processes answers, by kind (delta: the rows changed since the set the caller holds).\n\
             # TYPE colyseus_envoy_processes_answers_total counter\n\
             colyseus_envoy_processes_answers_total{{kind=\"full\"}} {}\n\
             colyseus_envoy_processes_answers_total{{kind=\"delta\"}} {}",
            self.full_answers.load(Relaxed),
            self.delta_answers.load(Relaxed),
        );
    }
}

/// The digest of `rows`, from a kept set when one is the same map or shares most of it
/// (the newest), so an answer does not hash every row.
fn digest_from(recent: &VecDeque<(u64, Rows)>, rows: &Rows) -> u64 {
    if let Some((d, _)) = recent.iter().find(|(_, r)| r.ptr_eq(rows)) {
        return *d;
    }
    let Some((d, newest)) = recent.back() else {
        return digest(rows);
    };
    newest.diff(rows).fold(*d, |d, item| match item {
        DiffItem::Add(_, r) => d.wrapping_add(row_hash(r)),
        DiffItem::Update { old, new } => d
            .wrapping_sub(row_hash(old.1))
            .wrapping_add(row_hash(new.1)),
        DiffItem::Remove(_, r) => d.wrapping_sub(row_hash(r)),
    })
}

/// A row as far as a delta is concerned: without rooms and clients, which change all the
/// time and which the filter does not read.
fn stripped(row: &ProcessRow) -> ProcessRow {
    ProcessRow {
        rooms: None,
        ccu: None,
        ..row.clone()
    }
}

/// Whether two rows agree in every field a delta carries (no copy: this runs per row).
fn same_row(a: &ProcessRow, b: &ProcessRow) -> bool {
    a.process_id == b.process_id
        && a.address == b.address
        && a.cluster == b.cluster
        && a.state == b.state
        && a.weight == b.weight
}

/// FNV-1a over every field a delta carries, mixed (so that sums of them do not cancel
/// along FNV's structure).
fn row_hash(row: &ProcessRow) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for b in bytes.iter().chain([&0xff]) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    eat(row.process_id.as_bytes());
    eat(row.address.as_bytes());
    eat(row.cluster.as_bytes());
    eat(row.state.as_str().as_bytes());
    eat(&row.weight.map_or([0xfe; 5], |w| {
        let [a, b, c, d] = w.to_le_bytes();
        [a, b, c, d, 0]
    }));
    // splitmix64's finalizer.
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The digest of a set: the sum of its rows' hashes, so it does not depend on order and
/// follows a change in O(1) per row.
pub fn digest(rows: &Rows) -> u64 {
    rows.values().fold(0u64, |d, r| d.wrapping_add(row_hash(r)))
}

/// What turns `old` into `new`: a walk that skips what the two sets share.
pub fn diff(old: &Rows, new: &Rows) -> ProcessesDelta {
    let mut delta = ProcessesDelta::default();
    for item in old.diff(new) {
        match item {
            DiffItem::Add(_, n) => delta.changed.push(stripped(n)),
            DiffItem::Update {
                old: (_, o),
                new: (_, n),
            } => {
                if !same_row(o, n) {
                    delta.changed.push(stripped(n));
                }
            }
            DiffItem::Remove(pid, _) => delta.removed.push(pid.clone()),
        }
    }
    delta
}

#[cfg(test)]
mod tests {
    use super::*;
    use routing::wire::ProcessState;

    fn row(pid: &str, state: ProcessState, weight: Option<u32>) -> ProcessRow {
        ProcessRow {
            process_id: pid.into(),
            address: format!("10.0.0.1:{}", pid.len()),
            cluster: format!("colyseus-process-{pid}"),
            state,
            weight,
            rooms: Some(3),
            ccu: Some(7),
        }
    }

    /// A set of `rows`, by processId.
    fn set(rows: Vec<ProcessRow>) -> Rows {
        rows.into_iter()
            .map(|r| (r.process_id.clone(), r))
            .collect()
    }

    /// Applies `delta` to `set` as the filter does.
    fn apply(set: &Rows, delta: &ProcessesDelta) -> Rows {
        let mut map: Rows = set
            .values()
            .map(|r| (r.process_id.clone(), stripped(r)))
            .collect();
        for pid in &delta.removed {
            map.remove(pid);
        }
        for r in &delta.changed {
            map.insert(r.process_id.clone(), r.clone());
        }
        map
    }

    #[test]
    fn a_caller_holding_a_kept_set_gets_only_what_changed() {
        let deltas = Deltas::default();
        let first = vec![
            row("b", ProcessState::Active, Some(100)),
            row("a", ProcessState::Active, Some(100)),
        ];
        let Answer::Full { digest: d1, rows } = deltas.answer(set(first.clone()), None) else {
            panic!("no set held: the whole set");
        };
        assert_eq!(rows.keys().next().map(String::as_str), Some("a"));
        let second = vec![
            row("a", ProcessState::Draining, None),
            row("c", ProcessState::Active, Some(100)),
        ];
        let Answer::Delta {
            digest: d2,
            since,
            delta,
        } = deltas.answer(set(second.clone()), Some(d1))
        else {
            panic!("the set the caller holds is kept: a delta");
        };
        assert_eq!(since, d1);
        assert_eq!(delta.removed, ["b"]);
        let changed: Vec<&str> = delta
            .changed
            .iter()
            .map(|r| r.process_id.as_str())
            .collect();
        assert_eq!(changed, ["a", "c"]);
        assert!(delta.changed.iter().all(|r| r.rooms.is_none()));
        let expected = set(second.iter().map(stripped).collect());
        assert_eq!(apply(&rows, &delta), expected);
        assert_eq!(
            d2,
            digest(&set(second)),
            "a digest followed by change is the digest"
        );
        assert_eq!(
            digest(&apply(&rows, &delta)),
            d2,
            "the delta gives the digest's set"
        );
        assert_eq!(deltas.full_answers.load(Relaxed), 1);
        assert_eq!(deltas.delta_answers.load(Relaxed), 1);
    }

    #[test]
    fn rooms_and_clients_are_not_part_of_the_set() {
        let mut busy = row("a", ProcessState::Active, Some(100));
        let quiet = busy.clone();
        busy.rooms = Some(40);
        busy.ccu = None;
        assert_eq!(
            digest(&set(vec![busy.clone()])),
            digest(&set(vec![quiet.clone()]))
        );
        assert!(diff(&set(vec![quiet.clone()]), &set(vec![busy]))
            .changed
            .is_empty());
        let mut heavier = quiet.clone();
        heavier.weight = Some(200);
        assert_ne!(
            digest(&set(vec![heavier.clone()])),
            digest(&set(vec![quiet.clone()]))
        );
        assert_eq!(
            diff(&set(vec![quiet]), &set(vec![heavier.clone()])).changed,
            [stripped(&heavier)]
        );
    }

    #[test]
    fn an_unknown_or_evicted_set_gets_the_whole_set() {
        let deltas = Deltas::default();
        let Answer::Full { digest: first, .. } =
            deltas.answer(set(vec![row("a", ProcessState::Active, Some(1))]), None)
        else {
            panic!("first answer");
        };
        assert!(matches!(
            deltas.answer(Rows::new(), Some(12345)),
            Answer::Full { .. }
        ));
        for i in 0..KEPT as u32 {
            deltas.answer(set(vec![row("a", ProcessState::Active, Some(i + 2))]), None);
        }
        assert!(
            matches!(deltas.answer(Rows::new(), Some(first)), Answer::Full { .. }),
            "only the newest {KEPT} sets are kept"
        );
    }

    #[test]
    fn the_same_set_gives_an_empty_delta() {
        let deltas = Deltas::default();
        let one = set(vec![row("a", ProcessState::Active, Some(1))]);
        let Answer::Full { digest, .. } = deltas.answer(one.clone(), None) else {
            panic!("first answer");
        };
        let Answer::Delta {
            delta,
            digest: again,
            ..
        } = deltas.answer(one, Some(digest))
        else {
            panic!("kept");
        };
        assert_eq!(again, digest);
        assert_eq!(delta, ProcessesDelta::default());
    }
}
