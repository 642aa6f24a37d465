//! Entry point: parse flags, set up logging, run a subcommand. Exit codes, the same for
//! every command: 0 done, 1 a runtime failure (or `status`: something unhealthy), 64
//! (EX_USAGE) a bad setting, 69 (EX_UNAVAILABLE) an address already in use.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches};
use colyseus_envoy_agent::api;
use colyseus_envoy_agent::atomic_file;
use colyseus_envoy_agent::bootstrap::{self, BootstrapSpec, HealthPath, TlsSpec};
use colyseus_envoy_agent::cli_env;
use colyseus_envoy_agent::config::{BootstrapArgs, Cli, Command, SyncArgs};
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
use tracing::{error, info};

const EX_USAGE: u8 = supervise::EX_USAGE;

fn main() -> ExitCode {
    use std::io::IsTerminal;
    cli_env::apply_aliases();
    let argv: Vec<String> = std::env::args().collect();
    let command = Cli::command();
    let parsed = command
        .clone()
        .try_get_matches_from(&argv)
        .and_then(|m| Cli::from_arg_matches(&m));
    let cli = match parsed {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let line = cli_env::explain(&e, &command, &argv);
            return usage(&line);
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour codes only for a terminal: log files and journald get plain text.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Run(args) => {
            let Some(runtime) = runtime(false) else {
                return ExitCode::FAILURE;
            };
            supervise::exit_code(runtime.block_on(supervise::run(args)))
        }
        Command::Bootstrap(args) => print_bootstrap(&args),
        Command::Sync(args) => {
            let Some(runtime) = runtime(true) else {
                return ExitCode::FAILURE;
            };
            runtime.block_on(sync(args))
        }
        Command::Register(args) => register(&args),
        Command::Status(args) => status(&args),
    }
}

/// Prints the operator's report. Exit 1 when something is not healthy, so scripts can use it.
fn status(args: &colyseus_envoy_agent::config::StatusArgs) -> ExitCode {
    use colyseus_envoy_agent::inspect;
    let Some(runtime) = runtime(false) else {
        return ExitCode::FAILURE;
    };
    let redis = match args.redis.target(&args.redis_url) {
        Ok(r) => r,
        Err(e) => return usage(&cli_env::named("--redis-url", "REDIS_URL", &e)),
    };
    let admin = args.admin_addr.clone().unwrap_or_else(|| {
        let dir = std::env::var_os("RUN_DIR").unwrap_or_else(|| ".run/proxy".into());
        AdminEndpoint::Unix(Path::new(&dir).join(colyseus_envoy_agent::config::ADMIN_SOCKET))
    });
    let report = runtime.block_on(inspect::gather(args.api_addr, &admin, &redis));
    print!("{}", report.render());
    if report.is_healthy() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The registrar sidecar: checks its flags before anything starts (exit 64), then runs
/// until SIGTERM/SIGINT and deregisters (exit 0). Redis failures are retried, not fatal.
fn register(args: &colyseus_envoy_agent::config::RegisterArgs) -> ExitCode {
    use colyseus_envoy_agent::registrar::{self, RegistrarConfig};
    let config = match RegistrarConfig::try_from(args) {
        Ok(c) => c,
        Err(e) => return usage(&e),
    };
    let Some(runtime) = runtime(false) else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(registrar::run(config, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => usage(&e),
    }
}

fn print_bootstrap(args: &BootstrapArgs) -> ExitCode {
    let routing = match args.routing.validate() {
        Ok(r) => r,
        Err(e) => return usage(&e),
    };
    // The admin interface can reconfigure and stop Envoy: never expose it.
    let admin = match args.admin() {
        AdminEndpoint::Tcp(addr) if !addr.ip().is_loopback() => {
            return usage(&cli_env::named(
                "--admin-addr",
                "COLYSEUS_ENVOY_ADMIN_ADDR",
                &format!("{addr} is not a loopback address (expected unix:PATH or 127.0.0.1:PORT)"),
            ));
        }
        AdminEndpoint::Tcp(addr) => bootstrap::AdminListen::Tcp(addr),
        AdminEndpoint::Unix(path) => bootstrap::AdminListen::Pipe(path),
    };
    let health_path = match args
        .health_path
        .as_deref()
        .map(HealthPath::parse)
        .transpose()
    {
        Ok(h) => h,
        Err(e) => return usage(&e),
    };
    // The raw path writes x-forwarded-for itself, as the HCM does with no trusted hop.
    if args.edge_path == bootstrap::EdgePath::Tcp && args.trusted_hops > 0 {
        return usage(
            &"--edge-path tcp needs --trusted-hops 0 (the raw path trusts no proxy in front)",
        );
    }
    let secret_file = args.tls_secret_file();
    let cert_dir;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            let (cert, key) = match (cert.canonicalize(), key.canonicalize()) {
                (Ok(c), Ok(k)) => (c, k),
                _ => return usage(&"--tls-cert and --tls-key must name existing files"),
            };
            cert_dir = cert.parent().map(Path::to_path_buf).unwrap_or_default();
            if let Err(e) = write_tls_secret(&secret_file, &cert, &key) {
                error!(error = %e, "Cannot write the TLS secret file.");
                return ExitCode::FAILURE;
            }
            Some(TlsSpec {
                listen: std::net::SocketAddr::new(args.ip, args.tls_port),
                secret_file: &secret_file,
                cert_dir: &cert_dir,
            })
        }
        _ => None,
    };
    let spec = BootstrapSpec {
        listen: std::net::SocketAddr::new(args.ip, args.port),
        tls,
        admin,
        silent_connection_timeout: args.silent_connection_timeout,
        public_host: match args
            .public_host
            .as_deref()
            .map(bootstrap::PublicHost::parse)
        {
            Some(Ok(h)) => Some(h),
            Some(Err(e)) => return usage(&e),
            None => None,
        },
        config_dir: &args.config_dir,
        filter_wasm: &args.filter_wasm,
        routing: &routing,
        request_timeout: args.request_timeout,
        stream_idle_timeout: args.socket_timeout,
        health_path,
        max_downstream_connections: args.max_downstream_connections,
        trusted_hops: args.trusted_hops,
        agent_api: args.agent_api_addr.clone(),
        edge_path: args.edge_path,
    };
    let mut doc = bootstrap::render(&spec);
    if args.config_source == bootstrap::xds::ConfigSource::Xds {
        let xds = bootstrap::xds::XdsSpec {
            servers: &args.xds_servers,
            node_id: &args.node_id,
            agent_apis: &args.xds_agent_apis,
        };
        if let Err(e) =
            bootstrap::xds::apply(&mut doc, &xds, &routing.names, &routing.agent_cluster)
        {
            return usage(&e);
        }
    } else if !args.xds_servers.is_empty() || !args.xds_agent_apis.is_empty() {
        return usage(&"--xds-server and --xds-agent-api need --config-source xds");
    }
    match serde_json::to_string_pretty(&doc) {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            error!(error = %e, "Cannot render the bootstrap.");
            ExitCode::FAILURE
        }
    }
}

/// Writes the SDS file naming the certificate files (atomically: Envoy may be reading it).
fn write_tls_secret(file: &Path, cert: &Path, key: &Path) -> anyhow::Result<()> {
    let dir = file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = file
        .file_name()
        .and_then(|n| n.to_str())
        .context("the TLS secret file path has no file name")?;
    let bytes = serde_json::to_vec_pretty(&bootstrap::tls_secret(cert, key))?;
    atomic_file::write(dir, name, &bytes)?;
    Ok(())
}

fn usage(e: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("colyseus-envoy: invalid configuration: {e}");
    ExitCode::from(EX_USAGE)
}

async fn sync(args: SyncArgs) -> ExitCode {
    let routing = match args.routing.validate() {
        Ok(r) => r,
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
    // New processes are advertised once Envoy routes to them, read on its admin.
    status = status.with_warmup_gate();
    let status = Arc::new(status);
    tokio::spawn(colyseus_envoy_agent::warmup::follow(
        status.clone(),
        args.admin(),
    ));
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
    let sink = EnvoyFilesSink::new(args.config_dir.clone(), cluster_options.clone());
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
        envoy_admin: Some(args.admin()),
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
    let _ = sync_task.await;
    // The controller is gone: the sinks apply what it published last, then stop.
    let _ = sinks_task.await;
    if let Some(task) = xds_sink_task {
        let _ = task.await;
    }
    if let Some(task) = xds_task {
        task.await.context("xDS task")?.context("xDS server")?;
    }
    api.await.context("API task")?.context("API server")?;
    Ok(())
}

/// The tokio runtime: two workers for the sync daemon, one thread for the short-lived or
/// single-connection commands. `None` (logged) if it cannot start.
fn runtime(multi_thread: bool) -> Option<tokio::runtime::Runtime> {
    let mut builder = if multi_thread {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(2);
        b
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    builder
        .enable_all()
        .build()
        .map_err(|e| error!(error = %e, "Cannot start the runtime."))
        .ok()
}

/// SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
