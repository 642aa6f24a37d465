//! The filter's plugin configuration: JSON in the Envoy bootstrap, rendered by the agent
//! (`colyseus-envoy-agent bootstrap`) and checked by the filter in `on_configure`.

use serde::{Deserialize, Serialize};

use crate::cluster::{ClusterNames, NamesError, DEFAULT_ALL_CLUSTER, DEFAULT_PROCESS_PREFIX};

/// Default request header that carries the chosen cluster to Envoy's `cluster_header` route.
pub const DEFAULT_HEADER: &str = "x-colyseus-cluster";

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
}

impl Default for PluginConfig {
    fn default() -> Self {
        Self {
            header: DEFAULT_HEADER.to_owned(),
            cluster_prefix: DEFAULT_PROCESS_PREFIX.to_owned(),
            all_cluster: DEFAULT_ALL_CLUSTER.to_owned(),
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
}

/// A checked plugin configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutingConfig {
    pub header: String,
    pub names: ClusterNames,
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
        Ok(Self {
            names: ClusterNames::new(&raw.cluster_prefix, &raw.all_cluster)?,
            header: raw.header,
        })
    }
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
        assert_eq!(parse("{}").unwrap(), cfg);
    }

    #[test]
    fn round_trips_through_json() {
        let raw = PluginConfig {
            header: "x-route".into(),
            cluster_prefix: "gs-".into(),
            all_cluster: "gs_all".into(),
        };
        let json = serde_json::to_string(&raw).unwrap();
        assert_eq!(
            json,
            r#"{"header":"x-route","clusterPrefix":"gs-","allCluster":"gs_all"}"#
        );
        assert_eq!(PluginConfig::from_json(json.as_bytes()).unwrap(), raw);
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
    }
}
