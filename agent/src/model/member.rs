//! A presence member `"{processId}/{host}:{port}"`, a `host:port`, a discovery
//! announcement: parsed, every bad input a [`Rejection`]. Pure.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use routing::ProcessId;

/// Where a process listens.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Endpoint {
    pub host: Host,
    pub port: u16,
}

/// A process's host: an IP literal (routed as is) or a DNS name (resolved by Envoy).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Host {
    Ip(IpAddr),
    Name(String),
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]:{}", self.port),
            Host::Ip(IpAddr::V4(ip)) => write!(f, "{ip}:{}", self.port),
            Host::Name(name) => write!(f, "{name}:{}", self.port),
        }
    }
}

/// One `colyseus:nodes` member, parsed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Registration {
    pub process_id: ProcessId,
    pub endpoint: Endpoint,
}

impl Registration {
    /// The member string Colyseus writes for this registration.
    pub fn member(&self) -> String {
        format!("{}/{}", self.process_id, self.endpoint)
    }
}

/// Why an input was not used. Each variant is a metrics label ([`Rejection::reason`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("member {member:?} is not \"processId/host[:port]\"")]
    BadMember { member: String },
    #[error("member {member:?} has an invalid processId: {error}")]
    BadProcessId {
        member: String,
        error: routing::IdError,
    },
    #[error("member {member:?} has an unusable address: {why}")]
    BadAddress { member: String, why: &'static str },
    #[error(
        "processId {process_id} is registered at several addresses ({addresses}); keeping {kept}"
    )]
    Conflict {
        process_id: ProcessId,
        addresses: String,
        kept: String,
    },
    #[error(
        "discovery message {message:?} is not a JSON string \"add,member\" or \"remove,member\""
    )]
    BadMessage { message: String },
    /// The address is one Envoy must never connect to for a game server (see
    /// [`crate::upstream_policy`]); for a DNS name, what it resolved to.
    #[error("member {member:?} is refused as an upstream: {address} ({refusal})")]
    ForbiddenUpstream {
        member: String,
        address: String,
        refusal: crate::upstream_policy::Refusal,
    },
}

impl Rejection {
    /// Short stable label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::BadMember { .. } => "bad_member",
            Self::BadProcessId { .. } => "bad_process_id",
            Self::BadAddress { .. } => "bad_address",
            Self::Conflict { .. } => "conflict",
            Self::BadMessage { .. } => "bad_message",
            Self::ForbiddenUpstream { refusal, .. } => refusal.reason(),
        }
    }
}

/// Parses a `colyseus:nodes` member. `default_port` is used when the member has none
/// (Colyseus 0.15 may write just `"{processId}/{host}"`).
///
/// # Errors
/// A [`Rejection`] naming the member and what is wrong with it.
pub fn parse_member(member: &str, default_port: u16) -> Result<Registration, Rejection> {
    let bad = || Rejection::BadMember {
        member: member.to_owned(),
    };
    let (pid, address) = member.split_once('/').ok_or_else(bad)?;
    let process_id = ProcessId::parse(pid).map_err(|error| Rejection::BadProcessId {
        member: member.to_owned(),
        error,
    })?;
    let endpoint = parse_address(address, default_port).map_err(|why| Rejection::BadAddress {
        member: member.to_owned(),
        why,
    })?;
    Ok(Registration {
        process_id,
        endpoint,
    })
}

/// `host:port` of a service Envoy connects to. Any IP literal `SocketAddr` reads is taken as
/// before (`0.0.0.0` included: Linux connects it to the local host); anything else must be a
/// DNS name, checked as Redis members' hosts are.
pub fn parse_host_port(s: &str) -> Result<Endpoint, String> {
    let endpoint = match s.parse::<SocketAddr>() {
        Ok(addr) => Endpoint {
            host: Host::Ip(addr.ip()),
            port: addr.port(),
        },
        Err(_) => parse_address(s, 0).map_err(|why| format!("{s:?} is not host:port: {why}"))?,
    };
    if endpoint.port == 0 {
        return Err(format!("{s:?} is not host:port: the port is missing or 0"));
    }
    Ok(endpoint)
}

/// Parses `host`, `host:port`, `[v6]` or `[v6]:port`.
pub(crate) fn parse_address(address: &str, default_port: u16) -> Result<Endpoint, &'static str> {
    let (host, port) = if let Some(rest) = address.strip_prefix('[') {
        let (v6, after) = rest.split_once(']').ok_or("unclosed '[' in IPv6 address")?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or("junk after IPv6 address")?),
        };
        let ip: std::net::Ipv6Addr = v6.parse().map_err(|_| "invalid IPv6 address")?;
        if ip.is_unspecified() {
            return Err("unspecified address ([::]) is not reachable");
        }
        (Host::Ip(IpAddr::V6(ip)), port)
    } else {
        let (host, port) = match address.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (address, None),
        };
        if host.contains(':') {
            return Err("IPv6 address must be in brackets");
        }
        (parse_host(host)?, port)
    };
    let port = match port {
        None => default_port,
        Some(p) => match p.parse::<u16>() {
            Ok(0) | Err(_) => return Err("port is not 1-65535"),
            Ok(p) => p,
        },
    };
    Ok(Endpoint { host, port })
}

fn parse_host(host: &str) -> Result<Host, &'static str> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        if ip.is_unspecified() {
            return Err("unspecified address (0.0.0.0) is not reachable");
        }
        return Ok(Host::Ip(ip));
    }
    // Colyseus 0.16 writes "undefined" when SELF_HOSTNAME is unset.
    if matches!(
        host.to_ascii_lowercase().as_str(),
        "undefined" | "null" | ""
    ) {
        return Err("host is missing (is SELF_HOSTNAME set on the game server?)");
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if host.len() > 253 || !host.trim_end_matches('.').split('.').all(label_ok) {
        return Err("host is neither an IP address nor a DNS name");
    }
    Ok(Host::Name(host.to_ascii_lowercase()))
}

/// A discovery announcement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Announcement {
    Add(Registration),
    Remove(Registration),
}

/// Parses a `colyseus:nodes:discovery` payload. RedisPresence JSON-encodes it (the bytes
/// carry the quotes); a bare `add,member` is accepted too.
///
/// # Errors
/// A [`Rejection`] for a payload that is not an announcement or names a bad member.
pub fn parse_announcement(payload: &[u8], default_port: u16) -> Result<Announcement, Rejection> {
    let bad = || Rejection::BadMessage {
        message: String::from_utf8_lossy(payload).into_owned(),
    };
    let text = std::str::from_utf8(payload).map_err(|_| bad())?;
    let decoded: String = if text.starts_with('"') {
        serde_json::from_str(text).map_err(|_| bad())?
    } else {
        text.to_owned()
    };
    let (action, member) = decoded.split_once(',').ok_or_else(bad)?;
    match action {
        "add" => Ok(Announcement::Add(parse_member(member, default_port)?)),
        "remove" => Ok(Announcement::Remove(parse_member(member, default_port)?)),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn reg(member: &str) -> Registration {
        parse_member(member, 2567).unwrap()
    }

    #[test]
    fn parses_members_of_every_version() {
        let r = reg("abc123xyz/10.0.0.5:2568");
        assert_eq!(r.process_id.as_str(), "abc123xyz");
        assert_eq!(
            r.endpoint.host,
            Host::Ip(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 5)))
        );
        assert_eq!(r.endpoint.port, 2568);
        // 0.15 without a port.
        assert_eq!(reg("p/10.0.0.5").endpoint.port, 2567);
        // Docker/Kubernetes names.
        assert_eq!(
            reg("p/Game-1.svc.local:80").endpoint.host,
            Host::Name("game-1.svc.local".into())
        );
        // IPv6 in brackets.
        assert_eq!(
            reg("p/[::1]:2567").endpoint.host,
            Host::Ip(IpAddr::V6(Ipv6Addr::LOCALHOST))
        );
        assert_eq!(reg("p/[::1]").endpoint.port, 2567);
        assert_eq!(reg("p/[::1]:2567").member(), "p/[::1]:2567");
        assert_eq!(
            reg("abc123xyz/10.0.0.5:2568").member(),
            "abc123xyz/10.0.0.5:2568"
        );
    }

    #[test]
    fn rejects_garbage_members() {
        for member in [
            "no-slash",
            "/10.0.0.1:1",
            "bad.pid/10.0.0.1:1",
            "p/undefined:2567",
            "p/:2567",
            "p/0.0.0.0:2567",
            "p/[::]:2567",
            "p/10.0.0.1:0",
            "p/10.0.0.1:65536",
            "p/10.0.0.1:port",
            "p/::1:2567",
            "p/[::1",
            "p/[::1]x",
            "p/[zz]:1",
            "p/host name:1",
            "p/-bad-.com:1",
        ] {
            assert!(parse_member(member, 2567).is_err(), "{member}");
        }
        assert_eq!(
            parse_member("p/undefined:2567", 2567).unwrap_err().reason(),
            "bad_address"
        );
        assert_eq!(parse_member("x", 1).unwrap_err().reason(), "bad_member");
        assert_eq!(
            parse_member("a.b/h:1", 1).unwrap_err().reason(),
            "bad_process_id"
        );
    }

    #[test]
    fn parses_announcements() {
        let add = parse_announcement(br#""add,abc123xyz/10.0.0.5:2567""#, 1).unwrap();
        assert_eq!(add, Announcement::Add(reg("abc123xyz/10.0.0.5:2567")));
        let remove = parse_announcement(b"remove,abc123xyz/10.0.0.5:2567", 1).unwrap();
        assert_eq!(remove, Announcement::Remove(reg("abc123xyz/10.0.0.5:2567")));
        for bad in [
            &b"\"add"[..],
            b"\"nope,p/h:1\"",
            b"hello",
            b"\xff\xfe",
            b"[1,2]",
        ] {
            assert_eq!(
                parse_announcement(bad, 1).unwrap_err().reason(),
                "bad_message"
            );
        }
        assert_eq!(
            parse_announcement(br#""add,p/undefined:1""#, 1)
                .unwrap_err()
                .reason(),
            "bad_address"
        );
    }

    #[test]
    fn host_port_takes_ip_literals_and_dns_names() {
        let ok = |s: &str| parse_host_port(s).unwrap();
        assert_eq!(ok("127.0.0.1:9902").host, Host::Ip([127, 0, 0, 1].into()));
        assert_eq!(ok("[::1]:9902").host, Host::Ip("::1".parse().unwrap()));
        assert_eq!(ok("0.0.0.0:9902").host, Host::Ip([0, 0, 0, 0].into()));
        let name = ok("Agent.colyseus_net.:9902");
        assert_eq!(name.host, Host::Name("agent.colyseus_net.".into()));
        assert_eq!(name.port, 9902);
        for bad in [
            "agent",
            "agent:",
            "agent:0",
            "127.0.0.1:0",
            "agent:65536",
            "::1:9902",
            "[::1]",
            "ag ent:9902",
            "-agent:9902",
            "http://agent:9902",
        ] {
            assert!(parse_host_port(bad).is_err(), "{bad} accepted");
        }
    }
}
