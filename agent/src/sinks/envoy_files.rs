//! Envoy dynamic config as files: `cds.json`, a state-of-the-world `DiscoveryResponse` in the
//! directory Envoy watches (`path_config_source` with `watched_directory`).
//!
//! Rendering is pure and deterministic: the same registry gives byte-identical files, so an
//! unchanged state is never rewritten. Writing is atomic (temp file, fsync, rename in the same
//! directory), because Envoy only reloads on a move into the directory and would otherwise
//! risk reading a half-written file. The file is state-of-the-world: a cluster missing from
//! it is removed, so the caller must only ever hand over a complete registry.

use std::path::PathBuf;

use routing::{ClusterNames, ProcessId};
use serde_json::{json, Value};

use crate::atomic_file::{self, WriteError};
use crate::balance::Weights;
use crate::model::{Endpoint, Host, Registry};

/// File name of the cluster discovery file inside the watched directory.
pub const CDS_FILE: &str = "cds.json";

const CLUSTER_TYPE_URL: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";

/// Knobs of the generated clusters.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    pub names: ClusterNames,
    /// Upstream TCP connect timeout.
    pub connect_timeout: std::time::Duration,
    /// Connection circuit breaker per cluster. Every open WebSocket holds one upstream
    /// connection, and Envoy's default (1,024) would cap players per process.
    pub max_connections: u32,
    /// Envoy's own active health check of every process.
    pub health_check: HealthCheck,
}

/// Envoy's active health check of game processes. It sees a process whose port stops
/// answering within `interval` x 3, independently of the agent and of Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthCheck {
    Off,
    /// TCP connect.
    Tcp {
        interval: std::time::Duration,
    },
    /// HTTP GET of a path (e.g. `/__healthcheck` on Colyseus 0.17 or with
    /// `@colyseus/tools`); any 2xx is healthy.
    Http {
        path: String,
        interval: std::time::Duration,
    },
}

impl HealthCheck {
    /// Parses `off`, `tcp` or `http:/path`.
    ///
    /// # Errors
    /// Anything else, as a message for the command line.
    pub fn parse(spec: &str, interval: std::time::Duration) -> Result<Self, String> {
        match spec {
            "off" => Ok(Self::Off),
            "tcp" => Ok(Self::Tcp { interval }),
            _ => match spec.strip_prefix("http:") {
                Some(path) if path.starts_with('/') && !path.contains(char::is_whitespace) => {
                    Ok(Self::Http {
                        path: path.to_owned(),
                        interval,
                    })
                }
                _ => Err(format!(
                    "health check {spec:?} is not `off`, `tcp` or `http:/path`"
                )),
            },
        }
    }

    /// The cluster fields: the check, and no panic routing, so a one-host cluster whose
    /// host fails really stops sending to it.
    fn apply(&self, cluster: &mut Value) {
        let (interval, check) = match self {
            Self::Off => return,
            Self::Tcp { interval } => (interval, ("tcp_health_check", json!({}))),
            Self::Http { path, interval } => {
                (interval, ("http_health_check", json!({ "path": path })))
            }
        };
        let mut hc = json!({
            "timeout": "1s",
            "interval": format!("{:.3}s", interval.as_secs_f64()),
            "unhealthy_threshold": 3,
            "healthy_threshold": 1,
        });
        hc[check.0] = check.1;
        cluster["health_checks"] = json!([hc]);
        cluster["common_lb_config"] = json!({ "healthy_panic_threshold": { "value": 0.0 } });
        // A host the agent removed goes at once, even while it still passes checks.
        cluster["ignore_health_on_host_removal"] = json!(true);
    }
}

/// Renders the CDS file for `registry`: one cluster per live process (draining ones too, so
/// their remaining rooms stay reachable; dead ones not), plus the all-processes cluster of the active ones
/// (matchmaking never goes to a draining process). Byte-identical output for identical input.
///
/// `weights` are the all-processes cluster's endpoint weights (see [`crate::balance`]).
///
/// # Errors
/// The document cannot be serialized (it holds only strings and numbers, so this should
/// not happen; if it does, nothing is written rather than an empty or partial file).
pub fn render_cds(
    registry: &Registry,
    weights: &Weights,
    options: &ClusterOptions,
) -> Result<Vec<u8>, RenderError> {
    let resources = render_clusters(registry, weights, options);
    let version = format!("{:016x}", fnv1a(&serde_json::to_vec(&resources)?));
    let doc = json!({ "version_info": version, "resources": resources });
    // serde_json's map is ordered by key, so the output is deterministic.
    let mut bytes = serde_json::to_vec_pretty(&doc)?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// The CDS document could not be rendered.
#[derive(Debug, thiserror::Error)]
#[error("rendering the CDS file: {0}")]
pub struct RenderError(#[from] serde_json::Error);

/// Why the files sink did not update Envoy's config; the previous file is left in place.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error(transparent)]
    Render(#[from] RenderError),
    #[error(transparent)]
    Write(#[from] WriteError),
}

/// The clusters of [`render_cds`], one JSON object each: the one definition of a cluster,
/// which the xDS sink converts to protobuf (`sinks::xds::convert`).
pub fn render_clusters(
    registry: &Registry,
    weights: &Weights,
    options: &ClusterOptions,
) -> Vec<Value> {
    let mut resources: Vec<Value> = registry
        .iter()
        .filter(|(_, entry)| entry.is_routable())
        .map(|(pid, entry)| process_cluster(pid, &entry.endpoint, options))
        .collect();
    for (k, endpoints) in all_endpoints(registry, weights, &options.names)
        .iter()
        .enumerate()
    {
        resources.push(all_cluster(shard_index(k), endpoints, options));
    }
    resources
}

/// `k` (below [`ClusterNames::all_shards`], a `u16`) as a shard index.
pub fn shard_index(k: usize) -> u16 {
    u16::try_from(k).unwrap_or(u16::MAX)
}

/// The cluster of one routable process: its only input is its endpoint (and the options),
/// which lets the xDS sink re-render only the processes that changed.
pub fn process_cluster(pid: &ProcessId, endpoint: &Endpoint, options: &ClusterOptions) -> Value {
    cluster(&options.names.process(pid), &[(endpoint, None)], options)
}

/// The inputs of each shard of the all-processes cluster (index = shard, see
/// [`ClusterNames::shard_of`]): every active process's endpoint and weight, in its shard.
/// One shard (the default) is every active process.
pub fn all_endpoints<'a>(
    registry: &'a Registry,
    weights: &Weights,
    names: &ClusterNames,
) -> Vec<Vec<(&'a Endpoint, Option<u32>)>> {
    let mut shards = vec![Vec::new(); usize::from(names.all_shards())];
    for (pid, e) in registry.iter().filter(|(_, e)| e.is_active()) {
        if let Some(shard) = shards.get_mut(usize::from(names.shard_of(pid))) {
            shard.push((&e.endpoint, weights.get(pid).copied()));
        }
    }
    shards
}

/// Shard `shard` of the all-processes cluster, of `endpoints` ([`all_endpoints`]). Every
/// shard exists even without hosts, so matchmaking routed there gets Envoy's 503 (no
/// healthy upstream), never `no_cluster`.
pub fn all_cluster(
    shard: u16,
    endpoints: &[(&Endpoint, Option<u32>)],
    options: &ClusterOptions,
) -> Value {
    let mut all_cluster = cluster(&options.names.all_shard(shard), endpoints, options);
    // Matchmaking and every path naming no process: requests are short, so Envoy's
    // defaults (1,024 each) are ample, and they stop one client from holding thousands of
    // requests open on the game servers (paths Colyseus never answers wait for the request
    // timeout). Room WebSockets go to the per-process clusters, which keep the high limits.
    all_cluster["circuit_breakers"] = json!({ "thresholds": [{
        "max_connections": ALL_CLUSTER_LIMIT,
        "max_pending_requests": ALL_CLUSTER_LIMIT,
        "max_requests": ALL_CLUSTER_LIMIT,
    }] });
    // Matchmaking may go to any process: stop sending it to one that fails to connect or
    // errors repeatedly, long before the agent's liveness verdict (the route also retries
    // connect failures on another host).
    all_cluster["outlier_detection"] = json!({
        "consecutive_gateway_failure": 2,
        "enforcing_consecutive_gateway_failure": 100,
        "consecutive_5xx": 5,
        "interval": "1s",
        "base_ejection_time": "5s",
        "max_ejection_percent": 50,
    });
    if options.names.all_shards() > 1 {
        // A shard may hold few hosts, all of them new: each takes requests once its first
        // health check passed and the workers heard of it, which Envoy batches over 1 s
        // by default; meanwhile matchmaking sent to that shard got 503. A shard's host
        // set is small, so rebuilding it per health change costs little.
        all_cluster["common_lb_config"]["update_merge_window"] = json!("0s");
    }
    all_cluster
}

/// A cluster of `endpoints`, each with its load-balancing weight if it has one.
fn cluster(name: &str, endpoints: &[(&Endpoint, Option<u32>)], options: &ClusterOptions) -> Value {
    // IP literals need no resolution (STATIC warms at once); names are resolved by Envoy.
    let any_name = endpoints
        .iter()
        .any(|(e, _)| matches!(e.host, Host::Name(_)));
    let kind = match (any_name, endpoints.len()) {
        (false, _) => "STATIC",
        (true, 1) => "LOGICAL_DNS",
        (true, _) => "STRICT_DNS",
    };
    let lb_endpoints: Vec<Value> = endpoints
        .iter()
        .map(|(e, weight)| {
            let address = match &e.host {
                Host::Ip(ip) => ip.to_string(),
                Host::Name(n) => n.clone(),
            };
            let mut lb = json!({ "endpoint": { "address": { "socket_address": {
                "address": address, "port_value": e.port } } } });
            if let Some(w) = weight {
                lb["load_balancing_weight"] = json!(w);
            }
            lb
        })
        .collect();
    let mut cluster = json!({
        "@type": CLUSTER_TYPE_URL,
        "name": name,
        "type": kind,
        "connect_timeout": format!("{:.3}s", options.connect_timeout.as_secs_f64()),
        "lb_policy": "ROUND_ROBIN",
        // Envoy's edge-proxy guidance: 32 KiB per upstream connection instead of the 1 MiB
        // default, as on the listeners; past it Envoy applies back-pressure, nothing fails.
        "per_connection_buffer_limit_bytes": UPSTREAM_BUFFER_LIMIT,
        "circuit_breakers": { "thresholds": [{
            "max_connections": options.max_connections,
            "max_pending_requests": options.max_connections,
            "max_requests": options.max_connections,
        }] },
        "load_assignment": {
            "cluster_name": name,
            "endpoints": if lb_endpoints.is_empty() { json!([]) } else { json!([{ "lb_endpoints": lb_endpoints }]) },
        },
    });
    if any_name {
        cluster["dns_lookup_family"] = json!("V4_PREFERRED");
    }
    options.health_check.apply(&mut cluster);
    cluster
}

/// Circuit breakers of the all-processes cluster (connections, pending and open requests).
pub const ALL_CLUSTER_LIMIT: u32 = 1024;

/// Per-connection buffer limit of every game-server cluster.
const UPSTREAM_BUFFER_LIMIT: u32 = 32 * 1024;

/// FNV-1a: a stable content hash for `version_info` (std's hasher may change between
/// Rust releases; this must not, or every agent upgrade would rewrite the file). The same
/// function places processes in shards, so it lives in `routing`.
pub(crate) use routing::cluster::fnv1a;

/// Writes rendered config into Envoy's watched directory, skipping unchanged content.
#[derive(Debug)]
pub struct EnvoyFilesSink {
    dir: PathBuf,
    options: ClusterOptions,
    /// Bytes of the file as last written (or found at start), to skip identical writes.
    last: Option<Vec<u8>>,
}

impl EnvoyFilesSink {
    /// A sink writing into `dir`, which must exist. An existing CDS file is read so that a
    /// restarted agent does not rewrite (and make Envoy reprocess) an identical config.
    pub fn new(dir: PathBuf, options: ClusterOptions) -> Self {
        let last = std::fs::read(dir.join(CDS_FILE)).ok();
        Self { dir, options, last }
    }

    pub fn cds_path(&self) -> PathBuf {
        self.dir.join(CDS_FILE)
    }

    /// Makes Envoy's clusters match `registry`. Returns whether a file was written.
    ///
    /// # Errors
    /// Rendering or I/O errors; the previous file is left untouched.
    pub fn apply(&mut self, registry: &Registry, weights: &Weights) -> Result<bool, FilesError> {
        let bytes = render_cds(registry, weights, &self.options)?;
        if self.last.as_deref() == Some(bytes.as_slice()) {
            return Ok(false);
        }
        atomic_file::write(&self.dir, CDS_FILE, &bytes)?;
        self.last = Some(bytes);
        Ok(true)
    }
}

/// The options of the unsharded tests (also used by the shard tests).
#[cfg(test)]
fn tests_options() -> ClusterOptions {
    ClusterOptions {
        names: ClusterNames::default(),
        connect_timeout: std::time::Duration::from_millis(2500),
        max_connections: 100_000,
        health_check: HealthCheck::Tcp {
            interval: std::time::Duration::from_secs(2),
        },
    }
}

#[cfg(test)]
#[path = "envoy_files_shards_tests.rs"]
mod shards_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn render(registry: &Registry, weights: &Weights, options: &ClusterOptions) -> Vec<u8> {
        render_cds(registry, weights, options).unwrap()
    }

    fn options() -> ClusterOptions {
        tests_options()
    }

    fn registry(members: &[&str]) -> Registry {
        let now = std::time::Instant::now();
        Registry::default()
            .from_members(members.iter().copied(), 2567, now)
            .0
    }

    fn clusters(bytes: &[u8]) -> Vec<Value> {
        let doc: Value = serde_json::from_slice(bytes).unwrap();
        doc["resources"].as_array().unwrap().clone()
    }

    #[test]
    fn one_cluster_per_process_plus_all() {
        let out = render(
            &registry(&["b/127.0.0.1:2", "a/[::1]:1", "c/game-3:3"]),
            &Weights::new(),
            &options(),
        );
        let clusters = clusters(&out);
        let names: Vec<&str> = clusters
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "colyseus-process-a",
                "colyseus-process-b",
                "colyseus-process-c",
                "colyseus-all"
            ]
        );
        assert_eq!(clusters[0]["type"], "STATIC");
        assert_eq!(
            clusters[0]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
                ["address"]["socket_address"]["address"],
            "::1"
        );
        assert_eq!(clusters[2]["type"], "LOGICAL_DNS");
        assert_eq!(clusters[3]["type"], "STRICT_DNS");
        assert_eq!(
            clusters[3]["outlier_detection"]["consecutive_gateway_failure"],
            2
        );
        assert!(clusters[0].get("outlier_detection").is_none());
        assert_eq!(
            clusters[3]["load_assignment"]["endpoints"][0]["lb_endpoints"]
                .as_array()
                .unwrap()
                .len(),
            3
        );
        assert_eq!(clusters[0]["connect_timeout"], "2.500s");
        assert_eq!(
            clusters[0]["circuit_breakers"]["thresholds"][0]["max_connections"],
            100_000
        );
    }

    #[test]
    fn draining_process_keeps_its_cluster_but_leaves_the_all_cluster() {
        let now = std::time::Instant::now();
        let both = registry(&["a/127.0.0.1:1", "b/127.0.0.1:2"]);
        let (one_left, _) = both.from_members(["a/127.0.0.1:1"], 2567, now);
        let clusters = clusters(&render(&one_left, &Weights::new(), &options()));
        let names: Vec<&str> = clusters
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            ["colyseus-process-a", "colyseus-process-b", "colyseus-all"]
        );
        let all = &clusters[2]["load_assignment"]["endpoints"][0]["lb_endpoints"];
        assert_eq!(all.as_array().unwrap().len(), 1);
        assert_eq!(
            all[0]["endpoint"]["address"]["socket_address"]["port_value"],
            1
        );
    }

    #[test]
    fn health_checks() {
        let out = render(&registry(&["a/127.0.0.1:1"]), &Weights::new(), &options());
        let c = &clusters(&out)[0];
        assert_eq!(c["health_checks"][0]["interval"], "2.000s");
        assert_eq!(c["health_checks"][0]["tcp_health_check"], json!({}));
        assert_eq!(
            c["common_lb_config"]["healthy_panic_threshold"]["value"],
            0.0
        );
        let d = Duration::from_secs(5);
        assert_eq!(HealthCheck::parse("off", d), Ok(HealthCheck::Off));
        assert_eq!(
            HealthCheck::parse("http:/__healthcheck", d),
            Ok(HealthCheck::Http {
                path: "/__healthcheck".into(),
                interval: d
            })
        );
        for bad in ["http:", "http:x", "udp", "http:/a b"] {
            assert!(HealthCheck::parse(bad, d).is_err(), "{bad}");
        }
        let mut o = options();
        o.health_check = HealthCheck::Off;
        let c = &clusters(&render(&registry(&["a/127.0.0.1:1"]), &Weights::new(), &o))[0];
        assert!(c.get("health_checks").is_none());
    }

    #[test]
    fn no_process_still_has_the_all_cluster() {
        let clusters = clusters(&render(&Registry::default(), &Weights::new(), &options()));
        assert_eq!(clusters.len(), 1);
        assert_eq!(clusters[0]["name"], "colyseus-all");
        assert_eq!(clusters[0]["load_assignment"]["endpoints"], json!([]));
    }

    #[test]
    fn deterministic_and_versioned_by_content() {
        let a = render(
            &registry(&["a/127.0.0.1:1", "b/127.0.0.1:2"]),
            &Weights::new(),
            &options(),
        );
        let b = render(
            &registry(&["b/127.0.0.1:2", "a/127.0.0.1:1"]),
            &Weights::new(),
            &options(),
        );
        assert_eq!(a, b);
        let c = render(&registry(&["a/127.0.0.1:1"]), &Weights::new(), &options());
        let version =
            |bytes: &[u8]| serde_json::from_slice::<Value>(bytes).unwrap()["version_info"].clone();
        assert_ne!(version(&a), version(&c));
    }

    #[test]
    fn weights_go_on_the_all_cluster_only() {
        let reg = registry(&["a/127.0.0.1:1", "b/127.0.0.1:2"]);
        let weights: Weights = [(ProcessId::parse("a").unwrap(), 10)].into_iter().collect();
        let clusters = clusters(&render(&reg, &weights, &options()));
        let weight_of = |name: &str, i: usize| {
            let c = clusters.iter().find(|c| c["name"] == name).unwrap();
            c["load_assignment"]["endpoints"][0]["lb_endpoints"][i]["load_balancing_weight"].clone()
        };
        assert_eq!(weight_of("colyseus-all", 0), json!(10));
        for c in &clusters {
            assert_eq!(c["per_connection_buffer_limit_bytes"], json!(32768));
        }
        assert_eq!(weight_of("colyseus-all", 1), Value::Null);
        assert_eq!(weight_of("colyseus-process-a", 0), Value::Null);
        // Without weights: no weight field at all (plain round robin).
        let plain = render(&reg, &Weights::new(), &options());
        assert!(!String::from_utf8(plain)
            .unwrap()
            .contains("load_balancing_weight"));
    }

    #[test]
    fn sink_writes_atomically_and_skips_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = EnvoyFilesSink::new(dir.path().to_path_buf(), options());
        let reg = registry(&["a/127.0.0.1:1"]);
        assert!(sink.apply(&reg, &Weights::new()).unwrap());
        assert!(!sink.apply(&reg, &Weights::new()).unwrap());
        let on_disk = std::fs::read(sink.cds_path()).unwrap();
        assert_eq!(on_disk, render(&reg, &Weights::new(), &options()));
        // No temp file left behind in the watched directory.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [CDS_FILE]);
        // A restarted agent finds the file and does not rewrite it.
        let mut restarted = EnvoyFilesSink::new(dir.path().to_path_buf(), options());
        assert!(!restarted.apply(&reg, &Weights::new()).unwrap());
    }

    #[test]
    fn failed_write_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = EnvoyFilesSink::new(dir.path().to_path_buf(), options());
        sink.apply(&registry(&["a/127.0.0.1:1"]), &Weights::new())
            .unwrap();
        let before = std::fs::read(sink.cds_path()).unwrap();
        // A directory where the temp file should go makes the write fail.
        std::fs::create_dir(dir.path().join(".cds.json.tmp")).unwrap();
        assert!(sink
            .apply(&registry(&["b/127.0.0.1:2"]), &Weights::new())
            .is_err());
        assert_eq!(std::fs::read(sink.cds_path()).unwrap(), before);
    }
}
