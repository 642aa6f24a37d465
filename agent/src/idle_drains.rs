//! Ends a drain as soon as the process carries nothing: a process that unregistered and
//! has no request open through Envoy (no WebSocket, no HTTP request) for `idle` loses its
//! cluster, instead of staying reachable until `--max-drain` (10 minutes) or until its
//! port stops accepting connections (a registration at any listening address never did).
//!
//! The signal is Envoy's own count of active requests per host (`rq_active` in admin
//! `/clusters`, read for the draining clusters only): an upgraded WebSocket is an active
//! request for its whole life, on either edge path; connections of the active health check
//! are not requests. `idle` covers a seat reserved just before the unregistration whose
//! player has not connected yet (a client connects right after its matchmaking answer). A
//! draining process whose cluster Envoy does not list is left alone.
//!
//! Why `/clusters` and not the `upstream_rq_active` stat: a stats query scans every stat of
//! every cluster on Envoy's main thread (0.3 s at 10,000 clusters, while xDS waits), and
//! with deferred stat creation a cluster that never carried traffic has no such stat yet.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use routing::{ClusterNames, ProcessId};
use tokio::sync::mpsc;

use crate::envoy_admin::AdminEndpoint;
use crate::model::Registration;

/// Clusters named in one admin read, so its URL stays far below Envoy's header limit.
const CLUSTERS_PER_READ: usize = 200;

/// Idle times of draining processes, and the admin reads in flight.
pub struct IdleDrains {
    admin: Option<AdminEndpoint>,
    names: ClusterNames,
    idle: Duration,
    idle_since: BTreeMap<ProcessId, Instant>,
    in_flight: bool,
    tx: mpsc::UnboundedSender<BTreeMap<String, u64>>,
    rx: mpsc::UnboundedReceiver<BTreeMap<String, u64>>,
}

impl IdleDrains {
    /// `admin`: `None` turns this off (drains end by probe or `max_drain` only).
    pub fn new(admin: Option<AdminEndpoint>, names: ClusterNames, idle: Duration) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Self {
            admin,
            names,
            idle,
            idle_since: BTreeMap::new(),
            in_flight: false,
            tx,
            rx,
        }
    }

    /// Starts a read of the draining clusters' active requests, unless one is in flight or
    /// nothing drains.
    pub fn check(&mut self, draining: &[Registration]) {
        let Some(admin) = self
            .admin
            .clone()
            .filter(|_| !draining.is_empty() && !self.in_flight)
        else {
            return;
        };
        self.in_flight = true;
        let clusters: Vec<String> = draining
            .iter()
            .map(|r| self.names.process(&r.process_id))
            .collect();
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let mut active = BTreeMap::new();
            for chunk in clusters.chunks(CLUSTERS_PER_READ) {
                let names: Vec<&str> = chunk.iter().map(String::as_str).collect();
                let path = crate::warmup::clusters_path(&names);
                // A failed read leaves its clusters unknown: nothing is decided on them.
                if let Ok((200, body)) = admin.get(&path, Duration::from_secs(2)).await {
                    active.extend(requests_by_cluster(&body));
                }
            }
            let _ = tx.send(active);
        });
    }

    /// The next read.
    pub async fn read(&mut self) -> Option<BTreeMap<String, u64>> {
        self.rx.recv().await
    }

    /// Records a read; returns the draining processes idle for `idle` or longer.
    pub fn idle(
        &mut self,
        draining: &[Registration],
        active: &BTreeMap<String, u64>,
        now: Instant,
    ) -> Vec<Registration> {
        self.in_flight = false;
        idle_for(
            &mut self.idle_since,
            draining,
            |pid| active.get(&self.names.process(pid)).copied(),
            now,
            self.idle,
        )
    }
}

/// Active requests of each cluster listed in admin `/clusters` (text): the sum of its
/// hosts' `rq_active`, 0 for a listed cluster without hosts. A cluster Envoy does not have
/// is absent.
pub fn requests_by_cluster(clusters_text: &str) -> BTreeMap<String, u64> {
    let mut active: BTreeMap<String, u64> = BTreeMap::new();
    for line in clusters_text.lines() {
        let mut parts = line.split("::");
        let Some(name) = parts.next().filter(|n| !n.is_empty()) else {
            continue;
        };
        let count = active.entry(name.to_owned()).or_default();
        if let (Some(_host), Some("rq_active"), Some(n)) =
            (parts.next(), parts.next(), parts.next())
        {
            *count += n.trim().parse::<u64>().unwrap_or(0);
        }
    }
    active
}

/// Pure core of [`IdleDrains::idle`]: `active(pid)` is the process's open requests, `None`
/// when Envoy did not report its cluster.
fn idle_for(
    idle_since: &mut BTreeMap<ProcessId, Instant>,
    draining: &[Registration],
    active: impl Fn(&ProcessId) -> Option<u64>,
    now: Instant,
    idle: Duration,
) -> Vec<Registration> {
    idle_since.retain(|pid, _| draining.iter().any(|r| r.process_id == *pid));
    let mut done = Vec::new();
    for reg in draining {
        match active(&reg.process_id) {
            Some(0) => {
                let since = *idle_since.entry(reg.process_id.clone()).or_insert(now);
                if now.saturating_duration_since(since) >= idle {
                    done.push(reg.clone());
                }
            }
            _ => {
                idle_since.remove(&reg.process_id);
            }
        }
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::parse_member;

    #[test]
    fn requests_are_summed_over_each_listed_clusters_hosts() {
        let text = "colyseus-process-a::observability_name::colyseus-process-a\n\
                    colyseus-process-a::default_priority::max_requests::1024\n\
                    colyseus-process-a::10.0.0.1:1::cx_active::3\n\
                    colyseus-process-a::10.0.0.1:1::rq_active::2\n\
                    colyseus-process-a::10.0.0.2:1::rq_active::1\n\
                    colyseus-process-b::default_priority::max_requests::1024\n\
                    colyseus-process-b::10.0.0.3:1::rq_active::0\n\
                    colyseus-process-c::observability_name::colyseus-process-c\n";
        let active = requests_by_cluster(text);
        assert_eq!(active["colyseus-process-a"], 3);
        assert_eq!(active["colyseus-process-b"], 0);
        assert_eq!(
            active["colyseus-process-c"], 0,
            "listed without hosts: idle"
        );
        assert_eq!(
            active.get("colyseus-process-d"),
            None,
            "not listed: unknown"
        );
        assert!(requests_by_cluster("").is_empty());
    }

    #[test]
    fn a_drain_ends_after_being_idle_for_the_grace() {
        let a = parse_member("a/10.0.0.1:1", 1).unwrap();
        let b = parse_member("b/10.0.0.2:1", 1).unwrap();
        let draining = [a.clone(), b.clone()];
        let (t0, idle) = (Instant::now(), Duration::from_secs(5));
        let mut since = BTreeMap::new();
        let load = |a: Option<u64>, b: Option<u64>| {
            move |p: &ProcessId| if p.as_str() == "a" { a } else { b }
        };
        // a idle, b busy: nothing yet.
        assert!(idle_for(&mut since, &draining, load(Some(0), Some(2)), t0, idle).is_empty());
        let t1 = t0 + Duration::from_secs(5);
        assert_eq!(
            idle_for(&mut since, &draining, load(Some(0), Some(2)), t1, idle),
            vec![a.clone()]
        );
        // A request in between restarts the wait; an unreported cluster never ends.
        let t2 = t1 + Duration::from_secs(1);
        assert!(idle_for(&mut since, &draining, load(Some(1), None), t2, idle).is_empty());
        let t3 = t2 + Duration::from_secs(1);
        assert!(idle_for(&mut since, &draining, load(Some(0), None), t3, idle).is_empty());
        let t4 = t3 + Duration::from_secs(10);
        assert_eq!(
            idle_for(&mut since, &draining, load(Some(0), None), t4, idle),
            vec![a]
        );
        // Registered again (no longer draining): forgotten.
        assert!(idle_for(&mut since, &[b], load(Some(0), Some(0)), t4, idle).is_empty());
        assert_eq!(since.len(), 1);
    }
}
