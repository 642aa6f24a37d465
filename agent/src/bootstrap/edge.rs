//! The parts of the bootstrap that face an attacker: where the admin listens, what is
//! removed from requests and responses, and where the HTTP listener redirects to. Pure.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde_json::{json, Value};

/// Where Envoy's admin listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminListen {
    /// A Unix socket, mode 0600: no cluster can name it and only Envoy's user reaches it.
    Pipe(PathBuf),
    /// A loopback TCP address (explicit opt-in; `sync` must be told, to refuse it as an
    /// upstream).
    Tcp(SocketAddr),
}

/// Envoy's `admin.address`.
pub fn admin_address(admin: &AdminListen) -> Value {
    match admin {
        // 0o600: owner read/write only.
        AdminListen::Pipe(path) => json!({ "pipe": { "path": path, "mode": 0o600 } }),
        AdminListen::Tcp(addr) => {
            json!({ "socket_address": { "address": addr.ip().to_string(), "port_value": addr.port() } })
        }
    }
}

/// Client-sent headers that name a client address, host, scheme or port, removed from
/// requests without a trusted hop: defined with the TCP edge's raw path, which removes the
/// same ones (`routing::edge`).
pub use routing::edge::UNTRUSTED_FORWARDING_HEADERS;

/// The headers removed from requests for `trusted_hops` (with a trusted proxy in front,
/// only `x-client-ip`, as before: that proxy may set the others).
pub fn request_headers_to_remove(trusted_hops: u32) -> Vec<&'static str> {
    if trusted_hops == 0 {
        UNTRUSTED_FORWARDING_HEADERS.to_vec()
    } else {
        vec!["x-client-ip"]
    }
}

/// Where HTTP is redirected to when TLS is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicHost {
    pub host: String,
    pub port: Option<u16>,
}

impl PublicHost {
    /// `host` or `host:port`: a DNS name or an IP address (IPv6 in brackets).
    ///
    /// # Errors
    /// Anything else, as a message for the command line.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let bad = || format!("--public-host {spec:?} is not host[:port]");
        let (host, port) = match spec.strip_prefix('[') {
            Some(rest) => {
                let (v6, after) = rest.split_once(']').ok_or_else(bad)?;
                v6.parse::<std::net::Ipv6Addr>().map_err(|_| bad())?;
                (format!("[{v6}]"), after.strip_prefix(':'))
            }
            None => match spec.split_once(':') {
                Some((h, p)) => (h.to_owned(), Some(p)),
                None => (spec.to_owned(), None),
            },
        };
        let label = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        };
        if !host.starts_with('[') && (host.len() > 253 || !host.split('.').all(label)) {
            return Err(bad());
        }
        let port = match port {
            None => None,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 && !p.starts_with('+') => Some(n),
                _ => return Err(bad()),
            },
        };
        Ok(Self { host, port })
    }
}

/// A `Host` a redirect may reflect: a DNS name or IPv4 address with an optional port, or
/// a bracketed IPv6 address. Anything else (`evil/x`, `a@b`, control characters) gets 400.
/// (Short: Envoy refuses regexes over RE2's program size 100, and bounded repeats count
/// once per repetition.)
pub const VALID_HOST_REGEX: &str = r"^([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(:[0-9]+)?$";

/// The redirect routes of the HTTP listener next to TLS: to the configured public host,
/// or to the request's own host when it is valid, else 400.
pub fn redirect_routes(https_port: u16, public_host: Option<&PublicHost>) -> Vec<Value> {
    let mut redirect = json!({ "https_redirect": true });
    match public_host {
        Some(public) => {
            redirect["host_redirect"] = json!(public.host);
            let port = public.port.unwrap_or(https_port);
            if port != 443 {
                redirect["port_redirect"] = json!(port);
            }
            vec![json!({ "match": { "prefix": "/" }, "redirect": redirect })]
        }
        None => {
            if https_port != 443 {
                redirect["port_redirect"] = json!(https_port);
            }
            let valid_host = json!({ "name": ":authority", "string_match": { "safe_regex": {
                "regex": VALID_HOST_REGEX } } });
            vec![
                json!({ "match": { "prefix": "/", "headers": [valid_host] }, "redirect": redirect }),
                json!({ "match": { "prefix": "/" }, "direct_response": { "status": 400,
                    "body": { "inline_string": "{\"error\":\"bad_host\"}\n" } } }),
            ]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_is_a_private_socket_unless_tcp_is_asked_for() {
        let pipe = admin_address(&AdminListen::Pipe("/run/admin.sock".into()));
        assert_eq!(pipe["pipe"]["path"], "/run/admin.sock");
        assert_eq!(pipe["pipe"]["mode"], 0o600);
        let tcp = admin_address(&AdminListen::Tcp("127.0.0.1:9901".parse().unwrap()));
        assert_eq!(tcp["socket_address"]["port_value"], 9901);
    }

    #[test]
    fn forwarding_headers_go_without_a_trusted_hop() {
        let removed = request_headers_to_remove(0);
        for h in [
            "forwarded",
            "true-client-ip",
            "cf-connecting-ip",
            "x-forwarded-host",
        ] {
            assert!(removed.contains(&h), "{h}");
        }
        assert_eq!(request_headers_to_remove(1), ["x-client-ip"]);
    }

    #[test]
    fn public_hosts() {
        let ok = |s: &str| PublicHost::parse(s).unwrap();
        assert_eq!(ok("play.example.com").port, None);
        assert_eq!(ok("play.example.com:8443").port, Some(8443));
        assert_eq!(ok("[::1]:8443").host, "[::1]");
        assert_eq!(ok("10.0.0.1").host, "10.0.0.1");
        for bad in [
            "",
            "a/b",
            "a b",
            "a:0",
            "a:x",
            "a:70000",
            "[zz]",
            "a..b",
            "evil.com@x",
        ] {
            assert!(PublicHost::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn redirects_go_to_the_public_host_or_a_valid_request_host() {
        let public = PublicHost::parse("play.example.com").unwrap();
        let r = redirect_routes(8443, Some(&public));
        assert_eq!(r[0]["redirect"]["host_redirect"], "play.example.com");
        assert_eq!(r[0]["redirect"]["port_redirect"], 8443);
        let r = redirect_routes(443, None);
        assert!(r[0]["redirect"].get("port_redirect").is_none());
        assert_eq!(r[1]["direct_response"]["status"], 400);
    }
}
