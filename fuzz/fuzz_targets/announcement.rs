//! `parse_announcement` on any discovery payload: an accepted `add`/`remove` names exactly
//! the member `parse_member` reads from it, re-encoding it (JSON string or bare) parses back
//! the same, and a bare payload and its JSON encoding are read alike.
#![no_main]

use colyseus_envoy_agent::model::{parse_announcement, parse_member, Announcement};
use libfuzzer_sys::fuzz_target;

const DEFAULT_PORT: u16 = 2567;

fuzz_target!(|data: &[u8]| {
    let result = parse_announcement(data, DEFAULT_PORT);
    let text = std::str::from_utf8(data).ok();
    match &result {
        Ok(announcement) => {
            let text = text.unwrap();
            let decoded: String = if text.starts_with('"') {
                serde_json::from_str(text).unwrap()
            } else {
                text.to_owned()
            };
            let (action, member) = decoded.split_once(',').unwrap();
            let (expected_action, reg) = match announcement {
                Announcement::Add(reg) => ("add", reg),
                Announcement::Remove(reg) => ("remove", reg),
            };
            assert_eq!(action, expected_action);
            assert_eq!(parse_member(member, DEFAULT_PORT).as_ref(), Ok(reg));
            // What RedisPresence would publish for it, JSON-encoded and bare.
            let bare = format!("{action},{}", reg.member());
            let json = serde_json::to_string(&bare).unwrap();
            assert_eq!(
                parse_announcement(json.as_bytes(), 1).as_ref(),
                Ok(announcement)
            );
            assert_eq!(
                parse_announcement(bare.as_bytes(), 1).as_ref(),
                Ok(announcement)
            );
        }
        Err(rejection) => assert_ne!(rejection.reason(), "conflict"),
    }
    // A bare payload reads like its JSON encoding.
    if let Some(text) = text.filter(|t| !t.starts_with('"')) {
        let json = serde_json::to_string(text).unwrap();
        let encoded = parse_announcement(json.as_bytes(), DEFAULT_PORT);
        match (&result, &encoded) {
            (Ok(a), Ok(b)) => assert_eq!(a, b),
            (Err(a), Err(b)) => assert_eq!(a.reason(), b.reason()),
            _ => panic!("bare {result:?} but JSON-encoded {encoded:?}"),
        }
    }
});
