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
use std::sync::{Arc, Mutex};

use routing::wire::{ProcessRow, ProcessesDelta};

/// Sets kept to answer deltas against: the newest few, enough for every worker of every
/// Envoy to be at most a few changes behind (a slower caller gets the whole set once).
const KEPT: usize = 8;

/// One answer to `/processes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The whole set.
    Full { digest: u64, rows: Vec<ProcessRow> },
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
    recent: Mutex<VecDeque<(u64, Arc<Vec<ProcessRow>>)>>,
    pub full_answers: AtomicU64,
    pub delta_answers: AtomicU64,
}

impl Deltas {
    /// The answer showing `rows` to a caller holding the set `since` (if any): a delta when
    /// that set is kept, else the whole set. `rows` is remembered for later callers.
    pub fn answer(&self, mut rows: Vec<ProcessRow>, since: Option<u64>) -> Answer {
        rows.sort_unstable_by(|a, b| a.process_id.cmp(&b.process_id));
        let digest = digest(&rows);
        let Ok(mut recent) = self.recent.lock() else {
            return Answer::Full { digest, rows };
        };
        if !recent.iter().any(|(d, _)| *d == digest) {
            if recent.len() == KEPT {
                recent.pop_front();
            }
            recent.push_back((digest, Arc::new(rows.iter().map(stripped).collect())));
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

/// FNV-1a over every field a delta carries, rows in processId order.
pub fn digest(rows: &[ProcessRow]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for b in bytes.iter().chain([&0xff]) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    for row in rows {
        eat(row.process_id.as_bytes());
        eat(row.address.as_bytes());
        eat(row.cluster.as_bytes());
        eat(row.state.as_str().as_bytes());
        eat(&row.weight.map_or([0xfe; 5], |w| {
            let [a, b, c, d] = w.to_le_bytes();
            [a, b, c, d, 0]
        }));
    }
    h
}

/// What turns `old` into `new` (both in processId order).
pub fn diff(old: &[ProcessRow], new: &[ProcessRow]) -> ProcessesDelta {
    let mut delta = ProcessesDelta::default();
    let (mut i, mut j) = (0, 0);
    loop {
        match (old.get(i), new.get(j)) {
            (None, None) => return delta,
            (Some(o), None) => {
                delta.removed.push(o.process_id.clone());
                i += 1;
            }
            (None, Some(n)) => {
                delta.changed.push(stripped(n));
                j += 1;
            }
            (Some(o), Some(n)) => match o.process_id.cmp(&n.process_id) {
                std::cmp::Ordering::Less => {
                    delta.removed.push(o.process_id.clone());
                    i += 1;
                }
                std::cmp::Ordering::Greater => {
                    delta.changed.push(stripped(n));
                    j += 1;
                }
                std::cmp::Ordering::Equal => {
                    if !same_row(o, n) {
                        delta.changed.push(stripped(n));
                    }
                    i += 1;
                    j += 1;
                }
            },
        }
    }
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

    /// Applies `delta` to `set` as the filter does.
    fn apply(set: &[ProcessRow], delta: &ProcessesDelta) -> Vec<ProcessRow> {
        let mut map: std::collections::BTreeMap<String, ProcessRow> = set
            .iter()
            .map(|r| (r.process_id.clone(), stripped(r)))
            .collect();
        for pid in &delta.removed {
            map.remove(pid);
        }
        for r in &delta.changed {
            map.insert(r.process_id.clone(), r.clone());
        }
        map.into_values().collect()
    }

    #[test]
    fn a_caller_holding_a_kept_set_gets_only_what_changed() {
        let deltas = Deltas::default();
        let first = vec![
            row("b", ProcessState::Active, Some(100)),
            row("a", ProcessState::Active, Some(100)),
        ];
        let Answer::Full { digest: d1, rows } = deltas.answer(first.clone(), None) else {
            panic!("no set held: the whole set");
        };
        assert_eq!(rows[0].process_id, "a", "sorted by processId");
        assert_eq!(
            rows[0].rooms,
            Some(3),
            "the whole set keeps rooms and clients"
        );
        let second = vec![
            row("a", ProcessState::Draining, None),
            row("c", ProcessState::Active, Some(100)),
        ];
        let Answer::Delta {
            digest: d2,
            since,
            delta,
        } = deltas.answer(second.clone(), Some(d1))
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
        let mut expected: Vec<ProcessRow> = second.iter().map(stripped).collect();
        expected.sort_by(|a, b| a.process_id.cmp(&b.process_id));
        assert_eq!(apply(&rows, &delta), expected);
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
        assert_eq!(digest(&[busy]), digest(std::slice::from_ref(&quiet)));
        let mut heavier = quiet.clone();
        heavier.weight = Some(200);
        assert_ne!(
            digest(std::slice::from_ref(&heavier)),
            digest(std::slice::from_ref(&quiet))
        );
        assert_eq!(
            diff(&[quiet], &[heavier.clone()]).changed,
            [stripped(&heavier)]
        );
    }

    #[test]
    fn an_unknown_or_evicted_set_gets_the_whole_set() {
        let deltas = Deltas::default();
        let Answer::Full { digest: first, .. } =
            deltas.answer(vec![row("a", ProcessState::Active, Some(1))], None)
        else {
            panic!("first answer");
        };
        assert!(matches!(
            deltas.answer(vec![], Some(12345)),
            Answer::Full { .. }
        ));
        for i in 0..KEPT as u32 {
            deltas.answer(vec![row("a", ProcessState::Active, Some(i + 2))], None);
        }
        assert!(
            matches!(deltas.answer(vec![], Some(first)), Answer::Full { .. }),
            "only the newest {KEPT} sets are kept"
        );
    }

    #[test]
    fn the_same_set_gives_an_empty_delta() {
        let deltas = Deltas::default();
        let set = vec![row("a", ProcessState::Active, Some(1))];
        let Answer::Full { digest, .. } = deltas.answer(set.clone(), None) else {
            panic!("first answer");
        };
        let Answer::Delta {
            delta,
            digest: again,
            ..
        } = deltas.answer(set, Some(digest))
        else {
            panic!("kept");
        };
        assert_eq!(again, digest);
        assert_eq!(delta, ProcessesDelta::default());
    }
}
