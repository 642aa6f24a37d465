//! `colyseus-envoy bootstrap`: Envoy's bootstrap for the flags, on stdout.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use colyseus_envoy_agent::atomic_file;
use colyseus_envoy_agent::bootstrap::{self, BootstrapSpec, HealthPath, TlsSpec};
use colyseus_envoy_agent::cli_env;
use colyseus_envoy_agent::config::BootstrapArgs;
use colyseus_envoy_agent::envoy_admin::AdminEndpoint;
use tracing::error;

use crate::usage;

/// `bootstrap`: prints Envoy's bootstrap JSON for the flags (and writes the TLS secret file
/// when TLS is on); a bad setting exits 64 before anything is written.
pub fn print_bootstrap(args: &BootstrapArgs) -> ExitCode {
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
