//! Builds [`Snapshot`]s incrementally. Pure.
//!
//! At 10,000 processes, rendering and marshalling every cluster per registration cost the
//! agent about half a second. The [`Builder`] keeps each marshalled resource beside the
//! inputs it came from (a process cluster's endpoint; the all-processes cluster's endpoints
//! and weights) and re-renders only the resources whose inputs changed. What it keeps is
//! what a full build would make again (rendering is deterministic), so versions stay
//! content hashes and two agents still serve the same ones.
//!
//! Each shard of the all-processes cluster (see `routing::cluster`) is its own resource
//! pair, kept and compared apart: a registration re-renders only its shard.
//!
//! With EDS ([`AllEndpoints::Eds`]), the all-processes cluster is `type: EDS` and its hosts
//! travel as a `ClusterLoadAssignment`: a registration updates its hosts in place in
//! Envoy instead of replacing a cluster of every process. A fleet with a DNS name among its
//! active endpoints keeps the inline cluster (`STRICT_DNS`): Envoy does not resolve names
//! given by EDS.

use std::collections::BTreeMap;
use std::sync::Arc;

use envoy_types::pb::envoy::config::cluster::v3::cluster::{
    ClusterDiscoveryType, DiscoveryType, EdsClusterConfig,
};
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::{
    config_source::ConfigSourceSpecifier, AggregatedConfigSource, ApiVersion, ConfigSource,
};
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::google::protobuf::Any;
use prost::Message;
use routing::ProcessId;

use super::convert;
use super::snapshot::{Resource, Resources, Snapshot, Update, CLUSTER_TYPE, ENDPOINT_TYPE};
use crate::balance::Weights;
use crate::model::{Endpoint, Host, Registry};
use crate::sinks::envoy_files::{
    all_cluster, all_endpoints, fnv1a, process_cluster, shard_index, ClusterOptions,
};

/// How the all-processes cluster carries its hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllEndpoints {
    /// Inline `load_assignment`, as in the CDS file: every registration replaces the
    /// cluster.
    Inline,
    /// `type: EDS` over the same ADS stream (IP endpoints only; see the module doc).
    Eds,
}

/// The all-processes cluster's inputs and what they made.
#[derive(Debug)]
struct AllRendered {
    endpoints: Vec<(Endpoint, Option<u32>)>,
    cluster: Arc<Resource>,
    assignment: Option<Arc<Resource>>,
}

/// Makes snapshots, re-rendering only what changed since the last one.
#[derive(Debug)]
pub struct Builder {
    options: ClusterOptions,
    mode: AllEndpoints,
    /// Each routable process's endpoint and marshalled cluster, in the registry's order, so
    /// a build finds what changed by walking both in step (no allocation for the rest).
    processes: BTreeMap<ProcessId, (Endpoint, Arc<Resource>)>,
    /// Each shard of the all-processes cluster (index = shard), rendered apart so that a
    /// registration re-renders one shard's hosts, not every active process's.
    all: Vec<Option<AllRendered>>,
    /// The snapshot built last: the next one is made from it, changing only what changed.
    last: Snapshot,
}

impl Builder {
    pub fn new(options: ClusterOptions, mode: AllEndpoints) -> Self {
        Self {
            options,
            mode,
            processes: BTreeMap::new(),
            all: Vec::new(),
            last: Snapshot::new(Resources::new(), Resources::new()),
        }
    }

    /// The snapshot of `registry`, the same a fresh builder would make. A cluster that
    /// cannot be converted (a bug: see `convert`) is left out and returned as an error
    /// message beside the snapshot (every time: failures are not kept).
    pub fn build(&mut self, registry: &Registry, weights: &Weights) -> (Snapshot, Vec<String>) {
        let mut errors = Vec::new();
        let mut clusters: Vec<Update> = Vec::new();
        let mut endpoints: Vec<Update> = Vec::new();
        let (changed, gone) = self.changed_processes(registry);
        for pid in gone {
            if let Some((_, r)) = self.processes.remove(&pid) {
                clusters.push((r.name.clone(), None));
            }
        }
        for (pid, endpoint) in changed {
            match self.render_process(&pid, &endpoint) {
                Ok(r) => {
                    clusters.push((r.name.clone(), Some(r.clone())));
                    self.processes.insert(pid, (endpoint, r));
                }
                Err(e) => {
                    errors.push(e);
                    self.processes.remove(&pid);
                    clusters.push((self.options.names.process(&pid), None));
                }
            }
        }

        let shards = all_endpoints(registry, weights, &self.options.names);
        self.all.resize_with(shards.len(), || None);
        for (k, inputs) in shards.into_iter().enumerate() {
            // Only a shard whose hosts or weights changed is rendered and marshalled again.
            let same = self.all[k].as_ref().is_some_and(|a| {
                a.endpoints.len() == inputs.len()
                    && a.endpoints
                        .iter()
                        .zip(&inputs)
                        .all(|((e, w), (ne, nw))| e == *ne && w == nw)
            });
            if same {
                continue;
            }
            let owned = inputs.into_iter().map(|(e, w)| (e.clone(), w)).collect();
            let previous = self.all[k].take();
            let name = self.options.names.all_shard(shard_index(k));
            match self.render_all(shard_index(k), owned, previous.as_ref()) {
                Ok(all) => {
                    clusters.push((name.clone(), Some(all.cluster.clone())));
                    endpoints.push((name, all.assignment.clone()));
                    self.all[k] = Some(all);
                }
                Err(e) => {
                    errors.push(e);
                    clusters.push((name.clone(), None));
                    endpoints.push((name, None));
                }
            }
        }
        self.last = self.last.next(clusters, endpoints);
        (self.last.clone(), errors)
    }

    /// The routable processes whose endpoint differs from (or is missing in) what was
    /// rendered, and the rendered ones no longer routable: one walk of both, in step.
    fn changed_processes(
        &self,
        registry: &Registry,
    ) -> (Vec<(ProcessId, Endpoint)>, Vec<ProcessId>) {
        let mut changed = Vec::new();
        let mut gone = Vec::new();
        let mut rendered = self.processes.iter().peekable();
        for (pid, entry) in registry.iter().filter(|(_, e)| e.is_routable()) {
            while let Some((old, _)) = rendered.next_if(|(old, _)| *old < pid) {
                gone.push(old.clone());
            }
            match rendered.next_if(|(old, _)| *old == pid) {
                Some((_, (endpoint, _))) if *endpoint == entry.endpoint => {}
                _ => changed.push((pid.clone(), entry.endpoint.clone())),
            }
        }
        gone.extend(rendered.map(|(old, _)| old.clone()));
        (changed, gone)
    }

    fn render_process(
        &self,
        pid: &ProcessId,
        endpoint: &Endpoint,
    ) -> Result<Arc<Resource>, String> {
        let json = process_cluster(pid, endpoint, &self.options);
        let c = convert::cluster(&json).map_err(|e| format!("{}: {e}", json["name"]))?;
        Ok(resource(c.name.clone(), CLUSTER_TYPE, c.encode_to_vec()))
    }

    fn render_all(
        &self,
        shard: u16,
        inputs: Vec<(Endpoint, Option<u32>)>,
        previous: Option<&AllRendered>,
    ) -> Result<AllRendered, String> {
        let refs: Vec<(&Endpoint, Option<u32>)> = inputs.iter().map(|(e, w)| (e, *w)).collect();
        let json = all_cluster(shard, &refs, &self.options);
        let mut c = convert::cluster(&json).map_err(|e| format!("{}: {e}", json["name"]))?;
        let any_name = inputs.iter().any(|(e, _)| matches!(e.host, Host::Name(_)));
        let assignment = (self.mode == AllEndpoints::Eds && !any_name).then(|| {
            let a = into_eds(&mut c);
            resource(a.cluster_name.clone(), ENDPOINT_TYPE, a.encode_to_vec())
        });
        // Unchanged bytes keep their `Arc`: nothing new for a stream to compare.
        let reuse = |new: Arc<Resource>, old: Option<&Arc<Resource>>| match old {
            Some(old) if *old == new => old.clone(),
            _ => new,
        };
        let cluster = reuse(
            resource(c.name.clone(), CLUSTER_TYPE, c.encode_to_vec()),
            previous.map(|p| &p.cluster),
        );
        let assignment = assignment.map(|a| reuse(a, previous.and_then(|p| p.assignment.as_ref())));
        Ok(AllRendered {
            endpoints: inputs,
            cluster,
            assignment,
        })
    }
}

/// Turns an inline cluster into an EDS one fed by ADS; returns its hosts.
fn into_eds(c: &mut Cluster) -> ClusterLoadAssignment {
    let mut assignment = c.load_assignment.take().unwrap_or_default();
    assignment.cluster_name.clone_from(&c.name);
    c.cluster_discovery_type = Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32));
    c.eds_cluster_config = Some(EdsClusterConfig {
        eds_config: Some(ConfigSource {
            resource_api_version: ApiVersion::V3 as i32,
            config_source_specifier: Some(ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
            ..Default::default()
        }),
        service_name: String::new(),
    });
    assignment
}

/// One marshalled resource, its version the hash of its bytes.
fn resource(name: String, type_url: &str, value: Vec<u8>) -> Arc<Resource> {
    Arc::new(Resource {
        version: format!("{:016x}", fnv1a(&value)),
        name,
        any: Any {
            type_url: type_url.to_owned(),
            value,
        },
    })
}

#[cfg(test)]
#[path = "build_tests.rs"]
pub(super) mod tests;
