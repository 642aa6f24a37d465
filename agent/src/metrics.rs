//! The agent's counters, gauges and one histogram, rendered as Prometheus text on
//! `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds (seconds) of the room-lookup latency buckets. An answer from the index is
/// an in-memory lookup plus a small JSON body, a microsecond or two (1.4 µs on average
/// measured), so the buckets start at 1 µs; a read-through to MongoDB or Redis takes
/// milliseconds; the upper buckets show lock contention or a starved runtime long before
/// the filter's 500 ms budget runs out.
pub const LOOKUP_BUCKETS: [f64; 16] = [
    0.000_001,
    0.000_002_5,
    0.000_005,
    0.000_01,
    0.000_025,
    0.000_05,
    0.000_1,
    0.000_25,
    0.000_5,
    0.001,
    0.002_5,
    0.005,
    0.01,
    0.05,
    0.25,
    0.5,
];

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
    /// Redis failovers noticed (`run_id` changed, replication history carried on).
    pub redis_failovers: AtomicU64,
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
    /// The room-listing source followed (`mongo` or `redis-rooms`), set once at start: tells
    /// "not configured" from "down" (both gauges above read 0 then).
    pub room_source: std::sync::OnceLock<&'static str>,
    /// Room lookups answered (`GET /rooms/{roomId}`): what the filter waits for when it
    /// cannot trust a path's processId.
    pub lookups: Lookups,
    /// From a new process's cluster written to Envoy reporting it active and healthy
    /// (`crate::warmup`): how long a new process waits before it is advertised.
    pub warmups: Warmups,
    /// Inputs rejected, by source and reason.
    rejected: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    /// Single-room reads from a listing source for rooms the index lacked, by outcome.
    room_fetches: Mutex<BTreeMap<&'static str, u64>>,
}

/// Room lookups by outcome, and how long the agent took to answer them.
#[derive(Debug)]
pub struct Lookups {
    /// From the handler's start to the response built (body serialized). The filter also
    /// waits for the HTTP round trip: Envoy's `cluster.colyseus_agent.upstream_rq_time`.
    pub duration: Histogram,
    /// Answered 200: the room's process.
    pub found: AtomicU64,
    /// Answered 404 `unknown_room`.
    pub unknown: AtomicU64,
}

impl Default for Lookups {
    fn default() -> Self {
        Self {
            duration: Histogram::new(&LOOKUP_BUCKETS),
            found: AtomicU64::default(),
            unknown: AtomicU64::default(),
        }
    }
}

impl Lookups {
    pub fn record(&self, found: bool, took: Duration) {
        self.duration.observe(took);
        let outcome = if found { &self.found } else { &self.unknown };
        outcome.fetch_add(1, Relaxed);
    }
}

/// [`Metrics::warmups`]: a histogram with lookup-sized buckets.
#[derive(Debug)]
pub struct Warmups(pub Histogram);

impl Default for Warmups {
    fn default() -> Self {
        Self(Histogram::new(&LOOKUP_BUCKETS))
    }
}

impl Warmups {
    pub fn record(&self, took: Duration) {
        self.0.observe(took);
    }
}

/// A Prometheus histogram over fixed buckets, lock-free: the API records from any task.
#[derive(Debug)]
pub struct Histogram {
    /// Upper bounds in seconds, ascending; an observation equal to a bound is in it.
    bounds: &'static [f64],
    /// Observations per bucket, not cumulative (summed when rendered); one more than
    /// `bounds`, the last being `+Inf`.
    counts: Box<[AtomicU64]>,
    /// Sum of the observations, in nanoseconds (u64: 584 years of them).
    sum_nanos: AtomicU64,
}

impl Histogram {
    /// `bounds` must be ascending (they are constants of this module).
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::default()).collect(),
            sum_nanos: AtomicU64::default(),
        }
    }

    pub fn observe(&self, took: Duration) {
        let secs = took.as_secs_f64();
        let bucket = self
            .bounds
            .iter()
            .position(|le| secs <= *le)
            .unwrap_or(self.bounds.len());
        if let Some(count) = self.counts.get(bucket) {
            count.fetch_add(1, Relaxed);
        }
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        // Saturates instead of wrapping (fetch_add would wrap).
        let _ = self
            .sum_nanos
            .fetch_update(Relaxed, Relaxed, |sum| Some(sum.saturating_add(nanos)));
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Relaxed)).sum()
    }

    /// `# HELP`, `# TYPE`, the cumulative `_bucket` lines, `_sum` (seconds) and `_count`.
    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (i, count) in self.counts.iter().enumerate() {
            cumulative += count.load(Relaxed);
            match self.bounds.get(i) {
                Some(le) => {
                    let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
                }
                None => {
                    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
                }
            }
        }
        let sum = Duration::from_nanos(self.sum_nanos.load(Relaxed)).as_secs_f64();
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {cumulative}");
    }
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
        let series: [(&str, &str, &str, &AtomicU64); 18] = [
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
                "colyseus_envoy_redis_failovers_total",
                "counter",
                "Redis failovers noticed (new run_id, same replication history).",
                &self.redis_failovers,
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
        if let Some(source) = self.room_source.get() {
            let _ = writeln!(
                out,
                "# HELP colyseus_envoy_room_source_info The room-listing source the agent follows.\n\
                 # TYPE colyseus_envoy_room_source_info gauge\n\
                 colyseus_envoy_room_source_info{{source=\"{source}\"}} 1"
            );
        }
        self.lookups.duration.render(
            &mut out,
            "colyseus_envoy_lookup_duration_seconds",
            "Time the agent took to answer a room lookup (GET /rooms/{roomId}).",
        );
        self.warmups.0.render(
            &mut out,
            "colyseus_envoy_warmup_duration_seconds",
            "Time from a new process's cluster written to Envoy routing to it (advertised).",
        );
        out.push_str(
            "# HELP colyseus_envoy_lookups_total Room lookups answered, by outcome.\n\
             # TYPE colyseus_envoy_lookups_total counter\n",
        );
        for (outcome, n) in [
            ("found", &self.lookups.found),
            ("unknown", &self.lookups.unknown),
        ] {
            let _ = writeln!(
                out,
                "colyseus_envoy_lookups_total{{outcome=\"{outcome}\"}} {}",
                n.load(Relaxed)
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

    #[test]
    fn renders_the_lookup_histogram_cumulatively() {
        let m = Metrics::default();
        // 10 µs exactly (in the first bucket: `le` is inclusive), 30 µs, 2 ms, 1 s (+Inf).
        for (found, micros) in [(true, 10), (true, 30), (false, 2_000), (false, 1_000_000)] {
            m.lookups.record(found, Duration::from_micros(micros));
        }
        let text = m.render();
        let name = "colyseus_envoy_lookup_duration_seconds";
        let lines: Vec<&str> = text.lines().filter(|l| l.contains(name)).collect();
        assert_eq!(
            lines,
            [
                "# HELP colyseus_envoy_lookup_duration_seconds Time the agent took to answer a room lookup (GET /rooms/{roomId}).",
                "# TYPE colyseus_envoy_lookup_duration_seconds histogram",
                "colyseus_envoy_lookup_duration_seconds_bucket{le=\"0.000001\"} 0",
                "colyseus_envoy_lookup_duration_seconds_bucket{le=\"0.0000025\"} 0",
                "colyseus_envoy_lookup_duration_seconds_bucket{le=\"0.000005\"} 0",
                "colyseus_envoy_lookup_duration_seconds_bucket{le=\"0.00001\"} 1",
                "colyseus_envoy_lookup_duration_seconds_bucket{le=\"0.000025\"} 1",
                "colyseus_envoy_lookup_duration_seconds_bucket{le=\"0.00005\"} 2",
                "colyseus_envoy_lookup_duration_seconds_bucket{le=\"0.0001\"} 2",
                "colyseus_envoy_lookup_duration_seconds_bucket{le=\"0.00025\"} 2",
                "colyseus_envoy_lookup_duration_seconds_bucket{le=\"0.0005\"} 2",
                "colyseus_envoy_lookup_duration_seconds_bucket{le=\"0.001\"} 2",
                "colyseus_envoy_lookup_duration_seconds_bucket{le=\"0.0025\"} 3",
                "colyseus_envoy_lookup_duration_seconds_bucket{le=\"0.005\"} 3",
                "colyseus_envoy_lookup_duration_seconds_bucket{le=\"0.01\"} 3",
                "colyseus_envoy_lookup_duration_seconds_bucket{le=\"0.05\"} 3",
                "colyseus_envoy_lookup_duration_seconds_bucket{le=\"0.25\"} 3",
                "colyseus_envoy_lookup_duration_seconds_bucket{le=\"0.5\"} 3",
                "colyseus_envoy_lookup_duration_seconds_bucket{le=\"+Inf\"} 4",
                "colyseus_envoy_lookup_duration_seconds_sum 1.00204",
                "colyseus_envoy_lookup_duration_seconds_count 4",
            ]
        );
        assert!(text.contains(
            "# TYPE colyseus_envoy_lookups_total counter\n\
             colyseus_envoy_lookups_total{outcome=\"found\"} 2\n\
             colyseus_envoy_lookups_total{outcome=\"unknown\"} 2\n"
        ));
        assert_eq!(m.lookups.duration.count(), 4);
    }

    #[test]
    fn an_empty_histogram_renders_zeros() {
        let text = Metrics::default().render();
        assert!(text.contains("colyseus_envoy_lookup_duration_seconds_bucket{le=\"+Inf\"} 0\n"));
        assert!(text.contains("colyseus_envoy_lookup_duration_seconds_sum 0\n"));
        assert!(text.contains("colyseus_envoy_lookups_total{outcome=\"unknown\"} 0\n"));
    }
}
