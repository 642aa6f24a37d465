//! The `@colyseus/traefik` key reader (`sources::traefik::parse_servers` and `parse`),
//! driven by lines: `key=value` is a Redis key; `@pid publicAddress` a process known from
//! elsewhere; `!pid publicAddress host:port` a process that exposed itself, i.e. the keys
//! `@colyseus/traefik` writes for it (router rule and server url, written after the others).
//!
//! Invariants: a registration's processId is valid, listed with exactly one publicAddress,
//! and sits at the url of the server named after that address, whose rule matches the
//! address (never another process's server); every listed processId is registered or
//! rejected; parsed servers are usable (non-zero port, rule host and path without
//! backticks) and their rule text round-trips; and a process that exposed itself with a
//! usable address, alone under its router name, is registered at its url.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};

use colyseus_envoy_agent::model::{parse_member, Host};
use colyseus_envoy_agent::sources::traefik::{
    parse, parse_rule, parse_servers, route_of, router_name, ALL_SERVERS,
};
use libfuzzer_sys::fuzz_target;
use routing::ProcessId;

struct Exposed<'a> {
    pid: &'a str,
    public_address: &'a str,
    authority: &'a str,
}

fuzz_target!(|data: &[u8]| {
    let Ok(script) = std::str::from_utf8(data) else {
        return;
    };
    let mut pairs: Vec<(String, String)> = Vec::new();
    let mut processes: Vec<(&str, &str)> = Vec::new();
    let mut exposed: Vec<Exposed<'_>> = Vec::new();
    for line in script.lines() {
        if let Some(rest) = line.strip_prefix('@') {
            if let Some((pid, address)) = rest.split_once(' ') {
                processes.push((pid, address));
            }
        } else if let Some(rest) = line.strip_prefix('!') {
            let mut parts = rest.splitn(3, ' ');
            if let (Some(pid), Some(public_address), Some(authority)) =
                (parts.next(), parts.next(), parts.next())
            {
                processes.push((pid, public_address));
                exposed.push(Exposed {
                    pid,
                    public_address,
                    authority,
                });
            }
        } else if let Some((k, v)) = line.split_once('=') {
            pairs.push((k.to_owned(), v.to_owned()));
        }
    }
    for e in &exposed {
        let name = router_name(e.public_address);
        if let Some(route) = route_of(e.public_address) {
            let mut rule = format!("Host(`{}`)", route.host);
            if let Some(p) = &route.path_prefix {
                rule.push_str(&format!(" && PathPrefix(`{p}`)"));
            }
            pairs.push((format!("traefik/http/routers/{name}/rule"), rule));
        }
        let url = format!("http://{}", e.authority);
        pairs.push((
            format!("traefik/http/services/{name}/loadbalancer/servers/{name}/url"),
            url.clone(),
        ));
        pairs.push((
            format!("traefik/http/services/{ALL_SERVERS}/loadbalancer/servers/{name}/url"),
            url,
        ));
    }

    // Servers.
    let (servers, server_rejections) = parse_servers(pairs.iter().map(|(k, v)| (k, v)));
    for (name, server) in &servers {
        assert_eq!(*name, server.name);
        assert_ne!(name, ALL_SERVERS);
        assert!(!name.contains('/'));
        assert_ne!(server.endpoint.port, 0);
        if let Host::Ip(ip) = server.endpoint.host {
            assert!(!ip.is_unspecified());
        }
        let route = &server.route;
        assert!(!route.host.is_empty() && !route.host.contains('`'));
        if let Some(p) = &route.path_prefix {
            assert!(p.starts_with('/') && !p.contains('`'));
        }
        let mut rule = format!("Host(`{}`)", route.host);
        if let Some(p) = &route.path_prefix {
            rule.push_str(&format!(" && PathPrefix(`{p}`)"));
        }
        assert_eq!(parse_rule(&rule).as_ref(), Some(route), "{rule:?}");
    }
    for (_, value) in &pairs {
        if let Some(route) = route_of(value) {
            assert!(!route.host.is_empty());
            assert_eq!(route.host, route.host.to_ascii_lowercase());
            if let Some(p) = &route.path_prefix {
                assert!(p.starts_with('/') && p != "/");
            }
        }
    }

    // Registrations.
    let (registrations, rejected) =
        parse(pairs.iter().map(|(k, v)| (k, v)), processes.iter().copied());
    let mut listed: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (pid, address) in &processes {
        listed.entry(pid).or_default().insert(address);
    }
    let mut registered = BTreeSet::new();
    for reg in &registrations {
        assert!(
            registered.insert(reg.process_id.clone()),
            "{} twice",
            reg.process_id
        );
        let addresses = &listed[reg.process_id.as_str()];
        assert_eq!(addresses.len(), 1);
        let address = addresses.first().unwrap();
        let server = &servers[&router_name(address)];
        assert_eq!(reg.endpoint, server.endpoint);
        assert_eq!(route_of(address).as_ref(), Some(&server.route));
    }
    assert_eq!(
        rejected.len(),
        server_rejections.len() + listed.len() - registrations.len()
    );

    // Processes that exposed themselves properly are found.
    let mut names: BTreeMap<String, usize> = BTreeMap::new();
    for e in &exposed {
        *names.entry(router_name(e.public_address)).or_default() += 1;
    }
    for e in &exposed {
        let name = router_name(e.public_address);
        let route_ok = route_of(e.public_address).is_some_and(|r| {
            !r.host.contains('`') && !r.path_prefix.is_some_and(|p| p.contains('`'))
        });
        let url_ok = !e.authority.contains(['/', '?', '#', '@'])
            && (e.authority.starts_with('[') || e.authority.matches(':').count() <= 1);
        let endpoint = parse_member(&format!("x/{}", e.authority), 0)
            .ok()
            .map(|r| r.endpoint)
            .filter(|ep| ep.port != 0);
        let usable = ProcessId::parse(e.pid).is_ok()
            && listed[e.pid].len() == 1
            && names[&name] == 1
            && name != ALL_SERVERS
            && !name.contains('/')
            && route_ok
            && url_ok;
        if let (true, Some(endpoint)) = (usable, endpoint) {
            let reg = registrations
                .iter()
                .find(|r| r.process_id.as_str() == e.pid)
                .unwrap_or_else(|| panic!("{} exposed at {} not registered", e.pid, e.authority));
            assert_eq!(reg.endpoint, endpoint);
        }
    }
});
