//! The health flags: `HEALTH_CHECK_PATH` (`bootstrap::HealthPath::parse`) and
//! `--health-check` (`sinks::envoy_files::HealthCheck::parse`).
//!
//! Invariants: a parsed value is exactly what the flag said (it renders back to the same
//! flag text); a path is `/...` and a suffix non-empty; and what lands in Envoy's config
//! means the same: the bootstrap's health route matches the exact path, or its suffix
//! regex (checked with `regex-lite`, whose syntax is RE2's for these escapes) matches a path
//! iff it ends with the suffix; the CDS health check carries the same HTTP path.
#![no_main]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use colyseus_envoy_agent::bootstrap::{render, BootstrapSpec, HealthPath, TlsSpec};
use colyseus_envoy_agent::model::Registry;
use colyseus_envoy_agent::sinks::envoy_files::{render_cds, ClusterOptions, HealthCheck};
use libfuzzer_sys::fuzz_target;
use regex_lite::Regex;
use routing::{ClusterNames, RoutingConfig};
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(spec) = std::str::from_utf8(data) else {
        return;
    };
    health_path(spec);
    health_check(spec);
});

fn health_path(spec: &str) {
    let parsed = HealthPath::parse(spec);
    // A suffix must fit Envoy's regex program limit once escaped (the agent allows 80 bytes).
    let escaped_len = |suffix: &str| {
        suffix.len()
            + suffix
                .chars()
                .filter(|c| "\\.+*?()|[]{}^$".contains(*c))
                .count()
    };
    let expected_ok = match spec.strip_prefix('*') {
        Some(suffix) => !suffix.is_empty() && escaped_len(suffix) <= 80,
        None => spec.starts_with('/'),
    };
    assert_eq!(parsed.is_ok(), expected_ok, "{spec:?}: {parsed:?}");
    let Ok(path) = parsed else {
        return;
    };
    match &path {
        HealthPath::Exact(p) => assert_eq!(p, spec),
        HealthPath::Suffix(s) => assert_eq!(format!("*{s}"), spec),
    }
    let routing = RoutingConfig::try_from(routing::PluginConfig::default()).unwrap();
    let addr: SocketAddr = "127.0.0.1:8080".parse().unwrap();
    let tls = TlsSpec {
        listen: "127.0.0.1:8443".parse().unwrap(),
        secret_file: Path::new("/tmp/sds.json"),
        cert_dir: Path::new("/tmp/certs"),
    };
    // With TLS both listeners (HTTPS and the HTTP redirect) carry the health route.
    {
        let bootstrap = BootstrapSpec {
            listen: addr,
            tls: Some(tls),
            admin: colyseus_envoy_agent::bootstrap::AdminListen::Tcp(
                "127.0.0.1:9901".parse().unwrap(),
            ),
            silent_connection_timeout: std::time::Duration::from_secs(10),
            public_host: None,
            config_dir: Path::new("/tmp/cfg"),
            filter_wasm: Path::new("/tmp/filter.wasm"),
            routing: &routing,
            request_timeout: Duration::from_secs(30),
            stream_idle_timeout: Duration::from_secs(300),
            health_path: Some(path.clone()),
            max_downstream_connections: 10_000,
            trusted_hops: 0,
            agent_api: colyseus_envoy_agent::model::parse_host_port("127.0.0.1:9902").unwrap(),
            edge_path: colyseus_envoy_agent::bootstrap::EdgePath::Http,
        };
        let doc = render(&bootstrap);
        let mut matches = Vec::new();
        health_matches(&doc, &mut matches);
        // One health route per listener, before the catch-all.
        let listeners = doc["static_resources"]["listeners"]
            .as_array()
            .unwrap()
            .len();
        assert_eq!(matches.len(), listeners, "{spec:?}");
        for m in matches {
            match &path {
                HealthPath::Exact(p) => assert_eq!(m["path"], p.as_str()),
                HealthPath::Suffix(s) => {
                    let re = m["safe_regex"]["regex"].as_str().unwrap();
                    // Envoy matches the whole path.
                    let re = Regex::new(&format!("^(?:{re})$"))
                        .unwrap_or_else(|e| panic!("{re:?} does not compile: {e}"));
                    let base: String = spec.chars().filter(|c| *c != '\n').collect();
                    for candidate in [
                        format!("/x{s}"),
                        s.clone(),
                        format!("/{base}"),
                        format!("{s}x"),
                        "/__healthcheck".to_owned(),
                    ] {
                        // `.` stops at a newline (paths have none).
                        if candidate
                            .strip_suffix(s.as_str())
                            .is_some_and(|p| p.contains('\n'))
                        {
                            continue;
                        }
                        assert_eq!(
                            re.is_match(&candidate),
                            candidate.ends_with(s.as_str()),
                            "{re:?} on {candidate:?}"
                        );
                    }
                }
            }
        }
    }
}

/// The `match` of every route answered 200 by Envoy itself.
fn health_matches<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
    match v {
        Value::Object(map) => {
            if map
                .get("direct_response")
                .is_some_and(|d| d["status"] == 200)
            {
                out.push(&map["match"]);
            }
            map.values().for_each(|v| health_matches(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| health_matches(v, out)),
        _ => {}
    }
}

fn health_check(spec: &str) {
    let interval = Duration::from_millis(1500);
    let parsed = HealthCheck::parse(spec, interval);
    let Ok(check) = parsed else {
        assert!(!matches!(spec, "off" | "tcp"));
        return;
    };
    let rendered = match &check {
        HealthCheck::Off => "off".to_owned(),
        HealthCheck::Tcp { interval: i } => {
            assert_eq!(*i, interval);
            "tcp".to_owned()
        }
        HealthCheck::Http { path, interval: i } => {
            assert_eq!(*i, interval);
            assert!(path.starts_with('/') && !path.contains(char::is_whitespace));
            format!("http:{path}")
        }
    };
    assert_eq!(rendered, spec);
    assert_eq!(HealthCheck::parse(&rendered, interval).as_ref(), Ok(&check));

    let options = ClusterOptions {
        names: ClusterNames::default(),
        connect_timeout: Duration::from_secs(1),
        max_connections: 1000,
        health_check: check.clone(),
    };
    let (registry, _) = Registry::default().from_members(
        ["abc123xyz/10.0.0.5:2567"],
        2567,
        std::time::Instant::now(),
    );
    let doc: Value =
        serde_json::from_slice(&render_cds(&registry, &Default::default(), &options).unwrap())
            .unwrap();
    for cluster in doc["resources"].as_array().unwrap() {
        let hc = &cluster["health_checks"][0];
        match &check {
            HealthCheck::Off => assert!(cluster.get("health_checks").is_none()),
            HealthCheck::Tcp { .. } => assert!(hc.get("tcp_health_check").is_some()),
            HealthCheck::Http { path, .. } => {
                assert_eq!(hc["http_health_check"]["path"], path.as_str())
            }
        }
    }
}
