//! The Envoys connected to this agent's xDS server: who they are and what they have ACKed.
//!
//! Streams report here; `/metrics` and the API read it. Knowing what an Envoy has ACKed is
//! what lets a room lookup from that Envoy wait until it can route to the cluster it names.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use tokio::sync::watch;

/// One connected stream (an Envoy normally holds one).
#[derive(Debug, Clone)]
pub struct Client {
    pub node_id: String,
    /// `delta` or `sotw`.
    pub protocol: &'static str,
    pub connected_at: SystemTime,
    /// Cluster name -> version this Envoy ACKed.
    pub acked: HashMap<String, String>,
    /// EDS cluster name -> version of its hosts (`ClusterLoadAssignment`) this Envoy ACKed.
    pub acked_endpoints: HashMap<String, String>,
    /// Hash of the snapshot whose every resource this Envoy has ACKed, if any.
    pub acked_snapshot: Option<String>,
    pub nacks: u64,
    pub last_nack: Option<String>,
    /// From a change being handed to the sink to this Envoy's ACK of it, last seen.
    pub last_ack_latency: Option<Duration>,
    /// Changes of `acked` so far: a waiter on this node's ACKs re-checks only when it moves.
    pub ack_seq: u64,
}

/// A change sent on a stream, awaiting its ACK or NACK.
#[derive(Debug, Clone)]
pub struct Pending {
    /// The resources' type (`snapshot::CLUSTER_TYPE` or `ENDPOINT_TYPE`).
    pub type_url: &'static str,
    /// name -> version sent (`None`: removed).
    pub changes: Vec<(String, Option<String>)>,
    /// The snapshot's hash and its creation, for the metrics.
    pub snapshot: String,
    pub created: Instant,
    /// The stream sends every subscribed resource in each response (state of the world).
    pub complete: bool,
}

/// Shared by every stream of one server.
#[derive(Debug)]
pub struct Clients {
    streams: Mutex<BTreeMap<u64, Client>>,
    next_id: AtomicU64,
    /// Bumped on every ACK, so waiters re-check.
    acks: watch::Sender<u64>,
    pub nacks_total: AtomicU64,
    pub acks_total: AtomicU64,
    /// Sum and count of change-to-ACK latencies (microseconds), for a mean.
    pub ack_latency_us_sum: AtomicU64,
    pub ack_latency_max_us: AtomicU64,
}

impl Default for Clients {
    fn default() -> Self {
        Self {
            streams: Mutex::default(),
            next_id: AtomicU64::new(1),
            acks: watch::channel(0).0,
            nacks_total: AtomicU64::new(0),
            acks_total: AtomicU64::new(0),
            ack_latency_us_sum: AtomicU64::new(0),
            ack_latency_max_us: AtomicU64::new(0),
        }
    }
}

/// What `agent status` and the API show per Envoy.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct ClientView {
    pub node_id: String,
    pub protocol: String,
    pub connected_unix_ms: u64,
    pub acked_clusters: usize,
    /// EDS clusters whose hosts the Envoy has ACKed.
    #[serde(default)]
    pub acked_endpoints: usize,
    pub acked_snapshot: Option<String>,
    pub nacks: u64,
    pub last_nack: Option<String>,
    pub last_ack_latency_ms: Option<f64>,
}

impl Clients {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Client>> {
        // A panic while holding the lock cannot leave the map inconsistent (plain inserts).
        self.streams
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A stream from `node_id` opened; returns its id for the other calls.
    pub fn connect(&self, node_id: &str, protocol: &'static str) -> u64 {
        let id = self.next_id.fetch_add(1, Relaxed);
        self.lock().insert(
            id,
            Client {
                node_id: node_id.to_owned(),
                protocol,
                connected_at: SystemTime::now(),
                acked: HashMap::new(),
                acked_endpoints: HashMap::new(),
                acked_snapshot: None,
                nacks: 0,
                last_nack: None,
                last_ack_latency: None,
                ack_seq: 0,
            },
        );
        id
    }

    pub fn disconnect(&self, id: u64) {
        self.lock().remove(&id);
        // Waiters on this node's ACKs stop waiting: it is answered as any Envoy now.
        self.acks.send_modify(|n| *n += 1);
    }

    /// A reconnecting Envoy said which versions of `type_url` it holds: count them as ACKed.
    pub fn assume_acked(&self, id: u64, type_url: &str, versions: &HashMap<String, String>) {
        if let Some(c) = self.lock().get_mut(&id) {
            c.acked_of(type_url).clone_from(versions);
            c.ack_seq += 1;
        }
        self.acks.send_modify(|n| *n += 1);
    }

    /// `pending` was ACKed. `whole_snapshot`: the snapshot this Envoy now holds every
    /// resource of (nothing else outstanding on its stream), or empty.
    pub fn ack(&self, id: u64, pending: &Pending, whole_snapshot: &str) {
        let latency = pending.created.elapsed();
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.acks_total.fetch_add(1, Relaxed);
        self.ack_latency_us_sum.fetch_add(us, Relaxed);
        self.ack_latency_max_us.fetch_max(us, Relaxed);
        if let Some(c) = self.lock().get_mut(&id) {
            let acked = c.acked_of(pending.type_url);
            if pending.complete {
                acked.clear();
            }
            for (name, version) in &pending.changes {
                match version {
                    Some(v) => acked.insert(name.clone(), v.clone()),
                    None => acked.remove(name),
                };
            }
            c.last_ack_latency = Some(latency);
            c.ack_seq += 1;
            if !whole_snapshot.is_empty() {
                c.acked_snapshot = Some(whole_snapshot.to_owned());
            }
        }
        self.acks.send_modify(|n| *n += 1);
    }

    pub fn nack(&self, id: u64, detail: &str) {
        self.nacks_total.fetch_add(1, Relaxed);
        if let Some(c) = self.lock().get_mut(&id) {
            c.nacks += 1;
            c.last_nack = Some(detail.to_owned());
        }
    }

    /// Whether some stream of `node_id` has ACKed `cluster` at `version`.
    pub fn has(&self, node_id: &str, cluster: &str, version: &str) -> bool {
        self.lock()
            .values()
            .any(|c| c.node_id == node_id && c.acked.get(cluster).is_some_and(|v| v == version))
    }

    /// Whether `node_id` streams from this agent at all.
    pub fn is_connected(&self, node_id: &str) -> bool {
        self.lock().values().any(|c| c.node_id == node_id)
    }

    /// Calls `f` with what `node_id` has ACKed (any of its streams), or `None` if it does
    /// not stream from this agent (see [`crate::ack_gate::Acked`]). The registry stays
    /// locked meanwhile: `f` must be quick.
    pub fn with_acked<R>(
        &self,
        node_id: &str,
        f: impl FnOnce(crate::ack_gate::Acked<'_>) -> R,
    ) -> R {
        let streams = self.lock();
        let mine: Vec<&Client> = streams.values().filter(|c| c.node_id == node_id).collect();
        if mine.is_empty() {
            return f(None);
        }
        let has = |cluster: &str| mine.iter().any(|c| c.acked.contains_key(cluster));
        f(Some(&has))
    }

    /// A number that moves whenever what `node_id` has ACKed may have changed (an ACK, a
    /// stream of it opening or ending), so a waiter of that node skips other nodes' ACKs.
    pub fn ack_seq(&self, node_id: &str) -> (usize, u64) {
        let streams = self.lock();
        let mine = streams.values().filter(|c| c.node_id == node_id);
        mine.fold((0, 0), |(n, seq), c| (n + 1, seq + c.ack_seq))
    }

    /// Changes on every ACK and every stream's end (for waits that select on more).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.acks.subscribe()
    }

    /// Waits until `check` holds (re-checked on every ACK), at most `timeout`. Returns
    /// whether it held.
    pub async fn wait_for(&self, timeout: Duration, check: impl Fn(&Self) -> bool) -> bool {
        let mut rx = self.acks.subscribe();
        let wait = async {
            loop {
                if check(self) {
                    return true;
                }
                if rx.changed().await.is_err() {
                    return false;
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.unwrap_or(false)
    }

    pub fn views(&self) -> Vec<ClientView> {
        self.lock()
            .values()
            .map(|c| ClientView {
                node_id: c.node_id.clone(),
                protocol: c.protocol.to_owned(),
                connected_unix_ms: c
                    .connected_at
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                acked_clusters: c.acked.len(),
                acked_endpoints: c.acked_endpoints.len(),
                acked_snapshot: c.acked_snapshot.clone(),
                nacks: c.nacks,
                last_nack: c.last_nack.clone(),
                last_ack_latency_ms: c.last_ack_latency.map(|d| d.as_secs_f64() * 1e3),
            })
            .collect()
    }

    /// Prometheus text for `/metrics`.
    pub fn render_metrics(&self, out: &mut String, current_snapshot: &str) {
        use std::fmt::Write;
        let views = self.views();
        let _ = writeln!(
            out,
            "# HELP colyseus_envoy_xds_clients Envoys streaming xDS from this agent.\n\
             # TYPE colyseus_envoy_xds_clients gauge\ncolyseus_envoy_xds_clients {}",
            views.len()
        );
        let _ = writeln!(
            out,
            "# HELP colyseus_envoy_xds_client_current Whether the Envoy has ACKed the current snapshot (label: its node id).\n\
             # TYPE colyseus_envoy_xds_client_current gauge"
        );
        for v in &views {
            let current = v.acked_snapshot.as_deref() == Some(current_snapshot);
            let _ = writeln!(
                out,
                "colyseus_envoy_xds_client_current{{node=\"{}\",protocol=\"{}\",acked_version=\"{}\"}} {}",
                escape(&v.node_id),
                v.protocol,
                v.acked_snapshot.as_deref().unwrap_or(""),
                u8::from(current)
            );
        }
        let per_node =
            |out: &mut String, name: &str, help: &str, value: fn(&ClientView) -> usize| {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
                for v in &views {
                    let _ = writeln!(
                        out,
                        "{name}{{node=\"{}\"}} {}",
                        escape(&v.node_id),
                        value(v)
                    );
                }
            };
        per_node(
            out,
            "colyseus_envoy_xds_client_acked_clusters",
            "Clusters the Envoy has ACKed.",
            |v| v.acked_clusters,
        );
        per_node(
            out,
            "colyseus_envoy_xds_client_acked_endpoints",
            "EDS clusters whose hosts the Envoy has ACKed.",
            |v| v.acked_endpoints,
        );
        let counter = |out: &mut String, name: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        };
        counter(
            out,
            "colyseus_envoy_xds_nacks_total",
            "Responses an Envoy refused (logged with its error detail).",
            self.nacks_total.load(Relaxed),
        );
        counter(
            out,
            "colyseus_envoy_xds_acks_total",
            "Responses an Envoy ACKed.",
            self.acks_total.load(Relaxed),
        );
        counter(
            out,
            "colyseus_envoy_xds_ack_latency_microseconds_sum",
            "Sum of change-to-ACK times (divide by acks_total for the mean).",
            self.ack_latency_us_sum.load(Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP colyseus_envoy_xds_ack_latency_max_seconds Longest change-to-ACK time seen.\n\
             # TYPE colyseus_envoy_xds_ack_latency_max_seconds gauge\n\
             colyseus_envoy_xds_ack_latency_max_seconds {:.6}",
            self.ack_latency_max_us.load(Relaxed) as f64 / 1e6
        );
    }
}

impl Client {
    /// What this Envoy ACKed of `type_url`.
    fn acked_of(&mut self, type_url: &str) -> &mut HashMap<String, String> {
        if type_url == super::snapshot::ENDPOINT_TYPE {
            &mut self.acked_endpoints
        } else {
            &mut self.acked
        }
    }
}

/// A Prometheus label value: backslash, quote and newline escaped.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn acks_and_waits() {
        let clients = Clients::default();
        let id = clients.connect("edge-1", "delta");
        assert!(!clients.has("edge-1", "c", "1"));
        let pending = Pending {
            type_url: super::super::snapshot::CLUSTER_TYPE,
            changes: vec![("c".into(), Some("1".into()))],
            snapshot: "s1".into(),
            created: Instant::now(),
            complete: false,
        };
        assert!(
            !clients
                .wait_for(Duration::from_millis(20), |c| c.has("edge-1", "c", "1"))
                .await
        );
        let before = clients.ack_seq("edge-1");
        clients.ack(id, &pending, "s1");
        assert_ne!(clients.ack_seq("edge-1"), before);
        assert_eq!(clients.ack_seq("edge-2"), (0, 0));
        assert!(clients.has("edge-1", "c", "1"));
        assert!(!clients.has("edge-2", "c", "1"));
        assert!(
            clients
                .wait_for(Duration::from_millis(20), |c| c.has("edge-1", "c", "1"))
                .await
        );
        clients.nack(id, "bad cluster");
        let v = &clients.views()[0];
        assert_eq!((v.nacks, v.acked_clusters), (1, 1));
        assert_eq!(v.acked_snapshot.as_deref(), Some("s1"));
        let mut m = String::new();
        clients.render_metrics(&mut m, "s1");
        assert!(m.contains("colyseus_envoy_xds_client_current{node=\"edge-1\",protocol=\"delta\",acked_version=\"s1\"} 1"), "{m}");
        assert!(m.contains("colyseus_envoy_xds_nacks_total 1"));
        assert!(clients.with_acked("edge-1", |a| a.is_some_and(|has| has("c") && !has("d"))));
        assert!(clients.with_acked("edge-2", |a| a.is_none()));
        let rx = clients.subscribe();
        clients.disconnect(id);
        assert!(
            rx.has_changed().unwrap(),
            "an ended stream wakes the waiters"
        );
        assert!(!clients.is_connected("edge-1"));
        assert!(clients.with_acked("edge-1", |a| a.is_none()));
    }

    #[test]
    fn eds_acks_are_kept_apart_from_the_clusters_of_the_same_name() {
        use crate::sinks::xds::snapshot::{CLUSTER_TYPE, ENDPOINT_TYPE};
        let clients = Clients::default();
        let id = clients.connect("edge-1", "delta");
        let pending = |type_url, version: &str, snapshot: &str| Pending {
            type_url,
            changes: vec![("colyseus-all".into(), Some(version.into()))],
            snapshot: snapshot.into(),
            created: Instant::now(),
            complete: false,
        };
        clients.ack(id, &pending(CLUSTER_TYPE, "c1", "s1"), "");
        // Another response is outstanding: not current yet.
        assert_eq!(clients.views()[0].acked_snapshot, None);
        clients.ack(id, &pending(ENDPOINT_TYPE, "e1", "s1"), "s1");
        assert!(clients.has("edge-1", "colyseus-all", "c1"));
        assert!(!clients.has("edge-1", "colyseus-all", "e1"));
        let v = &clients.views()[0];
        assert_eq!((v.acked_clusters, v.acked_endpoints), (1, 1));
        assert_eq!(v.acked_snapshot.as_deref(), Some("s1"));
        let initial = [("colyseus-all".to_owned(), "e0".to_owned())].into();
        clients.assume_acked(id, ENDPOINT_TYPE, &initial);
        assert!(clients.has("edge-1", "colyseus-all", "c1"));
    }
}
