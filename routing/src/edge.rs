//! The TCP edge's decision: which connections skip Envoy's HTTP connection manager (HCM).
//!
//! With `bootstrap --edge-path tcp` the public listener runs the filter as a network filter
//! in front of `tcp_proxy`. A connection whose request head is a room WebSocket upgrade to
//! a live process goes straight to that process's cluster and is raw TCP from then on (an
//! idle one then costs what a `tcp_proxy` pair costs, not the HCM's codec, stream and router
//! state). Every other connection goes to the HCM through an internal listener, unchanged.
//!
//! The same request must reach the same cluster with the same headers on both paths, so
//! the fast path takes only heads the HCM would forward as they are (after its edge
//! rewrites, which [`rewrite`] repeats): the HTTP filter's decision for such a head is
//! `Route` to the same cluster (`filter` checks this in its tests and a fuzz target).
//! Anything else, including every head a codec could read differently (see [`crate::head`]),
//! goes to the HCM, which answers or refuses it as it does today.

use crate::cluster::ClusterNames;
use crate::head::{self, Head, Refusal};
use crate::path::{classify, Target};

/// Client-sent headers that name a client address, host, scheme or port. With no trusted
/// proxy in front nothing but Envoy may set them, so both paths remove them
/// (`x-forwarded-for` and `x-real-ip` are overwritten instead, `x-forwarded-proto` is set
/// from the connection). Colyseus and user code behind it would otherwise believe a forged
/// client address (`Forwarded`, `True-Client-IP`...) or host.
pub const UNTRUSTED_FORWARDING_HEADERS: [&str; 10] = [
    "x-client-ip",
    "forwarded",
    "true-client-ip",
    "cf-connecting-ip",
    "fastly-client-ip",
    "x-cluster-client-ip",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-server",
    "x-original-forwarded-for",
];

/// Headers the edge sets to the client's address, replacing any client-sent value.
pub const CLIENT_ADDRESS_HEADERS: [&str; 2] = ["x-forwarded-for", "x-real-ip"];

/// Headers the HCM treats specially (framing, hop-by-hop, Envoy's own): a head with one goes
/// to the HCM, whose handling the raw path does not repeat.
const HCM_ONLY_HEADERS: [&str; 9] = [
    "content-length",
    "transfer-encoding",
    "te",
    "expect",
    "keep-alive",
    "proxy-connection",
    "http2-settings",
    "x-request-id",
    "x-forwarded-client-cert",
];

/// Why a connection goes to the HCM (logged at debug level; each is a normal outcome).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToHcm {
    /// The head could not be read strictly.
    Head(Refusal),
    /// Not `GET` with `Upgrade: websocket` and `Connection: upgrade`.
    NotUpgrade,
    /// Not a room path, or one the HTTP filter must look up or refuse.
    NotFastRoom,
    /// A path or host the HCM would normalize or check.
    NotNormal,
    /// Bytes after the head, or a framing, hop-by-hop or Envoy header.
    BodyOrSpecialHeader,
    /// A header repeated that must appear once.
    Duplicate,
}

/// The edge's decision on the bytes received so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edge {
    /// The head is not complete: wait (bounded by the size limit and the deadline).
    Wait,
    /// Hand the connection to the HCM, bytes untouched.
    Hcm(ToHcm),
    /// Straight to `cluster`; the first `head_len` bytes are replaced with `head`.
    Raw {
        cluster: String,
        head: Vec<u8>,
        head_len: usize,
    },
}

/// What the raw path needs to know of the connection and the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    pub names: &'a ClusterNames,
    /// The filter's routing header: removed, as the HCM's route removes it.
    pub routing_header: &'a str,
    /// The client's IP address, as the HCM would compute it (no trusted hops).
    pub client_ip: &'a str,
    /// `http` or `https`: `x-forwarded-proto` as the HCM sets it.
    pub scheme: &'a str,
    pub max_head_len: usize,
}

/// Decides from the bytes received so far. `live(processId)`: the process is in a fetched
/// known set (not "every processId counts as known" before the first fetch: then the HCM
/// decides, and answers a dead process with 404 as before).
pub fn decide(buf: &[u8], cx: &Context<'_>, live: impl Fn(&str) -> bool) -> Edge {
    let head = match head::read(buf, cx.max_head_len) {
        head::Read::Incomplete => return Edge::Wait,
        head::Read::Refused(r) => return Edge::Hcm(ToHcm::Head(r)),
        head::Read::Complete(head) => head,
    };
    match fast_path(&head, buf.len(), cx, live) {
        Ok(cluster) => Edge::Raw {
            cluster,
            head: rewrite(&head, cx),
            head_len: head.len,
        },
        Err(why) => Edge::Hcm(why),
    }
}

/// The process cluster of a head the raw path may take, or why not.
fn fast_path(
    head: &Head<'_>,
    received: usize,
    cx: &Context<'_>,
    live: impl Fn(&str) -> bool,
) -> Result<String, ToHcm> {
    if head.method != "GET" {
        return Err(ToHcm::NotUpgrade);
    }
    let upgrade = once(head, "upgrade")?;
    let connection = once(head, "connection")?;
    let host = once(head, "host")?;
    let is_upgrade = upgrade.is_some_and(|u| u.eq_ignore_ascii_case("websocket"))
        && connection.is_some_and(|c| {
            c.split(',')
                .any(|t| t.trim_matches([' ', '\t']).eq_ignore_ascii_case("upgrade"))
        });
    if !is_upgrade {
        return Err(ToHcm::NotUpgrade);
    }
    // A body (or a pipelined request) on the upgrade: the HCM frames it.
    if received != head.len
        || head.headers.iter().any(|h| {
            HCM_ONLY_HEADERS
                .iter()
                .any(|n| h.name.eq_ignore_ascii_case(n))
                || starts_with_ignore_case(h.name, "x-envoy-")
        })
    {
        return Err(ToHcm::BodyOrSpecialHeader);
    }
    // The HCM refuses names with underscores (`headers_with_underscores_action`).
    if head.headers.iter().any(|h| h.name.contains('_')) {
        return Err(ToHcm::NotNormal);
    }
    if !host.is_some_and(|h| !h.is_empty() && h.bytes().all(is_host_byte)) {
        return Err(ToHcm::NotNormal);
    }
    let (path, query) = head.target.split_once('?').unwrap_or((head.target, ""));
    // The HCM normalizes paths (dot segments, percent-encoding, merged slashes) before the
    // filter sees them; only paths it leaves alone are taken here.
    let normal = path
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/_-".contains(&b))
        && !path.contains("//")
        && !query.contains('#');
    if !normal {
        return Err(ToHcm::NotNormal);
    }
    match classify(head.target) {
        Ok(Target::Room { process_id, .. }) if live(process_id) => {
            Ok(cx.names.process_unchecked(process_id))
        }
        _ => Err(ToHcm::NotFastRoom),
    }
}

/// The value of a header that must appear at most once.
fn once<'a>(head: &Head<'a>, name: &str) -> Result<Option<&'a str>, ToHcm> {
    let mut values = head.values(name);
    match (values.next(), values.next()) {
        (v, None) => Ok(v),
        _ => Err(ToHcm::Duplicate),
    }
}

fn starts_with_ignore_case(s: &str, prefix: &str) -> bool {
    s.get(..prefix.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
}

/// What an HTTP/1 `Host` may hold: a DNS name or IPv4 address, a bracketed IPv6 address,
/// a port.
fn is_host_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b".-:[]".contains(&b)
}

/// The head as the HCM forwards it: lowercase names (Envoy's HTTP/1 codec), `host` first,
/// the forwarding headers and the routing header removed, the client's address and the
/// scheme set (the e2e test `edge_tcp` compares the two paths' upstream heads).
pub fn rewrite(head: &Head<'_>, cx: &Context<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(head.len + 96);
    let mut line = |name: &str, value: &str| {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    };
    let removed = |name: &str| {
        name.eq_ignore_ascii_case(cx.routing_header)
            || name.eq_ignore_ascii_case("host")
            || name.eq_ignore_ascii_case("x-forwarded-proto")
            || CLIENT_ADDRESS_HEADERS
                .iter()
                .chain(&UNTRUSTED_FORWARDING_HEADERS)
                .any(|n| name.eq_ignore_ascii_case(n))
    };
    if let Some(host) = head.values("host").next() {
        line("host", host);
    }
    for h in head.headers.iter().filter(|h| !removed(h.name)) {
        line(&h.name.to_ascii_lowercase(), h.value);
    }
    line("x-forwarded-proto", cx.scheme);
    for name in CLIENT_ADDRESS_HEADERS {
        line(name, cx.client_ip);
    }
    // Envoy 1.40 treats no client address as internal by default, so the HCM adds this to
    // every request (seen upstream with a loopback client too).
    line("x-envoy-external-address", cx.client_ip);
    let mut head_bytes = format!("{} {} HTTP/1.1\r\n", head.method, head.target).into_bytes();
    head_bytes.extend_from_slice(&out);
    head_bytes.extend_from_slice(b"\r\n");
    head_bytes
}

/// The IP of a `source.address` property (`1.2.3.4:5678`, `[::1]:5678`), as the HCM puts it
/// in `x-forwarded-for` (no port, no brackets); `None` if it is not an IP socket address.
pub fn client_ip(address: &str) -> Option<String> {
    address
        .parse::<std::net::SocketAddr>()
        .ok()
        .map(|a| a.ip().to_string())
}

#[cfg(test)]
#[path = "edge_tests.rs"]
mod tests;
