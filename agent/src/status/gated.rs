//! [`Status`] answers for a named Envoy (see [`crate::ack_gate`]): room lookups that wait
//! for its ACK, and the `/processes` it may see, with the long-poll that wakes on its ACKs.

use std::time::{Duration, Instant};

use routing::wire::RoomLocation;

use super::{ProcessView, Status};
use crate::ack_gate::{self, Gate, WaitOutcome};

/// The answer to a room lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// Where the room connection goes (the asking Envoy has the cluster, or is not gated).
    Found(RoomLocation),
    /// No such room, or its process is not routable.
    Unknown,
    /// The room's process is routable but the asking Envoy had not ACKed its cluster when
    /// the bound passed.
    NotAcked(RoomLocation),
}

impl Status {
    /// [`Status::resolve`] for the Envoy `node`: a location whose cluster that Envoy (when it
    /// streams xDS from this agent) has not ACKed waits for the ACK; warming and ACK waits
    /// together take at most `--lookup-wait` (300 ms, below the filter's 500 ms timeout).
    pub async fn resolve_for(
        &self,
        room_id: &str,
        named: Option<&str>,
        node: Option<&str>,
    ) -> Resolved {
        let started = Instant::now();
        // Boxed: the nested read-through futures are otherwise too deep for rustc's layout.
        let Some(location) = Box::pin(self.resolve(room_id, named)).await else {
            return Resolved::Unknown;
        };
        let (Some(ads), Some(node)) = (self.xds.get(), node) else {
            return Resolved::Found(location);
        };
        let clients = &ads.clients;
        let gate = |c: &crate::sinks::xds::clients::Clients| {
            c.with_acked(node, |acked| {
                ack_gate::lookup_gate(acked, &location.cluster)
            })
        };
        if gate(clients) != Gate::Wait {
            return Resolved::Found(location);
        }
        let waiting = Instant::now();
        let bound = self.lookup_wait.saturating_sub(started.elapsed());
        let done = clients.wait_for(bound, |c| gate(c) != Gate::Wait).await;
        let outcome = match (done, gate(clients)) {
            (_, Gate::Acked) => WaitOutcome::Acked,
            (true, _) => WaitOutcome::Left,
            (false, _) => WaitOutcome::Timeout,
        };
        self.ack_gate.record(outcome, waiting.elapsed());
        tracing::debug!(node, cluster = %location.cluster, ?outcome, waited_ms = waiting.elapsed().as_secs_f64() * 1e3, "A room lookup waited for the Envoy's ACK.");
        match outcome {
            WaitOutcome::Timeout => Resolved::NotAcked(location),
            _ => Resolved::Found(location),
        }
    }

    /// `/processes` for the Envoy `node`, and its version: what [`Status::processes`] shows,
    /// less the processes whose cluster that Envoy (streaming from this agent) lacks.
    pub fn processes_for(&self, node: Option<&str>) -> (u64, Vec<ProcessView>) {
        // The version before the rows: a change in between is seen again on the next call.
        let version = self.advertised.version();
        let rows = self.processes();
        let (Some(ads), Some(node)) = (self.xds.get(), node) else {
            return (version, rows);
        };
        let (rows, withheld) = ads
            .clients
            .with_acked(node, |acked| ack_gate::visible(rows, acked));
        if !withheld.is_empty() {
            self.ack_gate.withheld(withheld.len());
        }
        (ack_gate::view_version(version, &withheld), rows)
    }

    /// The version [`Self::processes_for`] would answer now, without building the rows.
    fn version_for(&self, node: &str, ads: &crate::sinks::xds::server::Ads) -> u64 {
        let version = self.advertised.version();
        let Ok(rows) = self.processes.read() else {
            return version;
        };
        let mut withheld: Vec<String> = ads.clients.with_acked(node, |acked| {
            rows.iter()
                .filter(|r| !self.advertised.is_warming(&r.process_id))
                .filter(|r| ack_gate::withheld(r, acked))
                .map(|r| r.process_id.clone())
                .collect()
        });
        withheld.sort_unstable();
        ack_gate::view_version(version, &withheld)
    }

    /// Holds a `/processes?after=` call of `node` until its view's version is not `after`:
    /// a registry change, or an ACK of that Envoy (or its stream ending), at most `bound`.
    pub async fn wait_processes(&self, after: u64, node: Option<&str>, bound: Duration) {
        let (Some(ads), Some(node)) = (self.xds.get(), node) else {
            self.advertised.wait_change(after, bound).await;
            return;
        };
        let mut versions = self.advertised.subscribe();
        let mut acks = ads.clients.subscribe();
        let _ = tokio::time::timeout(bound, async {
            loop {
                if self.advertised.is_closed() || self.version_for(node, ads) != after {
                    return;
                }
                tokio::select! {
                    r = versions.changed() => if r.is_err() { return },
                    r = acks.changed() => if r.is_err() { return },
                }
            }
        })
        .await;
    }
}
