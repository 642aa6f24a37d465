//! Leased registrations: the Redis keys that let a registration written by
//! `colyseus-envoy register` expire by itself. Pure: key names and payloads only.
//!
//! Colyseus 0.16 registers a process as a member of `colyseus:nodes` with no expiry, so a
//! crashed process stays registered forever. The registrar writes the same member (so every
//! reader of Colyseus's layout sees it), and also:
//! - adds the member to the set [`LEASED_SET`], which says "this member has a lease";
//! - keeps the string key [`lease_key`]`(member)` alive with `SET … PX ttl`, refreshed every
//!   ttl/3; its value is the refresh time in Unix milliseconds (for humans only).
//!
//! A member of [`LEASED_SET`] whose lease key is gone belongs to a registrar that stopped
//! without deregistering (killed, machine lost, partitioned): the sync agent removes it from
//! both sets and announces the removal. Members written by Colyseus itself have no lease
//! and are never expired that way.

/// Set of the `colyseus:nodes` members that hold a lease.
pub const LEASED_SET: &str = "colyseus-envoy:leased";

/// Prefix of the per-member lease keys.
pub const LEASE_KEY_PREFIX: &str = "colyseus-envoy:lease:";

/// The key whose presence keeps `member`'s registration alive.
pub fn lease_key(member: &str) -> String {
    format!("{LEASE_KEY_PREFIX}{member}")
}

/// The discovery payload Colyseus's RedisPresence publishes for `action` (`add` or `remove`):
/// the JSON encoding of the string `"{action},{member}"`, quotes included on the wire.
pub fn announcement(action: &str, member: &str) -> String {
    serde_json::Value::String(format!("{action},{member}")).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{parse_announcement, Announcement};

    #[test]
    fn lease_key_embeds_the_member() {
        assert_eq!(
            lease_key("abc/10.0.0.5:2567"),
            "colyseus-envoy:lease:abc/10.0.0.5:2567"
        );
        assert_eq!(
            lease_key("abc/[::1]:2567"),
            "colyseus-envoy:lease:abc/[::1]:2567"
        );
        assert!(lease_key("x/h:1").starts_with(LEASE_KEY_PREFIX));
    }

    #[test]
    fn announcement_is_a_json_string_as_colyseus_sends() {
        assert_eq!(
            announcement("add", "abc/10.0.0.5:2567"),
            r#""add,abc/10.0.0.5:2567""#
        );
        assert_eq!(
            announcement("remove", "abc/[::1]:2567"),
            r#""remove,abc/[::1]:2567""#
        );
    }

    #[test]
    fn the_agent_reads_back_what_the_registrar_announces() {
        let add = announcement("add", "abc/10.0.0.5:2567");
        let remove = announcement("remove", "abc/10.0.0.5:2567");
        assert!(matches!(
            parse_announcement(add.as_bytes(), 1),
            Ok(Announcement::Add(r)) if r.member() == "abc/10.0.0.5:2567"
        ));
        assert!(matches!(
            parse_announcement(remove.as_bytes(), 1),
            Ok(Announcement::Remove(r)) if r.member() == "abc/10.0.0.5:2567"
        ));
    }
}
