//! The agent's counters and gauges, rendered as Prometheus text on `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

/// Counters shared by the sync loop (writer) and the API (reader).
#[derive(Debug, Default)]
pub struct Metrics {
    /// Routable processes in the current config.
    pub processes: AtomicU64,
    /// Unregistered processes still draining (room connections only).
    pub processes_draining: AtomicU64,
    /// Registered processes failing their liveness probe (not routed).
    pub processes_dead: AtomicU64,
    /// Processes declared dead by the liveness probe.
    pub processes_died: AtomicU64,
    /// Dead processes that answered again.
    pub processes_recovered: AtomicU64,
    /// Registrar leases found expired (and unregistered).
    pub leases_expired: AtomicU64,
    /// 1 while a Redis session is up.
    pub redis_up: AtomicU64,
    /// Full reads of the registration set.
    pub redis_snapshots: AtomicU64,
    /// Redis sessions that failed (connection lost, timeout, error).
    pub redis_session_failures: AtomicU64,
    /// Redis restarts noticed (`run_id` changed).
    pub redis_restarts: AtomicU64,
    /// Registrations Redis lost whose process answered a probe and was kept.
    pub registrations_restored: AtomicU64,
    /// Registrations Redis lost whose process did not answer and was dropped.
    pub registrations_dropped_dead: AtomicU64,
    /// Config files written.
    pub config_writes: AtomicU64,
    /// Config writes that failed (the previous config stays).
    pub config_write_failures: AtomicU64,
    /// Rooms in the room index.
    pub rooms: AtomicU64,
    /// 1 while the MongoDB room-listing source is up.
    pub mongo_up: AtomicU64,
    /// 1 while the RedisDriver room-listing source is up.
    pub redis_rooms_up: AtomicU64,
    /// Inputs rejected, by source and reason.
    rejected: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    /// Single-room reads from a listing source for rooms the index lacked, by outcome.
    room_fetches: Mutex<BTreeMap<&'static str, u64>>,
}

impl Metrics {
    pub fn reject(&self, source: &'static str, reason: &'static str) {
        if let Ok(mut map) = self.rejected.lock() {
            *map.entry((source, reason)).or_default() += 1;
        }
    }

    pub fn room_fetch(&self, outcome: &'static str) {
        if let Ok(mut map) = self.room_fetches.lock() {
            *map.entry(outcome).or_default() += 1;
        }
    }

    pub fn rejected(&self, source: &'static str, reason: &'static str) -> u64 {
        self.rejected
            .lock()
            .map(|m| m.get(&(source, reason)).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    /// Prometheus text exposition format.
    pub fn render(&self) -> String {
        let series: [(&str, &str, &str, &AtomicU64); 17] = [
            (
                "colyseus_envoy_processes",
                "gauge",
                "Routable game processes (active).",
                &self.processes,
            ),
            (
                "colyseus_envoy_processes_draining",
                "gauge",
                "Unregistered processes still draining (room connections only).",
                &self.processes_draining,
            ),
            (
                "colyseus_envoy_processes_dead",
                "gauge",
                "Registered processes failing liveness (not routed).",
                &self.processes_dead,
            ),
            (
                "colyseus_envoy_processes_died_total",
                "counter",
                "Processes declared dead by liveness probes.",
                &self.processes_died,
            ),
            (
                "colyseus_envoy_processes_recovered_total",
                "counter",
                "Dead processes that answered again.",
                &self.processes_recovered,
            ),
            (
                "colyseus_envoy_leases_expired_total",
                "counter",
                "Registrar leases that expired (sidecar died).",
                &self.leases_expired,
            ),
            (
                "colyseus_envoy_redis_up",
                "gauge",
                "1 while the Redis presence session is up.",
                &self.redis_up,
            ),
            (
                "colyseus_envoy_redis_snapshots_total",
                "counter",
                "Full reads of the registration set.",
                &self.redis_snapshots,
            ),
            (
                "colyseus_envoy_redis_session_failures_total",
                "counter",
                "Redis sessions lost.",
                &self.redis_session_failures,
            ),
            (
                "colyseus_envoy_redis_restarts_total",
                "counter",
                "Redis restarts noticed by run_id.",
                &self.redis_restarts,
            ),
            (
                "colyseus_envoy_registrations_restored_total",
                "counter",
                "Lost registrations of live processes kept.",
                &self.registrations_restored,
            ),
            (
                "colyseus_envoy_registrations_dropped_dead_total",
                "counter",
                "Lost registrations of dead processes dropped.",
                &self.registrations_dropped_dead,
            ),
            (
                "colyseus_envoy_config_writes_total",
                "counter",
                "Envoy config files written.",
                &self.config_writes,
            ),
            (
                "colyseus_envoy_config_write_failures_total",
                "counter",
                "Envoy config writes that failed.",
                &self.config_write_failures,
            ),
            (
                "colyseus_envoy_rooms",
                "gauge",
                "Rooms in the room index (from the matchmaker's listings).",
                &self.rooms,
            ),
            (
                "colyseus_envoy_mongo_up",
                "gauge",
                "1 while the MongoDB room-listing source is up.",
                &self.mongo_up,
            ),
            (
                "colyseus_envoy_redis_rooms_up",
                "gauge",
                "1 while the RedisDriver room-listing source is up.",
                &self.redis_rooms_up,
            ),
        ];
        let mut out = String::new();
        for (name, kind, help, value) in series {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}",
                value.load(Relaxed)
            );
        }
        out.push_str(
            "# HELP colyseus_envoy_rejected_inputs_total Inputs skipped, by source and reason.\n",
        );
        out.push_str("# TYPE colyseus_envoy_rejected_inputs_total counter\n");
        if let Ok(map) = self.rejected.lock() {
            for ((source, reason), n) in map.iter() {
                let _ = writeln!(
                    out,
                    "colyseus_envoy_rejected_inputs_total{{source=\"{source}\",reason=\"{reason}\"}} {n}"
                );
            }
        }
        out.push_str("# HELP colyseus_envoy_room_fetches_total Rooms missing from the index read from their source on lookup, by outcome.\n");
        out.push_str("# TYPE colyseus_envoy_room_fetches_total counter\n");
        if let Ok(map) = self.room_fetches.lock() {
            for (outcome, n) in map.iter() {
                let _ = writeln!(
                    out,
                    "colyseus_envoy_room_fetches_total{{outcome=\"{outcome}\"}} {n}"
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_labels() {
        let m = Metrics::default();
        m.processes.store(3, Relaxed);
        m.reject("redis", "bad_address");
        m.reject("redis", "bad_address");
        let text = m.render();
        assert!(text.contains("\ncolyseus_envoy_processes 3\n"), "{text}");
        assert!(text.contains(
            "colyseus_envoy_rejected_inputs_total{source=\"redis\",reason=\"bad_address\"} 2\n"
        ));
        assert_eq!(m.rejected("redis", "bad_address"), 2);
    }
}
