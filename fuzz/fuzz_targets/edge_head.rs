//! The TCP edge's decision (`routing::edge::decide`) on any bytes a client sends first.
//!
//! Invariants: a connection goes raw only for a complete head with nothing after it, to
//! the cluster of a live process that passes the route guard, and only where the HTTP
//! filter, given the same head's path and known set, routes to the same cluster (the two
//! paths agree); the rewritten head parses strictly, with the same
//! request line, with every other header kept, exactly one `x-forwarded-for`, `x-real-ip` and
//! `x-envoy-external-address` (the client's address) and none of the client's forwarding
//! headers or the routing header.
#![no_main]

use colyseus_envoy_filter::decide::{decide as http_decide, Decision};
use colyseus_envoy_filter::lookup::KnownProcesses;
use libfuzzer_sys::fuzz_target;
use regex_lite::Regex;
use routing::edge::{decide, Context, Edge, UNTRUSTED_FORWARDING_HEADERS};
use routing::head::{read, Read};
use routing::ClusterNames;

const LIVE: [&str; 2] = ["p1", "abc123xyz"];

fuzz_target!(|data: &[u8]| {
    let names = ClusterNames::default();
    let cx = Context {
        names: &names,
        routing_header: "x-colyseus-cluster",
        client_ip: "10.9.8.7",
        scheme: "http",
        max_head_len: 2048,
    };
    let live = |pid: &str| LIVE.contains(&pid);
    let Edge::Raw {
        cluster,
        head,
        head_len,
    } = decide(data, &cx, live)
    else {
        return;
    };
    assert_eq!(head_len, data.len(), "bytes after the head went raw");
    let guard = Regex::new(&names.route_guard_regex()).unwrap();
    assert!(guard.is_match(&cluster), "{cluster}");
    let pid = names.process_of(&cluster).unwrap();
    assert!(live(pid));
    // The HTTP filter, with the same live set, routes the same path to the same cluster.
    let Read::Complete(parsed) = read(data, cx.max_head_len) else {
        panic!("raw without a complete head");
    };
    let mut known = KnownProcesses::default();
    known.set(LIVE.map(str::to_owned).into());
    assert_eq!(
        http_decide(&names, &known, Some(parsed.target.as_bytes())),
        Decision::Route(cluster.clone())
    );
    // The rewritten head: the edge's headers only, and it decides the same way again.
    let Read::Complete(rewritten) = read(&head, 1 << 20) else {
        panic!(
            "rewritten head does not parse: {:?}",
            String::from_utf8_lossy(&head)
        );
    };
    for name in ["x-forwarded-for", "x-real-ip"] {
        assert_eq!(rewritten.values(name).collect::<Vec<_>>(), ["10.9.8.7"]);
    }
    for name in UNTRUSTED_FORWARDING_HEADERS
        .iter()
        .chain(&["x-colyseus-cluster"])
    {
        assert_eq!(rewritten.values(name).count(), 0, "{name}");
    }
    assert_eq!(
        rewritten
            .values("x-envoy-external-address")
            .collect::<Vec<_>>(),
        ["10.9.8.7"]
    );
    // The same request: same method, target and cluster, every other header kept.
    assert_eq!(
        (rewritten.method, rewritten.target),
        (parsed.method, parsed.target)
    );
    let kept = |h: &&routing::head::Header<'_>| {
        ![
            "host",
            "x-forwarded-proto",
            "x-envoy-external-address",
            "x-colyseus-cluster",
        ]
        .iter()
        .chain(&routing::edge::CLIENT_ADDRESS_HEADERS)
        .chain(&UNTRUSTED_FORWARDING_HEADERS)
        .any(|n| h.name.eq_ignore_ascii_case(n))
    };
    let before: Vec<_> = parsed
        .headers
        .iter()
        .filter(kept)
        .map(|h| h.value)
        .collect();
    let after: Vec<_> = rewritten
        .headers
        .iter()
        .filter(kept)
        .map(|h| h.value)
        .collect();
    assert_eq!(before, after);
});
