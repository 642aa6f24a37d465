//! `colyseus-envoy status`: what an operator checks first, from the three places that
//! know it: the agent's API (processes and their state, source health), Envoy's admin (open
//! connections per process cluster) and Redis (rooms and CCU Colyseus reports in `roomcount`).
//!
//! Gathering is I/O; parsing and the table are pure and tested here.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::SocketAddr;
use std::time::Duration;

use crate::balance::parse_roomcount;
use crate::envoy_admin::AdminEndpoint;

/// A process as the agent's `/processes` lists it.
pub use routing::wire::ProcessRow;

/// The room-listing source named by `colyseus_envoy_room_source_info`, if the agent
/// follows one, and whether it is up (its `..._up` gauge).
pub fn room_source(metrics: &str) -> Option<(String, Option<bool>)> {
    let source = metrics.lines().find_map(|l| {
        l.strip_prefix("colyseus_envoy_room_source_info{source=\"")?
            .split_once('"')
            .map(|(s, _)| s.to_owned())
    })?;
    let gauge = match source.as_str() {
        "mongo" => "colyseus_envoy_mongo_up",
        _ => "colyseus_envoy_redis_rooms_up",
    };
    let up = metric(metrics, gauge).map(|v| v == 1);
    Some((source, up))
}

/// A metric sample from the agent's `/metrics`.
pub fn metric(metrics: &str, series: &str) -> Option<u64> {
    metrics.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// `colyseus_envoy_rejected_inputs_total{source=..,reason=".."} n` summed by reason.
pub fn rejected_by_reason(metrics: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix("colyseus_envoy_rejected_inputs_total{") else {
            continue;
        };
        let reason = rest
            .split_once("reason=\"")
            .and_then(|(_, r)| r.split_once('"'))
            .map(|(r, _)| r.to_owned());
        let n = line.rsplit(' ').next().and_then(|v| v.parse::<u64>().ok());
        if let (Some(reason), Some(n)) = (reason, n) {
            *out.entry(reason).or_insert(0) += n;
        }
    }
    out
}

/// Gauge of the all-processes cluster's shard count on `/metrics` (`sync --all-shards`).
pub const ALL_SHARDS_METRIC: &str = "colyseus_envoy_all_shards";

/// The [`ALL_SHARDS_METRIC`] sample, for `/metrics`.
pub fn render_all_shards(out: &mut String, shards: u16) {
    let _ = writeln!(
        out,
        "# HELP {ALL_SHARDS_METRIC} Shards of the all-processes (matchmaking) cluster.\n\
         # TYPE {ALL_SHARDS_METRIC} gauge\n\
         {ALL_SHARDS_METRIC} {shards}"
    );
}

/// Everything the report shows.
#[derive(Debug, Default)]
pub struct Report {
    pub agent_ready: Option<bool>,
    pub redis_up: Option<bool>,
    /// The room-listing source and whether it is up; `None` when the agent follows none.
    pub room_source: Option<(String, Option<bool>)>,
    pub processes: Vec<ProcessRow>,
    /// Shards of the all-processes cluster (from `/metrics`; absent from older agents).
    pub all_shards: Option<u64>,
    pub rejected: Option<u64>,
    /// The same by reason (e.g. `upstream_envoy_admin`), over every source.
    pub rejected_by_reason: BTreeMap<String, u64>,
    pub envoy_live: Option<bool>,
    pub connections: BTreeMap<String, u64>,
    pub roomcount: BTreeMap<String, String>,
    /// Registrations the agent refuses right now, each with its reason (`/rejected`).
    pub rejected_registrations: Vec<String>,
    /// The agent's xDS server and the Envoys streaming from it, when it serves xDS.
    pub xds: Option<crate::sinks::xds::server::XdsStatus>,
    /// What could not be read, in words.
    pub problems: Vec<String>,
}

impl Report {
    /// Everything answered and is up, no registered process is dead and none is refused:
    /// what `status`'s exit code says.
    pub fn is_healthy(&self) -> bool {
        let all_alive = self
            .processes
            .iter()
            .all(|p| p.state != routing::wire::ProcessState::Dead);
        let rooms_up = self
            .room_source
            .as_ref()
            .is_none_or(|(_, up)| *up == Some(true));
        self.problems.is_empty()
            && self.agent_ready == Some(true)
            && self.redis_up == Some(true)
            && self.envoy_live == Some(true)
            && rooms_up
            && all_alive
            && self.rejected_registrations.is_empty()
    }

    /// The text an operator reads.
    pub fn render(&self) -> String {
        let yes_no = |v: Option<bool>, yes: &str, no: &str| match v {
            Some(true) => yes.to_owned(),
            Some(false) => no.to_owned(),
            None => "unknown".to_owned(),
        };
        let mut out = String::new();
        let rooms = self
            .room_source
            .as_ref()
            .map_or(String::new(), |(source, up)| {
                format!(", room listings ({source}): {}", yes_no(*up, "up", "DOWN"))
            });
        let _ = writeln!(
            out,
            "agent: {}, redis: {}{rooms}, envoy: {}, inputs rejected: {}",
            yes_no(self.agent_ready, "ready", "NOT READY"),
            yes_no(self.redis_up, "up", "DOWN"),
            yes_no(self.envoy_live, "live", "NOT LIVE"),
            self.rejected.map_or("unknown".to_owned(), |n| {
                let reasons: Vec<String> = self
                    .rejected_by_reason
                    .iter()
                    .map(|(reason, n)| format!("{reason} {n}"))
                    .collect();
                if reasons.is_empty() {
                    n.to_string()
                } else {
                    format!("{n} ({})", reasons.join(", "))
                }
            }),
        );
        let _ = writeln!(
            out,
            "{:<16} {:<24} {:<9} {:>6} {:>6} {:>6} {:>12}",
            "PROCESS", "ADDRESS", "STATE", "WEIGHT", "ROOMS", "CCU", "CONNECTIONS"
        );
        for p in &self.processes {
            let (rooms, ccu) = self
                .roomcount
                .get(&p.process_id)
                .and_then(|v| parse_roomcount(v))
                .map_or(("-".to_owned(), "-".to_owned()), |load| {
                    (
                        load.rooms.to_string(),
                        load.ccu.map_or("-".to_owned(), |c| c.to_string()),
                    )
                });
            let cx = self
                .connections
                .get(&p.cluster)
                .map_or("-".to_owned(), u64::to_string);
            let weight = p.weight.map_or("-".to_owned(), |w| w.to_string());
            let _ = writeln!(
                out,
                "{:<16} {:<24} {:<9} {:>6} {:>6} {:>6} {:>12}",
                p.process_id, p.address, p.state, weight, rooms, ccu, cx
            );
        }
        if let Some(n) = self.all_shards.filter(|n| *n > 1) {
            let active = self
                .processes
                .iter()
                .filter(|p| p.state == routing::wire::ProcessState::Active)
                .count();
            let _ = writeln!(
                out,
                "matchmaking: {n} shards of the all-processes cluster, {active} active process(es)"
            );
        }
        for rejected in &self.rejected_registrations {
            let _ = writeln!(out, "rejected: {rejected}");
        }
        if let Some(xds) = &self.xds {
            xds.render(&mut out);
        }
        for problem in &self.problems {
            let _ = writeln!(out, "warning: {problem}");
        }
        out
    }
}

/// One GET to the agent's API (TCP): (status, body).
async fn http_get(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> std::io::Result<(u16, String)> {
    AdminEndpoint::Tcp(addr).get(path, timeout).await
}

/// Gathers the report; each source that fails adds a problem instead of failing the whole.
pub async fn gather(
    api: SocketAddr,
    admin: &AdminEndpoint,
    redis: &crate::redis_target::RedisTarget,
) -> Report {
    let t = Duration::from_secs(2);
    let mut report = Report::default();
    match http_get(api, "/ready", t).await {
        Ok((status, _)) => report.agent_ready = Some(status == 200),
        Err(e) => report.problems.push(format!("agent API at {api}: {e}")),
    }
    if let Ok((200, body)) = http_get(api, "/processes", t).await {
        match serde_json::from_str(&body) {
            Ok(rows) => report.processes = rows,
            Err(e) => report.problems.push(format!("agent /processes: {e}")),
        }
    }
    if let Ok((200, body)) = http_get(api, "/rejected", t).await {
        match serde_json::from_str(&body) {
            Ok(routing::wire::RejectedRegistrations(list)) => {
                report.rejected_registrations = list;
            }
            Err(e) => report.problems.push(format!("agent /rejected: {e}")),
        }
    }
    if let Ok((200, body)) = http_get(api, "/metrics", t).await {
        report.redis_up = metric(&body, "colyseus_envoy_redis_up").map(|v| v == 1);
        report.room_source = room_source(&body);
        report.all_shards = metric(&body, ALL_SHARDS_METRIC);
        report.rejected_by_reason = rejected_by_reason(&body);
        report.rejected = Some(report.rejected_by_reason.values().sum());
    }
    if let Ok((200, body)) = http_get(api, crate::api::XDS_CLIENTS_PATH, t).await {
        match serde_json::from_str(&body) {
            Ok(xds) => report.xds = Some(xds),
            Err(e) => report.problems.push(format!("agent xDS clients: {e}")),
        }
    }
    match admin.get("/ready", t).await {
        Ok((status, body)) => report.envoy_live = Some(status == 200 && body.starts_with("LIVE")),
        Err(e) => report.problems.push(format!("Envoy admin at {admin}: {e}")),
    }
    if let Ok((200, body)) = admin.get("/stats?filter=upstream_cx_active$", t).await {
        report.connections = crate::envoy_admin::cluster_stat(&body, "upstream_cx_active");
    }
    match read_roomcount(redis, t).await {
        Ok(map) => report.roomcount = map,
        Err(e) => report.problems.push(format!("Redis roomcount: {e}")),
    }
    report
}

async fn read_roomcount(
    redis: &crate::redis_target::RedisTarget,
    timeout: Duration,
) -> Result<BTreeMap<String, String>, crate::redis_call::RedisCallError> {
    use crate::redis_call::bounded;
    let mut conn = redis.commands(timeout, "connecting").await?;
    bounded(
        timeout,
        "reading roomcount",
        redis::cmd("HGETALL")
            .arg(crate::layout::ROOM_COUNTS)
            .query_async(&mut conn),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sources() {
        assert_eq!(metric("# HELP x\nx_up 1\nx_up_total 5\n", "x_up"), Some(1));
        let m = "colyseus_envoy_rejected_inputs_total{source=\"redis\",reason=\"upstream_agent_api\"} 2\n\
                 colyseus_envoy_rejected_inputs_total{source=\"mongo\",reason=\"bad_member\"} 1\n\
                 colyseus_envoy_rejected_inputs_total{source=\"redis\",reason=\"bad_member\"} 3\n";
        let by = rejected_by_reason(m);
        assert_eq!(by.get("upstream_agent_api"), Some(&2));
        assert_eq!(by.get("bad_member"), Some(&4));
        let report = Report {
            rejected: Some(6),
            rejected_by_reason: by,
            ..Report::default()
        };
        assert!(report
            .render()
            .contains("inputs rejected: 6 (bad_member 4, upstream_agent_api 2)\n"));
    }

    #[test]
    fn reads_the_room_source_health() {
        assert_eq!(room_source("colyseus_envoy_mongo_up 0\n"), None);
        let up = "colyseus_envoy_mongo_up 1\ncolyseus_envoy_redis_rooms_up 0\n\
                  colyseus_envoy_room_source_info{source=\"mongo\"} 1\n";
        assert_eq!(room_source(up), Some(("mongo".into(), Some(true))));
        let down = "colyseus_envoy_redis_rooms_up 0\n\
                    colyseus_envoy_room_source_info{source=\"redis-rooms\"} 1\n";
        assert_eq!(room_source(down), Some(("redis-rooms".into(), Some(false))));
        let mut report = Report {
            agent_ready: Some(true),
            redis_up: Some(true),
            envoy_live: Some(true),
            room_source: room_source(down),
            ..Report::default()
        };
        assert!(!report.is_healthy());
        assert!(report.render().starts_with(
            "agent: ready, redis: up, room listings (redis-rooms): DOWN, envoy: live"
        ));
        report.room_source = room_source(up);
        assert!(report.is_healthy());
    }

    #[test]
    fn shows_the_shards_when_there_are_several() {
        let mut metrics = String::new();
        render_all_shards(&mut metrics, 4);
        assert_eq!(metric(&metrics, ALL_SHARDS_METRIC), Some(4));
        let mut report = Report {
            all_shards: Some(4),
            ..Report::default()
        };
        assert!(report.render().contains(
            "matchmaking: 4 shards of the all-processes cluster, 0 active process(es)\n"
        ));
        report.all_shards = Some(1);
        assert!(!report.render().contains("matchmaking:"));
    }

    #[test]
    fn renders_the_table() {
        let mut report = Report {
            agent_ready: Some(true),
            redis_up: Some(true),
            envoy_live: Some(true),
            rejected: Some(2),
            ..Report::default()
        };
        report.processes.push(ProcessRow {
            process_id: "abc123xyz".into(),
            address: "10.0.0.5:2567".into(),
            cluster: "colyseus-process-abc123xyz".into(),
            state: routing::wire::ProcessState::Active,
            weight: Some(10),
            rooms: None,
            ccu: None,
        });
        report.processes.push(ProcessRow {
            process_id: "old1".into(),
            address: "10.0.0.6:2567".into(),
            cluster: "colyseus-process-old1".into(),
            state: routing::wire::ProcessState::Draining,
            weight: None,
            rooms: None,
            ccu: None,
        });
        report.roomcount.insert("abc123xyz".into(), "3,12".into());
        report
            .connections
            .insert("colyseus-process-abc123xyz".into(), 12);
        let text = report.render();
        assert!(
            text.starts_with("agent: ready, redis: up, envoy: live, inputs rejected: 2\n"),
            "{text}"
        );
        let row = text.lines().nth(2).unwrap();
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            cells,
            [
                "abc123xyz",
                "10.0.0.5:2567",
                "active",
                "10",
                "3",
                "12",
                "12"
            ]
        );
        let row = text.lines().nth(3).unwrap();
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            cells,
            ["old1", "10.0.0.6:2567", "draining", "-", "-", "-", "-"]
        );
        assert!(report.is_healthy());
    }

    #[test]
    fn a_dead_or_refused_registration_is_unhealthy_and_named() {
        let mut report = Report {
            agent_ready: Some(true),
            redis_up: Some(true),
            envoy_live: Some(true),
            ..Report::default()
        };
        report.processes.push(ProcessRow {
            process_id: "gone".into(),
            address: "10.0.0.7:2567".into(),
            cluster: "colyseus-process-gone".into(),
            state: routing::wire::ProcessState::Dead,
            rooms: None,
            ccu: None,
            weight: None,
        });
        assert!(!report.is_healthy());
        report.processes.clear();
        let why = "member \"p1/undefined:2567\" has an unusable address: host is missing (is SELF_HOSTNAME set on the game server?)";
        report.rejected_registrations.push(why.into());
        assert!(!report.is_healthy());
        assert!(report.render().contains(&format!("rejected: {why}\n")));
    }
}
