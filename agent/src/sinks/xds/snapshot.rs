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
use prost::Message;

use super::convert;
use crate::balance::Weights;
use crate::model::Registry;
use crate::sinks::envoy_files::{fnv1a, render_clusters, ClusterOptions};

/// The one resource type served: clusters (their endpoints inline, as in the CDS file).
pub const CLUSTER_TYPE: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";

/// One marshalled resource.
#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    pub name: String,
    /// Hash of `any.value`, hex.
    pub version: String,
    pub any: Any,
}

/// Every cluster Envoy should have, at one moment.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub resources: BTreeMap<String, Arc<Resource>>,
    /// Hash of every (name, version): the state-of-the-world `version_info`.
    pub version: String,
    /// When the change this snapshot carries was handed over (change-to-ACK latency).
    pub created: Instant,
    /// False for the placeholder before the agent's first Redis read: nothing is served
    /// from it (Envoy keeps what it has, or waits).
    pub ready: bool,
}

impl Snapshot {
    /// The snapshot of `registry`: the clusters `render_cds` writes to the file, converted.
    /// A cluster that cannot be converted (a bug: see `convert`) is left out and returned
    /// as an error message beside the snapshot.
    pub fn build(
        registry: &Registry,
        weights: &Weights,
        options: &ClusterOptions,
    ) -> (Self, Vec<String>) {
        let mut errors = Vec::new();
        let resources = render_clusters(registry, weights, options)
            .iter()
            .filter_map(|json| match convert::cluster(json) {
                Ok(c) => Some(c),
                Err(e) => {
                    errors.push(format!("{}: {e}", json["name"]));
                    None
                }
            })
            .map(|c| {
                let value = c.encode_to_vec();
                let r = Resource {
                    version: format!("{:016x}", fnv1a(&value)),
                    name: c.name,
                    any: Any {
                        type_url: CLUSTER_TYPE.to_owned(),
                        value,
                    },
                };
                (r.name.clone(), Arc::new(r))
            })
            .collect();
        (Self::from_resources(resources), errors)
    }

    pub fn from_resources(resources: BTreeMap<String, Arc<Resource>>) -> Self {
        let mut all = Vec::new();
        for (name, r) in &resources {
            all.extend_from_slice(name.as_bytes());
            all.push(0);
            all.extend_from_slice(r.version.as_bytes());
            all.push(0);
        }
        Self {
            resources,
            version: format!("{:016x}", fnv1a(&all)),
            created: Instant::now(),
            ready: true,
        }
    }

    /// The placeholder served before the first publish: not ready.
    pub fn empty() -> Self {
        Self {
            ready: false,
            ..Self::from_resources(BTreeMap::new())
        }
    }
}

/// What one delta stream subscribed to and what its Envoy has (as far as this stream
/// knows: its `initial_resource_versions`, then everything sent on it).
#[derive(Debug, Default, Clone)]
pub struct DeltaSubscription {
    /// Subscribed to every cluster (CDS's usual wildcard).
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
    /// (or `*`) is a wildcard subscription, as Envoy's CDS sends it.
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

    /// What `snapshot` changes for this Envoy. Does not record it as sent: see [`Self::sent`].
    pub fn diff(&self, snapshot: &Snapshot) -> DeltaChanges {
        let resources = snapshot
            .resources
            .values()
            .filter(|r| self.wants(&r.name))
            .filter(|r| self.known.get(&r.name) != Some(&r.version))
            .cloned()
            .collect();
        let mut removed: Vec<String> = self
            .known
            .keys()
            .filter(|n| !snapshot.resources.contains_key(*n) || !self.wants(n))
            .cloned()
            .collect();
        removed.sort();
        DeltaChanges { resources, removed }
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
    use crate::sinks::envoy_files::HealthCheck;
    use routing::ClusterNames;
    use std::time::Duration;

    fn options() -> ClusterOptions {
        ClusterOptions {
            names: ClusterNames::default(),
            connect_timeout: Duration::from_millis(250),
            max_connections: 100_000,
            health_check: HealthCheck::Http {
                path: "/health".into(),
                interval: Duration::from_secs(2),
            },
        }
    }

    fn snapshot(members: &[&str]) -> Snapshot {
        let now = Instant::now();
        let (reg, _) = Registry::default().from_members(members.iter().copied(), 2567, now);
        let weights: Weights = reg
            .iter()
            .map(|(pid, _)| (pid.clone(), 3))
            .take(1)
            .collect();
        let (snap, errors) = Snapshot::build(&reg, &weights, &options());
        assert_eq!(errors, Vec::<String>::new());
        snap
    }

    #[test]
    fn every_rendered_cluster_converts_with_every_option() {
        // IP and DNS endpoints, weights, HTTP checks: nothing left out.
        let snap = snapshot(&["a/127.0.0.1:1", "b/game-2:2", "c/[::1]:3"]);
        let names: Vec<&str> = snap.resources.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "colyseus-all",
                "colyseus-process-a",
                "colyseus-process-b",
                "colyseus-process-c"
            ]
        );
        for hc in [
            HealthCheck::Off,
            HealthCheck::Tcp {
                interval: Duration::from_secs(1),
            },
        ] {
            let mut o = options();
            o.health_check = hc;
            let (reg, _) =
                Registry::default().from_members(["a/127.0.0.1:1"], 2567, Instant::now());
            let (_, errors) = Snapshot::build(&reg, &Weights::new(), &o);
            assert!(errors.is_empty(), "{errors:?}");
        }
    }

    #[test]
    fn versions_come_from_content() {
        let a = snapshot(&["a/127.0.0.1:1", "b/127.0.0.1:2"]);
        let b = snapshot(&["b/127.0.0.1:2", "a/127.0.0.1:1"]);
        assert_eq!(a.version, b.version);
        assert_eq!(a.resources, b.resources);
        let c = snapshot(&["a/127.0.0.1:1", "b/127.0.0.1:3"]);
        assert_eq!(
            a.resources["colyseus-process-a"].version,
            c.resources["colyseus-process-a"].version
        );
        assert_ne!(
            a.resources["colyseus-process-b"].version,
            c.resources["colyseus-process-b"].version
        );
        assert_ne!(a.version, c.version);
    }

    #[test]
    fn delta_sends_only_what_changed_and_what_went() {
        let mut sub = DeltaSubscription::default();
        sub.update(true, &[], &[], &HashMap::new());
        let one = snapshot(&["a/127.0.0.1:1"]);
        let first = sub.diff(&one);
        assert_eq!(first.resources.len(), 2);
        assert!(first.removed.is_empty());
        sub.sent(&first);
        assert!(sub.diff(&one).is_empty());
        let two = snapshot(&["b/127.0.0.1:2"]);
        let next = sub.diff(&two);
        let names: Vec<&str> = next.resources.iter().map(|r| r.name.as_str()).collect();
        // The all cluster's endpoints changed too.
        assert_eq!(names, ["colyseus-all", "colyseus-process-b"]);
        assert_eq!(next.removed, ["colyseus-process-a"]);
    }

    #[test]
    fn a_reconnecting_envoy_gets_only_what_it_lacks() {
        let snap = snapshot(&["a/127.0.0.1:1", "b/127.0.0.1:2"]);
        let mut initial: HashMap<String, String> = snap
            .resources
            .values()
            .map(|r| (r.name.clone(), r.version.clone()))
            .collect();
        initial.insert("colyseus-process-a".into(), "stale".into());
        initial.insert("colyseus-process-gone".into(), "1".into());
        let mut sub = DeltaSubscription::default();
        sub.update(true, &["*".into()], &[], &initial);
        let d = sub.diff(&snap);
        let names: Vec<&str> = d.resources.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["colyseus-process-a"]);
        assert_eq!(d.removed, ["colyseus-process-gone"]);
    }

    #[test]
    fn explicit_names_and_unsubscribe() {
        let snap = snapshot(&["a/127.0.0.1:1", "b/127.0.0.1:2"]);
        let mut sub = DeltaSubscription::default();
        sub.update(true, &["colyseus-process-b".into()], &[], &HashMap::new());
        let d = sub.diff(&snap);
        assert_eq!(d.resources.len(), 1);
        sub.sent(&d);
        sub.update(false, &[], &["colyseus-process-b".into()], &HashMap::new());
        assert!(sub.diff(&snap).is_empty());
    }
}
