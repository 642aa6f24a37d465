//! `UpstreamPolicy::check` on any address, port and allow-list, and `parse_cidrs` on any
//! text. Invariants, checked against std's own classification of the address: an accepted
//! upstream is never unspecified, link-local, multicast, broadcast or documentation, in any
//! IPv6 spelling that carries an IPv4 address; never Envoy's admin or the agent's API on a
//! loopback address; and inside the allow-list when there is one. A parsed network prints
//! as text that parses back to the same network.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use colyseus_envoy_agent::upstream_policy::{canonical, parse_cidrs, UpstreamPolicy};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 19 {
        return;
    }
    let (addr_bytes, rest) = data.split_at(16);
    let (port_bytes, rest) = rest.split_at(2);
    let ip = if rest[0] & 1 == 0 {
        IpAddr::V4(Ipv4Addr::new(
            addr_bytes[0],
            addr_bytes[1],
            addr_bytes[2],
            addr_bytes[3],
        ))
    } else {
        let mut o = [0u8; 16];
        o.copy_from_slice(addr_bytes);
        IpAddr::V6(Ipv6Addr::from(o))
    };
    let port = u16::from_be_bytes([port_bytes[0], port_bytes[1]]);
    let text = String::from_utf8_lossy(&rest[1..]);
    let allow = parse_cidrs(&text).unwrap_or_default();
    for net in &allow {
        let again = parse_cidrs(&net.to_string()).unwrap();
        assert_eq!(again, vec![*net], "{net}");
    }
    let policy = UpstreamPolicy {
        allow: allow.clone(),
        envoy_admin: Some("127.0.0.1:19901".parse().unwrap()),
        agent_api: Some("0.0.0.0:9902".parse().unwrap()),
    };
    let addr = SocketAddr::new(ip, port);
    let local = |ip: IpAddr| ip == IpAddr::V4(Ipv4Addr::new(10, 1, 1, 1));
    if policy.check(addr, local).is_err() {
        return;
    }
    let c = canonical(ip);
    match c {
        IpAddr::V4(v4) => {
            assert!(!v4.is_unspecified(), "{addr}");
            assert!(!v4.is_link_local(), "{addr}");
            assert!(!v4.is_multicast(), "{addr}");
            assert!(!v4.is_broadcast(), "{addr}");
            assert!(!v4.is_documentation(), "{addr}");
            assert!(v4.octets()[0] != 0 && v4.octets()[0] < 240, "{addr}");
        }
        IpAddr::V6(v6) => {
            assert!(!v6.is_unspecified(), "{addr}");
            assert!(!v6.is_multicast(), "{addr}");
            assert!((v6.segments()[0] & 0xffc0) != 0xfe80, "{addr}");
            assert!(v6.to_ipv4_mapped().is_none(), "{addr}");
        }
    }
    if c.is_loopback() {
        assert!(![19901, 9901, 9902].contains(&port), "{addr}");
    }
    if port == 9902 {
        assert!(!local(c), "{addr}");
    }
    if !allow.is_empty() {
        assert!(
            allow.iter().any(|n| n.contains(c)),
            "{addr} outside {allow:?}"
        );
    }
});
