//! The filter's plugin configuration (`PluginConfig::from_json` then
//! `RoutingConfig::try_from`, as `on_configure` runs them): what is parsed round-trips
//! through serde_json (and a checked one converts back to the same JSON form), and an
//! accepted scheme is safe: a valid header name, a route guard that matches exactly the
//! all-processes cluster and `{prefix}{id}` names, an agent cluster that guard refuses (no
//! client can reach the agent), and timeouts within their documented ranges.
#![no_main]

use std::time::Duration;

use colyseus_envoy_filter::root::parse_config;
use libfuzzer_sys::fuzz_target;
use regex_lite::Regex;
use routing::id::check_id;
use routing::plugin::{KNOWN_REFRESH_RANGE_MS, LOOKUP_TIMEOUT_RANGE_MS};
use routing::{PluginConfig, RoutingConfig};

fuzz_target!(|data: &[u8]| {
    let parsed = PluginConfig::from_json(data);
    if data.iter().all(u8::is_ascii_whitespace) {
        assert_eq!(parsed.as_ref().ok(), Some(&PluginConfig::default()));
    }
    let Ok(raw) = parsed else {
        assert!(parse_config(data).is_err());
        return;
    };
    // Round trip: what the agent would write back reads as the same configuration.
    let json = serde_json::to_vec(&raw).unwrap();
    assert_eq!(PluginConfig::from_json(&json).unwrap(), raw);
    let value: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(serde_json::from_value::<PluginConfig>(value).unwrap(), raw);

    let checked = RoutingConfig::try_from(raw.clone());
    // The filter's own entry point decides the same.
    assert_eq!(checked.as_ref().ok(), parse_config(data).as_ref().ok());
    let Ok(cfg) = checked else {
        return;
    };
    assert_eq!(PluginConfig::from(&cfg), raw);
    assert_eq!(cfg.header, raw.header);
    assert!(!cfg.header.is_empty() && !cfg.header.starts_with(':'));
    assert!(cfg
        .header
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'));
    let names = &cfg.names;
    assert_eq!(names.prefix(), raw.cluster_prefix);
    assert_eq!(names.all(), raw.all_cluster);
    assert!(check_id(names.prefix()).is_ok() && check_id(names.all()).is_ok());
    assert!(!names.all().starts_with(names.prefix()));
    assert_eq!(names.process_of(names.all()), None);

    let guard = Regex::new(&names.route_guard_regex()).unwrap();
    assert!(guard.is_match(names.all()));
    assert_eq!(check_id(&cfg.agent_cluster), Ok(()));
    assert!(
        !guard.is_match(&cfg.agent_cluster),
        "agent cluster reachable"
    );
    assert!(LOOKUP_TIMEOUT_RANGE_MS.contains(&raw.lookup_timeout_ms));
    assert!(KNOWN_REFRESH_RANGE_MS.contains(&raw.known_refresh_ms));
    assert_eq!(
        cfg.lookup_timeout,
        Duration::from_millis(raw.lookup_timeout_ms)
    );
    assert_eq!(
        cfg.known_refresh,
        Duration::from_millis(raw.known_refresh_ms)
    );
    // The guard accepts a name iff it is the all cluster or a process cluster.
    let text = String::from_utf8_lossy(data);
    let candidates = [
        names.process_unchecked("abc123xyz"),
        names.process_unchecked(""),
        names.process_unchecked(&text),
        format!("{}x", names.all()),
        text.clone().into_owned(),
        names.prefix().to_owned(),
        cfg.agent_cluster.clone(),
    ];
    for name in &candidates {
        let is_process = name.strip_prefix(names.prefix()).is_some_and(|id| {
            !id.is_empty()
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        });
        assert_eq!(
            guard.is_match(name),
            name == names.all() || is_process,
            "guard {:?} on {name:?}",
            names.route_guard_regex()
        );
        if is_process && check_id(&name[names.prefix().len()..]).is_ok() {
            assert_eq!(names.process_of(name), Some(&name[names.prefix().len()..]));
        }
    }
});
