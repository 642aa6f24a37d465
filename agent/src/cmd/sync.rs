//! `colyseus-envoy sync`: the flags checked, then the agent wired (sources, controller,
//! sinks, API, optional xDS server) and run until SIGTERM/SIGINT.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use colyseus_envoy_agent::api;
use colyseus_envoy_agent::cli_env;
use colyseus_envoy_agent::config::SyncArgs;
use colyseus_envoy_agent::controller::{Controller, ControllerConfig, LivenessConfig, TcpProber};
use colyseus_envoy_agent::envoy_admin::AdminEndpoint;
use colyseus_envoy_agent::liveness;
use colyseus_envoy_agent::probe::ProbeConfig;
use colyseus_envoy_agent::sinks::envoy_files::{ClusterOptions, EnvoyFilesSink, HealthCheck};
use colyseus_envoy_agent::sinks::{api_view::ApiView, local, state_file::StateFileSink};
use colyseus_envoy_agent::sources::mongo::{MongoRoomsConfig, MongoRoomsSource};
use colyseus_envoy_agent::sources::redis::{RedisPresenceConfig, RedisPresenceSource};
use colyseus_envoy_agent::sources::redis_rooms::{self, RedisRoomsConfig, RedisRoomsSource};
use colyseus_envoy_agent::sources::RoomFetcher;
use colyseus_envoy_agent::status::Status;
use colyseus_envoy_agent::supervise;
use colyseus_envoy_agent::upstream_policy::{self, UpstreamPolicy};
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::{shutdown_signal, usage};

/// `sync`: checks the flags (exit 64 on a bad one), then wires the sources, the controller,
/// the sinks and the API, and runs until SIGTERM/SIGINT.
pub async fn sync(args: SyncArgs) -> ExitCode {
    let mut routing = match args.routing.validate() {
        Ok(r) => r,
        Err(e) => return usage(&e),
    };
    routing.names = match routing.names.clone().with_all_shards(args.all_shards) {
        Ok(names) => names,
        Err(e) => return usage(&e),
    };
    if !args.config_dir.is_dir() {
        return usage(&format!(
            "--config-dir {} is not a directory",
            args.config_dir.display()
        ));
    }
    let target = match args.redis.target(&args.redis_url) {
        Ok(t) => t,
        Err(e) => return usage(&cli_env::named("--redis-url", "REDIS_URL", &e)),
    };
    let rooms_target = match &args.redis_rooms_url {
        Some(url) => match args.redis.standalone(url) {
            Ok(t) => t,
            Err(e) => return usage(&e),
        },
        None => target.clone(),
    };
    let source = RedisPresenceSource::new(RedisPresenceConfig {
        target,
        nodes_key: args.presence.nodes_key.clone(),
        discovery_channel: args.presence.discovery_channel.clone(),
        timeout: args.redis_timeout,
    });
    let health_check = match HealthCheck::parse(&args.health_check, args.health_check_interval) {
        Ok(h) => h,
        Err(e) => return usage(&e),
    };
    let allow =
        match upstream_policy::parse_cidrs(args.upstream_allow_cidrs.as_deref().unwrap_or("")) {
            Ok(a) => a,
            Err(e) => return usage(&format!("--upstream-allow-cidrs: {e}")),
        };
    let policy = UpstreamPolicy {
        allow,
        envoy_admin: match args.admin() {
            AdminEndpoint::Tcp(addr) => Some(addr),
            AdminEndpoint::Unix(_) => None,
        },
        agent_api: Some(args.api_addr),
    };
    match run_sync(args, routing, source, rooms_target, health_check, policy).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run_sync(
    args: SyncArgs,
    routing: routing::RoutingConfig,
    source: RedisPresenceSource,
    rooms_target: colyseus_envoy_agent::redis_target::RedisTarget,
    health_check: HealthCheck,
    upstream_policy: UpstreamPolicy,
) -> anyhow::Result<()> {
    let mut status = Status::new(routing.names.clone());
    let (tx, rx) = tokio::sync::mpsc::channel(1024);
    let room_source = if let Some(uri) = &args.mongo_uri {
        let mut config = MongoRoomsConfig::new(uri.clone());
        config.collection.clone_from(&args.mongo_collection);
        let source = MongoRoomsSource::new(config)
            .await
            .context("configuring the MongoDB room listings")?;
        status = status
            .with_rooms()
            .with_fetcher(RoomFetcher::Mongo(source.fetcher()));
        tokio::spawn(source.run(tx));
        Some("mongo")
    } else if args.redis_rooms {
        let source = RedisRoomsSource::new(RedisRoomsConfig {
            target: rooms_target,
            key: redis_rooms::DEFAULT_KEY.to_owned(),
            interval: args.redis_rooms_interval,
            timeout: args.redis_timeout,
        });
        status = status
            .with_rooms()
            .with_fetcher(RoomFetcher::Redis(Box::new(source.fetcher())));
        tokio::spawn(source.run(tx));
        Some("redis-rooms")
    } else {
        None
    };
    // New processes are advertised once Envoy routes to them, read on its admin; with no
    // CDS file there is no Envoy here to read, and the xDS ACK gate decides.
    let local_envoy = (!args.no_cds_file).then(|| args.admin());
    if local_envoy.is_some() {
        status = status.with_warmup_gate();
    }
    status = status.with_lookup_wait(args.lookup_wait);
    let status = Arc::new(status);
    if let Some(admin) = local_envoy.clone() {
        tokio::spawn(colyseus_envoy_agent::warmup::follow(status.clone(), admin));
    }
    if let Some(name) = room_source {
        tokio::spawn(colyseus_envoy_agent::status::follow_rooms(
            status.clone(),
            name,
            rx,
        ));
    }
    let listener = tokio::net::TcpListener::bind(args.api_addr)
        .await
        .with_context(|| format!("binding the API to {}", args.api_addr))?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let api = tokio::spawn(api::serve(
        listener,
        status.clone(),
        stopped(stop_rx.clone()),
    ));
    let cluster_options = ClusterOptions {
        names: routing.names.clone(),
        connect_timeout: args.connect_timeout,
        max_connections: args.max_connections,
        health_check,
    };
    let sink = (!args.no_cds_file)
        .then(|| EnvoyFilesSink::new(args.config_dir.clone(), cluster_options.clone()));
    let prober = TcpProber(ProbeConfig {
        timeout: args.probe_timeout,
        attempts: args.probe_attempts,
        interval: std::time::Duration::from_millis(300),
    });
    let config = ControllerConfig {
        default_port: args.default_port,
        resync_interval: args.resync_interval,
        restore_lost_registrations: args.restore_lost_registrations,
        state_file: Some(args.state_file()),
        max_backoff: std::time::Duration::from_secs(5),
        max_drain: args.max_drain,
        drain_check_interval: args.drain_check_interval,
        liveness: LivenessConfig {
            mode: args.liveness,
            interval: args.liveness_interval,
            policy: liveness::Policy {
                failures: args.dead_after_failures,
                window: args.dead_after,
            },
            evict_from_presence: args.evict_dead_from_presence,
        },
        balance: args.balance,
        balance_interval: args.balance_interval,
        upstream_policy,
        upstream_dns_interval: args.upstream_dns_interval,
        envoy_admin: local_envoy,
        drain_idle: args.drain_idle,
        cluster_names: routing.names.clone(),
    };
    info!(redis = %source.config().target.identity(), config_dir = %args.config_dir.display(), api = %args.api_addr, "Agent starting.");
    let controller = Controller::new(source, prober, config, status.clone());
    // The sinks of this host; every sink subscribes to the desired state the same way.
    let sinks = local::LocalSinks {
        files: sink,
        api: ApiView::new(status.clone()),
        state_file: Some(StateFileSink::new(args.state_file())),
    };
    let sinks_task = tokio::spawn(local::run(controller.subscribe(), sinks, status.clone()));
    let mut xds_task = None;
    let mut xds_sink_task = None;
    if let Some(addr) = args.xds_listen {
        let (xds, ads) = colyseus_envoy_agent::sinks::xds::XdsSink::new(cluster_options.clone());
        status.set_xds(ads.clone());
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding xDS to {addr}"))?;
        info!(xds = %addr, "Serving xDS.");
        xds_task = Some(tokio::spawn(colyseus_envoy_agent::sinks::xds::serve(
            listener,
            ads,
            stopped(stop_rx.clone()),
        )));
        xds_sink_task = Some(tokio::spawn(colyseus_envoy_agent::sinks::xds::follow(
            controller.subscribe(),
            xds,
        )));
    }
    let sync_task = tokio::spawn(controller.run(stopped(stop_rx)));
    tokio::select! {
        () = shutdown_signal() => {}
        () = supervise::children::supervisor_gone() => {
            error!("The `run` that started this agent is gone; stopping.");
        }
    }
    info!("Shutting down; Envoy keeps the last config.");
    let _ = stop_tx.send(true);
    let shutdown = async {
        let _ = sync_task.await;
        // The controller is gone: the sinks apply what it published last, then stop.
        let _ = sinks_task.await;
        if let Some(task) = xds_sink_task {
            let _ = task.await;
        }
        if let Some(task) = xds_task {
            task.await.context("xDS task")?.context("xDS server")?;
        }
        api.await.context("API task")?.context("API server")
    };
    // A supervisor restarts this agent only once it has exited: a part that does not stop
    // (a client holding a connection) must not keep the old one alive.
    match tokio::time::timeout(SHUTDOWN_GRACE, shutdown).await {
        Ok(done) => done,
        Err(_) => {
            warn!("Shutdown not finished after {SHUTDOWN_GRACE:?}; exiting anyway (every file written is complete).");
            Ok(())
        }
    }
}

/// Longest orderly shutdown: the last config reaches the sinks well within it.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);
