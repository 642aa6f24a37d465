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

/// One advertised row, as far as the version is concerned.
type Key = (String, routing::wire::ProcessState);

/// Shared by the sync loop (new registry), the warm-up follower (confirmations) and the API.
#[derive(Debug)]
pub struct Advertised {
    /// Whether new processes wait for Envoy at all (`sync --admin-addr`).
    gate: bool,
    /// processId -> when its cluster was written, for processes Envoy has not confirmed.
    warming: Mutex<HashMap<String, Instant>>,
    /// The advertised rows of the last version.
    last: Mutex<Vec<Key>>,
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
            last: Mutex::new(Vec::new()),
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

    /// A new registry: processes routable now that were not (`was_routable`) start warming;
    /// ones no longer routable stop.
    pub fn note_routable<'a>(
        &self,
        routable: impl IntoIterator<Item = &'a str>,
        was_routable: impl Fn(&str) -> bool,
        now: Instant,
    ) {
        let Ok(mut warming) = self.warming.lock() else {
            return;
        };
        let routable: std::collections::HashSet<&str> = routable.into_iter().collect();
        warming.retain(|pid, _| routable.contains(pid.as_str()));
        let mut added = false;
        if self.gate {
            for pid in routable {
                if !was_routable(pid) && !warming.contains_key(pid) {
                    warming.insert(pid.to_owned(), now);
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

    /// Of `rows` (processId, state), the ones advertised: not warming. Bumps the version
    /// when they differ from the last call's.
    pub fn publish(&self, rows: Vec<Key>) {
        let rows: Vec<Key> = rows
            .into_iter()
            .filter(|(pid, _)| !self.is_warming(pid))
            .collect();
        let Ok(mut last) = self.last.lock() else {
            return;
        };
        if *last != rows {
            *last = rows;
            self.version.send_modify(|v| *v = v.wrapping_add(1));
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
    use routing::wire::ProcessState;

    #[test]
    fn new_routable_processes_warm_until_confirmed_or_expired() {
        let adv = Advertised::new(true);
        let t0 = Instant::now();
        let v0 = adv.version();
        adv.note_routable(["a", "b"], |p| p == "a", t0);
        assert!(!adv.is_warming("a"));
        assert!(adv.is_warming("b"));
        adv.publish(vec![
            ("a".into(), ProcessState::Active),
            ("b".into(), ProcessState::Active),
        ]);
        assert_eq!(adv.version(), v0 + 1);
        // Same advertised rows: same version.
        adv.publish(vec![
            ("a".into(), ProcessState::Active),
            ("b".into(), ProcessState::Active),
        ]);
        assert_eq!(adv.version(), v0 + 1);
        adv.note_routable(["a", "b", "c"], |p| p != "c", t0);
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
        adv.publish(vec![
            ("a".into(), ProcessState::Active),
            ("b".into(), ProcessState::Active),
        ]);
        assert_eq!(adv.version(), v0 + 2);
    }

    #[test]
    fn a_process_leaving_stops_warming_and_no_gate_never_warms() {
        let adv = Advertised::new(true);
        adv.note_routable(["a"], |_| false, Instant::now());
        adv.note_routable([], |_| false, Instant::now());
        assert!(adv.warming().is_empty());
        let open = Advertised::new(false);
        open.note_routable(["a"], |_| false, Instant::now());
        assert!(!open.is_warming("a"));
    }

    #[tokio::test]
    async fn waits_end_on_change_or_bound() {
        let adv = std::sync::Arc::new(Advertised::new(true));
        adv.note_routable(["a"], |_| false, Instant::now());
        let v = adv.version();
        let waiter = {
            let adv = adv.clone();
            tokio::spawn(async move { adv.wait_warm("a", Duration::from_secs(30)).await })
        };
        tokio::task::yield_now().await;
        adv.confirm(|_| true, Instant::now(), Duration::from_secs(1));
        adv.publish(vec![("a".into(), ProcessState::Active)]);
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
