//! The one client of Envoy's admin interface: `status` reads connections from it, and the
//! sync loop may read what Envoy has applied. Admin listens on a Unix socket or on a
//! loopback TCP address ([`AdminEndpoint`]); callers do not care which.
//!
//! Parsing is pure and tested here; [`AdminEndpoint::get`] is the only I/O.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Where Envoy's admin interface listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminEndpoint {
    /// A loopback TCP address.
    Tcp(SocketAddr),
    /// A Unix socket path (Envoy's admin `pipe`).
    Unix(PathBuf),
}

impl FromStr for AdminEndpoint {
    type Err = String;

    /// `unix:PATH` or an absolute path is a Unix socket; anything else must be `ip:port`.
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(path) = s.strip_prefix("unix:") {
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        if s.starts_with('/') || s.starts_with("./") {
            return Ok(Self::Unix(PathBuf::from(s)));
        }
        s.parse().map(Self::Tcp).map_err(|_| {
            format!("{s:?} is neither a Unix socket path (unix:PATH or /PATH) nor ip:port")
        })
    }
}

impl fmt::Display for AdminEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp(addr) => write!(f, "{addr}"),
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

impl AdminEndpoint {
    /// One HTTP/1.1 GET with `Connection: close` (Envoy's admin refuses HTTP/1.0):
    /// (status, body), within `timeout`.
    ///
    /// # Errors
    /// Connecting, writing or reading failed, or `timeout` passed.
    pub async fn get(&self, path: &str, timeout: Duration) -> std::io::Result<(u16, String)> {
        let fetch = async {
            match self {
                Self::Tcp(addr) => {
                    exchange(tokio::net::TcpStream::connect(addr).await?, path).await
                }
                Self::Unix(p) => exchange(tokio::net::UnixStream::connect(p).await?, path).await,
            }
        };
        tokio::time::timeout(timeout, fetch)
            .await
            .unwrap_or_else(|_| {
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "timed out",
                ))
            })
    }
}

/// Writes the request and reads the whole response off one connection.
async fn exchange(
    mut stream: impl AsyncRead + AsyncWrite + Unpin,
    path: &str,
) -> std::io::Result<(u16, String)> {
    let req = format!("GET {path} HTTP/1.1\r\nHost: envoy-admin\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    Ok(parse_response(&String::from_utf8_lossy(&raw)))
}

/// Status and body of a raw HTTP/1.1 response, chunked or not.
pub fn parse_response(text: &str) -> (u16, String) {
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    if !head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return (status, body.to_owned());
    }
    let (mut out, mut rest) = (String::new(), body);
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = match usize::from_str_radix(size.trim(), 16) {
            Ok(n) if n > 0 && after.len() >= n => n,
            _ => break,
        };
        let (Some(chunk), Some(tail)) = (after.get(..n), after.get(n..)) else {
            break;
        };
        out.push_str(chunk);
        rest = tail.trim_start_matches("\r\n");
    }
    (status, out)
}

/// One per-cluster statistic of Envoy's `/stats` text (`cluster.{name}.{stat}: N` lines),
/// by cluster name; other lines are skipped.
pub fn cluster_stat(stats: &str, stat: &str) -> BTreeMap<String, u64> {
    stats
        .lines()
        .filter_map(|l| {
            let (key, value) = l.split_once(": ")?;
            let name = key.strip_prefix("cluster.")?.strip_suffix(stat)?;
            let name = name.strip_suffix('.')?;
            Some((name.to_owned(), value.trim().parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_endpoints() {
        assert_eq!(
            "127.0.0.1:9901".parse(),
            Ok(AdminEndpoint::Tcp("127.0.0.1:9901".parse().unwrap()))
        );
        assert_eq!(
            "unix:/run/envoy/admin.sock".parse(),
            Ok(AdminEndpoint::Unix("/run/envoy/admin.sock".into()))
        );
        assert_eq!(
            "/tmp/a.sock".parse(),
            Ok(AdminEndpoint::Unix("/tmp/a.sock".into()))
        );
        assert!("localhost:9901".parse::<AdminEndpoint>().is_err());
        let unix = AdminEndpoint::Unix("/tmp/a.sock".into());
        assert_eq!(unix.to_string().parse(), Ok(unix));
    }

    #[test]
    fn reads_one_statistic_per_cluster() {
        let stats = "cluster.colyseus-process-a.upstream_cx_active: 12\n\
                     cluster.colyseus-all.upstream_cx_active: 3\n\
                     cluster.colyseus-process-a.upstream_cx_total: 40\n\
                     cluster.x.not_upstream_cx_active: 1\n\
                     cluster.colyseus-process-b.upstream_cx_active: nope\n";
        let cx = cluster_stat(stats, "upstream_cx_active");
        assert_eq!(cx.get("colyseus-process-a"), Some(&12));
        assert_eq!(cx.get("colyseus-all"), Some(&3));
        assert_eq!(cx.len(), 2);
    }

    #[test]
    fn parses_plain_and_chunked_responses() {
        assert_eq!(
            parse_response("HTTP/1.1 200 OK\r\nA: b\r\n\r\nLIVE\n"),
            (200, "LIVE\n".into())
        );
        let chunked = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nLIVE\n\r\n3\r\nabc\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked), (200, "LIVE\nabc".into()));
        assert_eq!(parse_response("garbage").0, 0);
    }
}
