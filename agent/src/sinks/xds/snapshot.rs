//! What the xDS server serves, and what each stream has been sent. Pure.
//!
//! A [`Snapshot`] is immutable: the sink builds a new one per change and the streams diff
//! against it. Every resource is marshalled once (an `Any`), and its version is a hash of
//! those bytes, so two agents reading the same Redis serve the same versions and an Envoy
//! that fails over from one to the other is sent nothing it already has (the reference is
//! go-control-plane's snapshot cache; deterministic versions avoid contour#6743's drift).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use envoy_types::pb::google::protobuf::Any;

use crate::sinks::envoy_files::fnv1a;

/// Clusters: every process's, and the all-processes cluster.
pub const CLUSTER_TYPE: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
/// The hosts of the EDS clusters (the all-processes cluster), by cluster name.
pub const ENDPOINT_TYPE: &str =
    "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";

/// One marshalled resource.
#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    pub name: String,
    /// Hash of `any.value`, hex.
    pub version: String,
    pub any: Any,
}

/// Resources of one type, by name.
pub type Resources = BTreeMap<String, Arc<Resource>>;

/// Every resource Envoy should have, at one moment.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub clusters: Resources,
    /// `ClusterLoadAssignment`s of the EDS clusters, named as their cluster.
    pub endpoints: Resources,
    /// Hash of every (type, name, version): what an up-to-date Envoy has ACKed.
    pub version: String,
    /// Hash of the clusters alone, and of the endpoints alone: the state-of-the-world
    /// `version_info` of each type.
    pub clusters_version: String,
    pub endpoints_version: String,
    /// When the change this snapshot carries was handed over (change-to-ACK latency).
    pub created: Instant,
    /// False for the placeholder before the agent's first Redis read: nothing is served
    /// from it (Envoy keeps what it has, or waits).
    pub ready: bool,
}

/// Hash of (name, version) pairs.
fn versions_hash(resources: &Resources) -> String {
    let mut all = Vec::with_capacity(resources.len() * 48);
    for (name, r) in resources {
        all.extend_from_slice(name.as_bytes());
        all.push(0);
        all.extend_from_slice(r.version.as_bytes());
        all.push(0);
    }
    format!("{:016x}", fnv1a(&all))
}

impl Snapshot {
    pub fn new(clusters: Resources, endpoints: Resources) -> Self {
        let clusters_version = versions_hash(&clusters);
        let endpoints_version = versions_hash(&endpoints);
        // No endpoints: the same version as before EDS existed (clusters alone).
        let version = if endpoints.is_empty() {
            clusters_version.clone()
        } else {
            let both = format!("{clusters_version}\0{endpoints_version}");
            format!("{:016x}", fnv1a(both.as_bytes()))
        };
        Self {
            clusters,
            endpoints,
            version,
            clusters_version,
            endpoints_version,
            created: Instant::now(),
            ready: true,
        }
    }

    /// The placeholder served before the first publish: not ready.
    pub fn empty() -> Self {
        Self {
            ready: false,
            ..Self::new(BTreeMap::new(), BTreeMap::new())
        }
    }

    /// The resources of `type_url`, if this server serves that type.
    pub fn of_type(&self, type_url: &str) -> Option<&Resources> {
        match type_url {
            CLUSTER_TYPE => Some(&self.clusters),
            ENDPOINT_TYPE => Some(&self.endpoints),
            _ => None,
        }
    }

    /// The state-of-the-world `version_info` of `type_url`.
    pub fn type_version(&self, type_url: &str) -> &str {
        if type_url == ENDPOINT_TYPE {
            &self.endpoints_version
        } else {
            &self.clusters_version
        }
    }
}

/// What one delta stream subscribed to, for one resource type, and what its Envoy has (as
/// far as this stream knows: its `initial_resource_versions`, then everything sent on it).
#[derive(Debug, Default, Clone)]
pub struct DeltaSubscription {
    /// Subscribed to every resource (CDS's usual wildcard; EDS names its clusters).
    pub wildcard: bool,
    /// Names subscribed explicitly.
    pub names: BTreeSet<String>,
    /// name -> version the Envoy holds.
    pub known: HashMap<String, String>,
}

/// A delta response to send: changed resources and removed names.
#[derive(Debug, Default, PartialEq)]
pub struct DeltaChanges {
    pub resources: Vec<Arc<Resource>>,
    pub removed: Vec<String>,
}

impl DeltaChanges {
    pub fn is_empty(&self) -> bool {
        self.resources.is_empty() && self.removed.is_empty()
    }
}

impl DeltaSubscription {
    /// Applies a request's subscription fields. The first request of a stream with no names
    /// (or `*`) is a wildcard subscription, as Envoy's CDS sends it. A name subscribed
    /// again later is sent again: Envoy re-subscribes to an EDS cluster's hosts when it
    /// re-creates the cluster, and waits for them before the cluster leaves warming.
    pub fn update(
        &mut self,
        first: bool,
        subscribe: &[String],
        unsubscribe: &[String],
        initial_versions: &HashMap<String, String>,
    ) {
        if first {
            self.wildcard = subscribe.is_empty();
            self.known.clone_from(initial_versions);
        }
        for name in subscribe {
            if name == "*" {
                self.wildcard = true;
            } else {
                self.names.insert(name.clone());
                if !first {
                    self.known.remove(name);
                }
            }
        }
        for name in unsubscribe {
            if name == "*" {
                self.wildcard = false;
            } else {
                self.names.remove(name);
            }
            // Envoy forgets what it unsubscribed from: nothing to remove later.
            self.known.remove(name);
        }
    }

    fn wants(&self, name: &str) -> bool {
        self.wildcard || self.names.contains(name)
    }

    /// What `resources` (this type's, of a snapshot) change for this Envoy. Does not record
    /// it as sent: see [`Self::sent`].
    pub fn diff(&self, resources: &Resources) -> DeltaChanges {
        let changed = resources
            .values()
            .filter(|r| self.wants(&r.name))
            .filter(|r| self.known.get(&r.name) != Some(&r.version))
            .cloned()
            .collect();
        let mut removed: Vec<String> = self
            .known
            .keys()
            .filter(|n| !resources.contains_key(*n) || !self.wants(n))
            .cloned()
            .collect();
        removed.sort();
        DeltaChanges {
            resources: changed,
            removed,
        }
    }

    /// Records `changes` as sent: they are not sent again, whether Envoy ACKs them or not
    /// (a NACKed resource is not retried until it changes).
    pub fn sent(&mut self, changes: &DeltaChanges) {
        for r in &changes.resources {
            self.known.insert(r.name.clone(), r.version.clone());
        }
        for n in &changes.removed {
            self.known.remove(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::xds::build::tests::snapshot;

    #[test]
    fn delta_sends_only_what_changed_and_what_went() {
        let mut sub = DeltaSubscription::default();
        sub.update(true, &[], &[], &HashMap::new());
        let one = snapshot(&["a/127.0.0.1:1"]);
        let first = sub.diff(&one.clusters);
        assert_eq!(first.resources.len(), 2);
        assert!(first.removed.is_empty());
        sub.sent(&first);
        assert!(sub.diff(&one.clusters).is_empty());
        let two = snapshot(&["b/127.0.0.1:2"]);
        let next = sub.diff(&two.clusters);
        let names: Vec<&str> = next.resources.iter().map(|r| r.name.as_str()).collect();
        // The all cluster is EDS: its hosts changed, the cluster did not.
        assert_eq!(names, ["colyseus-process-b"]);
        assert_eq!(next.removed, ["colyseus-process-a"]);
    }

    #[test]
    fn a_reconnecting_envoy_gets_only_what_it_lacks() {
        let snap = snapshot(&["a/127.0.0.1:1", "b/127.0.0.1:2"]);
        let mut initial: HashMap<String, String> = snap
            .clusters
            .values()
            .map(|r| (r.name.clone(), r.version.clone()))
            .collect();
        initial.insert("colyseus-process-a".into(), "stale".into());
        initial.insert("colyseus-process-gone".into(), "1".into());
        let mut sub = DeltaSubscription::default();
        sub.update(true, &["*".into()], &[], &initial);
        let d = sub.diff(&snap.clusters);
        let names: Vec<&str> = d.resources.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["colyseus-process-a"]);
        assert_eq!(d.removed, ["colyseus-process-gone"]);
    }

    #[test]
    fn explicit_names_and_unsubscribe() {
        let snap = snapshot(&["a/127.0.0.1:1", "b/127.0.0.1:2"]);
        let mut sub = DeltaSubscription::default();
        sub.update(true, &["colyseus-process-b".into()], &[], &HashMap::new());
        let d = sub.diff(&snap.clusters);
        assert_eq!(d.resources.len(), 1);
        sub.sent(&d);
        sub.update(false, &[], &["colyseus-process-b".into()], &HashMap::new());
        assert!(sub.diff(&snap.clusters).is_empty());
    }

    #[test]
    fn eds_hosts_go_to_whoever_names_them_and_again_on_a_resubscribe() {
        let snap = snapshot(&["a/127.0.0.1:1"]);
        let mut sub = DeltaSubscription::default();
        // Envoy's first EDS request names the cluster it is warming.
        sub.update(true, &["colyseus-all".into()], &[], &HashMap::new());
        let d = sub.diff(&snap.endpoints);
        assert_eq!(d.resources.len(), 1);
        sub.sent(&d);
        assert!(sub.diff(&snap.endpoints).is_empty());
        // The cluster re-created: Envoy names it again and waits for its hosts.
        sub.update(false, &["colyseus-all".into()], &[], &HashMap::new());
        assert_eq!(sub.diff(&snap.endpoints).resources.len(), 1);
        // A reconnect that holds them gets nothing.
        let held: HashMap<String, String> = snap
            .endpoints
            .values()
            .map(|r| (r.name.clone(), r.version.clone()))
            .collect();
        let mut again = DeltaSubscription::default();
        again.update(true, &["colyseus-all".into()], &[], &held);
        assert!(again.diff(&snap.endpoints).is_empty());
    }
}
