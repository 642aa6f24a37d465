//! Routable exactly when the asking Envoy has it: room lookups and `/processes` answered
//! with what the Envoy that asks (its node id in [`routing::wire::NODE_HEADER`]) has ACKed
//! over xDS from this agent.
//!
//! - A room lookup whose process cluster that Envoy has not ACKed waits for the ACK, at most
//!   the lookup bound; at the bound it is answered 503 [`routing::wire::NotRoutableYet`]
//!   instead of naming a cluster Envoy would answer with a 503 of its own.
//! - `/processes` leaves out the processes whose cluster that Envoy has not ACKed, and its
//!   version then differs from the unfiltered one ([`view_version`]), so the long-poll of a
//!   worker that got the filtered set is answered again once the ACK makes one routable.
//! - An Envoy that does not stream from this agent (the file sink, another agent), or a
//!   call without a node id, is answered as before, the same for everyone.
//!
//! - Shards of the all-processes cluster (`sync --all-shards`) are not gated: a row is shown
//!   once its process cluster is ACKed, and the filter weighs the row's shard with it,
//!   while the shard's `ClusterLoadAssignment` (sent with it) may be ACKed a moment later.
//!   A shard that already has hosts still routes meanwhile; only a shard going from no host
//!   to one can answer 503 for that moment (README, "Large fleets").
//!
//! The decisions are pure (the ACKs are passed in as a predicate); [`crate::status`] waits
//! and [`crate::sinks::xds::clients`] knows the ACKs.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use routing::wire::ProcessRow;
use serde::{Deserialize, Serialize};

use crate::status::rows::Rows;

/// What an Envoy has ACKed: `None` when it does not stream xDS from this agent (or did not
/// say who it is), else whether it holds a cluster.
pub type Acked<'a> = Option<&'a dyn Fn(&str) -> bool>;

/// What a room lookup naming `cluster` does for the asking Envoy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// The Envoy does not stream from this agent: answered as for anyone.
    Open,
    /// The Envoy has ACKed the cluster: answered at once.
    Acked,
    /// The Envoy streams from this agent and lacks the cluster: wait for its ACK.
    Wait,
}

pub fn lookup_gate(acked: Acked<'_>, cluster: &str) -> Gate {
    match acked {
        None => Gate::Open,
        Some(has) if has(cluster) => Gate::Acked,
        Some(_) => Gate::Wait,
    }
}

/// Whether `row` is left out of the asking Envoy's `/processes`: a routable process whose
/// cluster it has not ACKed (dead rows are shown as they are: nothing routes to them).
pub fn withheld(row: &ProcessRow, acked: Acked<'_>) -> bool {
    acked.is_some_and(|has| row.state.is_routable() && !has(&row.cluster))
}

/// The processIds of `rows` left out of the asking Envoy's `/processes`, in order. A walk
/// of every row, but with nothing copied (the rows are shared by every answer).
pub fn withheld_of(rows: &Rows, acked: Acked<'_>) -> Vec<String> {
    if acked.is_none() {
        return Vec::new();
    }
    rows.values()
        .filter(|row| withheld(row, acked))
        .map(|row| row.process_id.clone())
        .collect()
}

/// The version of `/processes` for an Envoy from which `withheld` (sorted processIds) are
/// left out: the advertised `version` when nothing is, else a hash of both with the top bit
/// set. Advertised versions are microseconds since 1970 (below 2^52), so the two never
/// meet; and the same set gives the same version, so a held poll is not answered for
/// nothing.
pub fn view_version(version: u64, withheld: &[String]) -> u64 {
    if withheld.is_empty() {
        return version;
    }
    // FNV-1a: stable across builds, unlike std's hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    eat(&version.to_le_bytes());
    for id in withheld {
        eat(id.as_bytes());
        eat(&[0]);
    }
    h | (1 << 63)
}

/// How a lookup's wait for an ACK ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitOutcome {
    /// The Envoy ACKed the cluster.
    Acked,
    /// The Envoy stopped streaming from this agent meanwhile: answered as for anyone.
    Left,
    /// The bound passed: answered 503 `not_acked`.
    Timeout,
}

/// What the gate did, for `/metrics` and `colyseus-envoy status`.
#[derive(Debug, Default)]
pub struct GateMetrics {
    acked: AtomicU64,
    left: AtomicU64,
    timeout: AtomicU64,
    wait_us_sum: AtomicU64,
    wait_us_max: AtomicU64,
    /// Rows left out of `/processes` answers, summed over answers.
    withheld_rows: AtomicU64,
}

/// [`GateMetrics`] as `/xds/clients` carries it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GateView {
    /// Room lookups that waited for the asking Envoy's ACK.
    pub lookups_waited: u64,
    /// Of those, answered 503 `not_acked` at the bound.
    pub lookups_timed_out: u64,
    pub wait_mean_ms: Option<f64>,
    pub wait_max_ms: f64,
    /// Rows left out of `/processes` answers (summed over answers).
    pub processes_withheld: u64,
}

impl GateMetrics {
    pub fn record(&self, outcome: WaitOutcome, waited: Duration) {
        let counter = match outcome {
            WaitOutcome::Acked => &self.acked,
            WaitOutcome::Left => &self.left,
            WaitOutcome::Timeout => &self.timeout,
        };
        counter.fetch_add(1, Relaxed);
        let us = u64::try_from(waited.as_micros()).unwrap_or(u64::MAX);
        self.wait_us_sum.fetch_add(us, Relaxed);
        self.wait_us_max.fetch_max(us, Relaxed);
    }

    pub fn withheld(&self, rows: usize) {
        self.withheld_rows.fetch_add(rows as u64, Relaxed);
    }

    pub fn view(&self) -> GateView {
        let waited =
            self.acked.load(Relaxed) + self.left.load(Relaxed) + self.timeout.load(Relaxed);
        let sum_ms = self.wait_us_sum.load(Relaxed) as f64 / 1e3;
        GateView {
            lookups_waited: waited,
            lookups_timed_out: self.timeout.load(Relaxed),
            wait_mean_ms: (waited > 0).then(|| sum_ms / waited as f64),
            wait_max_ms: self.wait_us_max.load(Relaxed) as f64 / 1e3,
            processes_withheld: self.withheld_rows.load(Relaxed),
        }
    }

    /// Prometheus text for `/metrics`.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write;
        let _ = writeln!(
            out,
            "# HELP colyseus_envoy_ack_waits_total Room lookups that waited for the asking Envoy's xDS ACK of the room's cluster, by how the wait ended (timeout: answered 503 not_acked).\n\
             # TYPE colyseus_envoy_ack_waits_total counter"
        );
        for (outcome, n) in [
            ("acked", &self.acked),
            ("left", &self.left),
            ("timeout", &self.timeout),
        ] {
            let _ = writeln!(
                out,
                "colyseus_envoy_ack_waits_total{{outcome=\"{outcome}\"}} {}",
                n.load(Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP colyseus_envoy_ack_wait_seconds_sum Time room lookups spent waiting for an Envoy's ACK.\n\
             # TYPE colyseus_envoy_ack_wait_seconds_sum counter\n\
             colyseus_envoy_ack_wait_seconds_sum {:.6}\n\
             # HELP colyseus_envoy_ack_wait_max_seconds Longest wait of a room lookup for an Envoy's ACK.\n\
             # TYPE colyseus_envoy_ack_wait_max_seconds gauge\n\
             colyseus_envoy_ack_wait_max_seconds {:.6}\n\
             # HELP colyseus_envoy_processes_withheld_total Processes left out of /processes answers because the asking Envoy had not ACKed their cluster.\n\
             # TYPE colyseus_envoy_processes_withheld_total counter\n\
             colyseus_envoy_processes_withheld_total {}",
            self.wait_us_sum.load(Relaxed) as f64 / 1e6,
            self.wait_us_max.load(Relaxed) as f64 / 1e6,
            self.withheld_rows.load(Relaxed)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use routing::wire::ProcessState;

    fn row(pid: &str, state: ProcessState) -> ProcessRow {
        ProcessRow {
            process_id: pid.into(),
            address: String::new(),
            cluster: format!("c-{pid}"),
            state,
            weight: None,
            rooms: None,
            ccu: None,
        }
    }

    #[test]
    fn a_lookup_waits_only_for_an_envoy_streaming_here_that_lacks_the_cluster() {
        let has = |c: &str| c == "c-a";
        assert_eq!(lookup_gate(None, "c-b"), Gate::Open);
        assert_eq!(lookup_gate(Some(&has), "c-a"), Gate::Acked);
        assert_eq!(lookup_gate(Some(&has), "c-b"), Gate::Wait);
    }

    #[test]
    fn processes_leave_out_what_the_envoy_lacks() {
        let rows: Rows = [
            row("a", ProcessState::Active),
            row("b", ProcessState::Active),
            row("c", ProcessState::Draining),
            row("d", ProcessState::Dead),
        ]
        .into_iter()
        .map(|r| (r.process_id.clone(), r))
        .collect();
        let has = |c: &str| c == "c-a";
        // Dead rows are shown as they are: nothing routes to them.
        assert_eq!(withheld_of(&rows, Some(&has)), ["b", "c"]);
        // Not streaming here: everything, as for anyone.
        assert!(withheld_of(&rows, None).is_empty());
    }

    #[test]
    fn a_filtered_set_has_its_own_stable_version() {
        let v = 1_764_600_000_000_000;
        assert_eq!(view_version(v, &[]), v);
        let b = view_version(v, &["b".into()]);
        assert_ne!(b, v);
        assert!(b >= 1 << 63);
        assert_eq!(b, view_version(v, &["b".into()]));
        assert_ne!(b, view_version(v + 1, &["b".into()]));
        assert_ne!(b, view_version(v, &["b".into(), "c".into()]));
        // Separators: ["ab"] and ["a", "b"] differ.
        assert_ne!(
            view_version(v, &["ab".into()]),
            view_version(v, &["a".into(), "b".into()])
        );
    }

    #[test]
    fn metrics_count_waits_by_outcome() {
        let m = GateMetrics::default();
        assert_eq!(m.view().wait_mean_ms, None);
        m.record(WaitOutcome::Acked, Duration::from_millis(10));
        m.record(WaitOutcome::Timeout, Duration::from_millis(300));
        m.withheld(2);
        let v = m.view();
        assert_eq!((v.lookups_waited, v.lookups_timed_out), (2, 1));
        assert_eq!(v.wait_mean_ms, Some(155.0));
        assert_eq!((v.wait_max_ms, v.processes_withheld), (300.0, 2));
        let mut out = String::new();
        m.render(&mut out);
        assert!(out.contains("colyseus_envoy_ack_waits_total{outcome=\"timeout\"} 1\n"));
        assert!(out.contains("colyseus_envoy_ack_wait_max_seconds 0.300000\n"));
        assert!(out.contains("colyseus_envoy_processes_withheld_total 2"));
    }
}
