//! Which routable processes the agent advertises (`/processes`, room lookups), and the
//! version long-polls of `/processes?after=` wait on.
//!
//! A process whose cluster was just written is *warming* until Envoy reports the cluster
//! active with a healthy host ([`crate::warmup`]): routing a player to it before that would
//! get a 503 (no cluster, or a cluster still warming). Warming processes are left out of
//! `/processes`, and a room lookup that lands on one waits for it (bounded), so the filter
//! never names a cluster Envoy does not route yet.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::{watch, Notify};

use crate::status::rows::Rows;

/// Shared by the sync loop (new registry), the warm-up follower (confirmations) and the API.
#[derive(Debug)]
pub struct Advertised {
    /// Whether new processes wait for Envoy at all (`sync --admin-addr`).
    gate: bool,
    /// processId -> when its cluster was written, for processes Envoy has not confirmed.
    warming: Mutex<HashMap<String, Instant>>,
    /// The advertised rows of the last version (a persistent map: copies are O(1), and
    /// comparing two versions skips what they share).
    last: Mutex<Rows>,
    version: watch::Sender<u64>,
    /// Set once the API shuts down: no long-poll is held from then on.
    closed: AtomicBool,
    /// Woken when a process starts warming.
    pub(crate) new_warming: Notify,
}

impl Advertised {
    /// `gate`: wait for Envoy's confirmation of each new cluster. Versions start at the
    /// start time in microseconds, so a restarted agent never repeats a version.
    pub fn new(gate: bool) -> Self {
        let start = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX / 2));
        Self {
            gate,
            warming: Mutex::new(HashMap::new()),
            last: Mutex::new(Rows::new()),
            version: watch::Sender::new(start),
            closed: AtomicBool::new(false),
            new_warming: Notify::new(),
        }
    }

    pub fn version(&self) -> u64 {
        *self.version.borrow()
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    pub fn is_warming(&self, process_id: &str) -> bool {
        self.warming
            .lock()
            .is_ok_and(|w| w.contains_key(process_id))
    }

    /// processIds warming now.
    pub fn warming(&self) -> Vec<String> {
        self.warming
            .lock()
            .map(|w| w.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// A new registry: processes that became routable (`started`) start warming; ones no
    /// longer routable (`stopped`) stop.
    pub fn note_routable(&self, started: &[String], stopped: &[String], now: Instant) {
        let Ok(mut warming) = self.warming.lock() else {
            return;
        };
        for pid in stopped {
            warming.remove(pid);
        }
        let mut added = false;
        if self.gate {
            for pid in started {
                if !warming.contains_key(pid) {
                    warming.insert(pid.clone(), now);
                    added = true;
                }
            }
        }
        drop(warming);
        if added {
            self.new_warming.notify_one();
        }
    }

    /// Envoy routes to these processes now (or they waited longer than `max_wait` at
    /// `now`): they stop warming. Returns (confirmed, given up on) processIds.
    pub fn confirm(
        &self,
        ready: impl Fn(&str) -> bool,
        now: Instant,
        max_wait: Duration,
    ) -> (Vec<(String, Duration)>, Vec<String>) {
        let (mut confirmed, mut expired) = (Vec::new(), Vec::new());
        if let Ok(mut warming) = self.warming.lock() {
            warming.retain(|pid, since| {
                let waited = now.saturating_duration_since(*since);
                if ready(pid) {
                    confirmed.push((pid.clone(), waited));
                    false
                } else if waited >= max_wait {
                    expired.push(pid.clone());
                    false
                } else {
                    true
                }
            });
        }
        (confirmed, expired)
    }

    /// Of `rows`, the ones advertised: not warming. Bumps the version when they differ
    /// from the last call's (in any field: a new weight reaches the filter too).
    pub fn publish(&self, mut rows: Rows) {
        if let Ok(warming) = self.warming.lock() {
            for pid in warming.keys() {
                rows.remove(pid);
            }
        }
        let Ok(mut last) = self.last.lock() else {
            return;
        };
        if *last != rows {
            *last = rows;
            self.version.send_modify(|v| *v = v.wrapping_add(1));
        }
    }

    /// The advertised rows and their version, read together: `publish` bumps the version
    /// under the same lock, so the two always belong to each other.
    pub fn current(&self) -> (u64, Rows) {
        match self.last.lock() {
            Ok(last) => (self.version(), last.clone()),
            Err(_) => (self.version(), Rows::new()),
        }
    }

    /// Answers every held long-poll now and holds none from then on (the API is shutting
    /// down). A poll that arrives on a kept-alive connection after this must not be held
    /// either: the graceful shutdown would wait out its whole hold.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.version.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Whether [`Self::close`] was called: no long-poll is held any more.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Waits until `process_id` stops warming, at most `bound`.
    pub async fn wait_warm(&self, process_id: &str, bound: Duration) {
        let mut rx = self.subscribe();
        let _ = tokio::time::timeout(bound, async {
            while self.is_warming(process_id) {
                if rx.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
    }

    /// Waits until the version is not `after`, at most `bound`.
    pub async fn wait_change(&self, after: u64, bound: Duration) {
        let mut rx = self.subscribe();
        let closed = || self.closed.load(Ordering::SeqCst);
        let _ = tokio::time::timeout(bound, rx.wait_for(|v| *v != after || closed())).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use routing::wire::{ProcessRow, ProcessState};

    fn rows(pids: &[&str]) -> Rows {
        pids.iter()
            .map(|p| {
                let row = ProcessRow {
                    process_id: (*p).to_owned(),
                    address: "127.0.0.1:1".into(),
                    cluster: format!("colyseus-process-{p}"),
                    state: ProcessState::Active,
                    weight: Some(1),
                    rooms: None,
                    ccu: None,
                };
                ((*p).to_owned(), row)
            })
            .collect()
    }

    fn ids(pids: &[&str]) -> Vec<String> {
        pids.iter().map(|p| (*p).to_owned()).collect()
    }

    #[test]
    fn new_routable_processes_warm_until_confirmed_or_expired() {
        let adv = Advertised::new(true);
        let t0 = Instant::now();
        let v0 = adv.version();
        adv.note_routable(&ids(&["b"]), &[], t0);
        assert!(!adv.is_warming("a"));
        assert!(adv.is_warming("b"));
        adv.publish(rows(&["a", "b"]));
        assert_eq!(adv.version(), v0 + 1);
        assert_eq!(adv.current(), (v0 + 1, rows(&["a"])), "b is warming");
        // Same advertised rows: same version.
        adv.publish(rows(&["a", "b"]));
        assert_eq!(adv.version(), v0 + 1);
        adv.note_routable(&ids(&["c"]), &[], t0);
        let (ok, gone) = adv.confirm(
            |p| p == "b",
            t0 + Duration::from_millis(5),
            Duration::from_secs(1),
        );
        assert_eq!(ok, vec![("b".to_owned(), Duration::from_millis(5))]);
        assert!(gone.is_empty());
        let (ok, gone) = adv.confirm(
            |_| false,
            t0 + Duration::from_secs(1),
            Duration::from_secs(1),
        );
        assert!(ok.is_empty());
        assert_eq!(gone, ["c"]);
        adv.publish(rows(&["a", "b"]));
        assert_eq!(adv.version(), v0 + 2);
        // Any field counts: a new weight is a new version.
        let mut weighted = rows(&["a", "b"]);
        if let Some(r) = weighted.get_mut("a") {
            r.weight = Some(5);
        }
        adv.publish(weighted);
        assert_eq!(adv.version(), v0 + 3);
    }

    #[test]
    fn a_process_leaving_stops_warming_and_no_gate_never_warms() {
        let adv = Advertised::new(true);
        adv.note_routable(&ids(&["a"]), &[], Instant::now());
        adv.note_routable(&[], &ids(&["a"]), Instant::now());
        assert!(adv.warming().is_empty());
        let open = Advertised::new(false);
        open.note_routable(&ids(&["a"]), &[], Instant::now());
        assert!(!open.is_warming("a"));
    }

    #[tokio::test]
    async fn waits_end_on_change_or_bound() {
        let adv = std::sync::Arc::new(Advertised::new(true));
        adv.note_routable(&ids(&["a"]), &[], Instant::now());
        let v = adv.version();
        let waiter = {
            let adv = adv.clone();
            tokio::spawn(async move { adv.wait_warm("a", Duration::from_secs(30)).await })
        };
        tokio::task::yield_now().await;
        adv.confirm(|_| true, Instant::now(), Duration::from_secs(1));
        adv.publish(rows(&["a"]));
        waiter.await.unwrap();
        assert_ne!(adv.version(), v);
        // A change that never comes: the bound ends the wait.
        adv.wait_change(adv.version(), Duration::from_millis(10))
            .await;
    }

    /// After `close`, a poll for the newest version (a client re-polling on a kept-alive
    /// connection during shutdown) returns at once instead of being held its full bound.
    #[tokio::test]
    async fn no_poll_is_held_after_close() {
        let adv = Advertised::new(false);
        adv.close();
        let poll = adv.wait_change(adv.version(), Duration::from_secs(30));
        tokio::time::timeout(Duration::from_secs(5), poll)
            .await
            .expect("a poll after close was held");
    }
}
