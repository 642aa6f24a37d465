//! xDS fleets: agents serving `sync --xds-listen` and Envoys bootstrapped with
//! `--config-source xds`, each on a host of its own: a network namespace
//! ([`crate::netns::Network`], as the fleet test does) or a loopback address (the scale
//! benchmark, where one host is enough).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The default prefix of per-process clusters (the agents here use the defaults).
const PROCESS_PREFIX: &str = "colyseus-process-";

use crate::netns::Host;
use crate::{agent_bin, envoy_bin, filter_wasm, free_port, http_get, wait_for, Proc};

/// An agent serving xDS (and its API) on `ip`.
pub struct XdsAgent {
    pub ip: String,
    host: Host,
    pub xds_port: u16,
    pub api_port: u16,
    pub proc: Proc,
    dir: PathBuf,
    name: String,
    redis_url: String,
    extra: Vec<String>,
}

impl XdsAgent {
    pub fn start(dir: &Path, name: &str, ip: &str, redis_url: &str, extra: &[&str]) -> XdsAgent {
        Self::start_on(dir, name, &Host::loopback(ip), redis_url, extra)
    }

    /// On `host` (a namespace: `redis_url` must be an address it reaches).
    pub fn start_on(
        dir: &Path,
        name: &str,
        host: &Host,
        redis_url: &str,
        extra: &[&str],
    ) -> XdsAgent {
        let dir = dir.join(name);
        std::fs::create_dir_all(dir.join("envoy-config")).unwrap();
        let (xds_port, api_port) = (free_port(), free_port());
        let proc = Self::spawn(&dir, name, host, redis_url, xds_port, api_port, extra);
        let agent = XdsAgent {
            ip: host.ip.clone(),
            host: host.clone(),
            xds_port,
            api_port,
            proc,
            dir,
            name: name.to_owned(),
            redis_url: redis_url.to_owned(),
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
        };
        agent.wait_ready();
        agent
    }

    /// Stops the agent and starts it again on the same addresses (its Envoys reconnect).
    pub fn restart(&mut self) {
        self.proc.stop(Duration::from_secs(5));
        let extra: Vec<&str> = self.extra.iter().map(String::as_str).collect();
        self.proc = Self::spawn(
            &self.dir,
            &self.name,
            &self.host,
            &self.redis_url,
            self.xds_port,
            self.api_port,
            &extra,
        );
    }

    pub fn wait_ready(&self) {
        wait_for("xds agent /ready", Duration::from_secs(120), || {
            (http_get(&self.api(), "/ready").ok()?.0 == 200).then_some(())
        });
    }

    fn spawn(
        dir: &Path,
        name: &str,
        host: &Host,
        redis_url: &str,
        xds_port: u16,
        api_port: u16,
        extra: &[&str],
    ) -> Proc {
        let ip = &host.ip;
        Proc::spawn(
            name,
            host.command(agent_bin())
                .args(["sync", "--redis-url", redis_url])
                .arg("--config-dir")
                .arg(dir.join("envoy-config"))
                .args(["--api-addr", &format!("{ip}:{api_port}")])
                .args(["--xds-listen", &format!("{ip}:{xds_port}")])
                .args(["--resync-interval", "2s", "--probe-timeout", "300ms"])
                .args(extra)
                .env("LOG", "info,colyseus_envoy_agent=debug")
                .stdout(Stdio::null())
                .stderr(
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(dir.join("agent.log"))
                        .unwrap(),
                ),
        )
    }

    pub fn xds(&self) -> String {
        format!("{}:{}", self.ip, self.xds_port)
    }

    pub fn api(&self) -> String {
        format!("{}:{}", self.ip, self.api_port)
    }

    /// `/xds/clients`: the served snapshot and the Envoys streaming from this agent.
    pub fn xds_status(&self) -> Option<serde_json::Value> {
        let (status, _, body) = http_get(&self.api(), "/xds/clients").ok()?;
        (status == 200).then(|| serde_json::from_str(&body).unwrap())
    }

    /// (node id, `delta` or `sotw`) of each stream from this agent, sorted.
    pub fn streams(&self) -> Vec<(String, String)> {
        let mut streams: Vec<(String, String)> = self
            .xds_status()
            .map(|s| {
                s["clients"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| {
                        let field = |k: &str| c[k].as_str().unwrap().to_owned();
                        (field("node_id"), field("protocol"))
                    })
                    .collect()
            })
            .unwrap_or_default();
        streams.sort();
        streams
    }

    /// Node ids streaming from this agent, sorted.
    pub fn node_ids(&self) -> Vec<String> {
        self.streams().into_iter().map(|(node, _)| node).collect()
    }

    /// A sample of `/metrics` (0 when absent or unreachable).
    pub fn metric(&self, series: &str) -> u64 {
        let Ok((_, _, body)) = http_get(&self.api(), "/metrics") else {
            return 0;
        };
        body.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .map_or(0, |v| v.trim().parse().unwrap_or(0))
    }
}

/// Which ADS variant an Envoy streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ads {
    Delta,
    StateOfTheWorld,
}

/// An Envoy taking its clusters over xDS from `agents`, listening on `ip`.
pub struct XdsEnvoy {
    pub node_id: String,
    pub ip: String,
    pub port: u16,
    pub admin: String,
    pub dir: PathBuf,
    pub proc: Proc,
}

impl XdsEnvoy {
    pub fn start(dir: &Path, node_id: &str, ip: &str, agents: &[&XdsAgent]) -> XdsEnvoy {
        Self::start_on(dir, node_id, &Host::loopback(ip), agents)
    }

    /// On `host`; the agents must be reachable from it.
    pub fn start_on(dir: &Path, node_id: &str, host: &Host, agents: &[&XdsAgent]) -> XdsEnvoy {
        Self::start_full(
            dir,
            node_id,
            host,
            agents,
            Ads::Delta,
            &serde_json::json!({}),
        )
    }

    /// As [`Self::start`], with `patch`'s top-level fields set in the bootstrap (for the
    /// benchmark's experiments with Envoy settings, e.g. `cluster_manager`).
    pub fn start_patched(
        dir: &Path,
        node_id: &str,
        ip: &str,
        agents: &[&XdsAgent],
        patch: &serde_json::Value,
    ) -> XdsEnvoy {
        let host = Host::loopback(ip);
        Self::start_full(dir, node_id, &host, agents, Ads::Delta, patch)
    }

    /// As [`Self::start`], on a state-of-the-world ADS stream.
    pub fn start_sotw(dir: &Path, node_id: &str, ip: &str, agents: &[&XdsAgent]) -> XdsEnvoy {
        let host = Host::loopback(ip);
        let no_patch = serde_json::json!({});
        Self::start_full(dir, node_id, &host, agents, Ads::StateOfTheWorld, &no_patch)
    }

    /// `ads`: [`Ads::StateOfTheWorld`] edits the rendered bootstrap (the product's bootstrap
    /// always asks for delta) so a real Envoy exercises the agents' SotW service, which
    /// other xDS clients use. `patch`: top-level bootstrap fields to set.
    pub fn start_full(
        dir: &Path,
        node_id: &str,
        host: &Host,
        agents: &[&XdsAgent],
        ads: Ads,
        patch: &serde_json::Value,
    ) -> XdsEnvoy {
        let ip = host.ip.as_str();
        let dir = dir.join(node_id);
        std::fs::create_dir_all(dir.join("envoy-config")).unwrap();
        let port = free_port();
        // Envoy's admin listens on loopback or a Unix socket only; a socket file is reached
        // from this machine whatever namespace Envoy runs in.
        let admin = format!("unix:{}", dir.join("envoy-admin.sock").display());
        let mut cmd = Command::new(agent_bin());
        cmd.args(["bootstrap", "--ip", ip, "--port", &port.to_string()])
            .args(["--admin-addr", &admin])
            .args(["--config-source", "xds", "--node-id", node_id])
            .arg("--config-dir")
            .arg(dir.join("envoy-config"))
            .arg("--filter-wasm")
            .arg(filter_wasm());
        for a in agents {
            cmd.args(["--xds-server", &a.xds(), "--xds-agent-api", &a.api()]);
        }
        // The single-agent flag is replaced by the list; it must still parse.
        cmd.args(["--agent-api-addr", &agents[0].api()]);
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "bootstrap: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut config: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let api_type = &mut config["dynamic_resources"]["ads_config"]["api_type"];
        assert_eq!(*api_type, "DELTA_GRPC", "bootstrap asks for delta ADS");
        if ads == Ads::StateOfTheWorld {
            *api_type = "GRPC".into();
        }
        for (key, value) in patch.as_object().into_iter().flatten() {
            config[key] = value.clone();
        }
        std::fs::write(dir.join("envoy.json"), config.to_string()).unwrap();
        let proc = Proc::spawn(
            "envoy",
            host.command(envoy_bin())
                .arg("-c")
                .arg(dir.join("envoy.json"))
                .args([
                    "--use-dynamic-base-id",
                    "--log-level",
                    "warn",
                    "--concurrency",
                    "2",
                ])
                .arg("--base-id-path")
                .arg(dir.join("envoy-base-id"))
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.join("envoy.log")).unwrap()),
        );
        let mut envoy = XdsEnvoy {
            node_id: node_id.to_owned(),
            ip: ip.to_owned(),
            port,
            admin,
            dir: dir.clone(),
            proc,
        };
        wait_for("xds envoy ready", Duration::from_secs(30), || {
            if !envoy.proc.is_running() {
                let log = std::fs::read_to_string(dir.join("envoy.log")).unwrap_or_default();
                panic!("envoy exited at start:\n{log}");
            }
            let (status, _, body) = http_get(&envoy.admin, "/ready").ok()?;
            (status == 200 && body.starts_with("LIVE")).then_some(())
        });
        envoy
    }

    pub fn public(&self) -> String {
        format!("{}:{}", self.ip, self.port)
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}:{}", self.ip, self.port)
    }

    /// processIds whose cluster this Envoy has (from xDS), sorted.
    pub fn process_clusters(&self) -> Vec<String> {
        let mut ids: Vec<String> = dynamic_clusters(&self.admin)
            .into_keys()
            .filter_map(|n| n.strip_prefix(PROCESS_PREFIX).map(str::to_owned))
            .collect();
        ids.sort();
        ids
    }

    pub fn wait_clusters(&self, mut expected: Vec<String>, timeout: Duration) {
        expected.sort();
        wait_for(
            &format!("{} having exactly {expected:?}", self.node_id),
            timeout,
            || (self.process_clusters() == expected).then_some(()),
        );
    }

    pub fn stat(&self, name: &str) -> u64 {
        envoy_stat(&self.admin, name)
    }
}

/// A counter or gauge of an Envoy admin.
pub fn envoy_stat(admin: &str, name: &str) -> u64 {
    let Ok((_, _, body)) = http_get(admin, &format!("/stats?filter=^{name}$")) else {
        return 0;
    };
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .map_or(0, |v| v.trim().parse().unwrap_or(0))
}

/// Envoy's dynamic active clusters from `/config_dump`, by name: the cluster protos as
/// Envoy holds them, without the version and time they were loaded at.
pub fn dynamic_clusters(admin: &str) -> BTreeMap<String, serde_json::Value> {
    let Ok((200, _, body)) = http_get(admin, "/config_dump?resource=dynamic_active_clusters")
    else {
        return BTreeMap::new();
    };
    let dump: serde_json::Value = serde_json::from_str(&body).unwrap();
    dump["configs"]
        .as_array()
        .map(|configs| {
            configs
                .iter()
                .map(|c| {
                    let cluster = c["cluster"].clone();
                    (
                        cluster["name"].as_str().unwrap_or_default().to_owned(),
                        cluster,
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// What Envoy routes with, by cluster: each dynamic active cluster from `/config_dump`
/// (as [`dynamic_clusters`]) with its hosts taken from the endpoint dump (`include_eds`,
/// the hosts Envoy holds, inline or from EDS) instead of from the cluster. A cluster fed by
/// EDS from the agent's ADS is shown as the inline `STATIC` cluster it stands for, so the
/// xDS sink's EDS all-processes cluster compares equal to the file sink's inline one
/// exactly when every other field and every host (address, weight) are the same.
pub fn effective_clusters(admin: &str) -> BTreeMap<String, serde_json::Value> {
    let Ok((200, _, body)) = http_get(admin, "/config_dump?include_eds") else {
        return BTreeMap::new();
    };
    let dump: serde_json::Value = serde_json::from_str(&body).unwrap();
    let configs = dump["configs"].as_array().cloned().unwrap_or_default();
    let of_type = |suffix: &str| {
        configs
            .iter()
            .find(|c| c["@type"].as_str().is_some_and(|t| t.ends_with(suffix)))
            .cloned()
            .unwrap_or_default()
    };
    let mut hosts: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    let endpoints = of_type(".EndpointsConfigDump");
    for kind in ["static_endpoint_configs", "dynamic_endpoint_configs"] {
        for e in endpoints[kind].as_array().into_iter().flatten() {
            let cla = &e["endpoint_config"];
            if let Some(name) = cla["cluster_name"].as_str() {
                hosts.insert(name.to_owned(), cla["endpoints"].clone());
            }
        }
    }
    let clusters = of_type(".ClustersConfigDump");
    clusters["dynamic_active_clusters"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            let mut cluster = c["cluster"].clone();
            let name = cluster["name"].as_str().unwrap_or_default().to_owned();
            let map = cluster.as_object_mut().unwrap();
            if map.get("type").and_then(|t| t.as_str()) == Some("EDS") {
                map.insert("type".into(), "STATIC".into());
            }
            map.remove("eds_cluster_config");
            map.remove("load_assignment");
            map.insert(
                "hosts".into(),
                hosts.get(&name).cloned().unwrap_or_default(),
            );
            (name, cluster)
        })
        .collect()
}
