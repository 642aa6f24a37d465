//! Did the Redis behind the agent restart, or fail over? Pure, from `INFO`.
//!
//! A new `run_id` alone cannot tell the two apart. After a Sentinel (or Cluster) failover
//! the promoted replica has its own `run_id` but the old master's data, and it keeps the
//! old master's replication id as `master_replid2` (a replica that is not promoted
//! has the same `master_replid` as its master). A server restarted empty has a history of its
//! own. So the agent remembers the `master_replid` it last synced from and compares.
//!
//! What the sync loop does with the answer: on `Same` the set is the truth; on `Failover`
//! and `Restarted` a registration missing from the set may have been lost rather than
//! removed (an async replica that was behind loses the newest writes too), so it stays
//! routed while probed, and is written back if its process answers. A clean failover
//! loses nothing, so nothing is probed or written: there is no restore storm.

/// The replication history a server reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lineage {
    /// `master_replid`: the history this server's data belongs to now.
    pub replid: Option<String>,
    /// `master_replid2`: the history it continued from after a promotion, if any.
    pub replid2: Option<String>,
}

/// How the server now relates to the one synced from before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Continuity {
    /// The same server process (or nothing to compare with yet).
    Same,
    /// Another server carrying on the same data: a replica promoted, or a replica of it.
    Failover,
    /// Another server with a history of its own: restarted (maybe empty) or replaced.
    Restarted,
}

impl Lineage {
    /// Reads `master_replid` and `master_replid2` from `INFO` (or `INFO replication`).
    /// Redis writes forty zeros as `master_replid2` when there is none.
    pub fn from_info(info: &str) -> Self {
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .map(str::trim)
                .filter(|id| !id.is_empty() && id.bytes().any(|b| b != b'0'))
                .map(str::to_owned)
        };
        Self {
            replid: field("master_replid"),
            replid2: field("master_replid2"),
        }
    }
}

/// Compares the server now (`run_id`, `lineage`) with the last one synced from.
/// Without a remembered replication id (first sync since the agent started, or a Redis
/// that does not report one) only the `run_id` counts, and a change is a restart: the
/// careful reading.
pub fn continuity(
    before_run_id: Option<&str>,
    before_replid: Option<&str>,
    run_id: &str,
    now: &Lineage,
) -> Continuity {
    match before_run_id {
        None => Continuity::Same,
        Some(before) if before == run_id => Continuity::Same,
        Some(_) => match before_replid {
            Some(r) if now.replid.as_deref() == Some(r) || now.replid2.as_deref() == Some(r) => {
                Continuity::Failover
            }
            _ => Continuity::Restarted,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ZEROS: &str = "0000000000000000000000000000000000000000";

    fn info(replid: &str, replid2: &str) -> Lineage {
        Lineage::from_info(&format!(
            "# Server\r\nrun_id:x\r\n# Replication\r\nrole:master\r\nmaster_replid:{replid}\r\nmaster_replid2:{replid2}\r\nmaster_repl_offset:42\r\n"
        ))
    }

    #[test]
    fn reads_the_replication_ids() {
        assert_eq!(
            info("aaa", ZEROS),
            Lineage {
                replid: Some("aaa".into()),
                replid2: None
            }
        );
        assert_eq!(info("bbb", "aaa").replid2.as_deref(), Some("aaa"));
        assert_eq!(
            Lineage::from_info("# Server\r\nrun_id:x\r\n"),
            Lineage::default()
        );
    }

    #[test]
    fn a_promoted_replica_is_a_failover() {
        // The old master's history is the new master's replid2.
        assert_eq!(
            continuity(Some("run-a"), Some("aaa"), "run-b", &info("bbb", "aaa")),
            Continuity::Failover
        );
        // Reconnected to a replica-turned-master that kept the same history.
        assert_eq!(
            continuity(Some("run-a"), Some("aaa"), "run-b", &info("aaa", ZEROS)),
            Continuity::Failover
        );
    }

    #[test]
    fn a_server_with_its_own_history_restarted() {
        assert_eq!(
            continuity(Some("run-a"), Some("aaa"), "run-b", &info("ccc", ZEROS)),
            Continuity::Restarted
        );
        // Two failovers in a row while the agent was away: the link is lost, so careful.
        assert_eq!(
            continuity(Some("run-a"), Some("aaa"), "run-c", &info("ccc", "bbb")),
            Continuity::Restarted
        );
        // Nothing remembered (agent restarted): only run_id counts.
        assert_eq!(
            continuity(Some("run-a"), None, "run-b", &info("bbb", "aaa")),
            Continuity::Restarted
        );
    }

    #[test]
    fn same_run_id_or_first_sync_is_the_same_server() {
        assert_eq!(
            continuity(Some("run-a"), Some("aaa"), "run-a", &info("zzz", ZEROS)),
            Continuity::Same
        );
        assert_eq!(
            continuity(None, None, "run-a", &info("aaa", ZEROS)),
            Continuity::Same
        );
    }
}
