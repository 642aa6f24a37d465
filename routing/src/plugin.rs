//! The filter's plugin configuration: JSON in the Envoy bootstrap, rendered by the agent
//! (`colyseus-envoy bootstrap`) and checked by the filter in `on_configure`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::cluster::{ClusterNames, NamesError, DEFAULT_ALL_CLUSTER, DEFAULT_PROCESS_PREFIX};

/// Default request header that carries the chosen cluster to Envoy's `cluster_header` route.
pub const DEFAULT_HEADER: &str = "x-colyseus-cluster";
/// Default name of the static Envoy cluster that reaches the agent's private API.
pub const DEFAULT_AGENT_CLUSTER: &str = "colyseus_agent";
/// Default bound of one room lookup (`GET /rooms/{roomId}`) at the agent.
pub const DEFAULT_LOOKUP_TIMEOUT_MS: u64 = 500;
/// Default period of the known-processes fallback refresh (`GET /processes`) in each worker:
/// normally a long-poll keeps the set fresh (see `wire::PROCESSES_AFTER_PARAM`); this tick
/// only asks again after a failed call or an agent that sends no version.
pub const DEFAULT_KNOWN_REFRESH_MS: u64 = 1000;
/// Accepted range of `lookupTimeoutMs`.
pub const LOOKUP_TIMEOUT_RANGE_MS: std::ops::RangeInclusive<u64> = 10..=60_000;
/// Accepted range of `knownRefreshMs`.
pub const KNOWN_REFRESH_RANGE_MS: std::ops::RangeInclusive<u64> = 100..=600_000;

/// The plugin configuration as written in JSON. Every field has a default, so `{}` works.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct PluginConfig {
    /// Request header the filter sets and the route reads (`cluster_header`).
    pub header: String,
    /// Prefix of each game process's cluster name.
    pub cluster_prefix: String,
    /// Name of the cluster of all live processes.
    pub all_cluster: String,
    /// Static Envoy cluster of the agent's API, asked where a room is when the path's
    /// processId is missing, `undefined` or not a live process. It must not be a name the
    /// route guard lets clients reach.
    pub agent_cluster: String,
    /// Bound of one room lookup at the agent; past it the request gets a 503.
    pub lookup_timeout_ms: u64,
    /// Fallback period of each worker's refresh of its live processIds (the long-poll is
    /// re-armed at once on every versioned answer; this is the retry after a failure).
    pub known_refresh_ms: u64,
    /// Only in the network filter's configuration (`bootstrap --edge-path tcp`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub edge: Option<EdgePluginConfig>,
}

/// The TCP edge's part of the configuration (see [`crate::edge`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EdgePluginConfig {
    /// `tcp_proxy`'s default cluster: the internal listener of the HTTP connection manager.
    pub hcm_cluster: String,
    /// `http` or `https`, as `x-forwarded-proto` on the raw path.
    pub scheme: String,
    /// A connection without a complete head by then is closed.
    pub head_timeout_ms: u64,
    /// A head longer than this goes to the HTTP connection manager.
    pub max_head_bytes: u64,
}

/// Accepted range of `edge.headTimeoutMs`.
pub const HEAD_TIMEOUT_RANGE_MS: std::ops::RangeInclusive<u64> = 100..=60_000;
/// Accepted range of `edge.maxHeadBytes`: below Envoy's per-connection buffer limit (32 KiB),
/// past which Envoy stops reading and the head could never complete.
pub const MAX_HEAD_BYTES_RANGE: std::ops::RangeInclusive<u64> = 1024..=16_384;

/// A checked [`EdgePluginConfig`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeSettings {
    pub hcm_cluster: String,
    pub scheme: String,
    pub head_timeout: Duration,
    pub max_head_len: usize,
}

impl Default for PluginConfig {
    fn default() -> Self {
        Self {
            header: DEFAULT_HEADER.to_owned(),
            cluster_prefix: DEFAULT_PROCESS_PREFIX.to_owned(),
            all_cluster: DEFAULT_ALL_CLUSTER.to_owned(),
            agent_cluster: DEFAULT_AGENT_CLUSTER.to_owned(),
            lookup_timeout_ms: DEFAULT_LOOKUP_TIMEOUT_MS,
            known_refresh_ms: DEFAULT_KNOWN_REFRESH_MS,
            edge: None,
        }
    }
}

/// Why a plugin configuration is refused.
#[derive(Debug, thiserror::Error)]
pub enum PluginConfigError {
    #[error("plugin configuration is not valid JSON for this filter: {0}")]
    Json(#[from] serde_json::Error),
    #[error("header {0:?} must be a lowercase HTTP header name (not a pseudo-header)")]
    Header(String),
    #[error(transparent)]
    Names(#[from] NamesError),
    #[error("agentCluster {0:?} must use only [A-Za-z0-9_-] and must not be a game cluster name")]
    AgentCluster(String),
    #[error(
        "edge.hcmCluster {0:?} must use only [A-Za-z0-9_-] and must not be a game cluster name"
    )]
    HcmCluster(String),
    #[error("edge.scheme {0:?} must be http or https")]
    Scheme(String),
    #[error("edge.maxHeadBytes {0} is outside {min}..={max}", min = MAX_HEAD_BYTES_RANGE.start(), max = MAX_HEAD_BYTES_RANGE.end())]
    MaxHead(u64),
    #[error("{field} {value} is outside {min}..={max} ms")]
    Range {
        field: &'static str,
        value: u64,
        min: u64,
        max: u64,
    },
}

/// A checked plugin configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutingConfig {
    pub header: String,
    pub names: ClusterNames,
    /// Envoy cluster of the agent's API (never one of `names`).
    pub agent_cluster: String,
    pub lookup_timeout: Duration,
    pub known_refresh: Duration,
    /// Set in the network filter only.
    pub edge: Option<EdgeSettings>,
}

impl From<&RoutingConfig> for PluginConfig {
    /// The JSON form of a checked configuration, as the bootstrap writes it.
    fn from(c: &RoutingConfig) -> Self {
        Self {
            header: c.header.clone(),
            cluster_prefix: c.names.prefix().to_owned(),
            all_cluster: c.names.all().to_owned(),
            agent_cluster: c.agent_cluster.clone(),
            lookup_timeout_ms: millis(c.lookup_timeout),
            known_refresh_ms: millis(c.known_refresh),
            edge: c.edge.as_ref().map(|e| EdgePluginConfig {
                hcm_cluster: e.hcm_cluster.clone(),
                scheme: e.scheme.clone(),
                head_timeout_ms: millis(e.head_timeout),
                max_head_bytes: u64::try_from(e.max_head_len).unwrap_or(u64::MAX),
            }),
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn in_range(
    field: &'static str,
    value: u64,
    range: std::ops::RangeInclusive<u64>,
) -> Result<Duration, PluginConfigError> {
    if range.contains(&value) {
        Ok(Duration::from_millis(value))
    } else {
        Err(PluginConfigError::Range {
            field,
            value,
            min: *range.start(),
            max: *range.end(),
        })
    }
}

impl PluginConfig {
    /// Parses JSON; empty input means all defaults.
    ///
    /// # Errors
    /// Invalid JSON or unknown fields.
    pub fn from_json(bytes: &[u8]) -> Result<Self, PluginConfigError> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self::default());
        }
        Ok(serde_json::from_slice(bytes)?)
    }
}

impl TryFrom<PluginConfig> for RoutingConfig {
    type Error = PluginConfigError;

    fn try_from(raw: PluginConfig) -> Result<Self, Self::Error> {
        let header_ok = !raw.header.is_empty()
            && raw
                .header
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !header_ok {
            return Err(PluginConfigError::Header(raw.header));
        }
        let names = ClusterNames::new(&raw.cluster_prefix, &raw.all_cluster)?;
        // The agent's cluster must be a plain name the route guard refuses, so a client
        // can never reach it through the public listener.
        let agent_ok = crate::id::check_id(&raw.agent_cluster).is_ok()
            && !names.is_guarded(&raw.agent_cluster);
        if !agent_ok {
            return Err(PluginConfigError::AgentCluster(raw.agent_cluster));
        }
        let edge = raw.edge.map(|e| check_edge(e, &names)).transpose()?;
        Ok(Self {
            edge,
            lookup_timeout: in_range(
                "lookupTimeoutMs",
                raw.lookup_timeout_ms,
                LOOKUP_TIMEOUT_RANGE_MS,
            )?,
            known_refresh: in_range(
                "knownRefreshMs",
                raw.known_refresh_ms,
                KNOWN_REFRESH_RANGE_MS,
            )?,
            names,
            agent_cluster: raw.agent_cluster,
            header: raw.header,
        })
    }
}

/// Checks the edge settings: the HCM's cluster, like the agent's, is never a name the
/// route guard lets clients reach.
fn check_edge(
    e: EdgePluginConfig,
    names: &ClusterNames,
) -> Result<EdgeSettings, PluginConfigError> {
    let cluster_ok =
        crate::id::check_id(&e.hcm_cluster).is_ok() && !names.is_guarded(&e.hcm_cluster);
    if !cluster_ok {
        return Err(PluginConfigError::HcmCluster(e.hcm_cluster));
    }
    if e.scheme != "http" && e.scheme != "https" {
        return Err(PluginConfigError::Scheme(e.scheme));
    }
    if !MAX_HEAD_BYTES_RANGE.contains(&e.max_head_bytes) {
        return Err(PluginConfigError::MaxHead(e.max_head_bytes));
    }
    Ok(EdgeSettings {
        head_timeout: in_range(
            "edge.headTimeoutMs",
            e.head_timeout_ms,
            HEAD_TIMEOUT_RANGE_MS,
        )?,
        max_head_len: usize::try_from(e.max_head_bytes).unwrap_or(usize::MAX),
        hcm_cluster: e.hcm_cluster,
        scheme: e.scheme,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<RoutingConfig, PluginConfigError> {
        RoutingConfig::try_from(PluginConfig::from_json(json.as_bytes())?)
    }

    #[test]
    fn defaults() {
        let cfg = parse("").unwrap();
        assert_eq!(cfg.header, DEFAULT_HEADER);
        assert_eq!(cfg.names, ClusterNames::default());
        assert_eq!(cfg.agent_cluster, DEFAULT_AGENT_CLUSTER);
        assert_eq!(cfg.lookup_timeout, Duration::from_millis(500));
        assert_eq!(cfg.known_refresh, Duration::from_secs(1));
        assert_eq!(parse("{}").unwrap(), cfg);
    }

    #[test]
    fn round_trips_through_json() {
        let raw = PluginConfig {
            header: "x-route".into(),
            cluster_prefix: "gs-".into(),
            all_cluster: "gs_all".into(),
            agent_cluster: "agent".into(),
            lookup_timeout_ms: 250,
            known_refresh_ms: 2000,
            edge: None,
        };
        let json = serde_json::to_string(&raw).unwrap();
        assert_eq!(
            json,
            r#"{"header":"x-route","clusterPrefix":"gs-","allCluster":"gs_all","agentCluster":"agent","lookupTimeoutMs":250,"knownRefreshMs":2000}"#
        );
        assert_eq!(PluginConfig::from_json(json.as_bytes()).unwrap(), raw);
        let checked = RoutingConfig::try_from(raw.clone()).unwrap();
        assert_eq!(checked.lookup_timeout, Duration::from_millis(250));
        assert_eq!(PluginConfig::from(&checked), raw);
    }

    #[test]
    fn refuses_bad_config() {
        assert!(matches!(parse("{"), Err(PluginConfigError::Json(_))));
        assert!(matches!(
            parse(r#"{"heder":"x"}"#),
            Err(PluginConfigError::Json(_))
        ));
        assert!(matches!(
            parse(r#"{"header":"X-Up"}"#),
            Err(PluginConfigError::Header(_))
        ));
        assert!(matches!(
            parse(r#"{"header":":authority"}"#),
            Err(PluginConfigError::Header(_))
        ));
        assert!(matches!(
            parse(r#"{"clusterPrefix":"c-","allCluster":"c-all"}"#),
            Err(PluginConfigError::Names(_))
        ));
        for agent in ["colyseus-all", "colyseus-process-x", "a.b", ""] {
            let json = format!(r#"{{"agentCluster":"{agent}"}}"#);
            assert!(
                matches!(parse(&json), Err(PluginConfigError::AgentCluster(_))),
                "{agent}"
            );
        }
        assert!(matches!(
            parse(r#"{"lookupTimeoutMs":0}"#),
            Err(PluginConfigError::Range { .. })
        ));
        assert!(matches!(
            parse(r#"{"knownRefreshMs":10}"#),
            Err(PluginConfigError::Range { .. })
        ));
        assert!(matches!(
            parse(r#"{"knownRefreshMs":-1}"#),
            Err(PluginConfigError::Json(_))
        ));
    }

    #[test]
    fn edge_settings() {
        let edge = |json: &str| parse(&format!(r#"{{"edge":{json}}}"#));
        let ok = edge(r#"{"hcmCluster":"colyseus_hcm","scheme":"https","headTimeoutMs":5000,"maxHeadBytes":8192}"#)
            .unwrap();
        let settings = ok.edge.clone().unwrap();
        assert_eq!(settings.head_timeout, Duration::from_secs(5));
        assert_eq!(settings.max_head_len, 8192);
        let json = serde_json::to_string(&PluginConfig::from(&ok)).unwrap();
        assert_eq!(parse(&json).unwrap(), ok);
        // The HTTP filter's configuration has no `edge` at all.
        assert!(!serde_json::to_string(&PluginConfig::default())
            .unwrap()
            .contains("edge"));
        for (json, want) in [
            (
                r#"{"hcmCluster":"colyseus-all","scheme":"http","headTimeoutMs":5000,"maxHeadBytes":8192}"#,
                "hcmCluster",
            ),
            (
                r#"{"hcmCluster":"colyseus-process-x","scheme":"http","headTimeoutMs":5000,"maxHeadBytes":8192}"#,
                "hcmCluster",
            ),
            (
                r#"{"hcmCluster":"h","scheme":"ftp","headTimeoutMs":5000,"maxHeadBytes":8192}"#,
                "scheme",
            ),
            (
                r#"{"hcmCluster":"h","scheme":"http","headTimeoutMs":5,"maxHeadBytes":8192}"#,
                "headTimeoutMs",
            ),
            (
                r#"{"hcmCluster":"h","scheme":"http","headTimeoutMs":5000,"maxHeadBytes":65536}"#,
                "maxHeadBytes",
            ),
            (
                r#"{"hcmCluster":"h","scheme":"http","headTimeoutMs":5000}"#,
                "maxHeadBytes",
            ),
        ] {
            let e = edge(json).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }
    }
}
