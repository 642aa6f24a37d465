//! The clusters the CDS file sink renders, as the protobuf messages xDS sends. Pure.
//!
//! The file sink's JSON (`envoy_files::render_clusters`) is the one definition of a
//! cluster; this reads it back field by field into `envoy-types`' generated structs, so both
//! sinks give Envoy the same clusters. It is strict: a field it does not know is an error,
//! never dropped, so a field added to the JSON without being taught here fails the unit
//! tests instead of silently making the two sinks differ.

use envoy_types::pb::envoy::config::cluster::v3 as cluster;
use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::endpoint::v3 as endpoint;
use envoy_types::pb::envoy::r#type::v3::Percent;
use envoy_types::pb::google::protobuf::{Duration, UInt32Value};
use serde_json::{Map, Value};

/// A JSON cluster this module cannot express as a protobuf message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("cluster field `{path}`: {problem}")]
pub struct ConvertError {
    path: String,
    problem: String,
}

fn err(path: &str, problem: impl Into<String>) -> ConvertError {
    ConvertError {
        path: path.to_owned(),
        problem: problem.into(),
    }
}

type Result<T> = std::result::Result<T, ConvertError>;

/// Converts one cluster of the CDS file into `envoy.config.cluster.v3.Cluster`.
///
/// # Errors
/// A field or value this converter does not know (see the module doc).
pub fn cluster(json: &Value) -> Result<cluster::Cluster> {
    let mut c = cluster::Cluster::default();
    for (key, v) in object(json, "")? {
        match key.as_str() {
            "@type" => {}
            "name" => c.name = string(v, key)?.to_owned(),
            "type" => {
                use cluster::cluster::{ClusterDiscoveryType, DiscoveryType};
                let t = DiscoveryType::from_str_name(string(v, key)?)
                    .ok_or_else(|| err(key, "unknown discovery type"))?;
                c.cluster_discovery_type = Some(ClusterDiscoveryType::Type(t as i32));
            }
            "connect_timeout" => c.connect_timeout = Some(duration(v, key)?),
            "lb_policy" => {
                c.lb_policy = cluster::cluster::LbPolicy::from_str_name(string(v, key)?)
                    .ok_or_else(|| err(key, "unknown lb policy"))?
                    as i32;
            }
            "per_connection_buffer_limit_bytes" => {
                c.per_connection_buffer_limit_bytes = Some(uint32(v, key)?);
            }
            "circuit_breakers" => c.circuit_breakers = Some(circuit_breakers(v)?),
            "load_assignment" => c.load_assignment = Some(load_assignment(v)?),
            "dns_lookup_family" => {
                c.dns_lookup_family =
                    cluster::cluster::DnsLookupFamily::from_str_name(string(v, key)?)
                        .ok_or_else(|| err(key, "unknown DNS lookup family"))?
                        as i32;
            }
            "health_checks" => {
                c.health_checks = array(v, key)?
                    .iter()
                    .map(health_check)
                    .collect::<Result<_>>()?;
            }
            "common_lb_config" => {
                let mut lb = cluster::cluster::CommonLbConfig::default();
                for (k, v) in object(v, key)? {
                    match k.as_str() {
                        "healthy_panic_threshold" => {
                            let value = only(v, "value", "healthy_panic_threshold")?;
                            lb.healthy_panic_threshold = Some(Percent {
                                value: value.as_f64().ok_or_else(|| err(k, "not a number"))?,
                            });
                        }
                        "update_merge_window" => {
                            lb.update_merge_window = Some(duration(v, k)?);
                        }
                        _ => return Err(err(k, "unknown field of common_lb_config")),
                    }
                }
                c.common_lb_config = Some(lb);
            }
            "ignore_health_on_host_removal" => {
                c.ignore_health_on_host_removal =
                    v.as_bool().ok_or_else(|| err(key, "not a bool"))?;
            }
            "outlier_detection" => c.outlier_detection = Some(outlier_detection(v)?),
            _ => return Err(err(key, "unknown cluster field")),
        }
    }
    Ok(c)
}

fn circuit_breakers(v: &Value) -> Result<cluster::CircuitBreakers> {
    let thresholds = only(v, "thresholds", "circuit_breakers")?;
    let thresholds = array(thresholds, "thresholds")?
        .iter()
        .map(|t| {
            let mut out = cluster::circuit_breakers::Thresholds::default();
            for (k, v) in object(t, "thresholds")? {
                let n = Some(uint32(v, k)?);
                match k.as_str() {
                    "max_connections" => out.max_connections = n,
                    "max_pending_requests" => out.max_pending_requests = n,
                    "max_requests" => out.max_requests = n,
                    _ => return Err(err(k, "unknown threshold")),
                }
            }
            Ok(out)
        })
        .collect::<Result<_>>()?;
    Ok(cluster::CircuitBreakers {
        thresholds,
        ..Default::default()
    })
}

fn outlier_detection(v: &Value) -> Result<cluster::OutlierDetection> {
    let mut o = cluster::OutlierDetection::default();
    for (k, v) in object(v, "outlier_detection")? {
        match k.as_str() {
            "consecutive_gateway_failure" => o.consecutive_gateway_failure = Some(uint32(v, k)?),
            "enforcing_consecutive_gateway_failure" => {
                o.enforcing_consecutive_gateway_failure = Some(uint32(v, k)?);
            }
            "consecutive_5xx" => o.consecutive_5xx = Some(uint32(v, k)?),
            "interval" => o.interval = Some(duration(v, k)?),
            "base_ejection_time" => o.base_ejection_time = Some(duration(v, k)?),
            "max_ejection_percent" => o.max_ejection_percent = Some(uint32(v, k)?),
            _ => return Err(err(k, "unknown outlier_detection field")),
        }
    }
    Ok(o)
}

fn health_check(v: &Value) -> Result<core::HealthCheck> {
    use core::health_check::{HealthChecker, HttpHealthCheck, TcpHealthCheck};
    let mut hc = core::HealthCheck::default();
    for (k, v) in object(v, "health_checks")? {
        match k.as_str() {
            "timeout" => hc.timeout = Some(duration(v, k)?),
            "interval" => hc.interval = Some(duration(v, k)?),
            "unhealthy_threshold" => hc.unhealthy_threshold = Some(uint32(v, k)?),
            "healthy_threshold" => hc.healthy_threshold = Some(uint32(v, k)?),
            "tcp_health_check" => {
                if !object(v, k)?.is_empty() {
                    return Err(err(k, "only an empty TCP check is known"));
                }
                hc.health_checker = Some(HealthChecker::TcpHealthCheck(TcpHealthCheck::default()));
            }
            "http_health_check" => {
                let path = string(only(v, "path", k)?, "path")?;
                hc.health_checker = Some(HealthChecker::HttpHealthCheck(HttpHealthCheck {
                    path: path.to_owned(),
                    ..Default::default()
                }));
            }
            _ => return Err(err(k, "unknown health check field")),
        }
    }
    Ok(hc)
}

fn load_assignment(v: &Value) -> Result<endpoint::ClusterLoadAssignment> {
    let mut la = endpoint::ClusterLoadAssignment::default();
    for (k, v) in object(v, "load_assignment")? {
        match k.as_str() {
            "cluster_name" => la.cluster_name = string(v, k)?.to_owned(),
            "endpoints" => {
                la.endpoints = array(v, k)?
                    .iter()
                    .map(|l| {
                        let lbs = array(only(l, "lb_endpoints", "endpoints")?, "lb_endpoints")?;
                        Ok(endpoint::LocalityLbEndpoints {
                            lb_endpoints: lbs.iter().map(lb_endpoint).collect::<Result<_>>()?,
                            ..Default::default()
                        })
                    })
                    .collect::<Result<_>>()?;
            }
            _ => return Err(err(k, "unknown load_assignment field")),
        }
    }
    Ok(la)
}

fn lb_endpoint(v: &Value) -> Result<endpoint::LbEndpoint> {
    use core::address::Address;
    use core::socket_address::PortSpecifier;
    let mut lb = endpoint::LbEndpoint::default();
    for (k, v) in object(v, "lb_endpoints")? {
        match k.as_str() {
            "load_balancing_weight" => lb.load_balancing_weight = Some(uint32(v, k)?),
            "endpoint" => {
                let sa = only(only(v, "address", k)?, "socket_address", "address")?;
                let mut socket = core::SocketAddress::default();
                for (k, v) in object(sa, "socket_address")? {
                    match k.as_str() {
                        "address" => socket.address = string(v, k)?.to_owned(),
                        "port_value" => {
                            let port = v.as_u64().and_then(|p| u32::try_from(p).ok());
                            let port = port.ok_or_else(|| err(k, "not a port"))?;
                            socket.port_specifier = Some(PortSpecifier::PortValue(port));
                        }
                        _ => return Err(err(k, "unknown socket_address field")),
                    }
                }
                lb.host_identifier = Some(endpoint::lb_endpoint::HostIdentifier::Endpoint(
                    endpoint::Endpoint {
                        address: Some(core::Address {
                            address: Some(Address::SocketAddress(socket)),
                        }),
                        ..Default::default()
                    },
                ));
            }
            _ => return Err(err(k, "unknown lb_endpoint field")),
        }
    }
    Ok(lb)
}

/// `v` as an object.
fn object<'a>(v: &'a Value, path: &str) -> Result<&'a Map<String, Value>> {
    v.as_object().ok_or_else(|| err(path, "not an object"))
}

/// The one field `key` of an object that must hold nothing else.
fn only<'a>(v: &'a Value, key: &str, path: &str) -> Result<&'a Value> {
    let map = object(v, path)?;
    match (map.len(), map.get(key)) {
        (1, Some(inner)) => Ok(inner),
        _ => Err(err(path, format!("expected exactly the field `{key}`"))),
    }
}

fn array<'a>(v: &'a Value, path: &str) -> Result<&'a Vec<Value>> {
    v.as_array().ok_or_else(|| err(path, "not an array"))
}

fn string<'a>(v: &'a Value, path: &str) -> Result<&'a str> {
    v.as_str().ok_or_else(|| err(path, "not a string"))
}

fn uint32(v: &Value, path: &str) -> Result<UInt32Value> {
    let value = v.as_u64().and_then(|n| u32::try_from(n).ok());
    Ok(UInt32Value {
        value: value.ok_or_else(|| err(path, "not a 32-bit unsigned number"))?,
    })
}

/// Protobuf JSON's duration form, as the file sink writes it: `"2.500s"`.
fn duration(v: &Value, path: &str) -> Result<Duration> {
    let s = string(v, path)?;
    let secs = s
        .strip_suffix('s')
        .ok_or_else(|| err(path, "a duration ends in `s`"))?;
    let (whole, frac) = secs.split_once('.').unwrap_or((secs, ""));
    let seconds: i64 = whole
        .parse()
        .map_err(|_| err(path, "not a number of seconds"))?;
    if frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err(path, "bad fraction of a second"));
    }
    let nanos: i32 = format!("{frac:0<9}")
        .parse()
        .map_err(|_| err(path, "bad fraction of a second"))?;
    Ok(Duration { seconds, nanos })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn durations() {
        let d = |s: &str| duration(&json!(s), "t");
        assert_eq!(
            d("2.500s"),
            Ok(Duration {
                seconds: 2,
                nanos: 500_000_000
            })
        );
        assert_eq!(
            d("1s"),
            Ok(Duration {
                seconds: 1,
                nanos: 0
            })
        );
        for bad in ["1", "x.5s", "1.-5s", "1.0000000001s"] {
            assert!(d(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn unknown_fields_are_errors() {
        let base = json!({ "name": "a", "type": "STATIC" });
        assert!(cluster(&base).is_ok());
        let mut extra = base.clone();
        extra["metadata"] = json!({});
        assert!(cluster(&extra).is_err());
        let mut bad_type = base;
        bad_type["type"] = json!("EDS_PLUS");
        assert!(cluster(&bad_type).is_err());
        assert!(cluster(&json!({ "outlier_detection": { "interval": "1s", "x": 1 } })).is_err());
    }
}
