use super::*;
use crate::model::{parse_announcement, Announcement};

const MEMBER: &str = "abc/10.0.0.5:2567";

fn first_args(write: &Write) -> Vec<(String, String)> {
    write
        .commands
        .iter()
        .map(|c| (c.name.to_ascii_lowercase(), c.args[0].clone()))
        .collect()
}

#[test]
fn lease_key_embeds_the_member() {
    assert_eq!(lease_key(MEMBER), "colyseus-envoy:lease:abc/10.0.0.5:2567");
    assert_eq!(
        lease_key("abc/[::1]:2567"),
        "colyseus-envoy:lease:abc/[::1]:2567"
    );
}

#[test]
fn announcement_is_a_json_string_as_colyseus_sends() {
    assert_eq!(announcement("add", MEMBER), r#""add,abc/10.0.0.5:2567""#);
    assert_eq!(
        announcement("remove", "abc/[::1]:2567"),
        r#""remove,abc/[::1]:2567""#
    );
}

#[test]
fn the_agent_reads_back_what_the_registrar_announces() {
    let add = announcement("add", MEMBER);
    let remove = announcement("remove", MEMBER);
    assert!(matches!(
        parse_announcement(add.as_bytes(), 1),
        Ok(Announcement::Add(r)) if r.member() == MEMBER
    ));
    assert!(matches!(
        parse_announcement(remove.as_bytes(), 1),
        Ok(Announcement::Remove(r)) if r.member() == MEMBER
    ));
}

#[test]
fn the_registrar_writes() {
    let p = Presence::default();
    let register = p.register(MEMBER, 1700, 15000);
    assert!(register.atomic);
    assert_eq!(
        register.commands[2].args,
        [
            lease_key(MEMBER),
            "1700".into(),
            "PX".into(),
            "15000".into()
        ]
    );
    assert_eq!(
        first_args(&register),
        [
            ("sadd".into(), NODES_KEY.into()),
            ("sadd".into(), LEASED_SET.into()),
            ("set".into(), lease_key(MEMBER)),
            ("publish".into(), DISCOVERY_CHANNEL.into()),
        ]
    );
    let heartbeat = p.heartbeat(MEMBER, 1, 2);
    let replies: Vec<bool> = heartbeat.commands.iter().map(|c| c.reply).collect();
    assert_eq!(
        replies,
        [false, false, true],
        "only the nodes-set SADD answers"
    );
    assert_eq!(heartbeat.commands[2].args, [NODES_KEY, MEMBER]);
    assert_eq!(
        p.deregister(MEMBER).names(),
        ["srem", "srem", "del", "publish"]
    );
    assert_eq!(
        p.deregister(MEMBER).commands[3].args[1],
        announcement("remove", MEMBER)
    );
}

#[test]
fn the_agent_writes() {
    let p = Presence {
        nodes_key: "n".into(),
        discovery_channel: "d".into(),
    };
    let expire = p.expire_lease(MEMBER);
    assert!(expire.atomic);
    assert_eq!(
        first_args(&expire),
        [
            ("srem".into(), "n".into()),
            ("srem".into(), LEASED_SET.into()),
            ("publish".into(), "d".into()),
        ]
    );
    let spellings = vec!["abc/10.0.0.5".to_owned(), MEMBER.to_owned()];
    let evict = p.evict(&spellings, "abc", &["r1".into(), "r2".into()], MEMBER);
    assert_eq!(evict.commands[0].args, ["n", "abc/10.0.0.5", MEMBER]);
    assert_eq!(evict.commands[1].args, [ROOM_COUNTS, "abc"]);
    assert_eq!(evict.commands[2].args, [ROOM_LISTINGS, "r1", "r2"]);
    assert_eq!(evict.names(), ["srem", "hdel", "hdel", "publish"]);
    // No listed room: no HDEL of the listings (HDEL needs a field).
    assert_eq!(
        p.evict(&spellings, "abc", &[], MEMBER).names(),
        ["srem", "hdel", "publish"]
    );
    let restore = p.restore(&[MEMBER.to_owned(), "x/h:1".to_owned()]);
    assert!(!restore.atomic);
    assert_eq!(restore.names(), ["sadd", "publish", "sadd", "publish"]);
    assert_eq!(
        restore.commands[3].args,
        ["d", &announcement("add", "x/h:1")]
    );
    let ping = pings(&[("abc".into(), "colyseus-envoy-1".into())]);
    assert_eq!(
        ping.commands[0].args,
        ["p:abc", r#"["healthcheck","colyseus-envoy-1",[]]"#]
    );
    assert!(ping.commands[0].reply);
    assert!(IPC_REPLY_PATTERN.starts_with(IPC_REPLY_PREFIX));
    assert_eq!(
        IPC_REPLY_PATTERN,
        format!("{IPC_REPLY_PREFIX}{IPC_PREFIX}*")
    );
}

// === the npm helper's copy ===

/// The npm helper writes the same registration from inside the game server; its copy of
/// the keys and of the three writes is read from its source and compared with ours.
const NPM_HELPER: &str = include_str!("../../npm/colyseus-envoy-register/index.js");

/// The value of `const NAME = '...';` in the helper.
fn js_const(name: &str) -> String {
    let start = format!("const {name} = '");
    let from = NPM_HELPER.find(&start).map(|i| i + start.len());
    let value = from.and_then(|i| NPM_HELPER[i..].split_once('\'').map(|(v, _)| v));
    value
        .unwrap_or_else(|| panic!("npm helper has no `const {name} = '...'`"))
        .to_owned()
}

/// The body of the helper's `const {name} = ...` function, up to the next `};` or `));`.
fn js_function(name: &str) -> &'static str {
    let start = format!("const {name} = ");
    let from = NPM_HELPER
        .find(&start)
        .unwrap_or_else(|| panic!("npm helper has no `const {name} = `"));
    let rest = &NPM_HELPER[from..];
    let end = ["};\n", "));\n"]
        .iter()
        .filter_map(|e| rest.find(e))
        .min()
        .unwrap();
    &rest[..end]
}

/// The Redis calls in `body`, in order, each with its first argument resolved to the
/// key or channel it names.
fn js_calls(body: &str) -> Vec<(String, String)> {
    let resolve = |arg: &str| match arg.trim() {
        "nodesKey" => js_const("NODES_KEY"),
        "discoveryChannel" => js_const("DISCOVERY_CHANNEL"),
        "LEASED_SET" => js_const("LEASED_SET"),
        "lease" => format!("{}{MEMBER}", js_const("LEASE_KEY_PREFIX")),
        other => panic!("npm helper call on an unknown key {other:?}"),
    };
    let mut calls = Vec::new();
    for (i, _) in body.match_indices('(') {
        let ident: String = body[..i]
            .chars()
            .rev()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        let first_arg = body[i + 1..].split([',', ')']).next().unwrap_or("");
        match ident.as_str() {
            "sadd" | "srem" | "set" | "del" | "publish" => {
                calls.push((ident.clone(), resolve(first_arg)));
            }
            "setLease" => calls.push(("set".into(), resolve("lease"))),
            _ => {}
        }
    }
    calls
}

#[test]
fn the_npm_helper_uses_the_same_keys() {
    assert_eq!(js_const("NODES_KEY"), NODES_KEY);
    assert_eq!(js_const("DISCOVERY_CHANNEL"), DISCOVERY_CHANNEL);
    assert_eq!(js_const("LEASED_SET"), LEASED_SET);
    assert_eq!(js_const("LEASE_KEY_PREFIX"), LEASE_KEY_PREFIX);
    assert!(NPM_HELPER.contains("JSON.stringify(`${action},${member}`)"));
    assert!(NPM_HELPER.contains("'PX', leaseTtlMs"));
}

#[test]
fn the_npm_helper_writes_what_the_registrar_writes() {
    let p = Presence::default();
    assert_eq!(
        js_calls(js_function("register")),
        first_args(&p.register(MEMBER, 1, 2))
    );
    let mut heartbeat = first_args(&p.heartbeat(MEMBER, 1, 2));
    heartbeat.extend(first_args(&p.announce_add(MEMBER)));
    assert_eq!(js_calls(js_function("heartbeat")), heartbeat);
    assert_eq!(
        js_calls(js_function("deregister")),
        first_args(&p.deregister(MEMBER))
    );
}
