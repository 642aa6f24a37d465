//! The registrar's settings, validated: what it registers (checked with the sync agent's
//! own rules), where, with which lease and health check. Pure.

use std::time::Duration;

use routing::ProcessId;

use super::health::{HealthCheck, HealthCheckError};
use crate::config::RegisterArgs;
use crate::model::{parse_member, Host, Registration, Rejection};
use crate::redis_target::RedisTarget;

/// Shortest lease accepted: heartbeats every second, so a slow Redis round trip or two
/// does not let the lease lapse.
pub const MIN_LEASE_TTL: Duration = Duration::from_secs(3);

/// Why the registrar's configuration was refused (exit 64).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--process-id {value:?}: {source}")]
    ProcessId {
        value: String,
        source: routing::IdError,
    },
    #[error("--advertise-host {host:?}: {why}")]
    Host { host: String, why: &'static str },
    #[error("--port 0: the game server's port must be 1-65535")]
    Port,
    #[error("--lease-ttl {ttl:?} is shorter than the minimum {MIN_LEASE_TTL:?}")]
    LeaseTooShort { ttl: Duration },
    #[error("{0}")]
    Redis(String),
    #[error(transparent)]
    HealthCheck(#[from] HealthCheckError),
    #[error("--health-address {0:?} is not host:port")]
    HealthAddress(String),
    #[error("{flag} must be greater than zero")]
    Zero { flag: &'static str },
}

/// Health checking of the local server, validated.
#[derive(Debug, Clone)]
pub struct HealthConfig {
    pub check: HealthCheck,
    /// `host:port` the check connects to.
    pub address: String,
    pub interval: Duration,
    /// Bound on one check.
    pub timeout: Duration,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
}

/// The registrar's configuration, validated.
#[derive(Debug, Clone)]
pub struct RegistrarConfig {
    /// What is registered; its [`Registration::member`] is the member written.
    pub registration: Registration,
    pub redis: RedisTarget,
    pub nodes_key: String,
    pub discovery_channel: String,
    pub lease_ttl: Duration,
    /// Bound on connecting to Redis and on each command.
    pub redis_timeout: Duration,
    pub health: HealthConfig,
}

impl RegistrarConfig {
    /// The `colyseus:nodes` member this registrar writes.
    pub fn member(&self) -> String {
        self.registration.member()
    }

    /// Lease refresh period: a third of the lease, so two heartbeats may fail before it
    /// lapses.
    pub fn heartbeat_interval(&self) -> Duration {
        self.lease_ttl / 3
    }
}

impl TryFrom<&RegisterArgs> for RegistrarConfig {
    type Error = ConfigError;

    fn try_from(args: &RegisterArgs) -> Result<Self, ConfigError> {
        let registration = build_registration(&args.process_id, &args.advertise_host, args.port)?;
        if args.lease_ttl < MIN_LEASE_TTL {
            return Err(ConfigError::LeaseTooShort {
                ttl: args.lease_ttl,
            });
        }
        let redis = args
            .redis
            .target(&args.redis_url)
            .map_err(ConfigError::Redis)?;
        let check = HealthCheck::parse(&args.health_check)?;
        let address = match &args.health_address {
            Some(a) => check_address(a)?,
            None => format!("127.0.0.1:{}", args.port),
        };
        for (flag, zero) in [
            ("--health-interval", args.health_interval.is_zero()),
            ("--health-timeout", args.health_timeout.is_zero()),
            ("--redis-timeout", args.redis_timeout.is_zero()),
            ("--healthy-threshold", args.healthy_threshold == 0),
            ("--unhealthy-threshold", args.unhealthy_threshold == 0),
        ] {
            if zero {
                return Err(ConfigError::Zero { flag });
            }
        }
        Ok(Self {
            registration,
            redis,
            nodes_key: args.presence.nodes_key.clone(),
            discovery_channel: args.presence.discovery_channel.clone(),
            lease_ttl: args.lease_ttl,
            redis_timeout: args.redis_timeout,
            health: HealthConfig {
                check,
                address,
                interval: args.health_interval,
                timeout: args.health_timeout,
                healthy_threshold: args.healthy_threshold,
                unhealthy_threshold: args.unhealthy_threshold,
            },
        })
    }
}

/// Builds the registration `{processId}/{host}:{port}` and validates it with the sync
/// agent's own rules ([`parse_member`]), so the registrar never writes a member the agent
/// would reject. A bare IPv6 address is put in brackets; DNS names are lowercased.
///
/// # Errors
/// A bad process id, or a host the proxy could not reach (`undefined`, `0.0.0.0`, empty,
/// with a port, not a DNS name).
pub fn build_registration(
    process_id: &str,
    host: &str,
    port: u16,
) -> Result<Registration, ConfigError> {
    ProcessId::parse(process_id).map_err(|source| ConfigError::ProcessId {
        value: process_id.to_owned(),
        source,
    })?;
    if port == 0 {
        return Err(ConfigError::Port);
    }
    let bad_host = |why| ConfigError::Host {
        host: host.to_owned(),
        why,
    };
    // The agent's message for these speaks of SELF_HOSTNAME, which is not ours.
    if matches!(host.trim(), "" | "undefined" | "null") {
        return Err(bad_host(
            "give the address the proxy reaches the game server at",
        ));
    }
    let bracketed = if host.starts_with('[') {
        host.to_owned()
    } else if host.parse::<std::net::Ipv6Addr>().is_ok() {
        format!("[{host}]")
    } else if host.contains(':') {
        return Err(bad_host("give the host alone; the port goes in --port"));
    } else {
        host.to_owned()
    };
    if bracketed.contains('/') {
        return Err(bad_host("host is neither an IP address nor a DNS name"));
    }
    match parse_member(&format!("{process_id}/{bracketed}:{port}"), port) {
        // The agent's parser lets `[::]` through; nothing can reach it either.
        Ok(r) if matches!(r.endpoint.host, Host::Ip(ip) if ip.is_unspecified()) => Err(bad_host(
            "unspecified address (0.0.0.0, ::) is not reachable",
        )),
        Ok(registration) => Ok(registration),
        Err(Rejection::BadAddress { why, .. }) => Err(bad_host(why)),
        Err(_) => Err(bad_host("host is neither an IP address nor a DNS name")),
    }
}

/// Accepts `ip:port`, `[v6]:port` or `name:port`.
fn check_address(address: &str) -> Result<String, ConfigError> {
    let bad = || ConfigError::HealthAddress(address.to_owned());
    if address.parse::<std::net::SocketAddr>().is_ok() {
        return Ok(address.to_owned());
    }
    let (host, port) = address.rsplit_once(':').ok_or_else(bad)?;
    let port_ok = matches!(port.parse::<u16>(), Ok(p) if p > 0);
    if host.is_empty() || host.contains(':') || !port_ok {
        return Err(bad());
    }
    Ok(address.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(extra: &[&str]) -> RegisterArgs {
        #[derive(Parser)]
        struct Wrap {
            #[command(flatten)]
            args: RegisterArgs,
        }
        let base = ["x", "--process-id", "abc", "--advertise-host", "10.0.0.5"];
        let base = base.iter().chain(["--port", "2567"].iter());
        Wrap::try_parse_from(base.chain(extra.iter())).unwrap().args
    }

    fn config(extra: &[&str]) -> Result<RegistrarConfig, ConfigError> {
        RegistrarConfig::try_from(&args(extra))
    }

    #[test]
    fn defaults() {
        let c = config(&[]).unwrap();
        assert_eq!(c.member(), "abc/10.0.0.5:2567");
        assert_eq!(c.lease_ttl, Duration::from_secs(15));
        assert_eq!(c.heartbeat_interval(), Duration::from_secs(5));
        assert_eq!(c.health.check, HealthCheck::Tcp);
        assert_eq!(c.health.address, "127.0.0.1:2567");
        assert_eq!(c.health.interval, Duration::from_secs(2));
        assert_eq!(
            (c.health.unhealthy_threshold, c.health.healthy_threshold),
            (3, 2)
        );
        assert_eq!(c.nodes_key, "colyseus:nodes");
        assert_eq!(c.discovery_channel, "colyseus:nodes:discovery");
    }

    #[test]
    fn members_follow_the_agents_rules() {
        let member =
            |pid: &str, host: &str| build_registration(pid, host, 2567).map(|r| r.member());
        assert_eq!(member("abc", "::1").unwrap(), "abc/[::1]:2567");
        assert_eq!(member("abc", "[fe80::1]").unwrap(), "abc/[fe80::1]:2567");
        assert_eq!(
            member("a_b-C", "Game-1.Internal").unwrap(),
            "a_b-C/game-1.internal:2567"
        );
        for host in [
            "undefined",
            "0.0.0.0",
            "",
            "::",
            "[::]",
            "h:80",
            "a b",
            "a/b",
            "[::1",
        ] {
            assert!(
                matches!(member("abc", host), Err(ConfigError::Host { .. })),
                "{host:?}"
            );
        }
        for pid in ["", "a/b", "a.b", &"x".repeat(65)] {
            assert!(
                matches!(member(pid, "h"), Err(ConfigError::ProcessId { .. })),
                "{pid:?}"
            );
        }
        assert!(matches!(
            build_registration("abc", "h", 0),
            Err(ConfigError::Port)
        ));
        // Whatever is accepted parses back to itself, as the sync agent will read it.
        let reg = build_registration("abc", "::1", 9).unwrap();
        assert_eq!(parse_member(&reg.member(), 1), Ok(reg));
    }

    #[test]
    fn misconfigurations_are_refused() {
        let err = |extra: &[&str]| config(extra).unwrap_err().to_string();
        assert!(err(&["--lease-ttl", "2s"]).contains("--lease-ttl"));
        assert!(config(&["--lease-ttl", "3s"]).is_ok());
        assert!(err(&["--redis-url", "not a url"]).contains("--redis-url"));
        assert!(err(&["--health-check", "udp"]).contains("--health-check"));
        assert!(err(&["--health-address", "nope"]).contains("--health-address"));
        assert!(err(&["--unhealthy-threshold", "0"]).contains("--unhealthy-threshold"));
        assert!(err(&["--health-interval", "0s"]).contains("--health-interval"));
        let c = config(&[
            "--health-check",
            "http:/__healthcheck",
            "--health-address",
            "localhost:9000",
        ])
        .unwrap();
        assert_eq!(c.health.address, "localhost:9000");
        assert!(config(&["--health-address", "[::1]:9000"]).is_ok());
    }

    #[test]
    fn logged_redis_hides_passwords() {
        let c = config(&["--redis-url", "redis://:s3cret@10.0.0.2:6379/0"]).unwrap();
        assert_eq!(c.redis.identity(), "redis://10.0.0.2:6379/0");
    }
}
