//! The Redis keys `@colyseus/traefik` writes for Traefik's Redis provider (Colyseus 0.17+),
//! read back into registrations. Pure: no I/O; the caller scans and reads the keys.
//!
//! **Not wired into the sync loop yet**: these keys hold no processId, so they only become
//! registrations joined with `(processId, publicAddress)` pairs from the room listings,
//! which the agent does not read yet.
//!
//! # The layout
//! Checked against `@colyseus/traefik` 0.17.7 (and 0.17.6) from the colyseus/colyseus
//! repository (`packages/traefik/src/index.ts`; npm has no such package), run on
//! `@colyseus/core` 0.17.51 and `@colyseus/redis-presence` 0.17.8 against a real Redis, with
//! the URLs checked with `@colyseus/sdk` 0.17.43.
//!
//! The game server calls `exposeServerToTraefik({ server, mainAddress, internalAddress? })`
//! after `listen()`. It needs `publicAddress` in the server options, RedisPresence, and Redis
//! keyspace notifications (`notify-keyspace-events Ex`): it checks them by waiting up to
//! 1.1 s for the expiry of a key `test`, and throws if none comes (processes started at the
//! same moment reset each other's `test` and may fail that check). It then SETs plain
//! strings, with no TTL, once; nothing refreshes them (`{root}` = option `redisRootKey`,
//! default `traefik`):
//!
//! | key | value |
//! | --- | --- |
//! | `{root}/http/routers/{name}/rule` | ``Host(`{host}`)``, plus `` && PathPrefix(`{path}`)`` when `publicAddress` has a path |
//! | `{root}/http/routers/{name}/service` | `{name}` |
//! | `{root}/http/services/{name}/loadbalancer/servers/{name}/url` | `http://{internal}:{port}` |
//! | `{root}/http/services/all-servers/loadbalancer/servers/{name}/url` | the same URL |
//! | `{root}/http/services/{name}/loadbalancer/healthcheck/{path,interval,timeout}` | `/__healthcheck`, `10s`, `3s` |
//! | `{root}/http/services/all-servers/loadbalancer/healthcheck/{path,interval,timeout}` | the same |
//! | `{root}/http/routers/all-servers/{rule,service}` | ``Host(`{mainAddress}`)``, `all-servers`: written only when the rule is missing |
//!
//! (The health-check keys are written with the default provider `"redis"` only; with
//! `"http"` the server serves the same data as JSON on `/__traefik`.)
//!
//! - `{name}` is **not the processId**: it is `publicAddress.replace("/", "_").split(".")[0]`
//!   (JavaScript: only the first `/` is replaced). `node-1.game.com` gives `node-1`,
//!   `localhost/2602` gives `localhost_2602`, but `backend.game.com/2604` gives `backend`, the
//!   same for every process whose `publicAddress` differs only in its path: those overwrite
//!   one another's keys (last writer wins). No `traefik/` key holds a processId.
//! - `{internal}` is the option `internalAddress` or else the first non-internal IPv4 of the
//!   machine (0.17.7: then the first non-link-local IPv6), else `127.0.0.1`; `{port}` is the
//!   one in `internalAddress`, else the listen port, else `$PORT`. 0.17.7 brackets IPv6
//!   (`http://[::1]:2567`); 0.17.6 wrote `http://{internalAddress}:{port}` verbatim, so an
//!   `internalAddress` with a port gave `http://10.0.0.5:2567:2567`, which Traefik cannot use
//!   either (rejected here).
//! - Deletion: the package registers its DELs with `server.onShutdown`, but core 0.17 runs
//!   that callback after `presence.shutdown()` has closed the Redis connection, so they never
//!   reach Redis (seen: SIGTERM deleted the process's `roomcount` field, no `traefik/` key).
//!   The keys outlive every process, clean shutdown or crash; a process that starts with the
//!   same `publicAddress` overwrites them. (`onShutdown` also keeps one callback only: a
//!   later `server.onShutdown(...)` in user code replaces the package's.)
//!
//! A client (`@colyseus/sdk` 0.17) joins a room at
//! `{ws|wss}://{publicAddress}/{processId}/{roomId}?sessionId={sessionId}`: the seat
//! reservation carries both `processId` and `publicAddress`, so the processId is still the
//! second-to-last path segment, after any path in `publicAddress` (`/2602/{processId}/...`).
//!
//! # Reading it
//! [`parse_servers`] turns the keys into one [`TraefikServer`] per `{name}`. Since the
//! processId is not in them, [`parse`] joins those with `(processId, publicAddress)` pairs
//! known from elsewhere (room listings carry both: RedisDriver's `roomcaches`, the seat
//! reservation), via [`router_name`], and checks the router rule against the
//! `publicAddress`, so a process whose keys were overwritten by a colliding name is rejected
//! instead of being routed to another process.

use std::collections::{BTreeMap, BTreeSet};

use routing::ProcessId;

use crate::model::{parse_address, Endpoint, Registration, Rejection};

/// `@colyseus/traefik`'s default `redisRootKey`.
pub const ROOT_KEY: &str = "traefik";

/// `SCAN ... MATCH` pattern for every key [`parse`] reads (routers and services).
pub const SCAN_PATTERN: &str = "traefik/http/*";

/// The service and router shared by all processes (behind `mainAddress`); not a process.
pub const ALL_SERVERS: &str = "all-servers";

/// What a router rule matches: `publicAddress`'s host name and path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Lowercase, as JavaScript's `URL.hostname` (IPv6 keeps its brackets).
    pub host: String,
    /// The path, when `publicAddress` has one other than `/`.
    pub path_prefix: Option<String>,
}

/// One process as `@colyseus/traefik` exposed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraefikServer {
    /// The router and service name, derived from `publicAddress` ([`router_name`]).
    pub name: String,
    /// Where the process listens (the server URL).
    pub endpoint: Endpoint,
    /// What its router matches.
    pub route: Route,
}

/// Registrations from the `traefik/http/*` keys (`(key, value)` pairs, e.g. read with
/// [`SCAN_PATTERN`] and `MGET`) and the `(processId, publicAddress)` pairs of the live
/// processes. A process is registered at the URL of the server named
/// [`router_name`]`(publicAddress)` when that server's router matches its `publicAddress`.
///
/// Rejected (member text: the key, or `"{processId} publicAddress={publicAddress}"`): a
/// server URL that is not `http://host:port` or has no usable router rule (`BadAddress`);
/// an invalid processId (`BadProcessId`); a processId given with several publicAddresses
/// (`Conflict`, none kept); a publicAddress with no server, or whose server's rule names
/// another publicAddress (names collide) (`BadAddress`). The `all-servers` service, the
/// health-check keys and keys not of this shape (other Traefik configuration sharing the
/// root) are skipped silently.
pub fn parse<K, V, P, A>(
    pairs: impl IntoIterator<Item = (K, V)>,
    processes: impl IntoIterator<Item = (P, A)>,
) -> (Vec<Registration>, Vec<Rejection>)
where
    K: AsRef<str>,
    V: AsRef<str>,
    P: AsRef<str>,
    A: AsRef<str>,
{
    let (servers, mut rejected) = parse_servers(pairs);
    let mut addresses: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (process_id, public_address) in processes {
        addresses
            .entry(process_id.as_ref().to_owned())
            .or_default()
            .insert(public_address.as_ref().to_owned());
    }
    let mut registrations = Vec::new();
    for (pid, public_addresses) in addresses {
        let member = |address: &str| format!("{pid} publicAddress={address}");
        let process_id = match ProcessId::parse(&pid) {
            Ok(p) => p,
            Err(error) => {
                let joined: Vec<&str> = public_addresses.iter().map(String::as_str).collect();
                rejected.push(Rejection::BadProcessId {
                    member: member(&joined.join(",")),
                    error,
                });
                continue;
            }
        };
        if public_addresses.len() > 1 {
            let joined: Vec<&str> = public_addresses.iter().map(String::as_str).collect();
            rejected.push(Rejection::Conflict {
                process_id,
                addresses: joined.join(", "),
                kept: "none".to_owned(),
            });
            continue;
        }
        let Some(public_address) = public_addresses.first() else {
            continue;
        };
        let bad = |why| Rejection::BadAddress {
            member: member(public_address),
            why,
        };
        let Some(server) = servers.get(&router_name(public_address)) else {
            rejected.push(bad("no @colyseus/traefik server for this publicAddress"));
            continue;
        };
        match route_of(public_address) {
            None => rejected.push(bad("publicAddress is not host[:port][/path]")),
            Some(route) if route != server.route => rejected.push(bad(
                "the traefik keys of this publicAddress's router name belong to another \
                 publicAddress (router names collide)",
            )),
            Some(_) => registrations.push(Registration {
                process_id,
                endpoint: server.endpoint.clone(),
            }),
        }
    }
    (registrations, rejected)
}

/// The servers in the `traefik/http/*` keys, by name, skipping `all-servers`. A server is a
/// key `traefik/http/services/{name}/loadbalancer/servers/{name}/url` (both names equal, as
/// `@colyseus/traefik` writes them) with the rule `traefik/http/routers/{name}/rule`.
pub fn parse_servers<K, V>(
    pairs: impl IntoIterator<Item = (K, V)>,
) -> (BTreeMap<String, TraefikServer>, Vec<Rejection>)
where
    K: AsRef<str>,
    V: AsRef<str>,
{
    let mut rules: BTreeMap<String, (String, String)> = BTreeMap::new();
    let mut urls: BTreeMap<String, (String, String)> = BTreeMap::new();
    for (key, value) in pairs {
        let (key, value) = (key.as_ref(), value.as_ref());
        let Some(rest) = key
            .strip_prefix(ROOT_KEY)
            .and_then(|r| r.strip_prefix("/http/"))
        else {
            continue;
        };
        let segments: Vec<&str> = rest.split('/').collect();
        match segments.as_slice() {
            ["routers", name, "rule"] if *name != ALL_SERVERS => {
                rules.insert((*name).to_owned(), (key.to_owned(), value.to_owned()));
            }
            ["services", name, "loadbalancer", "servers", server, "url"]
                if name == server && *name != ALL_SERVERS =>
            {
                urls.insert((*name).to_owned(), (key.to_owned(), value.to_owned()));
            }
            _ => {}
        }
    }
    let mut servers = BTreeMap::new();
    let mut rejected = Vec::new();
    for (name, (key, url)) in urls {
        let endpoint = match parse_server_url(&url) {
            Ok(e) => e,
            Err(why) => {
                rejected.push(Rejection::BadAddress { member: key, why });
                continue;
            }
        };
        let route = match rules.get(&name) {
            None => Err(Rejection::BadAddress {
                member: key,
                why: "no router rule (traefik/http/routers/{name}/rule) for this server",
            }),
            Some((rule_key, rule)) => parse_rule(rule).ok_or_else(|| Rejection::BadAddress {
                member: rule_key.clone(),
                why: "router rule is not Host(`h`) [&& PathPrefix(`/p`)]",
            }),
        };
        match route {
            Ok(route) => {
                let server = TraefikServer {
                    name: name.clone(),
                    endpoint,
                    route,
                };
                servers.insert(name, server);
            }
            Err(rejection) => rejected.push(rejection),
        }
    }
    (servers, rejected)
}

/// The router and service name `@colyseus/traefik` derives from a `publicAddress`:
/// `publicAddress.replace("/", "_").split(".")[0]` (only the first `/` is replaced).
pub fn router_name(public_address: &str) -> String {
    let replaced = public_address.replacen('/', "_", 1);
    replaced.split('.').next().unwrap_or_default().to_owned()
}

/// What the router rule of a `publicAddress` matches, as `@colyseus/traefik` builds it
/// (`new URL("http://" + publicAddress)`: `hostname` and `pathname`). `None` when it has no
/// host. Percent-encoding and dot segments are not normalised as `URL` would: such an
/// address then fails to match its rule and is rejected, never misrouted.
pub fn route_of(public_address: &str) -> Option<Route> {
    let rest = public_address
        .split_once("://")
        .map_or(public_address, |(_, r)| r);
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let path = &tail[..tail.find(['?', '#']).unwrap_or(tail.len())];
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if host_port.starts_with('[') {
        &host_port[..=host_port.find(']')?]
    } else {
        host_port.split_once(':').map_or(host_port, |(h, _)| h)
    };
    if host.is_empty() {
        return None;
    }
    Some(Route {
        host: host.to_ascii_lowercase(),
        path_prefix: (!path.is_empty() && path != "/").then(|| path.to_owned()),
    })
}

/// Parses a router rule as `@colyseus/traefik` writes it:
/// ``Host(`h`)`` or ``Host(`h`) && PathPrefix(`/p`)``.
pub fn parse_rule(rule: &str) -> Option<Route> {
    let (host, rest) = rule.strip_prefix("Host(`")?.split_once("`)")?;
    let path_prefix = match rest {
        "" => None,
        _ => {
            let path = rest.strip_prefix(" && PathPrefix(`")?.strip_suffix("`)")?;
            if !path.starts_with('/') || path.contains('`') {
                return None;
            }
            Some(path.to_owned())
        }
    };
    if host.is_empty() || host.contains('`') {
        return None;
    }
    Some(Route {
        host: host.to_owned(),
        path_prefix,
    })
}

/// `http://{host}:{port}` (IPv6 in brackets), nothing after the port.
fn parse_server_url(url: &str) -> Result<Endpoint, &'static str> {
    let authority = url
        .strip_prefix("http://")
        .ok_or("server url is not http://host:port")?;
    if authority.contains(['/', '?', '#', '@']) {
        return Err("server url has more than http://host:port");
    }
    if !authority.starts_with('[') && authority.matches(':').count() > 1 {
        return Err(
            "server url is not http://host:port (several ':'; @colyseus/traefik \
                    0.17.6 writes http://host:port:port for an internalAddress with a port)",
        );
    }
    let endpoint = parse_address(authority, 0)?;
    if endpoint.port == 0 {
        return Err("server url has no port");
    }
    Ok(endpoint)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{parse_member, Host};

    /// What three real processes wrote (core 0.17.51, traefik 0.17.7 and 0.17.6), as read
    /// with `redis-cli --scan`; processIds and publicAddresses as they reported them.
    const CAPTURED: &[(&str, &str)] = &[
        (
            "traefik/http/routers/all-servers/rule",
            "Host(`backend.example.com`)",
        ),
        ("traefik/http/routers/all-servers/service", "all-servers"),
        (
            "traefik/http/routers/localhost_2602/rule",
            "Host(`localhost`) && PathPrefix(`/2602`)",
        ),
        (
            "traefik/http/routers/localhost_2602/service",
            "localhost_2602",
        ),
        (
            "traefik/http/routers/node1/rule",
            "Host(`node1.backend.example.com`)",
        ),
        ("traefik/http/routers/node1/service", "node1"),
        (
            "traefik/http/routers/node3/rule",
            "Host(`node3.backend.example.com`)",
        ),
        ("traefik/http/routers/node3/service", "node3"),
        (
            "traefik/http/services/all-servers/loadbalancer/healthcheck/interval",
            "10s",
        ),
        (
            "traefik/http/services/all-servers/loadbalancer/healthcheck/path",
            "/__healthcheck",
        ),
        (
            "traefik/http/services/all-servers/loadbalancer/healthcheck/timeout",
            "3s",
        ),
        (
            "traefik/http/services/all-servers/loadbalancer/servers/localhost_2602/url",
            "http://[::1]:2602",
        ),
        (
            "traefik/http/services/all-servers/loadbalancer/servers/node1/url",
            "http://10.0.0.5:2601",
        ),
        (
            "traefik/http/services/all-servers/loadbalancer/servers/node3/url",
            "http://127.0.0.1:2603:2603",
        ),
        (
            "traefik/http/services/localhost_2602/loadbalancer/healthcheck/interval",
            "10s",
        ),
        (
            "traefik/http/services/localhost_2602/loadbalancer/healthcheck/path",
            "/__healthcheck",
        ),
        (
            "traefik/http/services/localhost_2602/loadbalancer/healthcheck/timeout",
            "3s",
        ),
        (
            "traefik/http/services/localhost_2602/loadbalancer/servers/localhost_2602/url",
            "http://[::1]:2602",
        ),
        (
            "traefik/http/services/node1/loadbalancer/healthcheck/interval",
            "10s",
        ),
        (
            "traefik/http/services/node1/loadbalancer/healthcheck/path",
            "/__healthcheck",
        ),
        (
            "traefik/http/services/node1/loadbalancer/healthcheck/timeout",
            "3s",
        ),
        (
            "traefik/http/services/node1/loadbalancer/servers/node1/url",
            "http://10.0.0.5:2601",
        ),
        (
            "traefik/http/services/node3/loadbalancer/healthcheck/interval",
            "10s",
        ),
        (
            "traefik/http/services/node3/loadbalancer/healthcheck/path",
            "/__healthcheck",
        ),
        (
            "traefik/http/services/node3/loadbalancer/healthcheck/timeout",
            "3s",
        ),
        (
            "traefik/http/services/node3/loadbalancer/servers/node3/url",
            "http://127.0.0.1:2603:2603",
        ),
    ];

    const PROCESSES: &[(&str, &str)] = &[
        ("dTpb-13Qj", "node1.backend.example.com"),
        ("hgzAdzxu7", "localhost/2602"),
        ("rIkHyZkRY", "node3.backend.example.com"),
    ];

    fn reg(member: &str) -> Registration {
        parse_member(member, 1).unwrap()
    }

    #[test]
    fn reads_what_real_processes_wrote() {
        let (servers, rejected) = parse_servers(CAPTURED.iter().copied());
        assert_eq!(
            servers.keys().collect::<Vec<_>>(),
            ["localhost_2602", "node1"]
        );
        assert_eq!(servers["node1"].endpoint, reg("x/10.0.0.5:2601").endpoint);
        assert_eq!(
            servers["node1"].route,
            Route {
                host: "node1.backend.example.com".into(),
                path_prefix: None
            }
        );
        assert_eq!(
            servers["localhost_2602"].endpoint,
            reg("x/[::1]:2602").endpoint
        );
        assert_eq!(
            servers["localhost_2602"].route.path_prefix.as_deref(),
            Some("/2602")
        );
        // 0.17.6's doubled port, under its own name only (all-servers is skipped).
        assert_eq!(rejected.len(), 1);
        assert!(matches!(
            &rejected[0],
            Rejection::BadAddress { member, .. }
                if member == "traefik/http/services/node3/loadbalancer/servers/node3/url"
        ));

        let (registrations, rejected) = parse(CAPTURED.iter().copied(), PROCESSES.iter().copied());
        assert_eq!(
            registrations,
            vec![reg("dTpb-13Qj/10.0.0.5:2601"), reg("hgzAdzxu7/[::1]:2602")]
        );
        // node3's bad url, then node3's process that has no server.
        assert_eq!(rejected.len(), 2);
        assert!(rejected.iter().all(|r| r.reason() == "bad_address"));
        assert!(rejected[1].to_string().contains("rIkHyZkRY"));
    }

    #[test]
    fn router_names_are_colyseus_s() {
        assert_eq!(router_name("node-1.game.com"), "node-1");
        assert_eq!(router_name("localhost/2602"), "localhost_2602");
        assert_eq!(router_name("backend.example.com/2604"), "backend");
        assert_eq!(router_name("a/b/c"), "a_b/c");
        assert_eq!(router_name("single"), "single");
    }

    #[test]
    fn routes_follow_url_parsing() {
        let route = |host: &str, p: Option<&str>| Route {
            host: host.into(),
            path_prefix: p.map(Into::into),
        };
        assert_eq!(
            route_of("Node-1.Game.com"),
            Some(route("node-1.game.com", None))
        );
        assert_eq!(route_of("game.com:443/"), Some(route("game.com", None)));
        assert_eq!(
            route_of("localhost/2602"),
            Some(route("localhost", Some("/2602")))
        );
        assert_eq!(
            route_of("https://g.com/a/b?x#y"),
            Some(route("g.com", Some("/a/b")))
        );
        assert_eq!(route_of("[::1]:80/p"), Some(route("[::1]", Some("/p"))));
        assert_eq!(route_of(""), None);
        assert_eq!(route_of("/path"), None);
        assert_eq!(route_of("[::1"), None);
        // Rules parse back to the same route.
        assert_eq!(
            parse_rule("Host(`localhost`) && PathPrefix(`/2602`)"),
            route_of("localhost/2602")
        );
        for bad in [
            "",
            "Host(``)",
            "Host(`a`",
            "Host(`a`) || PathPrefix(`/p`)",
            "Host(`a`) && PathPrefix(`p`)",
            "Host(`a`) && PathPrefix(`/p`) && Method(`GET`)",
            "PathPrefix(`/p`)",
        ] {
            assert_eq!(parse_rule(bad), None, "{bad}");
        }
    }

    #[test]
    fn server_urls_must_be_http_host_port() {
        assert_eq!(
            parse_server_url("http://game-1.svc:2567").unwrap().host,
            Host::Name("game-1.svc".into())
        );
        for bad in [
            "https://10.0.0.1:2567",
            "http://10.0.0.1",
            "http://10.0.0.1:2567/",
            "http://10.0.0.1:2567:2567",
            "http://fd12::1:2567",
            "http://undefined:2567",
            "http://0.0.0.0:2567",
            "http://[::1]",
            "http://u@10.0.0.1:1",
            "",
        ] {
            assert!(parse_server_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn colliding_names_are_rejected_not_misrouted() {
        // Two processes at backend.example.com/2604 and /2605: both are named "backend";
        // the second one's keys overwrote the first one's.
        let keys = [
            (
                "traefik/http/routers/backend/rule",
                "Host(`backend.example.com`) && PathPrefix(`/2605`)",
            ),
            (
                "traefik/http/services/backend/loadbalancer/servers/backend/url",
                "http://10.0.0.6:2605",
            ),
        ];
        let processes = [
            ("procA", "backend.example.com/2604"),
            ("procB", "backend.example.com/2605"),
        ];
        let (registrations, rejected) = parse(keys, processes);
        assert_eq!(registrations, vec![reg("procB/10.0.0.6:2605")]);
        assert_eq!(rejected.len(), 1);
        assert!(rejected[0].to_string().contains("procA"));
        assert!(rejected[0].to_string().contains("collide"));
    }

    #[test]
    fn bad_inputs_are_rejected_and_foreign_keys_skipped() {
        let keys = [
            // Another application's Traefik config under the same root: skipped.
            ("traefik/http/routers/web/rule", "Host(`www.example.com`)"),
            (
                "traefik/http/services/web/loadbalancer/servers/0/url",
                "http://10.0.0.9:80",
            ),
            (
                "traefik/tcp/services/x/loadbalancer/servers/x/address",
                "10.0.0.9:1",
            ),
            (
                "other/http/services/n/loadbalancer/servers/n/url",
                "http://10.0.0.9:1",
            ),
            // A server without its rule yet (the keys are four separate SETs).
            (
                "traefik/http/services/late/loadbalancer/servers/late/url",
                "http://10.0.0.7:1",
            ),
            // A rule that is not Colyseus's.
            ("traefik/http/routers/odd/rule", "HostRegexp(`.+`)"),
            (
                "traefik/http/services/odd/loadbalancer/servers/odd/url",
                "http://10.0.0.8:1",
            ),
            ("traefik/http/routers/ok/rule", "Host(`ok.example.com`)"),
            (
                "traefik/http/services/ok/loadbalancer/servers/ok/url",
                "http://10.0.0.1:2567",
            ),
        ];
        let (servers, rejected) = parse_servers(keys);
        assert_eq!(servers.keys().collect::<Vec<_>>(), ["ok"]);
        let members: Vec<String> = rejected
            .iter()
            .map(|r| match r {
                Rejection::BadAddress { member, .. } => member.clone(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            members,
            [
                "traefik/http/services/late/loadbalancer/servers/late/url",
                "traefik/http/routers/odd/rule",
            ]
        );

        let processes = [
            ("bad.id", "ok.example.com"),
            ("twice", "ok.example.com"),
            ("twice", "other.example.com"),
            ("ok1", "ok.example.com"),
            ("ok1", "ok.example.com"),
        ];
        let (registrations, rejected) = parse(keys, processes);
        assert_eq!(registrations, vec![reg("ok1/10.0.0.1:2567")]);
        let reasons: Vec<&str> = rejected.iter().map(Rejection::reason).collect();
        assert_eq!(
            reasons,
            ["bad_address", "bad_address", "bad_process_id", "conflict"]
        );
    }
}
