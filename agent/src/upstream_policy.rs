//! Which addresses a registration may make Envoy connect to. Pure: no I/O (whether an
//! address is one of this host's is asked of the caller).
//!
//! Redis is a trust boundary: any game server can write `colyseus:nodes`, so a registration
//! is an instruction to send public traffic somewhere. A game server is a unicast host on
//! the fleet's network; anything else is refused:
//! - Envoy's admin and the agent's own API (same port on a loopback, unspecified or own
//!   address: they would expose `/config_dump`, `/logging`, `/metrics`...);
//! - link-local (169.254.0.0/16, fe80::/10: the cloud instance-metadata service lives there),
//!   known metadata addresses outside it, multicast, broadcast, unspecified, and the reserved
//!   and documentation ranges;
//! - with an allow-list (`--upstream-allow-cidrs`), every address outside it. Loopback is
//!   then allowed only if listed; without a list it is allowed, which the single-host stack
//!   and the tests need.
//!
//! IPv4-mapped (`::ffff:a.b.c.d`), IPv4-compatible, NAT64 (`64:ff9b::/96`) and 6to4
//! (`2002::/16`) forms are judged by the IPv4 address they carry, so no spelling of a
//! forbidden address gets through.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

/// Envoy's conventional admin port: refused on loopback even when the agent was not told
/// where the admin listens (it may be a TCP admin the agent does not know of).
pub const CONVENTIONAL_ADMIN_PORT: u16 = 9901;

/// An IP network, `addr/prefix`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` is inside. IPv4-mapped IPv6 addresses are compared as IPv4.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => prefix_eq(
                u128::from(u32::from(net)) << 96,
                u128::from(u32::from(ip)) << 96,
                self.prefix,
            ),
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_eq(u128::from(net), u128::from(ip), self.prefix)
            }
            _ => false,
        }
    }
}

fn prefix_eq(a: u128, b: u128, prefix: u8) -> bool {
    a & prefix_mask(prefix) == b & prefix_mask(prefix)
}

impl FromStr for Cidr {
    type Err = String;

    /// `10.0.0.0/8`, `fd00::/8`, or a bare address (a /32 or /128). Host bits must be zero,
    /// so a typo like `10.0.0.1/8` is an error rather than a silently wider network.
    fn from_str(s: &str) -> Result<Self, String> {
        let (ip, prefix) = match s.split_once('/') {
            Some((ip, p)) => (ip, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = ip
            .parse()
            .map_err(|_| format!("{s:?} is not a network (ip/prefix)"))?;
        let addr = canonical(addr);
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max && !p.starts_with('+') => n,
                _ => return Err(format!("{s:?}: the prefix length is not 0-{max}")),
            },
        };
        // IPv4 is compared in the top 32 bits (as in `contains`).
        let bits = match addr {
            IpAddr::V4(v4) => u128::from(u32::from(v4)) << 96,
            IpAddr::V6(v6) => u128::from(v6),
        };
        if bits & !prefix_mask(prefix) != 0 {
            return Err(format!("{s:?} has host bits set past /{prefix}"));
        }
        Ok(Cidr { addr, prefix })
    }
}

fn prefix_mask(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Parses a comma-separated list of networks (`--upstream-allow-cidrs`).
///
/// # Errors
/// The first entry that is not a network.
pub fn parse_cidrs(list: &str) -> Result<Vec<Cidr>, String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::parse)
        .collect()
}

/// Why an address may not be an upstream. Each is a metrics label ([`Refusal::reason`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    EnvoyAdmin,
    AgentApi,
    LinkLocal,
    Metadata,
    Multicast,
    Unspecified,
    Broadcast,
    Reserved,
    /// Outside `--upstream-allow-cidrs`.
    NotAllowed,
}

impl Refusal {
    /// Short stable label for metrics.
    pub fn reason(self) -> &'static str {
        match self {
            Self::EnvoyAdmin => "upstream_envoy_admin",
            Self::AgentApi => "upstream_agent_api",
            Self::LinkLocal => "upstream_link_local",
            Self::Metadata => "upstream_metadata",
            Self::Multicast => "upstream_multicast",
            Self::Unspecified => "upstream_unspecified",
            Self::Broadcast => "upstream_broadcast",
            Self::Reserved => "upstream_reserved",
            Self::NotAllowed => "upstream_not_allowed",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::EnvoyAdmin => "it is Envoy's admin interface",
            Self::AgentApi => "it is the agent's own API",
            Self::LinkLocal => "link-local addresses (cloud metadata) are never upstreams",
            Self::Metadata => "it is a cloud instance-metadata address",
            Self::Multicast => "multicast addresses are never upstreams",
            Self::Unspecified => "the unspecified address is not a host",
            Self::Broadcast => "the broadcast address is not a host",
            Self::Reserved => "reserved or documentation addresses are never upstreams",
            Self::NotAllowed => "it is outside --upstream-allow-cidrs",
        })
    }
}

/// The addresses game-server upstreams may have.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamPolicy {
    /// Networks upstreams must be in; empty: any address not refused otherwise.
    pub allow: Vec<Cidr>,
    /// Envoy's admin, if it listens on TCP.
    pub envoy_admin: Option<SocketAddr>,
    /// The agent's API.
    pub agent_api: Option<SocketAddr>,
}

impl UpstreamPolicy {
    /// Whether Envoy may connect to `addr` for a game server. `is_local` says whether an
    /// address is one of this host's (only asked when a protected service listens on an
    /// unspecified address at the same port).
    ///
    /// # Errors
    /// The [`Refusal`] of the first rule `addr` breaks.
    pub fn check(
        &self,
        addr: SocketAddr,
        is_local: impl Fn(IpAddr) -> bool,
    ) -> Result<(), Refusal> {
        let ip = canonical(addr.ip());
        if let Some(refusal) = forbidden_range(ip) {
            return Err(refusal);
        }
        let same_service = |service: SocketAddr| {
            let bound = canonical(service.ip());
            service.port() == addr.port()
                && (ip.is_loopback() || ip == bound || (bound.is_unspecified() && is_local(ip)))
        };
        let admin_on_loopback =
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), CONVENTIONAL_ADMIN_PORT);
        if self.envoy_admin.is_some_and(same_service) || same_service(admin_on_loopback) {
            return Err(Refusal::EnvoyAdmin);
        }
        if self.agent_api.is_some_and(same_service) {
            return Err(Refusal::AgentApi);
        }
        if !self.allow.is_empty() && !self.allow.iter().any(|n| n.contains(ip)) {
            return Err(Refusal::NotAllowed);
        }
        Ok(())
    }
}

/// The address with IPv4 carried in IPv6 (mapped, compatible, NAT64, 6to4) as IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    let IpAddr::V6(v6) = ip else { return ip };
    let (s, o) = (v6.segments(), v6.octets());
    let low = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    if let Some(v4) = v6.to_ipv4_mapped() {
        return IpAddr::V4(v4);
    }
    // IPv4-compatible (deprecated), but not :: and ::1, which are IPv6's own.
    if s[..6] == [0; 6] && u32::from(low) > 1 {
        return IpAddr::V4(low);
    }
    // NAT64 well-known prefix.
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return IpAddr::V4(low);
    }
    if s[0] == 0x2002 {
        return IpAddr::V4(Ipv4Addr::new(o[2], o[3], o[4], o[5]));
    }
    ip
}

/// The range rule `ip` (canonical) breaks, if any. Loopback is not one: it is allowed
/// without an allow-list, and the allow-list decides otherwise.
fn forbidden_range(ip: IpAddr) -> Option<Refusal> {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            if v4.is_unspecified() {
                Some(Refusal::Unspecified)
            } else if v4.is_broadcast() {
                Some(Refusal::Broadcast)
            } else if v4.is_link_local() {
                Some(Refusal::LinkLocal)
            } else if v4 == Ipv4Addr::new(100, 100, 100, 200) {
                // Alibaba Cloud's metadata service.
                Some(Refusal::Metadata)
            } else if v4.is_multicast() {
                Some(Refusal::Multicast)
            } else if o[0] == 0                                  // 0.0.0.0/8 "this network"
                || o[0] >= 240                                   // 240.0.0.0/4
                || (o[0] == 192 && o[1] == 0 && o[2] == 0)       // 192.0.0.0/24 IETF
                || v4.is_documentation()                         // TEST-NET-1/2/3
                || (o[0] == 198 && (o[1] & 0xfe) == 18)
            // 198.18.0.0/15 benchmarking
            {
                Some(Refusal::Reserved)
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            if v6.is_unspecified() {
                Some(Refusal::Unspecified)
            } else if (s[0] & 0xffc0) == 0xfe80 {
                Some(Refusal::LinkLocal)
            } else if v6 == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
                // AWS's IPv6 instance-metadata endpoint.
                Some(Refusal::Metadata)
            } else if v6.is_multicast() {
                Some(Refusal::Multicast)
            } else if (s[0] & 0xffc0) == 0xfec0                  // site-local (deprecated)
                || (s[0] == 0x2001 && s[1] == 0x0db8)            // documentation
                || (s[0] == 0x2001 && s[1] == 0)                 // Teredo
                || s[..4] == [0x100, 0, 0, 0]                    // discard-only
                || s[..6] == [0; 6] && !v6.is_loopback()
            // leftover ::/96 forms
            {
                Some(Refusal::Reserved)
            } else {
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> UpstreamPolicy {
        UpstreamPolicy {
            allow: Vec::new(),
            envoy_admin: Some("127.0.0.1:19901".parse().unwrap()),
            agent_api: Some("127.0.0.1:9902".parse().unwrap()),
        }
    }

    fn check(p: &UpstreamPolicy, addr: &str) -> Result<(), Refusal> {
        p.check(addr.parse().unwrap(), |ip| {
            ip == IpAddr::from([10, 1, 2, 3])
        })
    }

    #[test]
    fn refuses_the_admin_and_the_agent_api_in_every_spelling() {
        let p = policy();
        for admin in [
            "127.0.0.1:19901",
            "127.9.9.9:19901",
            "[::1]:19901",
            "[::ffff:127.0.0.1]:19901",
            "127.0.0.1:9901",
            "[::ffff:7f00:1]:9901",
        ] {
            assert_eq!(check(&p, admin), Err(Refusal::EnvoyAdmin), "{admin}");
        }
        for api in ["127.0.0.1:9902", "[::1]:9902", "[::127.0.0.1]:9902"] {
            assert_eq!(check(&p, api), Err(Refusal::AgentApi), "{api}");
        }
        // Same port elsewhere is another host's service.
        assert_eq!(check(&p, "10.0.0.7:9902"), Ok(()));
        assert_eq!(check(&p, "127.0.0.1:2567"), Ok(()));
        // An API bound to all addresses: this host's own addresses at that port too.
        let wide = UpstreamPolicy {
            agent_api: Some("0.0.0.0:9902".parse().unwrap()),
            ..policy()
        };
        assert_eq!(check(&wide, "10.1.2.3:9902"), Err(Refusal::AgentApi));
        assert_eq!(check(&wide, "10.1.2.4:9902"), Ok(()));
        let bound = UpstreamPolicy {
            agent_api: Some("10.5.5.5:9902".parse().unwrap()),
            ..policy()
        };
        assert_eq!(check(&bound, "10.5.5.5:9902"), Err(Refusal::AgentApi));
        assert_eq!(
            check(&bound, "[::ffff:10.5.5.5]:9902"),
            Err(Refusal::AgentApi)
        );
    }

    #[test]
    fn refuses_special_ranges_in_every_spelling() {
        let p = policy();
        let cases = [
            ("169.254.169.254:80", Refusal::LinkLocal),
            ("[::ffff:169.254.169.254]:80", Refusal::LinkLocal),
            ("[::ffff:a9fe:a9fe]:80", Refusal::LinkLocal),
            ("[64:ff9b::169.254.169.254]:80", Refusal::LinkLocal),
            ("[2002:a9fe:a9fe::1]:80", Refusal::LinkLocal),
            ("[fe80::1]:80", Refusal::LinkLocal),
            ("[febf::1]:80", Refusal::LinkLocal),
            ("[fd00:ec2::254]:80", Refusal::Metadata),
            ("100.100.100.200:80", Refusal::Metadata),
            ("224.0.0.1:80", Refusal::Multicast),
            ("239.255.255.250:80", Refusal::Multicast),
            ("[ff02::1]:80", Refusal::Multicast),
            ("0.0.0.0:80", Refusal::Unspecified),
            ("[::]:80", Refusal::Unspecified),
            ("[::ffff:0.0.0.0]:80", Refusal::Unspecified),
            ("255.255.255.255:80", Refusal::Broadcast),
            ("0.1.2.3:80", Refusal::Reserved),
            ("240.0.0.1:80", Refusal::Reserved),
            ("192.0.0.8:80", Refusal::Reserved),
            ("192.0.2.1:80", Refusal::Reserved),
            ("198.51.100.1:80", Refusal::Reserved),
            ("203.0.113.9:80", Refusal::Reserved),
            ("198.19.0.1:80", Refusal::Reserved),
            ("[2001:db8::1]:80", Refusal::Reserved),
            ("[2001::1]:80", Refusal::Reserved),
            ("[fec0::1]:80", Refusal::Reserved),
            ("[100::1]:80", Refusal::Reserved),
        ];
        for (addr, refusal) in cases {
            assert_eq!(check(&p, addr), Err(refusal), "{addr}");
        }
        for ok in [
            "10.0.0.5:2567",
            "192.168.1.2:2567",
            "172.16.0.1:2567",
            "8.8.8.8:2567",
            "100.64.0.1:2567",
            "198.20.0.1:2567",
            "127.0.0.1:2567",
            "[::1]:2567",
            "[fd12::1]:2567",
            "[2a00:1450::1]:2567",
        ] {
            assert_eq!(check(&p, ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn an_allow_list_is_all_that_is_allowed() {
        let p = UpstreamPolicy {
            allow: parse_cidrs("10.0.0.0/8, fd00::/8").unwrap(),
            ..policy()
        };
        assert_eq!(check(&p, "10.9.8.7:2567"), Ok(()));
        assert_eq!(check(&p, "[::ffff:10.9.8.7]:2567"), Ok(()));
        assert_eq!(check(&p, "[fd00::5]:2567"), Ok(()));
        assert_eq!(check(&p, "127.0.0.1:2567"), Err(Refusal::NotAllowed));
        assert_eq!(check(&p, "[::1]:2567"), Err(Refusal::NotAllowed));
        assert_eq!(check(&p, "192.168.0.1:2567"), Err(Refusal::NotAllowed));
        // The list never opens a forbidden range.
        let wide = UpstreamPolicy {
            allow: parse_cidrs("0.0.0.0/0,::/0").unwrap(),
            ..policy()
        };
        assert_eq!(check(&wide, "169.254.169.254:80"), Err(Refusal::LinkLocal));
        assert_eq!(check(&wide, "127.0.0.1:9902"), Err(Refusal::AgentApi));
        let with_loopback = UpstreamPolicy {
            allow: parse_cidrs("127.0.0.0/8").unwrap(),
            ..policy()
        };
        assert_eq!(check(&with_loopback, "127.0.0.1:2567"), Ok(()));
    }

    #[test]
    fn parses_networks_strictly() {
        assert_eq!(parse_cidrs("").unwrap(), vec![]);
        let nets = parse_cidrs("10.0.0.0/8,192.168.1.1,fd00::/8,::ffff:10.0.0.0").unwrap();
        assert_eq!(nets[1].to_string(), "192.168.1.1/32");
        assert_eq!(nets[3].to_string(), "10.0.0.0/32");
        for bad in [
            "10.0.0.1/8",
            "10.0.0.0/33",
            "10.0.0.0/+8",
            "fd00::/129",
            "10.0.0.0/",
            "ten/8",
            "10.0.0.0/8/8",
        ] {
            assert!(parse_cidrs(bad).is_err(), "{bad}");
        }
        let zero: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(zero.contains("1.2.3.4".parse().unwrap()));
        assert!(!zero.contains("fd00::1".parse().unwrap()));
    }
}
