//! The known processes: one endpoint per processId, each active, draining or dead, and
//! how a full read or an announcement changes them. Pure.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use routing::ProcessId;

use super::{parse_member, Announcement, Endpoint, Registration, Rejection};

/// Where a process is in its life, as far as routing goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessState {
    /// Registered: takes new players (matchmaking) and room connections.
    Active,
    /// Unregistered (graceful shutdown) but possibly still serving rooms: no new
    /// matchmaking, yet room connections still reach it, because Colyseus keeps handing out
    /// seats in (and reconnections to) its remaining rooms until they are disposed.
    Draining { since: Instant },
    /// Registered, but failing its liveness probe (crashed or hung): no clusters at all.
    /// Active again as soon as it answers; forgotten when it unregisters.
    Dead { since: Instant },
}

/// One known process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub endpoint: Endpoint,
    pub state: ProcessState,
}

impl Entry {
    pub fn is_active(&self) -> bool {
        self.state == ProcessState::Active
    }

    pub fn is_draining(&self) -> bool {
        matches!(self.state, ProcessState::Draining { .. })
    }

    /// Whether the process has its own cluster (active or draining; not dead).
    pub fn is_routable(&self) -> bool {
        !matches!(self.state, ProcessState::Dead { .. })
    }
}

/// The known processes: one endpoint per processId, each active or draining.
///
/// A persistent map: the controller publishes a copy per change (O(1)), and a copy
/// compared with its predecessor skips the entries they share.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Registry {
    processes: imbl::OrdMap<ProcessId, Entry>,
}

/// What a full read changed besides the registry itself.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub rejected: Vec<Rejection>,
    /// Processes that were active and are no longer in the set (now draining).
    pub vanished: Vec<Registration>,
}

impl Registry {
    /// Processes known, active or draining.
    pub fn len(&self) -> usize {
        self.processes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.processes.is_empty()
    }

    pub fn active_len(&self) -> usize {
        self.processes.values().filter(|e| e.is_active()).count()
    }

    pub fn get(&self, process_id: &ProcessId) -> Option<&Entry> {
        self.processes.get(process_id)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&ProcessId, &Entry)> {
        self.processes.iter()
    }

    fn registrations_where(&self, pred: impl Fn(&Entry) -> bool) -> Vec<Registration> {
        self.processes
            .iter()
            .filter(|(_, e)| pred(e))
            .map(|(p, e)| Registration {
                process_id: p.clone(),
                endpoint: e.endpoint.clone(),
            })
            .collect()
    }

    /// The active process registered at `endpoint`, if any.
    pub fn active_at(&self, endpoint: &Endpoint) -> Option<&ProcessId> {
        self.processes
            .iter()
            .find(|(_, e)| e.is_active() && e.endpoint == *endpoint)
            .map(|(p, _)| p)
    }

    pub fn active(&self) -> Vec<Registration> {
        self.registrations_where(Entry::is_active)
    }

    pub fn draining(&self) -> Vec<Registration> {
        self.registrations_where(Entry::is_draining)
    }

    /// Processes whose liveness is watched: registered ones (active or dead).
    pub fn registered(&self) -> Vec<Registration> {
        self.registrations_where(|e| !e.is_draining())
    }

    /// Marks a registered process dead. Returns whether it was active.
    pub fn mark_dead(&mut self, process_id: &ProcessId, now: Instant) -> bool {
        match self.processes.get_mut(process_id) {
            Some(e) if e.is_active() => {
                e.state = ProcessState::Dead { since: now };
                true
            }
            _ => false,
        }
    }

    /// Marks a dead process active again. Returns whether it was dead.
    pub fn mark_alive(&mut self, process_id: &ProcessId) -> bool {
        match self.processes.get_mut(process_id) {
            Some(e) if matches!(e.state, ProcessState::Dead { .. }) => {
                e.state = ProcessState::Active;
                true
            }
            _ => false,
        }
    }

    /// Builds the registry from a full read of `colyseus:nodes`; `self` is the registry
    /// before the read.
    ///
    /// - Bad members are rejected.
    /// - A processId listed at several addresses keeps the address `self` routes to now, if
    ///   it is among them (a valid registration is never dropped for a newcomer's
    ///   conflict); otherwise none of them is routed, as there is no telling which is right.
    /// - A process of `self` missing from the set starts (or goes on) draining; the caller
    ///   decides what a vanished process means (removed, or lost by a restarted Redis).
    pub fn from_members<'a>(
        &self,
        members: impl IntoIterator<Item = &'a str>,
        default_port: u16,
        now: Instant,
    ) -> (Registry, Outcome) {
        let mut outcome = Outcome::default();
        let mut seen: BTreeMap<ProcessId, BTreeSet<Endpoint>> = BTreeMap::new();
        for member in members {
            match parse_member(member, default_port) {
                Ok(reg) => {
                    seen.entry(reg.process_id).or_default().insert(reg.endpoint);
                }
                Err(rejection) => outcome.rejected.push(rejection),
            }
        }
        let mut next = Registry::default();
        for (process_id, endpoints) in seen {
            let chosen = if endpoints.len() == 1 {
                endpoints.first().cloned()
            } else {
                let current = self
                    .get(&process_id)
                    .map(|e| &e.endpoint)
                    .filter(|e| endpoints.contains(e));
                outcome.rejected.push(Rejection::Conflict {
                    process_id: process_id.clone(),
                    addresses: join(&endpoints),
                    kept: current.map_or_else(|| "none".to_owned(), ToString::to_string),
                });
                current.cloned()
            };
            if let Some(endpoint) = chosen {
                // Only the liveness probe brings a dead process back.
                let state = match self.get(&process_id) {
                    Some(e) if e.endpoint == endpoint && !e.is_draining() => e.state,
                    _ => ProcessState::Active,
                };
                next.processes.insert(process_id, Entry { endpoint, state });
            }
        }
        for (process_id, entry) in &self.processes {
            if next.processes.contains_key(process_id) {
                continue;
            }
            let since = match entry.state {
                ProcessState::Draining { since } => since,
                // Dead and unregistered: nothing left to route to.
                ProcessState::Dead { .. } => continue,
                ProcessState::Active => {
                    outcome.vanished.push(Registration {
                        process_id: process_id.clone(),
                        endpoint: entry.endpoint.clone(),
                    });
                    now
                }
            };
            let draining = Entry {
                endpoint: entry.endpoint.clone(),
                state: ProcessState::Draining { since },
            };
            next.processes.insert(process_id.clone(), draining);
        }
        (next, outcome)
    }

    /// Applies one announcement. Returns whether the registry changed.
    ///
    /// # Errors
    /// An `add` for a processId known at another address is a [`Rejection::Conflict`]; the
    /// known address is kept.
    pub fn apply(&mut self, announcement: Announcement, now: Instant) -> Result<bool, Rejection> {
        match announcement {
            Announcement::Add(reg) => match self.processes.get_mut(&reg.process_id) {
                Some(current) if current.endpoint == reg.endpoint => {
                    let changed = !current.is_active();
                    current.state = ProcessState::Active;
                    Ok(changed)
                }
                Some(current) => Err(Rejection::Conflict {
                    addresses: format!("{}, {}", current.endpoint, reg.endpoint),
                    kept: current.endpoint.to_string(),
                    process_id: reg.process_id,
                }),
                None => {
                    let entry = Entry {
                        endpoint: reg.endpoint,
                        state: ProcessState::Active,
                    };
                    self.processes.insert(reg.process_id, entry);
                    Ok(true)
                }
            },
            // A remove names the address too: a stale one for another address is ignored.
            Announcement::Remove(reg) => match self.processes.get_mut(&reg.process_id) {
                Some(current) if current.endpoint == reg.endpoint => match current.state {
                    ProcessState::Active => {
                        current.state = ProcessState::Draining { since: now };
                        Ok(true)
                    }
                    ProcessState::Dead { .. } => {
                        self.processes.remove(&reg.process_id);
                        Ok(true)
                    }
                    ProcessState::Draining { .. } => Ok(false),
                },
                _ => Ok(false),
            },
        }
    }

    /// Makes these processes active again (a restarted Redis lost them, yet they live).
    pub fn restore(&mut self, registrations: impl IntoIterator<Item = Registration>) {
        for reg in registrations {
            let entry = Entry {
                endpoint: reg.endpoint,
                state: ProcessState::Active,
            };
            self.processes.insert(reg.process_id, entry);
        }
    }

    /// The same processes with each endpoint replaced by `route(pid, endpoint)`, and those
    /// it returns `None` for left out: what Envoy is given once DNS names are resolved and
    /// every address is checked ([`crate::upstream_policy`]).
    pub fn routed_view(
        &self,
        mut route: impl FnMut(&ProcessId, &Endpoint) -> Option<Endpoint>,
    ) -> Registry {
        // Starts from a copy and changes only the entries routed elsewhere (DNS names) or
        // left out, so the view shares the rest with `self` and with the previous view.
        let mut processes = self.processes.clone();
        for (pid, e) in &self.processes {
            match route(pid, &e.endpoint) {
                Some(endpoint) if endpoint == e.endpoint => {}
                Some(endpoint) => {
                    let state = e.state;
                    processes.insert(pid.clone(), Entry { endpoint, state });
                }
                None => {
                    processes.remove(pid);
                }
            }
        }
        Registry { processes }
    }

    /// What changed from `self` to `next`: each process added or changed with its new
    /// entry, each one removed with `None`. Two versions of one registry share most of
    /// their structure, and the walk skips what they share: O(changes), not O(processes).
    pub fn changes<'a>(
        &'a self,
        next: &'a Registry,
    ) -> impl Iterator<Item = (&'a ProcessId, Option<&'a Entry>)> + 'a {
        self.processes.diff(&next.processes).map(|item| match item {
            imbl::ordmap::DiffItem::Add(pid, e) => (pid, Some(e)),
            imbl::ordmap::DiffItem::Update { new: (pid, e), .. } => (pid, Some(e)),
            imbl::ordmap::DiffItem::Remove(pid, _) => (pid, None),
        })
    }

    /// Forgets a process entirely (it is gone).
    pub fn remove(&mut self, process_id: &ProcessId) {
        self.processes.remove(process_id);
    }

    /// Forgets draining processes older than `max_drain`; returns them.
    pub fn expire_drained(&mut self, now: Instant, max_drain: Duration) -> Vec<Registration> {
        let expired: Vec<Registration> = self
            .processes
            .iter()
            .filter(|(_, e)| match e.state {
                ProcessState::Draining { since } => {
                    now.saturating_duration_since(since) >= max_drain
                }
                ProcessState::Active | ProcessState::Dead { .. } => false,
            })
            .map(|(p, e)| Registration {
                process_id: p.clone(),
                endpoint: e.endpoint.clone(),
            })
            .collect();
        for reg in &expired {
            self.processes.remove(&reg.process_id);
        }
        expired
    }
}

fn join(endpoints: &BTreeSet<Endpoint>) -> String {
    endpoints
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(member: &str) -> Registration {
        parse_member(member, 2567).unwrap()
    }

    fn read(registry: &Registry, members: &[&str], now: Instant) -> (Registry, Outcome) {
        registry.from_members(members.iter().copied(), 2567, now)
    }

    fn pid(s: &str) -> ProcessId {
        ProcessId::parse(s).unwrap()
    }

    #[test]
    fn full_read_skips_garbage_and_keeps_the_rest() {
        let now = Instant::now();
        let (registry, outcome) = read(
            &Registry::default(),
            &["a/127.0.0.1:1", "garbage", "b/127.0.0.1:2", "c/undefined:3"],
            now,
        );
        assert_eq!(registry.active_len(), 2);
        assert_eq!(outcome.rejected.len(), 2);
        assert!(outcome.vanished.is_empty());
    }

    #[test]
    fn conflicting_addresses_keep_the_routed_one() {
        let now = Instant::now();
        let members = ["a/127.0.0.1:1", "a/127.0.0.1:9"];
        let (fresh, outcome) = read(&Registry::default(), &members, now);
        assert!(fresh.is_empty(), "no way to tell which address is right");
        assert_eq!(outcome.rejected[0].reason(), "conflict");

        let (current, _) = read(&Registry::default(), &["a/127.0.0.1:1"], now);
        let (next, outcome) = read(&current, &members, now);
        assert_eq!(next, current);
        assert_eq!(outcome.rejected.len(), 1);
    }

    #[test]
    fn vanished_processes_drain_then_expire() {
        let t0 = Instant::now();
        let (current, _) = read(
            &Registry::default(),
            &["a/127.0.0.1:1", "b/127.0.0.1:2"],
            t0,
        );
        let (next, outcome) = read(&current, &["a/127.0.0.1:1"], t0);
        assert_eq!(outcome.vanished, vec![reg("b/127.0.0.1:2")]);
        assert_eq!(next.active(), vec![reg("a/127.0.0.1:1")]);
        assert_eq!(next.draining(), vec![reg("b/127.0.0.1:2")]);
        // A later read keeps the drain's start and reports nothing new.
        let t1 = t0 + Duration::from_secs(5);
        let (mut later, outcome) = read(&next, &["a/127.0.0.1:1"], t1);
        assert!(outcome.vanished.is_empty());
        assert_eq!(
            later.get(&pid("b")).unwrap().state,
            ProcessState::Draining { since: t0 }
        );
        assert!(later.expire_drained(t1, Duration::from_secs(10)).is_empty());
        assert_eq!(
            later.expire_drained(t0 + Duration::from_secs(10), Duration::from_secs(10)),
            vec![reg("b/127.0.0.1:2")]
        );
        assert_eq!(later.len(), 1);
        // Registered again while draining: active again.
        let (back, _) = read(&next, &["a/127.0.0.1:1", "b/127.0.0.1:2"], t1);
        assert_eq!(back.active_len(), 2);
    }

    #[test]
    fn announcements_update_the_registry() {
        let now = Instant::now();
        let mut registry = Registry::default();
        let add = |m: &str| Announcement::Add(reg(m));
        let remove = |m: &str| Announcement::Remove(reg(m));
        assert_eq!(registry.apply(add("a/127.0.0.1:1"), now), Ok(true));
        assert_eq!(registry.apply(add("a/127.0.0.1:1"), now), Ok(false));
        let conflict = registry.apply(add("a/127.0.0.1:2"), now);
        assert_eq!(conflict.unwrap_err().reason(), "conflict");
        assert_eq!(registry.get(&pid("a")).map(|e| e.endpoint.port), Some(1));
        // A stale remove for another address does not touch the live one.
        assert_eq!(registry.apply(remove("a/127.0.0.1:2"), now), Ok(false));
        assert_eq!(registry.apply(remove("a/127.0.0.1:1"), now), Ok(true));
        assert_eq!(registry.draining(), vec![reg("a/127.0.0.1:1")]);
        assert_eq!(registry.apply(remove("a/127.0.0.1:1"), now), Ok(false));
        // Re-registration ends the drain.
        assert_eq!(registry.apply(add("a/127.0.0.1:1"), now), Ok(true));
        assert_eq!(registry.active_len(), 1);
    }

    #[test]
    fn finds_the_active_process_at_an_address() {
        let now = Instant::now();
        let (current, _) = read(
            &Registry::default(),
            &["a/127.0.0.1:1", "b/127.0.0.1:2"],
            now,
        );
        let (next, _) = read(&current, &["a/127.0.0.1:1"], now);
        assert_eq!(
            next.active_at(&reg("x/127.0.0.1:1").endpoint),
            Some(&pid("a"))
        );
        // b is draining, not active.
        assert_eq!(next.active_at(&reg("x/127.0.0.1:2").endpoint), None);
    }

    #[test]
    fn dead_processes_lose_routing_until_they_answer() {
        let now = Instant::now();
        let (mut registry, _) = read(
            &Registry::default(),
            &["a/127.0.0.1:1", "b/127.0.0.1:2"],
            now,
        );
        assert!(registry.mark_dead(&pid("a"), now));
        assert!(!registry.mark_dead(&pid("a"), now));
        assert!(!registry.get(&pid("a")).unwrap().is_routable());
        assert_eq!(registry.registered().len(), 2);
        // A re-read of the set does not resurrect it.
        let (mut next, _) = read(&registry, &["a/127.0.0.1:1", "b/127.0.0.1:2"], now);
        assert!(!next.get(&pid("a")).unwrap().is_routable());
        assert!(next.mark_alive(&pid("a")));
        assert_eq!(next.active_len(), 2);
        // Dead and then unregistered: forgotten, no drain.
        next.mark_dead(&pid("b"), now);
        let (after, outcome) = read(&next, &["a/127.0.0.1:1"], now);
        assert!(after.get(&pid("b")).is_none());
        assert!(outcome.vanished.is_empty());
        next.apply(Announcement::Remove(reg("b/127.0.0.1:2")), now)
            .unwrap();
        assert!(next.get(&pid("b")).is_none());
    }

    #[test]
    fn restore_reactivates_lost_processes() {
        let now = Instant::now();
        let (current, _) = read(
            &Registry::default(),
            &["a/127.0.0.1:1", "b/127.0.0.1:2"],
            now,
        );
        let (mut after_restart, outcome) = read(&current, &["a/127.0.0.1:1"], now);
        after_restart.restore(outcome.vanished);
        assert_eq!(after_restart, current);
    }
}
