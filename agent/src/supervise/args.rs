//! `run`'s own settings. Everything else reaches the children unchanged: they inherit the
//! environment (every `sync` and `bootstrap` variable works as for those commands) and the
//! `--sync-arg` / `--bootstrap-arg` values, so new `sync` or `bootstrap` options need no
//! change here.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::envoy_admin::AdminEndpoint;

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(subcommand)]
    pub action: Option<RunAction>,
    #[command(flatten)]
    pub proxy: ProxyArgs,
}

#[derive(Debug, Subcommand)]
pub enum RunAction {
    /// Ask the running `run` (same RUN_DIR) for an Envoy hot restart, as SIGHUP does.
    HotRestart {
        /// Also when the Envoy of the previous hot restart still drains (Envoy then
        /// terminates it, cutting the connections it still holds).
        #[arg(long)]
        force: bool,
        #[arg(long, env = "RUN_DIR", default_value = ".run/proxy")]
        run_dir: PathBuf,
    },
}

#[derive(Debug, Clone, Args)]
pub struct ProxyArgs {
    /// Address of the public listener (as `@colyseus/proxy`).
    #[arg(long, env = "IP", default_value = "0.0.0.0")]
    pub ip: IpAddr,
    /// Port of the public listener (as `@colyseus/proxy`).
    #[arg(long, env = "PORT", default_value_t = 80)]
    pub port: u16,
    /// HTTPS port, checked free when `SSL_CERT` is set (`bootstrap` serves it).
    #[arg(long, env = "COLYSEUS_ENVOY_TLS_PORT", default_value_t = 443)]
    pub tls_port: u16,
    /// Set: TLS is on, so `--tls-port` must be free too (read only for that check).
    #[arg(long, env = "SSL_CERT", hide = true)]
    pub tls_cert: Option<PathBuf>,
    /// Envoy's admin (`ADMIN_ADDR` works too): `unix:PATH` or a loopback `ip:port`.
    /// Default: `unix:$RUN_DIR/envoy-admin.sock`.
    #[arg(long, env = "COLYSEUS_ENVOY_ADMIN_ADDR")]
    pub admin_addr: Option<AdminEndpoint>,
    /// The agent's API (`AGENT_API_ADDR` works too).
    #[arg(
        long,
        env = "COLYSEUS_ENVOY_API_ADDR",
        default_value = "127.0.0.1:9902"
    )]
    pub api_addr: SocketAddr,
    /// Directory of the bootstrap, the watched config directory, the state file and
    /// the control socket `run.sock`; created if missing.
    #[arg(long, env = "RUN_DIR", default_value = ".run/proxy")]
    pub run_dir: PathBuf,
    /// The Envoy binary (a path, or a name looked up in PATH).
    #[arg(long, env = "ENVOY_BIN", default_value = "envoy")]
    pub envoy_bin: PathBuf,
    /// The filter's compiled `.wasm` file (required).
    #[arg(long, env = "COLYSEUS_ENVOY_FILTER_WASM")]
    pub filter_wasm: Option<PathBuf>,
    /// Envoy's `--log-level`.
    #[arg(long, env = "ENVOY_LOG_LEVEL", default_value = "warn")]
    pub envoy_log_level: String,
    /// Envoy's worker threads (default: one per core).
    #[arg(long, env = "ENVOY_CONCURRENCY")]
    pub envoy_concurrency: Option<u32>,
    /// Envoy can be hot-restarted (a base id of its own); `false`: `--disable-hot-restart`.
    #[arg(long, env = "ENVOY_HOT_RESTART", default_value_t = true, action = clap::ArgAction::Set)]
    pub hot_restart: bool,
    /// After a hot restart, seconds the old Envoy drains.
    #[arg(long, env = "ENVOY_DRAIN_TIME", default_value_t = 600)]
    pub drain_time: u32,
    /// ...and seconds until it exits, closing what it still holds (WebSockets included).
    #[arg(long, env = "ENVOY_PARENT_SHUTDOWN_TIME", default_value_t = 900)]
    pub parent_shutdown_time: u32,
    /// Longest wait for the agent's first sync before Envoy starts anyway (it keeps
    /// retrying Redis), and for Envoy to go live.
    #[arg(long, env = "COLYSEUS_ENVOY_READY_TIMEOUT", default_value = "15s", value_parser = humantime::parse_duration)]
    pub ready_timeout: std::time::Duration,
    /// One more argument for `sync` (repeat it: `--sync-arg=--balance --sync-arg=even`).
    #[arg(long = "sync-arg", allow_hyphen_values = true)]
    pub sync_args: Vec<String>,
    /// One more argument for `bootstrap`.
    #[arg(long = "bootstrap-arg", allow_hyphen_values = true)]
    pub bootstrap_args: Vec<String>,
}
