//! `parse_member` on any `colyseus:nodes` member: an accepted registration is routable (valid
//! processId, non-zero port, no unspecified address, a well-formed lowercase DNS name) and
//! its `member()` string parses back to an equal registration.
#![no_main]

use colyseus_envoy_agent::model::{parse_member, Host, Rejection};
use libfuzzer_sys::fuzz_target;
use routing::id::check_id;

/// Default ports tried. Not 0: the agent's `--default-port` accepts 0 and then a member
/// without a port becomes an endpoint on port 0 (reported; not the parser's call).
const DEFAULT_PORTS: [u16; 3] = [2567, 1, 65535];

fuzz_target!(|data: &[u8]| {
    let Ok(member) = std::str::from_utf8(data) else {
        return;
    };
    for default_port in DEFAULT_PORTS {
        check(member, default_port);
    }
});

fn check(member: &str, default_port: u16) {
    match parse_member(member, default_port) {
        Ok(reg) => {
            let (pid, address) = member.split_once('/').unwrap();
            assert_eq!(reg.process_id.as_str(), pid);
            assert_eq!(check_id(pid), Ok(()));
            assert_ne!(reg.endpoint.port, 0);
            match &reg.endpoint.host {
                Host::Ip(ip) => assert!(!ip.is_unspecified(), "{member:?}"),
                Host::Name(name) => {
                    assert!(!name.is_empty() && name.len() <= 253, "{member:?}");
                    assert_eq!(*name, name.to_ascii_lowercase());
                    assert!(!name.contains([':', '/', '[', ']', ' ']), "{member:?}");
                    assert!(name.parse::<std::net::IpAddr>().is_err(), "{member:?}");
                }
            }
            if !address.contains(':') || address.ends_with(']') {
                assert_eq!(reg.endpoint.port, default_port, "{member:?}");
            }
            // Round trip: the member Colyseus would write for it names the same process at
            // the same address, whatever the default port.
            let written = reg.member();
            assert_eq!(
                parse_member(&written, default_port).as_ref(),
                Ok(&reg),
                "{written:?}"
            );
            assert_eq!(parse_member(&written, 9).as_ref(), Ok(&reg), "{written:?}");
            assert_eq!(reg.member(), parse_member(&written, 9).unwrap().member());
        }
        Err(rejection) => {
            let (Rejection::BadMember { member: m }
            | Rejection::BadProcessId { member: m, .. }
            | Rejection::BadAddress { member: m, .. }) = &rejection
            else {
                panic!("parse_member rejected {member:?} with {rejection:?}");
            };
            assert_eq!(m, member);
            match rejection {
                Rejection::BadMember { .. } => assert!(!member.contains('/')),
                Rejection::BadProcessId { error, .. } => {
                    let pid = member.split_once('/').unwrap().0;
                    assert_eq!(check_id(pid), Err(error));
                }
                _ => {}
            }
        }
    }
}
