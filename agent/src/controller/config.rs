//! What the controller is told: intervals, policies and the optional Envoy admin.

use std::path::PathBuf;
use std::time::Duration;

use crate::balance::Balance;
use crate::liveness;

/// Behaviour of the controller.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// Port assumed for members written without one.
    pub default_port: u16,
    /// Period of the full re-read while connected.
    pub resync_interval: Duration,
    /// Write registrations that Redis lost (restart) back into Redis.
    pub restore_lost_registrations: bool,
    /// Where the last synced state is kept across agent restarts, if anywhere. Read once at
    /// start; written by the state-file sink.
    pub state_file: Option<PathBuf>,
    /// Longest wait between reconnection attempts.
    pub max_backoff: Duration,
    /// Longest time an unregistered process keeps its cluster.
    pub max_drain: Duration,
    /// How often draining processes are probed (and expired).
    pub drain_check_interval: Duration,
    pub liveness: LivenessConfig,
    /// What the all-processes cluster's weights follow.
    pub balance: Balance,
    /// How often the loads are read (unless `balance` is even).
    pub balance_interval: Duration,
    /// Which addresses registrations may point Envoy at.
    pub upstream_policy: crate::upstream_policy::UpstreamPolicy,
    /// How often registered DNS names are resolved again.
    pub upstream_dns_interval: Duration,
    /// Envoy's admin, read to end the drain of a process that carries no request.
    pub envoy_admin: Option<crate::envoy_admin::AdminEndpoint>,
    /// How long a draining process must carry no request before its cluster goes.
    pub drain_idle: Duration,
    /// Cluster names, to find each process in Envoy's stats.
    pub cluster_names: routing::ClusterNames,
}

/// How registered processes are watched for death.
#[derive(Debug, Clone, Copy)]
pub struct LivenessConfig {
    pub mode: LivenessMode,
    /// Period of the probes; an IPC ping unanswered by the next round failed.
    pub interval: Duration,
    pub policy: liveness::Policy,
    /// Also remove a dead process from Redis presence, as Colyseus's own cleanup does.
    pub evict_from_presence: bool,
}

/// The probe used for liveness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LivenessMode {
    /// Colyseus's IPC health check over Redis (sees a hung process too); a TCP connect for
    /// processes that do not listen on their IPC channel.
    IpcOrTcp,
    /// A TCP connect to the process only.
    Tcp,
    /// No liveness probing: a registered process is always routed.
    Off,
}
