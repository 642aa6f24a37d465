//! What the sync loop shares with the API: readiness, metrics, the routed processes and
//! the room index.

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};

use routing::wire::RoomLocation;
use routing::{ClusterNames, ProcessId};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::advertise::Advertised;
use crate::balance::Weights;
use crate::metrics::Metrics;
use crate::model::Registry;
use crate::rooms::{RoomFeed, RoomIndex, RoomRejection};
use crate::sources::RoomFetcher;

pub mod deltas;
mod gated;
pub mod rows;
pub use gated::Resolved;
use rows::{ProcessRows, Rows};

/// One routed process, as the API shows it (the wire row of `/processes`).
pub use routing::wire::ProcessRow as ProcessView;

/// Shared between the sync loop and the API.
#[derive(Debug)]
pub struct Status {
    pub metrics: Metrics,
    names: ClusterNames,
    /// Set once the first full sync has been written to Envoy's config.
    ready: AtomicBool,
    processes: RwLock<ProcessRows>,
    /// Rooms from the MongoDB listings; `None` without a room-listing source.
    rooms: Option<RwLock<RoomIndex>>,
    /// Source keys of the listings rejected since the last full read: each bad listing is
    /// logged and counted once, not at every poll or reload.
    known_rejections: Mutex<HashSet<String>>,
    /// Read-through for rooms the index lacks, if the room source has one.
    fetcher: Option<RoomFetcher>,
    /// Bounds the read-throughs in flight: lookups of unknown rooms come from the public
    /// listener, and must not become a flood of database reads.
    fetch_slots: tokio::sync::Semaphore,
    /// What `/processes` and room lookups may name (new clusters wait for Envoy), and the
    /// version `/processes?after=` long-polls wait on.
    pub advertised: Advertised,
    /// Registrations refused right now, with their reasons (`/rejected`).
    pub rejected: crate::rejected::Rejected,
    /// The xDS server, when the agent serves one (metrics, connected Envoys, ACK waits).
    pub xds: std::sync::OnceLock<crate::sinks::xds::server::Ads>,
    /// What the ACK gate held back ([`crate::ack_gate`]).
    pub ack_gate: crate::ack_gate::GateMetrics,
    /// The recent `/processes` sets, to answer callers with a delta ([`deltas`]).
    pub deltas: deltas::Deltas,
    /// Longest a room lookup waits for a new process's cluster (warm-up and ACK together).
    lookup_wait: std::time::Duration,
}

/// Read-throughs in flight at most; a lookup finding none free answers from the index.
const FETCH_SLOTS: usize = 8;
/// Bound on one read-through.
const FETCH_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(500);
/// Default of [`Status::with_lookup_wait`]: below the filter's default lookup timeout
/// (500 ms), so the filter gets an answer rather than a timeout.
pub const LOOKUP_WAIT: std::time::Duration = std::time::Duration::from_millis(300);

impl Status {
    pub fn new(names: ClusterNames) -> Self {
        Self {
            metrics: Metrics::default(),
            names,
            ready: AtomicBool::new(false),
            processes: RwLock::new(ProcessRows::default()),
            rooms: None,
            known_rejections: Mutex::new(HashSet::new()),
            fetcher: None,
            fetch_slots: tokio::sync::Semaphore::new(FETCH_SLOTS),
            advertised: Advertised::new(false),
            rejected: crate::rejected::Rejected::default(),
            xds: std::sync::OnceLock::new(),
            ack_gate: crate::ack_gate::GateMetrics::default(),
            deltas: deltas::Deltas::default(),
            lookup_wait: LOOKUP_WAIT,
        }
    }

    /// Attaches the xDS server's state (once; later calls are ignored).
    pub fn set_xds(&self, ads: crate::sinks::xds::server::Ads) {
        let _ = self.xds.set(ads);
    }

    /// New processes are advertised only once Envoy routes to their cluster (a
    /// [`crate::warmup::follow`] task must then confirm them).
    #[must_use]
    pub fn with_warmup_gate(mut self) -> Self {
        self.advertised = Advertised::new(true);
        self
    }

    /// Room lookups wait at most `wait` for a new process's cluster (`sync --lookup-wait`).
    #[must_use]
    pub fn with_lookup_wait(mut self, wait: std::time::Duration) -> Self {
        self.lookup_wait = wait;
        self
    }

    /// Rooms the index lacks are read from their source on lookup (see [`Self::resolve`]).
    #[must_use]
    pub fn with_fetcher(mut self, fetcher: RoomFetcher) -> Self {
        let _ = self.metrics.room_source.set(fetcher.source());
        self.fetcher = Some(fetcher);
        self
    }

    /// With a room index (a room-listing source feeds it through [`follow_rooms`]).
    #[must_use]
    pub fn with_rooms(mut self) -> Self {
        self.rooms = Some(RwLock::new(RoomIndex::default()));
        self
    }

    /// Shards of the all-processes cluster the sinks render (`sync --all-shards`).
    pub fn all_shards(&self) -> u16 {
        self.names.all_shards()
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Relaxed)
    }

    /// Records what Envoy now routes to (and the matchmaking weights written with it), and
    /// marks the agent ready. Rooms of processes that just left the registry leave the index.
    pub fn set_registry(&self, registry: &Registry, weights: &Weights) {
        if let Ok(mut p) = self.processes.write() {
            let changed = p.update(&self.names, registry, weights);
            self.advertised.note_routable(
                &changed.started,
                &changed.stopped,
                std::time::Instant::now(),
            );
            if !changed.removed.is_empty() {
                if let Some(Ok(mut rooms)) = self.rooms.as_ref().map(RwLock::write) {
                    // Only processes that left the registry lose their rooms: one never seen
                    // keeps them, as its listing may have arrived before its registration.
                    let gone: BTreeSet<&str> = changed.removed.iter().map(String::as_str).collect();
                    rooms.retain_processes(|pid| !gone.contains(pid.as_str()));
                    self.metrics.rooms.store(rooms.len() as u64, Relaxed);
                }
            }
        }
        self.republish();
        self.ready.store(true, Relaxed);
    }

    /// Recomputes the advertised rows (after a registry change or a warm-up confirmation);
    /// a difference bumps the version and answers the held long-polls.
    pub fn republish(&self) {
        let rows = self
            .processes
            .read()
            .map(|p| p.rows().clone())
            .unwrap_or_default();
        self.advertised.publish(rows);
    }

    /// The process clusters of the processes warming now, with their processIds.
    pub fn warming_clusters(&self) -> Vec<(String, String)> {
        self.advertised
            .warming()
            .into_iter()
            .map(|pid| {
                let cluster = ProcessId::parse(&pid)
                    .map(|p| self.names.process(&p))
                    .unwrap_or_default();
                (pid, cluster)
            })
            .collect()
    }

    /// The advertised processes (warming ones are left out, see [`Advertised`]), with their
    /// rooms and clients.
    pub fn processes(&self) -> Vec<ProcessView> {
        self.rows_with_rooms(&self.advertised.current().1)
    }

    /// `rows` as a whole `/processes` answer shows them: with each process's rooms and
    /// clients when there is a room index.
    pub fn rows_with_rooms(&self, rows: &Rows) -> Vec<ProcessView> {
        let mut views: Vec<ProcessView> = rows.values().cloned().collect();
        if let Some(Ok(rooms)) = self.rooms.as_ref().map(RwLock::read) {
            for v in &mut views {
                let load = ProcessId::parse(&v.process_id)
                    .ok()
                    .and_then(|pid| rooms.load(&pid))
                    .unwrap_or_default();
                v.rooms = Some(load.rooms);
                v.ccu = Some(load.ccu);
            }
        }
        views
    }

    /// The routable row of `process_id`, if there is one.
    fn routable(&self, process_id: &str) -> Option<ProcessView> {
        let processes = self.processes.read().ok()?;
        let view = processes.rows().get(process_id)?;
        view.state.is_routable().then(|| view.clone())
    }

    /// Where `room_id` is, if it is listed and its process is routable (active or draining).
    pub fn room(&self, room_id: &str) -> Option<RoomLocation> {
        // Never hold both locks: `set_registry` takes them in the other order.
        let info = self.rooms.as_ref()?.read().ok()?.lookup(room_id)?.clone();
        let view = self.routable(info.process_id.as_str())?;
        Some(RoomLocation {
            room_id: room_id.to_owned(),
            process_id: view.process_id,
            cluster: view.cluster,
            name: info.name.clone(),
            clients: info.clients,
            max_clients: info.max_clients,
            locked: info.locked,
            listed: true,
        })
    }

    /// Where a room connection goes: the listed room's process, else the process the client
    /// named if it is routable (see [`RoomLocation`]).
    pub fn locate(&self, room_id: &str, named: Option<&str>) -> Option<RoomLocation> {
        self.room(room_id).or_else(|| {
            let view = self.routable(named?)?;
            Some(RoomLocation {
                room_id: room_id.to_owned(),
                process_id: view.process_id,
                cluster: view.cluster,
                name: String::new(),
                clients: 0,
                max_clients: None,
                locked: false,
                listed: false,
            })
        })
    }

    /// [`Self::locate`], reading a room from its source when neither the index nor a live
    /// named process answers: a room listed a moment ago (before the next periodic read, or
    /// before its change event arrived) is then routed by roomId.
    ///
    /// The index answers first (it is the authority), then the live process the path
    /// names, at once: a process that registered a moment ago holds rooms no listing shows
    /// yet, and a read-through would only delay the player. Only a path naming no live
    /// process reads through. An answer naming a process whose cluster Envoy is still
    /// warming waits for it (bounded), so it never becomes a 503 for the player.
    pub async fn resolve(&self, room_id: &str, named: Option<&str>) -> Option<RoomLocation> {
        let mut location = self.locate(room_id, named);
        if location.is_none() {
            if let Some(fetcher) = &self.fetcher {
                if routing::id::check_id(room_id).is_ok() {
                    self.read_through(fetcher, room_id).await;
                }
            }
            location = self.locate(room_id, named);
        }
        let location = location?;
        if self.advertised.is_warming(&location.process_id) {
            self.advertised
                .wait_warm(&location.process_id, self.lookup_wait)
                .await;
        }
        Some(location)
    }

    /// Deletes a dead process's room listings from their source (with
    /// `--evict-dead-from-presence`), so Colyseus's matchmaking stops offering its rooms.
    pub async fn remove_listings_of(&self, process_id: &str) {
        let Some(fetcher) = &self.fetcher else {
            return;
        };
        match fetcher.remove_process(process_id).await {
            Ok(Some(n)) => info!(
                process_id,
                rooms = n,
                source = fetcher.source(),
                "Deleted the dead process's room listings."
            ),
            Ok(None) => {}
            Err(e) => {
                warn!(process_id, error = %e, "Cannot delete the dead process's room listings; Colyseus may still offer them.")
            }
        }
    }

    async fn read_through(&self, fetcher: &RoomFetcher, room_id: &str) {
        let source = fetcher.source();
        let Ok(_slot) = self.fetch_slots.try_acquire() else {
            self.metrics.room_fetch("busy");
            return;
        };
        let outcome = match tokio::time::timeout(FETCH_TIMEOUT, fetcher.fetch(room_id)).await {
            Ok(Ok(Some(Ok(room)))) => {
                self.apply_rooms(
                    source,
                    RoomFeed::Event(crate::rooms::RoomEvent::Upsert(room)),
                );
                "found"
            }
            Ok(Ok(Some(Err(why)))) => {
                self.apply_rooms(source, RoomFeed::Rejected(room_id.to_owned(), why));
                "rejected"
            }
            Ok(Ok(None)) => "unlisted",
            Ok(Err(e)) => {
                debug!(source, room_id, error = %e, "Cannot read the room listing.");
                "failed"
            }
            Err(_) => "timeout",
        };
        self.metrics.room_fetch(outcome);
    }

    /// Applies one update of a room-listing source to the index.
    pub fn apply_rooms(&self, source: &'static str, feed: RoomFeed) {
        let Some(Ok(mut rooms)) = self.rooms.as_ref().map(RwLock::write) else {
            return;
        };
        match feed {
            RoomFeed::Reload {
                rooms: fresh,
                rejected,
            } => {
                let mut known = self
                    .known_rejections
                    .lock()
                    .map(|mut k| std::mem::take(&mut *k))
                    .unwrap_or_default();
                let mut now = HashSet::new();
                for (key, why) in rejected {
                    if !known.remove(&key) {
                        self.reject(source, &key, &why);
                    }
                    now.insert(key);
                }
                if let Ok(mut k) = self.known_rejections.lock() {
                    *k = now;
                }
                debug!(source, rooms = fresh.len(), "Room listings loaded.");
                rooms.replace_all(fresh);
            }
            RoomFeed::Event(event) => rooms.apply(event),
            RoomFeed::Rejected(key, why) => {
                let new = self
                    .known_rejections
                    .lock()
                    .map_or(true, |mut k| k.insert(key.clone()));
                if new {
                    self.reject(source, &key, &why);
                }
            }
            RoomFeed::Up(up) => {
                let gauge = if source == "mongo" {
                    &self.metrics.mongo_up
                } else {
                    &self.metrics.redis_rooms_up
                };
                gauge.store(u64::from(up), Relaxed);
            }
        }
        self.metrics.rooms.store(rooms.len() as u64, Relaxed);
    }

    fn reject(&self, source: &'static str, key: &str, why: &RoomRejection) {
        self.metrics.reject(source, why.reason());
        warn!(
            source,
            key,
            reason = why.reason(),
            "Skipping room listing: {why}"
        );
    }
}

/// Feeds the room index from a source's channel until the source ends.
pub async fn follow_rooms(
    status: Arc<Status>,
    source: &'static str,
    mut rx: mpsc::Receiver<RoomFeed>,
) {
    while let Some(feed) = rx.recv().await {
        status.apply_rooms(source, feed);
    }
}
