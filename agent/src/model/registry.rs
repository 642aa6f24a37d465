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
#[path = "registry_tests.rs"]
mod tests;
