//! [`Status`] answers for a named Envoy (see [`crate::ack_gate`]): room lookups that wait
//! for its ACK, and the `/processes` it may see, with the long-poll that wakes on its ACKs.

use std::time::{Duration, Instant};

use routing::wire::RoomLocation;

use super::{Rows, Status};
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

    /// `/processes` for the Envoy `node`, and its version: the advertised rows, less the
    /// processes whose cluster that Envoy (streaming from this agent) lacks. Without rooms
    /// and clients (see [`Status::rows_with_rooms`]).
    pub fn processes_for(&self, node: Option<&str>) -> (u64, Rows) {
        let (version, mut rows) = self.advertised.current();
        let (Some(ads), Some(node)) = (self.xds.get(), node) else {
            return (version, rows);
        };
        let withheld = ads
            .clients
            .with_acked(node, |acked| ack_gate::withheld_of(&rows, acked));
        if !withheld.is_empty() {
            self.ack_gate.withheld(withheld.len());
            for pid in &withheld {
                rows.remove(pid);
            }
        }
        (ack_gate::view_version(version, &withheld), rows)
    }

    /// The version [`Self::processes_for`] would answer now, without copying the rows.
    fn version_for(&self, node: &str, ads: &crate::sinks::xds::server::Ads) -> u64 {
        let (version, rows) = self.advertised.current();
        let withheld = ads
            .clients
            .with_acked(node, |acked| ack_gate::withheld_of(&rows, acked));
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
            // Every ACK of every Envoy wakes this; the rows are looked at again only when
            // the registry or this Envoy's ACKs moved.
            let mut seen = None;
            loop {
                let now = (self.advertised.version(), ads.clients.ack_seq(node));
                if self.advertised.is_closed()
                    || (seen != Some(now) && self.version_for(node, ads) != after)
                {
                    return;
                }
                seen = Some(now);
                tokio::select! {
                    r = versions.changed() => if r.is_err() { return },
                    r = acks.changed() => if r.is_err() { return },
                }
            }
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::balance::Weights;
    use crate::model::Registry;
    use crate::sinks::xds::clients::{Clients, Pending};
    use crate::sinks::xds::server::Ads;
    use crate::sinks::xds::snapshot::Snapshot;

    fn ack(clients: &Clients, id: u64, cluster: &str) {
        let pending = Pending {
            type_url: crate::sinks::xds::snapshot::CLUSTER_TYPE,
            changes: vec![(cluster.to_owned(), Some("1".to_owned()))],
            snapshot: "s".into(),
            created: Instant::now(),
            complete: false,
        };
        clients.ack(id, &pending, "s");
    }

    fn ids(rows: &Rows) -> Vec<&str> {
        rows.keys().map(String::as_str).collect()
    }

    /// No sockets: the status and the Envoys' registry as the API and the streams use them.
    #[tokio::test]
    async fn a_named_envoy_sees_and_waits_for_its_own_acks() {
        let status = Status::new(routing::ClusterNames::default())
            .with_lookup_wait(Duration::from_millis(300));
        let (_snapshots, rx) = tokio::sync::watch::channel(Arc::new(Snapshot::empty()));
        let clients = Arc::new(Clients::default());
        status.set_xds(Ads {
            snapshots: rx,
            clients: clients.clone(),
        });
        let (registry, _) = Registry::default().from_members(
            ["a/127.0.0.1:1", "b/127.0.0.1:2"],
            2567,
            Instant::now(),
        );
        status.set_registry(&registry, &Weights::default());
        let id = clients.connect("edge-1", "delta");
        ack(&clients, id, "colyseus-process-a");

        let (v_all, rows) = status.processes_for(None);
        assert_eq!(ids(&rows), ["a", "b"]);
        // An Envoy streaming elsewhere sees what anyone sees.
        assert_eq!(status.processes_for(Some("edge-9")), (v_all, rows));
        let (v1, rows) = status.processes_for(Some("edge-1"));
        assert_eq!(ids(&rows), ["a"]);
        assert_ne!(v1, v_all);
        assert_eq!(status.version_for("edge-1", status.xds.get().unwrap()), v1);

        let found = |r: &Resolved| matches!(r, Resolved::Found(l) if l.process_id == "b");
        assert!(found(&status.resolve_for("r", Some("b"), None).await));
        assert!(matches!(
            status.resolve_for("r", Some("b"), Some("edge-1")).await,
            Resolved::NotAcked(_)
        ));
        assert_eq!(status.ack_gate.view().lookups_timed_out, 1);

        // A held poll and a waiting lookup are answered by the ACK.
        let status = Arc::new(status);
        let poll = {
            let status = status.clone();
            tokio::spawn(async move {
                status
                    .wait_processes(v1, Some("edge-1"), Duration::from_secs(30))
                    .await;
            })
        };
        let lookup = {
            let status = status.clone();
            tokio::spawn(async move { status.resolve_for("r", Some("b"), Some("edge-1")).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!poll.is_finished());
        ack(&clients, id, "colyseus-process-b");
        tokio::time::timeout(Duration::from_secs(5), poll)
            .await
            .unwrap()
            .unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(5), lookup)
            .await
            .unwrap()
            .unwrap();
        assert!(found(&answer), "{answer:?}");
        assert_eq!(status.processes_for(Some("edge-1")).0, v_all);
    }
}
