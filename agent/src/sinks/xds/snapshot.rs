//! What the xDS server serves, and what each stream has been sent. Pure.
//!
//! A [`Snapshot`] is immutable: the sink builds a new one per change and the streams diff
//! against it. Every resource is marshalled once (an `Any`), and its version is a hash of
//! those bytes, so two agents reading the same Redis serve the same versions and an Envoy
//! that fails over from one to the other is sent nothing it already has (the reference is
//! go-control-plane's snapshot cache; deterministic versions avoid contour#6743's drift).
//!
//! At 10,000 clusters a change must cost what it changes, not what the fleet holds: the
//! resources are persistent maps (a snapshot made from its predecessor shares all but the
//! changed entries), the versions are sums kept up to date per change, and a snapshot
//! names what changed since its predecessor ([`Changed`]), so a stream that sent the
//! predecessor compares only those names.

use std::collections::{BTreeSet, HashMap};
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

/// Resources of one type, by name: a persistent map, so a clone is O(1).
pub type Resources = imbl::OrdMap<String, Arc<Resource>>;

/// A change to one resource: its new value, or `None` for its removal.
pub type Update = (String, Option<Arc<Resource>>);

/// The names whose resources differ between a snapshot and the one it was made from.
#[derive(Debug, Clone, Default)]
pub struct Changed {
    /// The predecessor's `version`.
    pub from: String,
    pub clusters: Vec<String>,
    pub endpoints: Vec<String>,
}

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
    /// What changed since the snapshot this one was made from (`None`: made whole).
    pub changed: Option<Changed>,
    /// The sums behind `clusters_version` and `endpoints_version`.
    sums: [u64; 2],
}

/// One resource's share of its type's version: versions are sums of these (wrapping), so
/// they do not depend on order and a change adjusts them in O(1).
fn share(name: &str, r: &Resource) -> u64 {
    let mut bytes = Vec::with_capacity(name.len() + r.version.len() + 1);
    bytes.extend_from_slice(name.as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(r.version.as_bytes());
    fnv1a(&bytes)
}

fn sum(resources: &Resources) -> u64 {
    resources
        .iter()
        .fold(0u64, |s, (n, r)| s.wrapping_add(share(n, r)))
}

impl Snapshot {
    pub fn new(clusters: Resources, endpoints: Resources) -> Self {
        let sums = [sum(&clusters), sum(&endpoints)];
        Self::with_sums(clusters, endpoints, sums, None)
    }

    fn with_sums(
        clusters: Resources,
        endpoints: Resources,
        sums: [u64; 2],
        changed: Option<Changed>,
    ) -> Self {
        let clusters_version = format!("{:016x}", sums[0]);
        let endpoints_version = format!("{:016x}", sums[1]);
        // No endpoints: the version of the clusters alone, as before EDS existed.
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
            changed,
            sums,
        }
    }

    /// The placeholder served before the first publish: not ready.
    pub fn empty() -> Self {
        Self {
            ready: false,
            ..Self::new(Resources::new(), Resources::new())
        }
    }

    /// This snapshot with `clusters` and `endpoints` changed: O(changes), sharing every
    /// other resource. An update to what is already there changes nothing (and is not
    /// named in [`Changed`]). Always ready.
    pub fn next(&self, clusters: Vec<Update>, endpoints: Vec<Update>) -> Self {
        let mut maps = [self.clusters.clone(), self.endpoints.clone()];
        let mut sums = self.sums;
        let mut names: [Vec<String>; 2] = Default::default();
        for (t, updates) in [clusters, endpoints].into_iter().enumerate() {
            for (name, new) in updates {
                let old = maps[t].get(&name);
                if old == new.as_ref() {
                    continue;
                }
                if let Some(old) = old {
                    sums[t] = sums[t].wrapping_sub(share(&name, old));
                }
                match new {
                    Some(r) => {
                        sums[t] = sums[t].wrapping_add(share(&name, &r));
                        maps[t].insert(name.clone(), r);
                    }
                    None => {
                        maps[t].remove(&name);
                    }
                }
                names[t].push(name);
            }
        }
        let [clusters, endpoints] = maps;
        let [cluster_names, endpoint_names] = names;
        let changed = Changed {
            from: self.version.clone(),
            clusters: cluster_names,
            endpoints: endpoint_names,
        };
        Self::with_sums(clusters, endpoints, sums, Some(changed))
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

    /// The names of `type_url` changed since the snapshot of version `from`, if this
    /// snapshot was made from that one.
    fn changed_since(&self, from: &str, type_url: &str) -> Option<&[String]> {
        let c = self.changed.as_ref().filter(|c| c.from == from)?;
        Some(if type_url == ENDPOINT_TYPE {
            &c.endpoints
        } else {
            &c.clusters
        })
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
    /// The snapshot whose resources of this type `known` reflects, since the subscription
    /// last changed: a diff against its successor compares only the names that changed.
    synced: Option<String>,
    /// Halves of responses Envoy refused whole: each goes in a response of its own next
    /// (see [`Self::nacked`]).
    isolate: Vec<BTreeSet<String>>,
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
        if first || !subscribe.is_empty() || !unsubscribe.is_empty() {
            // What this Envoy wants or has changed: the next diff compares everything.
            self.synced = None;
        }
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

    /// What `snapshot`'s resources of `type_url` change for this Envoy: nothing to compare
    /// if it was diffed already, only its changed names if its predecessor was, else every
    /// resource. Does not record it as sent: see [`Self::sent`].
    pub fn diff(&self, snapshot: &Snapshot, type_url: &str) -> DeltaChanges {
        let Some(resources) = snapshot.of_type(type_url) else {
            return DeltaChanges::default();
        };
        let Some(synced) = &self.synced else {
            return self.diff_all(resources);
        };
        if *synced == snapshot.version {
            return DeltaChanges::default();
        }
        match snapshot.changed_since(synced, type_url) {
            Some(names) => self.diff_names(resources, names),
            None => self.diff_all(resources),
        }
    }

    /// Compares every resource, and everything the Envoy holds.
    fn diff_all(&self, resources: &Resources) -> DeltaChanges {
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

    /// Compares only `names`: everything else is as the synced snapshot had it, which this
    /// Envoy was sent.
    fn diff_names(&self, resources: &Resources, names: &[String]) -> DeltaChanges {
        let mut changes = DeltaChanges::default();
        for name in names {
            match resources.get(name).filter(|_| self.wants(name)) {
                Some(r) if self.known.get(name) != Some(&r.version) => {
                    changes.resources.push(r.clone());
                }
                Some(_) => {}
                None if self.known.contains_key(name) => changes.removed.push(name.clone()),
                None => {}
            }
        }
        changes.removed.sort();
        changes
    }

    /// Envoy refused (NACKed) a response of `changes` (name, version sent; `None`: a
    /// removal). Envoy rejects a response whole when one resource fails validation, so the
    /// others were not applied either, and one bad resource must not hold back the rest
    /// forever. A response of one is refused for what it is: it stays recorded as sent, not
    /// resent until it changes. A larger one is forgotten and sent again in two halves
    /// ([`Self::batches`]): the half without the refused resource is applied, the other is
    /// halved again, so after about 2·log2(n) responses only the refused resource is left
    /// out, with no loop.
    pub fn nacked(&mut self, changes: &[(String, Option<String>)]) {
        if changes.len() <= 1 {
            return;
        }
        for (name, version) in changes {
            match version {
                // Unless a newer version went out since.
                Some(v) if self.known.get(name) == Some(v) => {
                    self.known.remove(name);
                }
                Some(_) => {}
                // The removal may not have happened: Envoy may still hold it.
                None => {
                    self.known.entry(name.clone()).or_default();
                }
            }
        }
        let (first, second) = changes.split_at(changes.len().div_ceil(2));
        for half in [first, second] {
            self.isolate
                .push(half.iter().map(|(name, _)| name.clone()).collect());
        }
        self.synced = None;
    }

    /// `changes` as the responses to send: one for everything, except the halves of
    /// responses refused whole, which go one response each ([`Self::nacked`]).
    pub fn batches(&mut self, changes: DeltaChanges) -> Vec<DeltaChanges> {
        if self.isolate.is_empty() {
            return vec![changes];
        }
        let mut rest = DeltaChanges::default();
        let mut halves: Vec<DeltaChanges> = self
            .isolate
            .iter()
            .map(|_| DeltaChanges::default())
            .collect();
        let group = |name: &str| self.isolate.iter().position(|h| h.contains(name));
        for r in changes.resources {
            match group(&r.name) {
                Some(k) => halves[k].resources.push(r),
                None => rest.resources.push(r),
            }
        }
        for name in changes.removed {
            match group(&name) {
                Some(k) => halves[k].removed.push(name),
                None => rest.removed.push(name),
            }
        }
        // What is not among the changes needs nothing (gone from the snapshot, say).
        self.isolate.clear();
        halves.retain(|h| !h.is_empty());
        let mut out = Vec::new();
        if !rest.is_empty() || halves.is_empty() {
            out.push(rest);
        }
        out.extend(halves);
        out
    }

    /// Records `changes`, diffed against the snapshot of `version`, as sent: they are not
    /// sent again, whether Envoy ACKs them or not (a NACKed resource is not retried until
    /// it changes).
    pub fn sent(&mut self, changes: &DeltaChanges, version: &str) {
        for r in &changes.resources {
            self.known.insert(r.name.clone(), r.version.clone());
        }
        for n in &changes.removed {
            self.known.remove(n);
        }
        self.synced = Some(version.to_owned());
    }
}

#[cfg(test)]
#[path = "snapshot_tests.rs"]
mod tests;
