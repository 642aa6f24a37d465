//! Is a process still there? Used before trusting a Redis that lost registrations: a
//! process only counts as gone when none of several TCP connects to it succeeds.

use std::time::Duration;

use crate::model::{Endpoint, Host, Registration};

/// How hard to try before calling a process dead.
#[derive(Debug, Clone, Copy)]
pub struct ProbeConfig {
    pub timeout: Duration,
    pub attempts: u32,
    pub interval: Duration,
}

/// Whether `endpoint` accepts a TCP connection within the configured attempts.
pub async fn tcp_alive(endpoint: &Endpoint, cfg: ProbeConfig) -> bool {
    let target = match &endpoint.host {
        Host::Ip(ip) => std::net::SocketAddr::new(*ip, endpoint.port).to_string(),
        Host::Name(name) => format!("{name}:{}", endpoint.port),
    };
    for attempt in 0..cfg.attempts.max(1) {
        if attempt > 0 {
            tokio::time::sleep(cfg.interval).await;
        }
        let connect = tokio::net::TcpStream::connect(target.as_str());
        if let Ok(Ok(_)) = tokio::time::timeout(cfg.timeout, connect).await {
            return true;
        }
    }
    false
}

/// Splits `regs` into (alive, dead), probing all of them concurrently.
pub async fn partition(
    regs: Vec<Registration>,
    cfg: ProbeConfig,
) -> (Vec<Registration>, Vec<Registration>) {
    let results =
        futures_util::future::join_all(regs.iter().map(|r| tcp_alive(&r.endpoint, cfg))).await;
    let (alive, dead): (Vec<_>, Vec<_>) = regs.into_iter().zip(results).partition(|(_, ok)| *ok);
    (
        alive.into_iter().map(|(r, _)| r).collect(),
        dead.into_iter().map(|(r, _)| r).collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::parse_member;

    #[tokio::test]
    async fn listening_port_is_alive_closed_port_is_dead() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open = listener.local_addr().unwrap().port();
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let cfg = ProbeConfig {
            timeout: Duration::from_millis(300),
            attempts: 2,
            interval: Duration::from_millis(10),
        };
        let regs = vec![
            parse_member(&format!("a/127.0.0.1:{open}"), 1).unwrap(),
            parse_member(&format!("b/127.0.0.1:{closed}"), 1).unwrap(),
        ];
        let (alive, dead) = partition(regs, cfg).await;
        assert_eq!(alive.len(), 1);
        assert_eq!(alive[0].process_id.as_str(), "a");
        assert_eq!(dead[0].process_id.as_str(), "b");
    }
}
