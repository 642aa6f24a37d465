//! Is the local game server up? The check itself ([`check`], I/O) and the pure state
//! machine ([`HealthTracker`]) that turns consecutive results into register/deregister
//! decisions, so one slow answer never unregisters a process and one lucky answer never
//! brings a failing one back.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How the local server is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthCheck {
    /// Alive when it accepts a TCP connection.
    Tcp,
    /// Alive when `GET {path}` gets any HTTP response (a 404 too: the server answered).
    Http { path: String },
}

/// Why a `--health-check` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HealthCheckError {
    #[error("--health-check {0:?} is neither \"tcp\" nor \"http:/path\"")]
    Unknown(String),
    #[error("--health-check {0:?}: the path must start with '/' and hold no spaces or control characters")]
    BadPath(String),
}

impl HealthCheck {
    /// Parses `tcp` or `http:/path`.
    ///
    /// # Errors
    /// Anything else, or a path that cannot go on an HTTP request line.
    pub fn parse(s: &str) -> Result<Self, HealthCheckError> {
        if s.eq_ignore_ascii_case("tcp") {
            return Ok(Self::Tcp);
        }
        let Some(path) = s.strip_prefix("http:") else {
            return Err(HealthCheckError::Unknown(s.to_owned()));
        };
        let printable = path.bytes().all(|b| b.is_ascii_graphic());
        if !path.starts_with('/') || !printable {
            return Err(HealthCheckError::BadPath(s.to_owned()));
        }
        Ok(Self::Http {
            path: path.to_owned(),
        })
    }
}

/// One check of the server at `address` (`host:port`), bounded by `timeout`.
/// `Err` says why it failed (for the logs).
pub async fn check(kind: &HealthCheck, address: &str, timeout: Duration) -> Result<(), String> {
    match tokio::time::timeout(timeout, check_unbounded(kind, address)).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}

async fn check_unbounded(kind: &HealthCheck, address: &str) -> Result<(), String> {
    let mut stream = TcpStream::connect(address)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let HealthCheck::Http { path } = kind else {
        return Ok(());
    };
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nUser-Agent: colyseus-envoy-registrar\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("send: {e}"))?;
    // The status line is all we need; 12 bytes hold "HTTP/1.1 200".
    let mut head = Vec::with_capacity(16);
    let mut buf = [0u8; 64];
    while head.len() < 12 {
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    match parse_status(&head) {
        Some(_) => Ok(()),
        None => Err(format!(
            "not an HTTP response: {:?}",
            String::from_utf8_lossy(&head)
        )),
    }
}

/// The status code of an HTTP/1.x status line.
fn parse_status(head: &[u8]) -> Option<u16> {
    let rest = head.strip_prefix(b"HTTP/1.")?;
    let code = rest.get(2..5)?;
    if rest.get(1) != Some(&b' ') || !code.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(code).ok()?.parse().ok()
}

/// What the registrar should do after a check result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Register,
    Deregister,
}

/// Where the tracker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Never healthy yet: the first success registers (the server has just come up).
    Starting,
    /// Registered; `unhealthy_threshold` consecutive failures deregister.
    Up,
    /// Deregistered after failures; `healthy_threshold` consecutive successes register again.
    Down,
}

/// Consecutive check results -> [`Decision`]s. Pure.
#[derive(Debug, Clone)]
pub struct HealthTracker {
    healthy_threshold: u32,
    unhealthy_threshold: u32,
    phase: Phase,
    /// Consecutive results against the current phase (failures when up, successes when down).
    streak: u32,
}

impl HealthTracker {
    /// Thresholds below 1 count as 1.
    pub fn new(healthy_threshold: u32, unhealthy_threshold: u32) -> Self {
        Self {
            healthy_threshold: healthy_threshold.max(1),
            unhealthy_threshold: unhealthy_threshold.max(1),
            phase: Phase::Starting,
            streak: 0,
        }
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Feeds one check result; returns a decision when the phase changes.
    pub fn observe(&mut self, healthy: bool) -> Option<Decision> {
        let (threshold, next, decision) = match (self.phase, healthy) {
            (Phase::Starting, true) => {
                self.phase = Phase::Up;
                self.streak = 0;
                return Some(Decision::Register);
            }
            (Phase::Starting, false) | (Phase::Up, true) | (Phase::Down, false) => {
                self.streak = 0;
                return None;
            }
            (Phase::Up, false) => (self.unhealthy_threshold, Phase::Down, Decision::Deregister),
            (Phase::Down, true) => (self.healthy_threshold, Phase::Up, Decision::Register),
        };
        self.streak += 1;
        if self.streak < threshold {
            return None;
        }
        self.phase = next;
        self.streak = 0;
        Some(decision)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(t: &mut HealthTracker, results: &[bool]) -> Vec<Option<Decision>> {
        results.iter().map(|&ok| t.observe(ok)).collect()
    }

    #[test]
    fn first_success_registers() {
        let mut t = HealthTracker::new(2, 3);
        assert_eq!(feed(&mut t, &[false, false]), vec![None, None]);
        assert_eq!(t.phase(), Phase::Starting);
        assert_eq!(t.observe(true), Some(Decision::Register));
        assert_eq!(t.phase(), Phase::Up);
    }

    #[test]
    fn consecutive_failures_deregister_and_successes_reregister() {
        use Decision::*;
        let mut t = HealthTracker::new(2, 3);
        t.observe(true);
        // Two failures, then a success: the streak starts over.
        assert_eq!(
            feed(&mut t, &[false, false, true, false, false]),
            vec![None; 5]
        );
        assert_eq!(t.observe(false), Some(Deregister));
        assert_eq!(t.phase(), Phase::Down);
        // Down: one success then a failure is not enough.
        assert_eq!(feed(&mut t, &[true, false, false, true]), vec![None; 4]);
        assert_eq!(t.observe(true), Some(Register));
        assert_eq!(t.phase(), Phase::Up);
        assert_eq!(t.observe(true), None);
    }

    #[test]
    fn thresholds_of_one() {
        let mut t = HealthTracker::new(0, 1);
        t.observe(true);
        assert_eq!(t.observe(false), Some(Decision::Deregister));
        assert_eq!(t.observe(true), Some(Decision::Register));
    }

    #[test]
    fn health_check_values() {
        assert_eq!(HealthCheck::parse("tcp"), Ok(HealthCheck::Tcp));
        assert_eq!(
            HealthCheck::parse("http:/__healthcheck"),
            Ok(HealthCheck::Http {
                path: "/__healthcheck".into()
            })
        );
        assert!(matches!(
            HealthCheck::parse("http"),
            Err(HealthCheckError::Unknown(_))
        ));
        for bad in ["http:", "http:x", "http:/a b", "http:/a\r\nX: y"] {
            assert!(
                matches!(HealthCheck::parse(bad), Err(HealthCheckError::BadPath(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn status_lines() {
        assert_eq!(parse_status(b"HTTP/1.1 404 Not Found\r\n"), Some(404));
        assert_eq!(parse_status(b"HTTP/1.0 200"), Some(200));
        assert_eq!(parse_status(b"HTTP/1.1 2"), None);
        assert_eq!(parse_status(b"SSH-2.0-OpenSSH"), None);
        assert_eq!(parse_status(b""), None);
    }

    #[tokio::test]
    async fn tcp_and_http_checks_against_real_sockets() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                let mut buf = [0u8; 512];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                    .await;
            }
        });
        let t = Duration::from_secs(2);
        assert_eq!(check(&HealthCheck::Tcp, &addr, t).await, Ok(()));
        let http = HealthCheck::parse("http:/x").unwrap();
        assert_eq!(check(&http, &addr, t).await, Ok(()));

        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .to_string();
        assert!(check(&HealthCheck::Tcp, &closed, t).await.is_err());

        // Accepts but never answers: the HTTP check times out, the TCP check passes.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let silent_addr = silent.local_addr().unwrap().to_string();
        let short = Duration::from_millis(200);
        assert!(check(&http, &silent_addr, short).await.is_err());
        assert_eq!(check(&HealthCheck::Tcp, &silent_addr, short).await, Ok(()));
        drop(silent);
    }
}
