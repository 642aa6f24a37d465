//! The desired routing state, and how Redis presence data changes it. Pure: no I/O.
//!
//! Colyseus 0.11-0.16 registers each process as a member `"{processId}/{host}:{port}"` of the
//! set `colyseus:nodes` and announces changes on `colyseus:nodes:discovery` as a JSON string
//! `"add,{member}"` / `"remove,{member}"`. [`Registry`] is the set of routable processes built
//! from those, with every bad input turned into a [`Rejection`] instead of an error, so one
//! bad member never stops the others from routing.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

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

/// Where a process is in its life, as far as routing goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessState {
    /// Registered: takes new players (matchmaking) and room connections.
    Active,
    /// Unregistered (graceful shutdown) but possibly still serving rooms: no new
    /// matchmaking, yet room connections still reach it, because Colyseus keeps handing out
    /// seats in (and reconnections to) its remaining rooms until they are disposed.
    Draining { since: Instant },
    /// Registered, but failing its liveness probe (crashed or hung): no clusters at all.
    /// Active again as soon as it answers; forgotten when it unregisters.
    Dead { since: Instant },
}

/// One known process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub endpoint: Endpoint,
    pub state: ProcessState,
}

impl Entry {
    pub fn is_active(&self) -> bool {
        self.state == ProcessState::Active
    }

    pub fn is_draining(&self) -> bool {
        matches!(self.state, ProcessState::Draining { .. })
    }

    /// Whether the process has its own cluster (active or draining; not dead).
    pub fn is_routable(&self) -> bool {
        !matches!(self.state, ProcessState::Dead { .. })
    }
}

/// The known processes: one endpoint per processId, each active or draining.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Registry {
    processes: BTreeMap<ProcessId, Entry>,
}

/// What a full read changed besides the registry itself.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub rejected: Vec<Rejection>,
    /// Processes that were active and are no longer in the set (now draining).
    pub vanished: Vec<Registration>,
}

impl Registry {
    /// Processes known, active or draining.
    pub fn len(&self) -> usize {
        self.processes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.processes.is_empty()
    }

    pub fn active_len(&self) -> usize {
        self.processes.values().filter(|e| e.is_active()).count()
    }

    pub fn get(&self, process_id: &ProcessId) -> Option<&Entry> {
        self.processes.get(process_id)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&ProcessId, &Entry)> {
        self.processes.iter()
    }

    fn registrations_where(&self, pred: impl Fn(&Entry) -> bool) -> Vec<Registration> {
        self.processes
            .iter()
            .filter(|(_, e)| pred(e))
            .map(|(p, e)| Registration {
                process_id: p.clone(),
                endpoint: e.endpoint.clone(),
            })
            .collect()
    }

    /// The active process registered at `endpoint`, if any.
    pub fn active_at(&self, endpoint: &Endpoint) -> Option<&ProcessId> {
        self.processes
            .iter()
            .find(|(_, e)| e.is_active() && e.endpoint == *endpoint)
            .map(|(p, _)| p)
    }

    pub fn active(&self) -> Vec<Registration> {
        self.registrations_where(Entry::is_active)
    }

    pub fn draining(&self) -> Vec<Registration> {
        self.registrations_where(Entry::is_draining)
    }

    /// Processes whose liveness is watched: registered ones (active or dead).
    pub fn registered(&self) -> Vec<Registration> {
        self.registrations_where(|e| !e.is_draining())
    }

    /// Marks a registered process dead. Returns whether it was active.
    pub fn mark_dead(&mut self, process_id: &ProcessId, now: Instant) -> bool {
        match self.processes.get_mut(process_id) {
            Some(e) if e.is_active() => {
                e.state = ProcessState::Dead { since: now };
                true
            }
            _ => false,
        }
    }

    /// Marks a dead process active again. Returns whether it was dead.
    pub fn mark_alive(&mut self, process_id: &ProcessId) -> bool {
        match self.processes.get_mut(process_id) {
            Some(e) if matches!(e.state, ProcessState::Dead { .. }) => {
                e.state = ProcessState::Active;
                true
            }
            _ => false,
        }
    }

    /// Builds the registry from a full read of `colyseus:nodes`; `self` is the registry
    /// before the read.
    ///
    /// - Bad members are rejected.
    /// - A processId listed at several addresses keeps the address `self` routes to now, if
    ///   it is among them (a valid registration is never dropped for a newcomer's
    ///   conflict); otherwise none of them is routed, as there is no telling which is right.
    /// - A process of `self` missing from the set starts (or goes on) draining; the caller
    ///   decides what a vanished process means (removed, or lost by a restarted Redis).
    pub fn from_members<'a>(
        &self,
        members: impl IntoIterator<Item = &'a str>,
        default_port: u16,
        now: Instant,
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
                let current = self
                    .get(&process_id)
                    .map(|e| &e.endpoint)
                    .filter(|e| endpoints.contains(e));
                outcome.rejected.push(Rejection::Conflict {
                    process_id: process_id.clone(),
                    addresses: join(&endpoints),
                    kept: current.map_or_else(|| "none".to_owned(), ToString::to_string),
                });
                current.cloned()
            };
            if let Some(endpoint) = chosen {
                // Only the liveness probe brings a dead process back.
                let state = match self.get(&process_id) {
                    Some(e) if e.endpoint == endpoint && !e.is_draining() => e.state,
                    _ => ProcessState::Active,
                };
                next.processes.insert(process_id, Entry { endpoint, state });
            }
        }
        for (process_id, entry) in &self.processes {
            if next.processes.contains_key(process_id) {
                continue;
            }
            let since = match entry.state {
                ProcessState::Draining { since } => since,
                // Dead and unregistered: nothing left to route to.
                ProcessState::Dead { .. } => continue,
                ProcessState::Active => {
                    outcome.vanished.push(Registration {
                        process_id: process_id.clone(),
                        endpoint: entry.endpoint.clone(),
                    });
                    now
                }
            };
            let draining = Entry {
                endpoint: entry.endpoint.clone(),
                state: ProcessState::Draining { since },
            };
            next.processes.insert(process_id.clone(), draining);
        }
        (next, outcome)
    }

    /// Applies one announcement. Returns whether the registry changed.
    ///
    /// # Errors
    /// An `add` for a processId known at another address is a [`Rejection::Conflict`]; the
    /// known address is kept.
    pub fn apply(&mut self, announcement: Announcement, now: Instant) -> Result<bool, Rejection> {
        match announcement {
            Announcement::Add(reg) => match self.processes.get_mut(&reg.process_id) {
                Some(current) if current.endpoint == reg.endpoint => {
                    let changed = !current.is_active();
                    current.state = ProcessState::Active;
                    Ok(changed)
                }
                Some(current) => Err(Rejection::Conflict {
                    addresses: format!("{}, {}", current.endpoint, reg.endpoint),
                    kept: current.endpoint.to_string(),
                    process_id: reg.process_id,
                }),
                None => {
                    let entry = Entry {
                        endpoint: reg.endpoint,
                        state: ProcessState::Active,
                    };
                    self.processes.insert(reg.process_id, entry);
                    Ok(true)
                }
            },
            // A remove names the address too: a stale one for another address is ignored.
            Announcement::Remove(reg) => match self.processes.get_mut(&reg.process_id) {
                Some(current) if current.endpoint == reg.endpoint => match current.state {
                    ProcessState::Active => {
                        current.state = ProcessState::Draining { since: now };
                        Ok(true)
                    }
                    ProcessState::Dead { .. } => {
                        self.processes.remove(&reg.process_id);
                        Ok(true)
                    }
                    ProcessState::Draining { .. } => Ok(false),
                },
                _ => Ok(false),
            },
        }
    }

    /// Makes these processes active again (a restarted Redis lost them, yet they live).
    pub fn restore(&mut self, registrations: impl IntoIterator<Item = Registration>) {
        for reg in registrations {
            let entry = Entry {
                endpoint: reg.endpoint,
                state: ProcessState::Active,
            };
            self.processes.insert(reg.process_id, entry);
        }
    }

    /// The same processes with each endpoint replaced by `route(pid, endpoint)`, and those
    /// it returns `None` for left out: what Envoy is given once DNS names are resolved and
    /// every address is checked ([`crate::upstream_policy`]).
    pub fn routed_view(
        &self,
        mut route: impl FnMut(&ProcessId, &Endpoint) -> Option<Endpoint>,
    ) -> Registry {
        let processes = self
            .processes
            .iter()
            .filter_map(|(pid, e)| {
                let endpoint = route(pid, &e.endpoint)?;
                Some((
                    pid.clone(),
                    Entry {
                        endpoint,
                        state: e.state,
                    },
                ))
            })
            .collect();
        Registry { processes }
    }

    /// Forgets a process entirely (it is gone).
    pub fn remove(&mut self, process_id: &ProcessId) {
        self.processes.remove(process_id);
    }

    /// Forgets draining processes older than `max_drain`; returns them.
    pub fn expire_drained(&mut self, now: Instant, max_drain: Duration) -> Vec<Registration> {
        let expired: Vec<Registration> = self
            .processes
            .iter()
            .filter(|(_, e)| match e.state {
                ProcessState::Draining { since } => {
                    now.saturating_duration_since(since) >= max_drain
                }
                ProcessState::Active | ProcessState::Dead { .. } => false,
            })
            .map(|(p, e)| Registration {
                process_id: p.clone(),
                endpoint: e.endpoint.clone(),
            })
            .collect();
        for reg in &expired {
            self.processes.remove(&reg.process_id);
        }
        expired
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

    fn read(registry: &Registry, members: &[&str], now: Instant) -> (Registry, Outcome) {
        registry.from_members(members.iter().copied(), 2567, now)
    }

    fn pid(s: &str) -> ProcessId {
        ProcessId::parse(s).unwrap()
    }

    #[test]
    fn full_read_skips_garbage_and_keeps_the_rest() {
        let now = Instant::now();
        let (registry, outcome) = read(
            &Registry::default(),
            &["a/127.0.0.1:1", "garbage", "b/127.0.0.1:2", "c/undefined:3"],
            now,
        );
        assert_eq!(registry.active_len(), 2);
        assert_eq!(outcome.rejected.len(), 2);
        assert!(outcome.vanished.is_empty());
    }

    #[test]
    fn conflicting_addresses_keep_the_routed_one() {
        let now = Instant::now();
        let members = ["a/127.0.0.1:1", "a/127.0.0.1:9"];
        let (fresh, outcome) = read(&Registry::default(), &members, now);
        assert!(fresh.is_empty(), "no way to tell which address is right");
        assert_eq!(outcome.rejected[0].reason(), "conflict");

        let (current, _) = read(&Registry::default(), &["a/127.0.0.1:1"], now);
        let (next, outcome) = read(&current, &members, now);
        assert_eq!(next, current);
        assert_eq!(outcome.rejected.len(), 1);
    }

    #[test]
    fn vanished_processes_drain_then_expire() {
        let t0 = Instant::now();
        let (current, _) = read(
            &Registry::default(),
            &["a/127.0.0.1:1", "b/127.0.0.1:2"],
            t0,
        );
        let (next, outcome) = read(&current, &["a/127.0.0.1:1"], t0);
        assert_eq!(outcome.vanished, vec![reg("b/127.0.0.1:2")]);
        assert_eq!(next.active(), vec![reg("a/127.0.0.1:1")]);
        assert_eq!(next.draining(), vec![reg("b/127.0.0.1:2")]);
        // A later read keeps the drain's start and reports nothing new.
        let t1 = t0 + Duration::from_secs(5);
        let (mut later, outcome) = read(&next, &["a/127.0.0.1:1"], t1);
        assert!(outcome.vanished.is_empty());
        assert_eq!(
            later.get(&pid("b")).unwrap().state,
            ProcessState::Draining { since: t0 }
        );
        assert!(later.expire_drained(t1, Duration::from_secs(10)).is_empty());
        assert_eq!(
            later.expire_drained(t0 + Duration::from_secs(10), Duration::from_secs(10)),
            vec![reg("b/127.0.0.1:2")]
        );
        assert_eq!(later.len(), 1);
        // Registered again while draining: active again.
        let (back, _) = read(&next, &["a/127.0.0.1:1", "b/127.0.0.1:2"], t1);
        assert_eq!(back.active_len(), 2);
    }

    #[test]
    fn announcements_update_the_registry() {
        let now = Instant::now();
        let mut registry = Registry::default();
        let add = |m: &str| Announcement::Add(reg(m));
        let remove = |m: &str| Announcement::Remove(reg(m));
        assert_eq!(registry.apply(add("a/127.0.0.1:1"), now), Ok(true));
        assert_eq!(registry.apply(add("a/127.0.0.1:1"), now), Ok(false));
        let conflict = registry.apply(add("a/127.0.0.1:2"), now);
        assert_eq!(conflict.unwrap_err().reason(), "conflict");
        assert_eq!(registry.get(&pid("a")).map(|e| e.endpoint.port), Some(1));
        // A stale remove for another address does not touch the live one.
        assert_eq!(registry.apply(remove("a/127.0.0.1:2"), now), Ok(false));
        assert_eq!(registry.apply(remove("a/127.0.0.1:1"), now), Ok(true));
        assert_eq!(registry.draining(), vec![reg("a/127.0.0.1:1")]);
        assert_eq!(registry.apply(remove("a/127.0.0.1:1"), now), Ok(false));
        // Re-registration ends the drain.
        assert_eq!(registry.apply(add("a/127.0.0.1:1"), now), Ok(true));
        assert_eq!(registry.active_len(), 1);
    }

    #[test]
    fn finds_the_active_process_at_an_address() {
        let now = Instant::now();
        let (current, _) = read(
            &Registry::default(),
            &["a/127.0.0.1:1", "b/127.0.0.1:2"],
            now,
        );
        let (next, _) = read(&current, &["a/127.0.0.1:1"], now);
        assert_eq!(
            next.active_at(&reg("x/127.0.0.1:1").endpoint),
            Some(&pid("a"))
        );
        // b is draining, not active.
        assert_eq!(next.active_at(&reg("x/127.0.0.1:2").endpoint), None);
    }

    #[test]
    fn dead_processes_lose_routing_until_they_answer() {
        let now = Instant::now();
        let (mut registry, _) = read(
            &Registry::default(),
            &["a/127.0.0.1:1", "b/127.0.0.1:2"],
            now,
        );
        assert!(registry.mark_dead(&pid("a"), now));
        assert!(!registry.mark_dead(&pid("a"), now));
        assert!(!registry.get(&pid("a")).unwrap().is_routable());
        assert_eq!(registry.registered().len(), 2);
        // A re-read of the set does not resurrect it.
        let (mut next, _) = read(&registry, &["a/127.0.0.1:1", "b/127.0.0.1:2"], now);
        assert!(!next.get(&pid("a")).unwrap().is_routable());
        assert!(next.mark_alive(&pid("a")));
        assert_eq!(next.active_len(), 2);
        // Dead and then unregistered: forgotten, no drain.
        next.mark_dead(&pid("b"), now);
        let (after, outcome) = read(&next, &["a/127.0.0.1:1"], now);
        assert!(after.get(&pid("b")).is_none());
        assert!(outcome.vanished.is_empty());
        next.apply(Announcement::Remove(reg("b/127.0.0.1:2")), now)
            .unwrap();
        assert!(next.get(&pid("b")).is_none());
    }

    #[test]
    fn restore_reactivates_lost_processes() {
        let now = Instant::now();
        let (current, _) = read(
            &Registry::default(),
            &["a/127.0.0.1:1", "b/127.0.0.1:2"],
            now,
        );
        let (mut after_restart, outcome) = read(&current, &["a/127.0.0.1:1"], now);
        after_restart.restore(outcome.vanished);
        assert_eq!(after_restart, current);
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
