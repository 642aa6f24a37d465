//! Entry point: parse flags, set up logging, run a subcommand. Exit codes, the same for
//! every command: 0 done, 1 a runtime failure (or `status`: something unhealthy), 64
//! (EX_USAGE) a bad setting, 69 (EX_UNAVAILABLE) an address already in use.

use std::path::Path;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};
use colyseus_envoy_agent::cli_env;
use colyseus_envoy_agent::config::{Cli, Command};
use colyseus_envoy_agent::envoy_admin::AdminEndpoint;
use colyseus_envoy_agent::supervise;
use tracing::error;

/// The subcommands that wire the library together (the rest are short and stay here).
mod cmd {
    pub mod bootstrap;
    pub mod sync;
}

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
        Command::Bootstrap(args) => cmd::bootstrap::print_bootstrap(&args),
        Command::Sync(args) => {
            let Some(runtime) = runtime(true) else {
                return ExitCode::FAILURE;
            };
            runtime.block_on(cmd::sync::sync(args))
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

fn usage(e: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("colyseus-envoy: invalid configuration: {e}");
    ExitCode::from(EX_USAGE)
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
