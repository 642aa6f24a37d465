//! Command line and environment. Every flag can also be set from the environment; the
//! names `REDIS_URL`, `PORT` and `IP` are those of `@colyseus/proxy`.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use routing::{PluginConfig, RoutingConfig};

use crate::envoy_admin::AdminEndpoint;
use crate::model::{parse_host_port, Endpoint};

/// colyseus-envoy agent: keeps Envoy routing every Colyseus player to the process that
/// holds their room.
/// A flag given twice takes its last value (scripts append overrides to a base command
/// line, as with environment defaults).
#[derive(Debug, Parser)]
#[command(version, about, long_about = None, args_override_self = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log filter (tracing `EnvFilter` syntax), e.g. `info` or `colyseus_envoy_agent=debug`.
    #[arg(long, env = "LOG", default_value = "info", global = true)]
    pub log: String,
}

// Parsed once at start: the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// The whole proxy: render the bootstrap, run the sync agent and Envoy, supervise them
    /// (SIGHUP or `run hot-restart`: hot-restart Envoy).
    Run(crate::supervise::RunArgs),
    /// Follow Colyseus's Redis presence and keep Envoy's cluster config in step.
    Sync(SyncArgs),
    /// Print the Envoy bootstrap (listener, filter, routes, dynamic clusters) as JSON.
    Bootstrap(BootstrapArgs),
    /// Register a game server that does not register itself (Colyseus 0.17+, custom
    /// servers) in Colyseus 0.16's Redis layout, with a lease so a crash expires by itself.
    Register(RegisterArgs),
    /// Print what an operator checks first: processes (address, state, rooms, CCU, open
    /// connections through Envoy) and the health of the agent, Redis and Envoy.
    Status(StatusArgs),
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The agent's API (as `sync --api-addr`; `AGENT_API_ADDR` works too).
    #[arg(
        long,
        env = "COLYSEUS_ENVOY_API_ADDR",
        default_value = "127.0.0.1:9902"
    )]
    pub api_addr: SocketAddr,
    /// Envoy's admin (as `bootstrap --admin-addr`; `ADMIN_ADDR` works too): `unix:PATH` or
    /// `/PATH` for its Unix socket, `ip:port` for a TCP admin. Default: `run`'s socket,
    /// `$RUN_DIR/envoy-admin.sock` (`RUN_DIR` defaults to `.run/proxy`).
    #[arg(long, env = "COLYSEUS_ENVOY_ADMIN_ADDR")]
    pub admin_addr: Option<AdminEndpoint>,
    /// Redis holding Colyseus presence (for rooms and CCU in `roomcount`).
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,
    #[command(flatten)]
    pub redis: crate::redis_target::RedisArgs,
}

/// Cluster naming and the routing header, shared by the filter and the agent.
#[derive(Debug, Clone, Args)]
pub struct RoutingArgs {
    /// Request header the filter sets to the chosen cluster.
    #[arg(long, env = "COLYSEUS_ENVOY_HEADER", default_value = routing::plugin::DEFAULT_HEADER)]
    pub header: String,
    /// Prefix of each game process's cluster name.
    #[arg(long, env = "COLYSEUS_ENVOY_CLUSTER_PREFIX", default_value = routing::cluster::DEFAULT_PROCESS_PREFIX)]
    pub cluster_prefix: String,
    /// Name of the cluster of all live processes (matchmaking and other requests naming no process).
    #[arg(long, env = "COLYSEUS_ENVOY_ALL_CLUSTER", default_value = routing::cluster::DEFAULT_ALL_CLUSTER)]
    pub all_cluster: String,
}

impl RoutingArgs {
    pub fn plugin_config(&self) -> PluginConfig {
        PluginConfig {
            header: self.header.clone(),
            cluster_prefix: self.cluster_prefix.clone(),
            all_cluster: self.all_cluster.clone(),
            ..PluginConfig::default()
        }
    }

    /// # Errors
    /// The same checks the filter makes at load time.
    pub fn validate(&self) -> Result<RoutingConfig, routing::PluginConfigError> {
        RoutingConfig::try_from(self.plugin_config())
    }
}

/// Where Colyseus's presence layout lives in Redis; the same for `sync` and `register`.
#[derive(Debug, Clone, Args)]
pub struct PresenceKeys {
    /// Redis set of registrations.
    #[arg(
        long,
        env = "COLYSEUS_ENVOY_NODES_KEY",
        default_value = crate::layout::NODES_KEY
    )]
    pub nodes_key: String,
    /// Redis pub/sub channel of registration announcements.
    #[arg(
        long,
        env = "COLYSEUS_ENVOY_DISCOVERY_CHANNEL",
        default_value = crate::layout::DISCOVERY_CHANNEL
    )]
    pub discovery_channel: String,
}

#[derive(Debug, Args)]
pub struct SyncArgs {
    /// Redis holding Colyseus presence (as for `@colyseus/proxy` and RedisPresence).
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,
    #[command(flatten)]
    pub redis: crate::redis_target::RedisArgs,
    /// Directory Envoy watches for dynamic config (`watched_directory`); must exist.
    #[arg(long, env = "COLYSEUS_ENVOY_CONFIG_DIR")]
    pub config_dir: PathBuf,
    /// Where the agent keeps what it last synced, to survive its own restart during a Redis
    /// restart. Keep it outside the watched directory. Default: `agent-state.json` next to
    /// the config directory.
    #[arg(long, env = "COLYSEUS_ENVOY_STATE_FILE")]
    pub state_file: Option<PathBuf>,
    /// Address of the agent's private API (/live, /ready, /metrics, /processes,
    /// /rooms/{roomId}).
    #[arg(
        long,
        env = "COLYSEUS_ENVOY_API_ADDR",
        default_value = "127.0.0.1:9902"
    )]
    pub api_addr: SocketAddr,
    #[command(flatten)]
    pub presence: PresenceKeys,
    /// MongoDB holding MongooseDriver's room listings (as Colyseus's `MONGO_URI`; database
    /// from the URI's path, `colyseus` if none). Unset: no room index.
    #[arg(long, env = "MONGO_URI")]
    pub mongo_uri: Option<String>,
    /// Collection of the room listings.
    #[arg(
        long,
        env = "COLYSEUS_ENVOY_MONGO_COLLECTION",
        default_value = "roomcaches"
    )]
    pub mongo_collection: String,
    /// Index RedisDriver's room listings (the `roomcaches` hash) instead: read whole every
    /// `--redis-rooms-interval`, and one room on demand when a lookup misses.
    #[arg(long, env = "COLYSEUS_ENVOY_REDIS_ROOMS", conflicts_with = "mongo_uri")]
    pub redis_rooms: bool,
    /// Redis holding RedisDriver's listings, if not the presence Redis (`--redis-url`).
    #[arg(long, env = "COLYSEUS_ENVOY_REDIS_ROOMS_URL")]
    pub redis_rooms_url: Option<String>,
    /// Period of the full read of RedisDriver's listings.
    #[arg(long, env = "COLYSEUS_ENVOY_REDIS_ROOMS_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub redis_rooms_interval: Duration,
    /// Port assumed for a registration written without one.
    #[arg(long, env = "COLYSEUS_ENVOY_DEFAULT_PORT", default_value_t = 2567, value_parser = clap::value_parser!(u16).range(1..))]
    pub default_port: u16,
    /// What matchmaking requests are balanced on: `rooms` or `ccu` (each process's load
    /// from Colyseus's `roomcount` hash sets its weight in the all-processes cluster, 10 for
    /// the least loaded down to 1 for the busiest), or `even` (plain round robin).
    #[arg(
        long,
        env = "COLYSEUS_ENVOY_BALANCE",
        value_enum,
        default_value = "rooms"
    )]
    pub balance: crate::balance::Balance,
    /// How often the loads are read for `--balance rooms|ccu`.
    #[arg(long, env = "COLYSEUS_ENVOY_BALANCE_INTERVAL", default_value = "2s", value_parser = humantime::parse_duration)]
    pub balance_interval: Duration,
    /// Period of the full re-read of the registrations while connected.
    #[arg(long, env = "COLYSEUS_ENVOY_RESYNC_INTERVAL", default_value = "10s", value_parser = humantime::parse_duration)]
    pub resync_interval: Duration,
    /// Bound on connecting to Redis and on each Redis command.
    #[arg(long, env = "COLYSEUS_ENVOY_REDIS_TIMEOUT", default_value = "2s", value_parser = humantime::parse_duration)]
    pub redis_timeout: Duration,
    /// After a Redis restart, write registrations it lost (of processes that still answer)
    /// back into Redis. With `false` the emptied Redis is trusted: they leave matchmaking and drain.
    #[arg(long, env = "COLYSEUS_ENVOY_RESTORE_LOST_REGISTRATIONS", default_value_t = true, action = clap::ArgAction::Set)]
    pub restore_lost_registrations: bool,
    /// TCP probe timeout, for processes Redis lost and for draining processes.
    #[arg(long, env = "COLYSEUS_ENVOY_PROBE_TIMEOUT", default_value = "1s", value_parser = humantime::parse_duration)]
    pub probe_timeout: Duration,
    /// Probes (all failing) before a process counts as gone.
    #[arg(long, env = "COLYSEUS_ENVOY_PROBE_ATTEMPTS", default_value_t = 3)]
    pub probe_attempts: u32,
    /// Longest time a process that unregistered keeps its own cluster (for its remaining
    /// rooms); it goes earlier once it stops accepting connections.
    #[arg(long, env = "COLYSEUS_ENVOY_MAX_DRAIN", default_value = "10m", value_parser = humantime::parse_duration)]
    pub max_drain: Duration,
    /// How often draining processes are probed.
    #[arg(long, env = "COLYSEUS_ENVOY_DRAIN_CHECK_INTERVAL", default_value = "2s", value_parser = humantime::parse_duration)]
    pub drain_check_interval: Duration,
    /// Liveness probe of registered processes: `ipc-or-tcp` (Colyseus's IPC health check
    /// over Redis, which also catches a hung process; TCP connect for processes that do not
    /// listen on their IPC channel), `tcp`, or `off`.
    #[arg(
        long,
        env = "COLYSEUS_ENVOY_LIVENESS",
        value_enum,
        default_value = "ipc-or-tcp"
    )]
    pub liveness: crate::controller::LivenessMode,
    /// Period of the liveness probes.
    #[arg(long, env = "COLYSEUS_ENVOY_LIVENESS_INTERVAL", default_value = "2s", value_parser = humantime::parse_duration)]
    pub liveness_interval: Duration,
    /// Consecutive failed liveness probes before a process counts as dead.
    #[arg(long, env = "COLYSEUS_ENVOY_DEAD_AFTER_FAILURES", default_value_t = 3)]
    pub dead_after_failures: u32,
    /// Least time from a process's first failed probe to declaring it dead: a stall shorter
    /// than this never unroutes a process (one missed ping is not death, colyseus#968).
    #[arg(long, env = "COLYSEUS_ENVOY_DEAD_AFTER", default_value = "4s", value_parser = humantime::parse_duration)]
    pub dead_after: Duration,
    /// Also remove a dead process from Redis presence (SREM colyseus:nodes, HDEL roomcount,
    /// `remove` announcement), as Colyseus's own cleanup does. Off by default: a process that
    /// was only stalled would never register again (Colyseus registers once).
    #[arg(long, env = "COLYSEUS_ENVOY_EVICT_DEAD_FROM_PRESENCE", default_value_t = false, action = clap::ArgAction::Set)]
    pub evict_dead_from_presence: bool,
    /// Envoy's active health check of each process: `tcp`, `http:/path` (e.g.
    /// `http:/__healthcheck` for Colyseus 0.17 or `@colyseus/tools`) or `off`.
    #[arg(long, env = "COLYSEUS_ENVOY_HEALTH_CHECK", default_value = "tcp")]
    pub health_check: String,
    /// Interval of Envoy's active health check; a host is unhealthy after 3 failures.
    #[arg(long, env = "COLYSEUS_ENVOY_HEALTH_CHECK_INTERVAL", default_value = "2s", value_parser = humantime::parse_duration)]
    pub health_check_interval: Duration,
    /// Upstream connect timeout of the generated clusters.
    #[arg(long, env = "COLYSEUS_ENVOY_CONNECT_TIMEOUT", default_value = "2s", value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,
    /// Connection limit per cluster (each WebSocket holds one upstream connection; Envoy's
    /// default of 1,024 would cap the players of a process).
    #[arg(
        long,
        env = "COLYSEUS_ENVOY_MAX_CONNECTIONS",
        default_value_t = 1_000_000
    )]
    pub max_connections: u32,
    /// Networks game servers may be in, comma-separated (`10.0.0.0/8,fd00::/8`). A
    /// registration elsewhere is refused, loopback included unless listed. Unset: any
    /// address but Envoy's admin, the agent's API, link-local, metadata, multicast,
    /// broadcast, unspecified and reserved ones (loopback allowed, for a single-host stack).
    /// Set it in production.
    #[arg(long, env = "COLYSEUS_ENVOY_UPSTREAM_ALLOW_CIDRS")]
    pub upstream_allow_cidrs: Option<String>,
    /// How often registered DNS names are resolved again (by the agent, which checks every
    /// address and gives Envoy the checked IP).
    #[arg(long, env = "COLYSEUS_ENVOY_UPSTREAM_DNS_INTERVAL", default_value = "5s", value_parser = humantime::parse_duration)]
    pub upstream_dns_interval: Duration,
    /// Envoy's admin (as `bootstrap --admin-addr`): read to advertise a new process (in
    /// `/processes` and room lookups) only once Envoy routes to its cluster, and to end a
    /// drain once the process carries no connection; if TCP, refused as an upstream.
    /// Default: the Unix socket `envoy-admin.sock` next to the config directory
    /// (`bootstrap`'s default). Unreachable: new processes are advertised as soon as their
    /// cluster is written, and drains end by probe or `--max-drain`.
    #[arg(long, env = "COLYSEUS_ENVOY_ADMIN_ADDR")]
    pub admin_addr: Option<AdminEndpoint>,
    /// A draining process whose cluster carries no request (no WebSocket, no HTTP) for this
    /// long is removed, instead of waiting for `--max-drain`: covers a seat reserved just
    /// before the unregistration whose player has not connected yet.
    #[arg(long, env = "COLYSEUS_ENVOY_DRAIN_IDLE", default_value = "5s", value_parser = humantime::parse_duration)]
    pub drain_idle: Duration,
    /// Also serve the clusters over xDS (delta and state-of-the-world ADS over gRPC) on
    /// this address, to Envoys bootstrapped with `--config-source xds`. The CDS file is
    /// still written (see `--no-cds-file`). Envoys on other hosts reach it: bind a private
    /// address.
    #[arg(long, env = "COLYSEUS_ENVOY_XDS_LISTEN")]
    pub xds_listen: Option<SocketAddr>,
    /// Shards of the all-processes cluster (1 to 256): Envoy rebuilds a cluster's whole
    /// host set on every update, so a large fleet in one matchmaking cluster costs Envoy
    /// ~2 µs per process per registration. With N shards a registration updates one shard;
    /// the filter spreads matchmaking over the shards by their processes' weights. About
    /// one shard per 1,000 processes; 1 is the unsharded cluster `--all-cluster`.
    #[arg(long, env = "COLYSEUS_ENVOY_ALL_SHARDS", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=i64::from(routing::cluster::MAX_ALL_SHARDS)))]
    pub all_shards: u32,
    /// With `--xds-listen`, for an agent that no Envoy on its host reads files from: write
    /// no CDS file, serve xDS only. The file is the whole fleet, re-rendered on every
    /// change (about 0.2 s of agent CPU per registration at 10,000 processes). Envoy's
    /// admin on this host is then not read either: new processes are gated by each
    /// Envoy's ACK, and drains end by probe or `--max-drain`.
    #[arg(long, env = "COLYSEUS_ENVOY_NO_CDS_FILE", requires = "xds_listen")]
    pub no_cds_file: bool,
    /// Longest a room lookup waits for a new process's cluster: for Envoy's warm-up (with
    /// `--admin-addr`) and, with `--xds-listen`, for the asking Envoy's ACK, after which it
    /// is answered 503 `not_acked`. Keep it below the filter's lookup timeout (500 ms).
    #[arg(long, env = "COLYSEUS_ENVOY_LOOKUP_WAIT", default_value = "300ms", value_parser = humantime::parse_duration)]
    pub lookup_wait: Duration,
    #[command(flatten)]
    pub routing: RoutingArgs,
}

impl SyncArgs {
    /// Envoy's admin: `--admin-addr`, or `bootstrap`'s default socket.
    pub fn admin(&self) -> AdminEndpoint {
        self.admin_addr
            .clone()
            .unwrap_or_else(|| AdminEndpoint::Unix(sibling_of(&self.config_dir, ADMIN_SOCKET)))
    }

    pub fn state_file(&self) -> PathBuf {
        self.state_file.clone().unwrap_or_else(|| {
            let dir = self.config_dir.components().as_path();
            let parent = dir.parent().filter(|p| !p.as_os_str().is_empty());
            parent
                .unwrap_or(std::path::Path::new("."))
                .join("agent-state.json")
        })
    }
}

#[derive(Debug, Args)]
pub struct BootstrapArgs {
    /// Address of the public listener (`IP` as in `@colyseus/proxy`).
    #[arg(long, env = "IP", default_value = "0.0.0.0")]
    pub ip: IpAddr,
    /// Port of the public listener (`PORT` as in `@colyseus/proxy`).
    #[arg(long, env = "PORT", default_value_t = 80)]
    pub port: u16,
    /// Envoy's admin: a Unix socket (`unix:PATH` or `/PATH`, created with mode 0600 so only
    /// Envoy's user reaches it), or, as an explicit opt-in, a loopback `ip:port` (then give
    /// `sync` the same `--admin-addr`, which refuses it as an upstream). It can change and
    /// stop Envoy. Default: `envoy-admin.sock` next to the config directory.
    #[arg(long, env = "COLYSEUS_ENVOY_ADMIN_ADDR")]
    pub admin_addr: Option<AdminEndpoint>,
    /// Longest a new connection may stay silent before its request starts; open
    /// WebSockets are not affected. Envoy's `request_headers_timeout` only starts at the
    /// first byte, so without this a silent socket is held until the idle timeout.
    #[arg(long, env = "COLYSEUS_ENVOY_SILENT_CONNECTION_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub silent_connection_timeout: Duration,
    /// Public `host[:port]` the HTTP listener redirects to when TLS is on. Unset: the
    /// request's `Host`, only if it is a valid host[:port] (else 400).
    #[arg(long, env = "COLYSEUS_ENVOY_PUBLIC_HOST")]
    pub public_host: Option<String>,
    /// Directory the agent writes dynamic config to (as `sync --config-dir`).
    #[arg(long, env = "COLYSEUS_ENVOY_CONFIG_DIR")]
    pub config_dir: PathBuf,
    /// The filter's compiled `.wasm` file.
    #[arg(long, env = "COLYSEUS_ENVOY_FILTER_WASM")]
    pub filter_wasm: PathBuf,
    /// Upper bound of a plain HTTP request (matchmaking); WebSockets have none.
    #[arg(long, env = "COLYSEUS_ENVOY_REQUEST_TIMEOUT", default_value = "15s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,
    /// TLS certificate chain (PEM), as `@colyseus/proxy`'s `SSL_CERT`. With `--tls-key`,
    /// Envoy serves HTTPS/WSS on `--tls-port` and `--port` only redirects to it. Replacing
    /// the files (moved into their directory) reloads them without dropping connections.
    #[arg(long, env = "SSL_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM), as `@colyseus/proxy`'s `SSL_KEY`.
    #[arg(long, env = "SSL_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Port of the HTTPS listener.
    #[arg(long, env = "COLYSEUS_ENVOY_TLS_PORT", default_value_t = 443)]
    pub tls_port: u16,
    /// Where to write the SDS file naming the certificate files (default: `tls-secret.json`
    /// next to the config directory).
    #[arg(long, env = "COLYSEUS_ENVOY_TLS_SECRET_FILE")]
    pub tls_secret_file: Option<PathBuf>,
    /// Path Envoy itself answers with 200, as `@colyseus/proxy`'s `HEALTH_CHECK_PATH`; a
    /// leading `*` makes it a suffix (`*/health` matches any path ending in `/health`).
    #[arg(long, env = "HEALTH_CHECK_PATH")]
    pub health_path: Option<String>,
    /// Idle timeout of any stream, WebSockets included, as `@colyseus/proxy`'s
    /// `SOCKET_TIMEOUT`: a plain number is milliseconds (`30000`), or a duration (`5m`).
    #[arg(long, env = "SOCKET_TIMEOUT", default_value = "5m", value_parser = parse_socket_timeout)]
    pub socket_timeout: Duration,
    /// Proxies in front of Envoy (a cloud load balancer...) whose x-forwarded-for entries
    /// are trusted to find the client's address; 0 when Envoy is the edge.
    #[arg(long, env = "COLYSEUS_ENVOY_TRUSTED_HOPS", default_value_t = 0)]
    pub trusted_hops: u32,
    /// `http`: every connection through Envoy's HTTP connection manager. `tcp`: room
    /// WebSockets to a live process skip it and are raw TCP (a third of the memory per
    /// idle player), everything else goes through it as before. `tcp` needs
    /// `--trusted-hops 0`.
    #[arg(long, env = "COLYSEUS_ENVOY_EDGE_PATH", value_enum, default_value_t = crate::bootstrap::EdgePath::Http)]
    pub edge_path: crate::bootstrap::EdgePath,
    /// Most downstream connections Envoy holds open at once (WebSockets included).
    #[arg(
        long,
        env = "COLYSEUS_ENVOY_MAX_DOWNSTREAM_CONNECTIONS",
        default_value_t = 100_000
    )]
    pub max_downstream_connections: u64,
    /// The agent's API address (as `sync --api-addr`): the filter asks it where a room is
    /// when a path's processId is missing, `undefined` or not a live process. `ip:port`
    /// (IPv6 in brackets) or `name:port`, a DNS name Envoy resolves (docker compose's
    /// `agent:9902`, a Kubernetes service).
    #[arg(
        long,
        env = "COLYSEUS_ENVOY_API_ADDR",
        default_value = "127.0.0.1:9902",
        value_parser = parse_host_port
    )]
    pub agent_api_addr: Endpoint,
    /// Where Envoy's clusters come from: `file` (the CDS file `sync` writes beside it) or
    /// `xds` (delta ADS from the `--xds-server` agents, for Envoys on other hosts).
    #[arg(
        long,
        env = "COLYSEUS_ENVOY_CONFIG_SOURCE",
        value_enum,
        default_value = "file"
    )]
    pub config_source: crate::bootstrap::xds::ConfigSource,
    /// An agent's `sync --xds-listen` address, `ip:port` or `name:port`; repeat it for
    /// several agents (Envoy moves to another when its agent dies).
    #[arg(long = "xds-server", env = "COLYSEUS_ENVOY_XDS_SERVERS", value_delimiter = ',', value_parser = parse_host_port)]
    pub xds_servers: Vec<Endpoint>,
    /// With `--config-source xds`: every agent's API (`sync --api-addr`), repeatable, for
    /// the filter's lookups (instead of the one `--agent-api-addr`); a dead one is skipped.
    #[arg(long = "xds-agent-api", env = "COLYSEUS_ENVOY_XDS_AGENT_APIS", value_delimiter = ',', value_parser = parse_host_port)]
    pub xds_agent_apis: Vec<Endpoint>,
    /// This Envoy's node id, unique per Envoy: the agents tell Envoys apart by it.
    #[arg(long, env = "COLYSEUS_ENVOY_NODE_ID", default_value = "colyseus-envoy")]
    pub node_id: String,
    #[command(flatten)]
    pub routing: RoutingArgs,
}

impl BootstrapArgs {
    /// Envoy's admin: `--admin-addr`, or the default socket.
    pub fn admin(&self) -> AdminEndpoint {
        self.admin_addr
            .clone()
            .unwrap_or_else(|| AdminEndpoint::Unix(sibling_of(&self.config_dir, ADMIN_SOCKET)))
    }

    pub fn tls_secret_file(&self) -> PathBuf {
        self.tls_secret_file
            .clone()
            .unwrap_or_else(|| sibling_of(&self.config_dir, "tls-secret.json"))
    }
}

/// File name of Envoy's admin socket by default, next to the config directory.
pub const ADMIN_SOCKET: &str = "envoy-admin.sock";

/// `name` in the parent of `dir` (or the current directory).
fn sibling_of(dir: &std::path::Path, name: &str) -> PathBuf {
    let dir = dir.components().as_path();
    let parent = dir.parent().filter(|p| !p.as_os_str().is_empty());
    parent.unwrap_or(std::path::Path::new(".")).join(name)
}

/// `SOCKET_TIMEOUT` as `@colyseus/proxy` reads it (milliseconds), or a humantime duration.
fn parse_socket_timeout(s: &str) -> Result<Duration, String> {
    match s.parse::<u64>() {
        Ok(ms) => Ok(Duration::from_millis(ms)),
        Err(_) => humantime::parse_duration(s).map_err(|e| e.to_string()),
    }
}

#[derive(Debug, Args)]
pub struct RegisterArgs {
    /// Redis the proxy's agent reads (as for `sync`).
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,
    #[command(flatten)]
    pub redis: crate::redis_target::RedisArgs,
    /// The game server's processId: the first of the two last path segments of its room
    /// URLs (`/{processId}/{roomId}`). Alphabet `[A-Za-z0-9_-]`, at most 64 characters.
    #[arg(long, env = "COLYSEUS_ENVOY_PROCESS_ID")]
    pub process_id: String,
    /// Host the proxy reaches the game server at: an IP address or a DNS name (not
    /// `0.0.0.0`, not `undefined`). An IPv6 address may be given with or without brackets.
    #[arg(long, env = "COLYSEUS_ENVOY_ADVERTISE_HOST")]
    pub advertise_host: String,
    /// The game server's port (registered, and checked locally).
    #[arg(long, env = "COLYSEUS_ENVOY_PORT")]
    pub port: u16,
    /// Lifetime of the registration unless refreshed (every third of it). A registrar that
    /// dies without deregistering is removed by the sync agent once it runs out. At least 3s.
    #[arg(long, env = "COLYSEUS_ENVOY_LEASE_TTL", default_value = "15s", value_parser = humantime::parse_duration)]
    pub lease_ttl: Duration,
    /// Health check of the local game server: `tcp` (accepts a connection) or `http:/path`
    /// (`GET /path` gets any HTTP response, whatever its status). Nothing is registered
    /// before the first success.
    #[arg(long, env = "COLYSEUS_ENVOY_HEALTH_CHECK", default_value = "tcp")]
    pub health_check: String,
    /// `host:port` the health check connects to. Default: `127.0.0.1:{port}`.
    #[arg(long, env = "COLYSEUS_ENVOY_HEALTH_ADDRESS")]
    pub health_address: Option<String>,
    /// Period of the health checks.
    #[arg(long, env = "COLYSEUS_ENVOY_HEALTH_INTERVAL", default_value = "2s", value_parser = humantime::parse_duration)]
    pub health_interval: Duration,
    /// Bound on one health check.
    #[arg(long, env = "COLYSEUS_ENVOY_HEALTH_TIMEOUT", default_value = "1s", value_parser = humantime::parse_duration)]
    pub health_timeout: Duration,
    /// Consecutive failed checks that deregister the server.
    #[arg(long, env = "COLYSEUS_ENVOY_UNHEALTHY_THRESHOLD", default_value_t = 3)]
    pub unhealthy_threshold: u32,
    /// Consecutive passed checks that register it again after that.
    #[arg(long, env = "COLYSEUS_ENVOY_HEALTHY_THRESHOLD", default_value_t = 2)]
    pub healthy_threshold: u32,
    /// Bound on connecting to Redis and on each command (at most a third of the lease).
    #[arg(long, env = "COLYSEUS_ENVOY_REDIS_TIMEOUT", default_value = "2s", value_parser = humantime::parse_duration)]
    pub redis_timeout: Duration,
    #[command(flatten)]
    pub presence: PresenceKeys,
}
