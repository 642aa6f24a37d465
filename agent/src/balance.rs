//! Pure: how matchmaking requests are spread over the active processes.
//!
//! Any process may answer matchmaking; the one that does reserves the seat and relays over
//! Redis, so its load matters (Colyseus itself places a new room on the process with the
//! fewest rooms, 0.16 `selectProcessIdToCreateRoom`, whoever answered). The all-processes
//! cluster's endpoint weights follow the load each process reports in the `roomcount` hash
//! (`"{rooms},{ccu}"`), so Envoy's weighted round robin favours the least loaded:
//!
//! `weight = 1 + round(9 * (max - load) / max)`, in `1..=10`, `max` = the highest load.
//!
//! An idle process gets 10, the busiest 1 (never 0: it still takes some requests, and its
//! load may be stale). A process with no `roomcount` entry gets 1 too: its load is unknown,
//! and favouring it would hand the largest share of matchmaking to any registration that
//! never reports (a poisoned one, issue 11). A real new process loses little: Colyseus
//! places new rooms by its own room counts, whoever answered, and it reports once it has a
//! room. When no process reports, it is plain round robin.
//! When every load is equal, no weights are set at all (plain round robin), so a steady
//! fleet does not rewrite Envoy's config. Weights have only ten steps, so small changes of
//! load do not rewrite it either.

use std::collections::BTreeMap;

use routing::ProcessId;

/// What the all-processes cluster's weights follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "daemon", derive(clap::ValueEnum))]
pub enum Balance {
    /// Plain round robin.
    Even,
    /// Rooms per process (what Colyseus balances room creation on).
    #[default]
    Rooms,
    /// Connected clients per process (Colyseus 0.15.11+; older versions report rooms only,
    /// counted as 0 clients).
    Ccu,
}

/// Endpoint weight per process of the all-processes cluster; a process without an entry
/// has [`DEFAULT_WEIGHT`]. Empty: round robin.
pub type Weights = BTreeMap<ProcessId, u32>;

/// Envoy's endpoint weight when none is written.
pub const DEFAULT_WEIGHT: u32 = 1;

/// Highest weight (an idle process).
pub const MAX_WEIGHT: u32 = 10;

/// Load one process reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Load {
    pub rooms: u64,
    /// `None`: the version reports rooms only (0.14).
    pub ccu: Option<u64>,
}

/// A `roomcount` value: `"{rooms},{ccu}"` (0.15.11+) or a bare room count (0.14).
pub fn parse_roomcount(value: &str) -> Option<Load> {
    match value.split_once(',') {
        Some((rooms, ccu)) => Some(Load {
            rooms: rooms.trim().parse().ok()?,
            ccu: ccu.trim().parse().ok(),
        }),
        None => Some(Load {
            rooms: value.trim().parse().ok()?,
            ccu: None,
        }),
    }
}

/// Weights of the `active` processes under `policy`, from the reported `loads`.
pub fn weights<'a>(
    policy: Balance,
    loads: &BTreeMap<ProcessId, Load>,
    active: impl IntoIterator<Item = &'a ProcessId>,
) -> Weights {
    if policy == Balance::Even {
        return Weights::new();
    }
    // `None`: no roomcount entry. A 0.14 entry has no CCU: it counts as 0 clients.
    let metric = |pid: &ProcessId| {
        let load = loads.get(pid)?;
        Some(match policy {
            Balance::Even | Balance::Rooms => load.rooms,
            Balance::Ccu => load.ccu.unwrap_or(0),
        })
    };
    let values: Vec<(&ProcessId, Option<u64>)> =
        active.into_iter().map(|p| (p, metric(p))).collect();
    let max = values.iter().filter_map(|(_, v)| *v).max();
    let Some(max) = max else {
        return Weights::new();
    };
    if values.iter().all(|(_, v)| *v == Some(max)) {
        return Weights::new();
    }
    let steps = u128::from(MAX_WEIGHT - 1);
    values
        .into_iter()
        .map(|(pid, v)| {
            let Some(v) = v else {
                return (pid.clone(), DEFAULT_WEIGHT);
            };
            if max == 0 {
                return (pid.clone(), MAX_WEIGHT);
            }
            let free = u128::from(max - v);
            let max = u128::from(max);
            // Rounded to the nearest step, in integers (loads may be large).
            let w = 1 + (2 * steps * free + max) / (2 * max);
            (pid.clone(), u32::try_from(w).unwrap_or(MAX_WEIGHT))
        })
        .collect()
}

/// Reads every `roomcount` field it can; the others are skipped (their processes count as
/// idle) and returned for the caller to report.
pub fn loads_from_roomcount(
    fields: impl IntoIterator<Item = (String, String)>,
) -> (BTreeMap<ProcessId, Load>, Vec<String>) {
    let (mut loads, mut bad) = (BTreeMap::new(), Vec::new());
    for (field, value) in fields {
        match (ProcessId::parse(&field), parse_roomcount(&value)) {
            (Ok(pid), Some(load)) => {
                loads.insert(pid, load);
            }
            _ => bad.push(field),
        }
    }
    (loads, bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pid(s: &str) -> ProcessId {
        ProcessId::parse(s).unwrap()
    }

    fn loads(entries: &[(&str, u64, Option<u64>)]) -> BTreeMap<ProcessId, Load> {
        entries
            .iter()
            .map(|(p, rooms, ccu)| {
                (
                    pid(p),
                    Load {
                        rooms: *rooms,
                        ccu: *ccu,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn parses_both_roomcount_formats() {
        assert_eq!(
            parse_roomcount("3,12"),
            Some(Load {
                rooms: 3,
                ccu: Some(12)
            })
        );
        assert_eq!(
            parse_roomcount("7"),
            Some(Load {
                rooms: 7,
                ccu: None
            })
        );
        assert_eq!(parse_roomcount("x"), None);
        assert_eq!(parse_roomcount("-1,2"), None);
    }

    #[test]
    fn least_loaded_weighs_most() {
        let l = loads(&[("a", 0, Some(0)), ("b", 5, Some(40)), ("c", 10, Some(10))]);
        let active = [pid("a"), pid("b"), pid("c")];
        let w = weights(Balance::Rooms, &l, &active);
        assert_eq!(w.values().copied().collect::<Vec<_>>(), [10, 6, 1], "{w:?}");
        let w = weights(Balance::Ccu, &l, &active);
        assert_eq!(w.values().copied().collect::<Vec<_>>(), [10, 1, 8], "{w:?}");
    }

    #[test]
    fn equal_or_no_load_and_even_mean_round_robin() {
        let active = [pid("a"), pid("b")];
        let equal = loads(&[("a", 4, Some(9)), ("b", 4, Some(9))]);
        assert!(weights(Balance::Rooms, &equal, &active).is_empty());
        assert!(weights(Balance::Rooms, &BTreeMap::new(), &active).is_empty());
        let unequal = loads(&[("a", 1, None), ("b", 4, None)]);
        assert!(weights(Balance::Even, &unequal, &active).is_empty());
        // 0.14 reports no CCU: every process counts as idle.
        assert!(weights(Balance::Ccu, &unequal, &active).is_empty());
        assert!(weights(Balance::Rooms, &unequal, []).is_empty());
    }

    #[test]
    fn unreported_processes_weigh_least_and_others_are_ignored() {
        let l = loads(&[("a", 8, None), ("b", 0, None), ("gone", 100, None)]);
        let w = weights(Balance::Rooms, &l, &[pid("a"), pid("b"), pid("new")]);
        assert_eq!(w.get(&pid("a")), Some(&1));
        assert_eq!(w.get(&pid("b")), Some(&MAX_WEIGHT));
        assert_eq!(w.get(&pid("new")), Some(&DEFAULT_WEIGHT));
        assert!(!w.contains_key(&pid("gone")));
        // All idle but one unreported: the idle ones are preferred.
        let idle = loads(&[("a", 0, None)]);
        let w = weights(Balance::Rooms, &idle, &[pid("a"), pid("new")]);
        assert_eq!(w.get(&pid("a")), Some(&MAX_WEIGHT));
        assert_eq!(w.get(&pid("new")), Some(&DEFAULT_WEIGHT));
    }

    #[test]
    fn small_changes_do_not_change_weights_huge_loads_do_not_overflow() {
        let active = [pid("a"), pid("b")];
        let w1 = weights(
            Balance::Rooms,
            &loads(&[("a", 100, None), ("b", 40, None)]),
            &active,
        );
        let w2 = weights(
            Balance::Rooms,
            &loads(&[("a", 100, None), ("b", 42, None)]),
            &active,
        );
        assert_eq!(w1, w2);
        let w = weights(
            Balance::Rooms,
            &loads(&[("a", u64::MAX, None), ("b", 0, None)]),
            &active,
        );
        assert_eq!(w.values().copied().collect::<Vec<_>>(), [1, 10]);
    }

    #[test]
    fn bad_roomcount_fields_are_reported_not_fatal() {
        let (l, bad) = loads_from_roomcount([
            ("a".to_owned(), "2,3".to_owned()),
            ("b c".to_owned(), "1".to_owned()),
            ("d".to_owned(), "lots".to_owned()),
        ]);
        assert_eq!(l.len(), 1);
        assert_eq!(bad, ["b c", "d"]);
    }
}
