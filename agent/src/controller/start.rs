//! The controller's first state: the persisted one, if it may be trusted.

use std::time::Instant;

use tracing::warn;

use crate::controller::ControllerConfig;
use crate::model::{parse_member, Announcement, Registry};
use crate::state::{self, RedisOrigin, Restore, SyncedState};
use crate::upstreams::Upstreams;

/// What the controller starts from.
pub(super) struct Initial {
    pub registry: Registry,
    /// `run_id` of the Redis the registry was synced with.
    pub run_id: Option<String>,
    /// The state file was another Redis's: Envoy's config is that fleet's, so it is
    /// replaced at start instead of kept until this Redis answers.
    pub replaces_other_fleet: bool,
}

/// Reads the state file (a bad one is ignored, loudly) and keeps it only if it came from
/// the Redis followed now.
pub(super) fn initial(
    config: &ControllerConfig,
    origin: &RedisOrigin,
    upstreams: &Upstreams,
    now: Instant,
) -> Initial {
    let persisted = config
        .state_file
        .as_deref()
        .map(state::load)
        .transpose()
        .unwrap_or_else(|e| {
            warn!(error = %e, "Ignoring the agent state file; a Redis restart before the first sync may lose registrations.");
            None
        })
        .unwrap_or_default();
    let (persisted, replaces_other_fleet) = match state::restore(&persisted, origin) {
        Restore::Yes => (persisted, false),
        Restore::OtherRedis(from) => {
            warn!(state_from = %from, redis = %origin, members = persisted.members.len(), "The agent state file was written from another Redis; not restoring it, and unrouting that fleet until this Redis answers.");
            (SyncedState::default(), true)
        }
        Restore::UnknownOrigin => {
            warn!(redis = %origin, members = persisted.members.len(), "The agent state file does not say which Redis it came from (written by an older agent); not restoring it.");
            (SyncedState::default(), false)
        }
    };
    Initial {
        registry: registry_of(&persisted, config.default_port, upstreams, now),
        run_id: persisted.redis_run_id,
        replaces_other_fleet,
    }
}

/// The persisted members as a registry; drains in progress when the agent stopped go on
/// (from now: their start is not kept). An address refused now stays out, whatever an
/// older agent saved.
fn registry_of(
    persisted: &SyncedState,
    default_port: u16,
    upstreams: &Upstreams,
    now: Instant,
) -> Registry {
    let admitted =
        |m: &&String| parse_member(m, default_port).is_ok_and(|r| upstreams.admit(&r).is_ok());
    let read = |members: &[String]| {
        Registry::default()
            .from_members(
                members.iter().filter(admitted).map(String::as_str),
                default_port,
                now,
            )
            .0
    };
    let mut registry = read(&persisted.members);
    for reg in read(&persisted.draining).active() {
        let _ = registry.apply(Announcement::Add(reg.clone()), now);
        let _ = registry.apply(Announcement::Remove(reg), now);
    }
    registry
}
