//! Every Redis key, channel and payload the agent shares with Colyseus and with the
//! registrars, and every write it sends: one place, so the readers, the writers and the npm
//! helper (`npm/colyseus-envoy-register`, pinned by a fixture test below) cannot drift.
//! Pure: writes are described as [`Write`] values; `redis_target::Batch` sends them.
//!
//! # Colyseus's layout (0.15-0.17 RedisPresence / RedisDriver)
//! - [`NODES_KEY`]: set of `"{processId}/{host}:{port}"` members (Colyseus 0.16 registers
//!   each process once, with no expiry).
//! - [`DISCOVERY_CHANNEL`]: pub/sub channel of [`announcement`]s, `add` and `remove`.
//! - [`ROOM_COUNTS`]: hash processId -> `"{rooms},{ccu}"`, the load each process reports.
//! - [`ROOM_LISTINGS`]: RedisDriver's hash roomId -> the room as JSON.
//! - [`process_channel`]: each process's IPC channel; the agent's health-check pings go
//!   there and are answered on `ipc:{requestId}`.
//!
//! # Leases (the registrars' own keys)
//! Colyseus 0.16 registers a process with no expiry, so a crashed process stays registered
//! forever. A registrar (`colyseus-envoy register`, or the npm helper) writes the same
//! member (so every reader of Colyseus's layout sees it), and also:
//! - adds the member to the set [`LEASED_SET`], which says "this member has a lease";
//! - keeps the string key [`lease_key`]`(member)` alive with `SET … PX ttl`, refreshed every
//!   ttl/3; its value is the refresh time in Unix milliseconds (for humans only).
//!
//! A member of [`LEASED_SET`] whose lease key is gone belongs to a registrar that stopped
//! without deregistering: the sync agent removes it from both sets and announces the
//! removal ([`Presence::expire_lease`]). Members written by Colyseus itself have no lease and are
//! never expired that way.

/// Colyseus's set of registrations (the default of `--nodes-key`).
pub const NODES_KEY: &str = "colyseus:nodes";
/// Colyseus's channel of registration announcements (the default of
/// `--discovery-channel`).
pub const DISCOVERY_CHANNEL: &str = "colyseus:nodes:discovery";
/// Colyseus's per-process load hash (processId -> `"{rooms},{ccu}"`).
pub const ROOM_COUNTS: &str = "roomcount";
/// RedisDriver's room listing: hash of roomId -> the room as JSON.
pub const ROOM_LISTINGS: &str = "roomcaches";
/// Set of the registration-set members that hold a lease.
pub const LEASED_SET: &str = "colyseus-envoy:leased";
/// Prefix of the per-member lease keys.
pub const LEASE_KEY_PREFIX: &str = "colyseus-envoy:lease:";
/// Prefix of the request ids of this agent's liveness pings; Colyseus answers each on
/// `ipc:{requestId}`, and the agent subscribes to [`IPC_REPLY_PATTERN`].
pub const IPC_PREFIX: &str = "colyseus-envoy-";
/// Channel prefix of IPC replies.
pub const IPC_REPLY_PREFIX: &str = "ipc:";
/// What the agent subscribes to for its pings' replies.
pub const IPC_REPLY_PATTERN: &str = "ipc:colyseus-envoy-*";

/// The key whose presence keeps `member`'s registration alive.
pub fn lease_key(member: &str) -> String {
    format!("{LEASE_KEY_PREFIX}{member}")
}

/// A process's IPC channel (`p:{processId}`).
pub fn process_channel(process_id: &str) -> String {
    format!("p:{process_id}")
}

/// The discovery payload Colyseus's RedisPresence publishes for `action` (`add` or
/// `remove`): the JSON encoding of the string `"{action},{member}"`, quotes included.
pub fn announcement(action: &str, member: &str) -> String {
    serde_json::Value::String(format!("{action},{member}")).to_string()
}

/// Colyseus's IPC health check (`["healthcheck", requestId, []]`, Colyseus 0.15.16+).
pub fn health_check(request_id: &str) -> String {
    serde_json::json!(["healthcheck", request_id, []]).to_string()
}

/// The names of the registration set and channel, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presence {
    pub nodes_key: String,
    pub discovery_channel: String,
}

impl Default for Presence {
    fn default() -> Self {
        Self {
            nodes_key: NODES_KEY.to_owned(),
            discovery_channel: DISCOVERY_CHANNEL.to_owned(),
        }
    }
}

/// One Redis command of a [`Write`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub name: &'static str,
    pub args: Vec<String>,
    /// Whether its reply is part of the write's result (else ignored).
    pub reply: bool,
}

/// Commands sent together: one MULTI when `atomic` (except on a cluster, see
/// `redis_target::Batch`), else a plain pipeline.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Write {
    pub atomic: bool,
    pub commands: Vec<Command>,
}

impl Write {
    fn atomic() -> Self {
        Self {
            atomic: true,
            commands: Vec::new(),
        }
    }

    fn cmd(self, name: &'static str, args: &[&str]) -> Self {
        self.cmd_owned(name, args.iter().map(|a| (*a).to_owned()).collect())
    }

    fn cmd_owned(mut self, name: &'static str, args: Vec<String>) -> Self {
        self.commands.push(Command {
            name,
            args,
            reply: false,
        });
        self
    }

    /// The last command's reply is kept.
    fn replied(mut self) -> Self {
        if let Some(last) = self.commands.last_mut() {
            last.reply = true;
        }
        self
    }

    /// The command names in order, lowercase (to compare with other writers).
    pub fn names(&self) -> Vec<String> {
        self.commands
            .iter()
            .map(|c| c.name.to_ascii_lowercase())
            .collect()
    }
}

impl Presence {
    /// A registrar registers: both sets, the lease, the `add` announcement.
    pub fn register(&self, member: &str, now_ms: u64, ttl_ms: u64) -> Write {
        Write::atomic()
            .cmd("SADD", &[&self.nodes_key, member])
            .cmd("SADD", &[LEASED_SET, member])
            .cmd_owned("SET", lease(member, now_ms, ttl_ms))
            .cmd(
                "PUBLISH",
                &[&self.discovery_channel, &announcement("add", member)],
            )
    }

    /// A registrar's heartbeat: the lease refreshed, both sets re-added. Its one reply is
    /// the nodes-set SADD's (1: the member was missing, and [`Self::announce_add`] follows).
    pub fn heartbeat(&self, member: &str, now_ms: u64, ttl_ms: u64) -> Write {
        Write::atomic()
            .cmd_owned("SET", lease(member, now_ms, ttl_ms))
            .cmd("SADD", &[LEASED_SET, member])
            .cmd("SADD", &[&self.nodes_key, member])
            .replied()
    }

    /// The `add` announcement alone (after a heartbeat that re-added the member).
    pub fn announce_add(&self, member: &str) -> Write {
        Write::default().cmd(
            "PUBLISH",
            &[&self.discovery_channel, &announcement("add", member)],
        )
    }

    /// A registrar deregisters: out of both sets, the lease dropped, `remove` announced.
    pub fn deregister(&self, member: &str) -> Write {
        Write::atomic()
            .cmd("SREM", &[&self.nodes_key, member])
            .cmd("SREM", &[LEASED_SET, member])
            .cmd("DEL", &[&lease_key(member)])
            .cmd(
                "PUBLISH",
                &[&self.discovery_channel, &announcement("remove", member)],
            )
    }

    /// The agent unregisters a member whose lease expired, as its registrar would have.
    /// Idempotent: several agents may do it at once.
    pub fn expire_lease(&self, member: &str) -> Write {
        Write::atomic()
            .cmd("SREM", &[&self.nodes_key, member])
            .cmd("SREM", &[LEASED_SET, member])
            .cmd(
                "PUBLISH",
                &[&self.discovery_channel, &announcement("remove", member)],
            )
    }

    /// The agent removes a dead process's presence the way Colyseus cleans up after one:
    /// every spelling of its member out of the set, its load and its RedisDriver `rooms`
    /// out of their hashes, and a `remove` announcement of `member`.
    pub fn evict(
        &self,
        spellings: &[String],
        process_id: &str,
        rooms: &[String],
        member: &str,
    ) -> Write {
        let mut srem = vec![self.nodes_key.as_str()];
        srem.extend(spellings.iter().map(String::as_str));
        let mut write = Write::atomic()
            .cmd("SREM", &srem)
            .cmd("HDEL", &[ROOM_COUNTS, process_id]);
        if !rooms.is_empty() {
            let mut hdel = vec![ROOM_LISTINGS];
            hdel.extend(rooms.iter().map(String::as_str));
            write = write.cmd("HDEL", &hdel);
        }
        write.cmd(
            "PUBLISH",
            &[&self.discovery_channel, &announcement("remove", member)],
        )
    }

    /// The agent writes back registrations a restarted Redis lost, announcing each as
    /// Colyseus does, so other agents on the same Redis converge on the same state.
    pub fn restore(&self, members: &[String]) -> Write {
        members.iter().fold(Write::default(), |w, member| {
            w.cmd("SADD", &[&self.nodes_key, member]).cmd(
                "PUBLISH",
                &[&self.discovery_channel, &announcement("add", member)],
            )
        })
    }
}

/// Liveness pings, one per `(processId, requestId)`; the replies are receiver counts.
pub fn pings(pings: &[(String, String)]) -> Write {
    pings.iter().fold(Write::default(), |w, (pid, id)| {
        w.cmd("PUBLISH", &[&process_channel(pid), &health_check(id)])
            .replied()
    })
}

/// `SET {lease_key} {now_ms} PX {ttl_ms}`'s arguments.
fn lease(member: &str, now_ms: u64, ttl_ms: u64) -> Vec<String> {
    vec![
        lease_key(member),
        now_ms.to_string(),
        "PX".to_owned(),
        ttl_ms.to_string(),
    ]
}

#[cfg(test)]
#[path = "layout_tests.rs"]
mod tests;
