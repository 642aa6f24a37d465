//! Confirms new processes' clusters with Envoy before they are advertised (see
//! [`crate::advertise`]): while a process warms, Envoy's admin `/clusters` is read every few
//! millisecond until it lists the process cluster (active: loaded and past its first health
//! check) with a healthy host.
//!
//! Admin is read only while something warms, so an idle fleet costs nothing, and only for the
//! warming clusters (`/clusters?filter=`), so a read stays small however many clusters
//! Envoy has. Parsing is pure and tested here; the reads go through [`crate::envoy_admin`].

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, warn};

use crate::envoy_admin::AdminEndpoint;
use crate::status::Status;

/// A process Envoy does not confirm within this is advertised anyway (as without the gate),
/// with a warning: its cluster may be failing its health check.
pub const MAX_WARM_WAIT: Duration = Duration::from_secs(3);
/// Pause between two admin reads while something warms.
const POLL: Duration = Duration::from_millis(1);
/// Pause after a failed admin read (Envoy not started yet, or restarting).
const RETRY: Duration = Duration::from_millis(50);
/// Bound on one admin read.
const ADMIN_TIMEOUT: Duration = Duration::from_millis(500);

/// Names of the clusters in admin `/clusters` (text) that have at least one host whose
/// health flags are `healthy`. Envoy lists active clusters only: a warming one is absent.
pub fn routable_clusters(clusters_text: &str) -> HashSet<&str> {
    clusters_text
        .lines()
        .filter_map(|line| {
            let mut parts = line.split("::");
            let name = parts.next()?;
            let _host = parts.next()?;
            (parts.next()? == "health_flags" && parts.next()? == "healthy").then_some(name)
        })
        .collect()
}

/// Admin path listing only `clusters` (`/clusters?filter=^(a|b)$`, percent-encoded): the
/// names are matched literally (every character but `[A-Za-z0-9_-]` escaped).
pub fn clusters_path(clusters: &[&str]) -> String {
    let mut regex = String::from("^(");
    for (i, name) in clusters.iter().enumerate() {
        if i > 0 {
            regex.push('|');
        }
        for c in name.chars() {
            if !(c.is_ascii_alphanumeric() || c == '_' || c == '-') {
                regex.push('\\');
            }
            regex.push(c);
        }
    }
    regex.push_str(")$");
    let mut path = String::from("/clusters?filter=");
    for b in regex.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            path.push(char::from(b));
        } else {
            path.push_str(&format!("%{b:02X}"));
        }
    }
    path
}

/// Runs for the agent's life: confirms warming processes as Envoy activates their clusters.
pub async fn follow(status: Arc<Status>, admin: AdminEndpoint) {
    let mut admin_failing = false;
    loop {
        let warming = status.warming_clusters();
        if warming.is_empty() {
            status.advertised.new_warming.notified().await;
            continue;
        }
        let names: Vec<&str> = warming.iter().map(|(_, c)| c.as_str()).collect();
        let path = clusters_path(&names);
        // No admin to ask at all (no socket, nothing listening: Envoy not started, or a
        // deployment whose admin the agent cannot reach, like docker-compose's): waiting
        // would only delay every new process by MAX_WARM_WAIT, so advertise at once, as
        // without the gate.
        let mut unreachable = false;
        let routable: HashSet<String> = match admin.get(&path, ADMIN_TIMEOUT).await {
            Ok((200, body)) => {
                admin_failing = false;
                routable_clusters(&body)
                    .into_iter()
                    .map(str::to_owned)
                    .collect()
            }
            other => {
                unreachable = matches!(&other, Err(e) if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                ));
                if !admin_failing {
                    let why = match other {
                        Ok((code, _)) => format!("status {code}"),
                        Err(e) => e.to_string(),
                    };
                    if unreachable {
                        warn!(admin = %admin, error = %why, "Cannot reach Envoy's admin; new processes are advertised as soon as their cluster is written.");
                    } else {
                        warn!(admin = %admin, error = %why, "Cannot read Envoy's clusters; new processes are advertised after {MAX_WARM_WAIT:?}.");
                    }
                }
                admin_failing = true;
                HashSet::new()
            }
        };
        let ready = |pid: &str| {
            warming
                .iter()
                .any(|(p, cluster)| p == pid && routable.contains(cluster))
        };
        let (confirmed, expired) = status.advertised.confirm(
            ready,
            Instant::now(),
            if unreachable {
                Duration::ZERO
            } else {
                MAX_WARM_WAIT
            },
        );
        for (pid, waited) in &confirmed {
            status.metrics.warmups.record(*waited);
            debug!(process_id = %pid, waited_ms = waited.as_secs_f64() * 1e3, "Envoy routes to the new process; advertising it.");
        }
        for pid in expired.iter().filter(|_| !unreachable) {
            warn!(process_id = %pid, "Envoy did not report the new process's cluster healthy in time; advertising it anyway.");
        }
        if !confirmed.is_empty() || !expired.is_empty() {
            status.republish();
        }
        tokio::time::sleep(if admin_failing { RETRY } else { POLL }).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_active_clusters_with_a_healthy_host_count() {
        let text = "colyseus-all::default_priority::max_connections::1024\n\
            colyseus-all::127.0.0.1:4001::health_flags::healthy\n\
            colyseus-process-a::127.0.0.1:4001::cx_active::0\n\
            colyseus-process-a::127.0.0.1:4001::health_flags::healthy\n\
            colyseus-process-b::127.0.0.1:4002::health_flags::/failed_active_hc\n\
            colyseus-process-c::127.0.0.1:4003::health_flags::/failed_active_hc/pending_active_hc\n\
            garbage\n";
        let names = routable_clusters(text);
        assert!(names.contains("colyseus-process-a"));
        assert!(names.contains("colyseus-all"));
        assert!(!names.contains("colyseus-process-b"));
        assert!(!names.contains("colyseus-process-c"));
        assert_eq!(names.len(), 2);
    }

    #[test]
    fn the_filter_names_exactly_the_warming_clusters() {
        assert_eq!(
            clusters_path(&["colyseus-process-a_1", "p.x"]),
            "/clusters?filter=%5E%28colyseus-process-a_1%7Cp%5C%2Ex%29%24"
        );
    }
}
