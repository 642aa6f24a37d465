//! The desired routing state, and how Redis presence data changes it. Pure: no I/O.
//!
//! Colyseus 0.11-0.16 registers each process as a member `"{processId}/{host}:{port}"` of the
//! set `colyseus:nodes` and announces changes on `colyseus:nodes:discovery` as a JSON string
//! `"add,{member}"` / `"remove,{member}"`. [`Registry`] is the set of routable processes built
//! from those, with every bad input turned into a [`Rejection`] instead of an error, so one
//! bad member never stops the others from routing.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

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

/// Parses `host`, `host:port`, `[v6]` or `[v6]:port`.
fn parse_address(address: &str, default_port: u16) -> Result<Endpoint, &'static str> {
    let (host, port) = if let Some(rest) = address.strip_prefix('[') {
        let (v6, after) = rest.split_once(']').ok_or("unclosed '[' in IPv6 address")?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or("junk after IPv6 address")?),
        };
        let ip: std::net::Ipv6Addr = v6.parse().map_err(|_| "invalid IPv6 address")?;
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
    if matches!(host, "undefined" | "null" | "") {
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

/// The routable processes: one endpoint per processId.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Registry {
    processes: BTreeMap<ProcessId, Endpoint>,
}

/// What changed when a registry was replaced or updated.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub rejected: Vec<Rejection>,
}

impl Registry {
    pub fn len(&self) -> usize {
        self.processes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.processes.is_empty()
    }

    pub fn get(&self, process_id: &ProcessId) -> Option<&Endpoint> {
        self.processes.get(process_id)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&ProcessId, &Endpoint)> {
        self.processes.iter()
    }

    pub fn registrations(&self) -> impl Iterator<Item = Registration> + '_ {
        self.processes.iter().map(|(p, e)| Registration {
            process_id: p.clone(),
            endpoint: e.clone(),
        })
    }

    /// Builds the registry from a full read of `colyseus:nodes`. Bad members are rejected.
    /// A processId listed at several addresses keeps the address `self` routes to now, if it
    /// is among them (a valid registration is never dropped for a newcomer's conflict);
    /// otherwise none of them is routed, as there is no telling which one is right.
    pub fn from_members<'a>(
        &self,
        members: impl IntoIterator<Item = &'a str>,
        default_port: u16,
    ) -> (Registry, Outcome) {
        let mut outcome = Outcome::default();
        let mut seen: BTreeMap<ProcessId, BTreeSet<Endpoint>> = BTreeMap::new();
        for member in members {
            match parse_member(member, default_port) {
                Ok(reg) => {
                    seen.entry(reg.process_id).or_default().insert(reg.endpoint);
                }
                Err(rejection) => outcome.rejected.push(rejection),
            }
        }
        let mut next = Registry::default();
        for (process_id, endpoints) in seen {
            let chosen = if endpoints.len() == 1 {
                endpoints.first().cloned()
            } else {
                let current = self.get(&process_id).filter(|e| endpoints.contains(e));
                outcome.rejected.push(Rejection::Conflict {
                    process_id: process_id.clone(),
                    addresses: join(&endpoints),
                    kept: current.map_or_else(|| "none".to_owned(), ToString::to_string),
                });
                current.cloned()
            };
            if let Some(endpoint) = chosen {
                next.processes.insert(process_id, endpoint);
            }
        }
        (next, outcome)
    }

    /// Applies one announcement. Returns whether the registry changed.
    ///
    /// # Errors
    /// An `add` for a processId already routed elsewhere is a [`Rejection::Conflict`]; the
    /// routed address is kept.
    pub fn apply(&mut self, announcement: Announcement) -> Result<bool, Rejection> {
        match announcement {
            Announcement::Add(reg) => match self.processes.get(&reg.process_id) {
                Some(current) if *current == reg.endpoint => Ok(false),
                Some(current) => Err(Rejection::Conflict {
                    addresses: format!("{current}, {}", reg.endpoint),
                    kept: current.to_string(),
                    process_id: reg.process_id,
                }),
                None => {
                    self.processes.insert(reg.process_id, reg.endpoint);
                    Ok(true)
                }
            },
            // A remove names the address too: a stale one for another address is ignored.
            Announcement::Remove(reg) => {
                if self.processes.get(&reg.process_id) == Some(&reg.endpoint) {
                    self.processes.remove(&reg.process_id);
                    Ok(true)
                } else {
                    Ok(false)
                }
            }
        }
    }

    /// Adds registrations that are known to be live but missing (after Redis lost them).
    pub fn restore(&mut self, registrations: impl IntoIterator<Item = Registration>) {
        for reg in registrations {
            self.processes.entry(reg.process_id).or_insert(reg.endpoint);
        }
    }

    /// Drops a process (found dead).
    pub fn remove(&mut self, process_id: &ProcessId) {
        self.processes.remove(process_id);
    }

    /// Registrations of `self` that `other` lacks.
    pub fn missing_from(&self, other: &Registry) -> Vec<Registration> {
        self.registrations()
            .filter(|r| other.get(&r.process_id).is_none())
            .collect()
    }
}

fn join(endpoints: &BTreeSet<Endpoint>) -> String {
    endpoints
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
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
    fn full_read_skips_garbage_and_keeps_the_rest() {
        let (registry, outcome) = Registry::default().from_members(
            ["a/127.0.0.1:1", "garbage", "b/127.0.0.1:2", "c/undefined:3"],
            2567,
        );
        assert_eq!(registry.len(), 2);
        assert_eq!(outcome.rejected.len(), 2);
    }

    #[test]
    fn conflicting_addresses_keep_the_routed_one() {
        let members = ["a/127.0.0.1:1", "a/127.0.0.1:9"];
        let (fresh, outcome) = Registry::default().from_members(members, 2567);
        assert!(fresh.is_empty(), "no way to tell which address is right");
        assert_eq!(outcome.rejected[0].reason(), "conflict");

        let (current, _) = Registry::default().from_members(["a/127.0.0.1:1"], 2567);
        let (next, outcome) = current.from_members(members, 2567);
        assert_eq!(next, current);
        assert_eq!(outcome.rejected.len(), 1);
    }

    #[test]
    fn announcements_update_the_registry() {
        let mut registry = Registry::default();
        assert_eq!(
            registry.apply(Announcement::Add(reg("a/127.0.0.1:1"))),
            Ok(true)
        );
        assert_eq!(
            registry.apply(Announcement::Add(reg("a/127.0.0.1:1"))),
            Ok(false)
        );
        let conflict = registry.apply(Announcement::Add(reg("a/127.0.0.1:2")));
        assert_eq!(conflict.unwrap_err().reason(), "conflict");
        assert_eq!(
            registry.get(&reg("a/h:1").process_id).map(|e| e.port),
            Some(1)
        );
        // A stale remove for another address does not unroute the live one.
        assert_eq!(
            registry.apply(Announcement::Remove(reg("a/127.0.0.1:2"))),
            Ok(false)
        );
        assert_eq!(
            registry.apply(Announcement::Remove(reg("a/127.0.0.1:1"))),
            Ok(true)
        );
        assert!(registry.is_empty());
    }

    #[test]
    fn restore_fills_only_missing_processes() {
        let (mut registry, _) = Registry::default().from_members(["a/127.0.0.1:1"], 1);
        let (old, _) = Registry::default().from_members(["a/127.0.0.1:5", "b/127.0.0.1:2"], 1);
        let missing = old.missing_from(&registry);
        assert_eq!(missing, vec![reg("b/127.0.0.1:2")]);
        registry.restore(missing);
        assert_eq!(registry.len(), 2);
        assert_eq!(
            registry.get(&reg("a/h:1").process_id).map(|e| e.port),
            Some(1)
        );
    }
}
