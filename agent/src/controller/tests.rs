//! The controller driven end to end through its traits, without sockets, by the test
//! doubles of `fake_redis.rs`.

use std::sync::Arc;
use std::time::Duration;

use super::fake_redis::{FakeProber, FakeRedis};
use super::*;
use crate::liveness::Policy;
use crate::model::ProcessState;
use crate::upstream_policy::UpstreamPolicy;

fn config() -> ControllerConfig {
    let fast = Duration::from_millis(40);
    ControllerConfig {
        default_port: 2567,
        resync_interval: fast,
        restore_lost_registrations: true,
        state_file: None,
        max_backoff: fast,
        max_drain: Duration::from_secs(600),
        drain_check_interval: Duration::from_secs(600),
        liveness: LivenessConfig {
            mode: LivenessMode::Off,
            interval: fast,
            policy: Policy {
                failures: 2,
                window: Duration::ZERO,
            },
            evict_from_presence: true,
        },
        balance: Balance::Even,
        balance_interval: Duration::from_secs(600),
        upstream_policy: UpstreamPolicy {
            agent_api: Some("127.0.0.1:9".parse().unwrap()),
            ..UpstreamPolicy::default()
        },
        upstream_dns_interval: Duration::from_secs(600),
        envoy_admin: None,
        drain_idle: Duration::from_secs(600),
        cluster_names: routing::ClusterNames::default(),
    }
}

struct Running {
    redis: FakeRedis,
    prober: FakeProber,
    status: Arc<Status>,
    rx: watch::Receiver<Arc<DesiredState>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

fn start(redis: FakeRedis, config: ControllerConfig) -> Running {
    let prober = FakeProber::default();
    let status = Arc::new(Status::new(routing::ClusterNames::default()));
    let controller = Controller::new(redis.clone(), prober.clone(), config, status.clone());
    let rx = controller.subscribe();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(controller.run(async move {
        let _ = stopped.await;
    }));
    Running {
        redis,
        prober,
        status,
        rx,
        stop: Some(stop),
        task,
    }
}

impl Running {
    /// The first published state that satisfies `pred` (bounded: a hang is a failure).
    async fn until(
        &mut self,
        what: &str,
        pred: impl Fn(&DesiredState) -> bool,
    ) -> Arc<DesiredState> {
        let wait = async {
            loop {
                let state = self.rx.borrow_and_update().clone();
                if pred(&state) {
                    return state;
                }
                self.rx.changed().await.unwrap();
            }
        };
        match tokio::time::timeout(Duration::from_secs(5), wait).await {
            Ok(state) => state,
            Err(_) => panic!("no desired state {what}; last: {:?}", self.rx.borrow()),
        }
    }

    /// Waits (bounded) for the fake Redis to have received a write matching `pred`.
    async fn written(&self, pred: impl Fn(&Write) -> bool) -> Write {
        for _ in 0..250 {
            if let Some(w) = self.redis.writes().into_iter().find(&pred) {
                return w;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("no such write; writes: {:?}", self.redis.writes());
    }

    async fn stop(mut self) {
        let _ = self.stop.take().map(|s| s.send(()));
        self.task.await.unwrap();
    }
}

fn pid(s: &str) -> routing::ProcessId {
    routing::ProcessId::parse(s).unwrap()
}

fn state_of(d: &DesiredState, p: &str) -> Option<&'static str> {
    d.routed.get(&pid(p)).map(|e| match e.state {
        ProcessState::Active => "active",
        ProcessState::Draining { .. } => "draining",
        ProcessState::Dead { .. } => "dead",
    })
}

#[tokio::test]
async fn nothing_is_published_as_synced_while_the_source_is_down() {
    let redis = FakeRedis::new(&["a/127.0.0.1:1"]);
    redis.with(|d| d.down = true);
    let mut run = start(redis, config());
    let first = run.until("at start", |_| true).await;
    assert_eq!(first.version, 0);
    assert_eq!(
        first.provenance,
        Provenance::Restored {
            replaces_other_fleet: false
        }
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        run.rx.borrow().version,
        0,
        "a failed source publishes nothing"
    );
    assert!(run.status.metrics.redis_session_failures.load(Relaxed) > 0);
    run.redis.with(|d| d.down = false);
    let synced = run.until("synced", DesiredState::is_synced).await;
    assert_eq!(state_of(&synced, "a"), Some("active"));
    assert_eq!(synced.persisted().redis_run_id.as_deref(), Some("run-1"));
    run.stop().await;
}

#[tokio::test]
async fn announcements_are_published_as_new_versions() {
    let mut run = start(FakeRedis::new(&["a/127.0.0.1:1"]), config());
    // `a` still accepts connections while it drains (its probe must not end the drain).
    run.prober
        .alive
        .lock()
        .unwrap()
        .insert("127.0.0.1:1".to_owned());
    let synced = run.until("synced", DesiredState::is_synced).await;
    run.redis.set_members(&["a/127.0.0.1:1", "b/127.0.0.1:2"]);
    run.redis.publish("add", "b/127.0.0.1:2");
    let added = run
        .until("with b", |d| state_of(d, "b") == Some("active"))
        .await;
    assert!(added.version > synced.version);
    run.redis.set_members(&["b/127.0.0.1:2"]);
    run.redis.publish("remove", "a/127.0.0.1:1");
    let drained = run
        .until("a draining", |d| state_of(d, "a") == Some("draining"))
        .await;
    assert_eq!(drained.persisted().members, ["b/127.0.0.1:2"]);
    assert_eq!(drained.persisted().draining, ["a/127.0.0.1:1"]);
    // Re-reads of an unchanged set publish nothing new.
    let version = drained.version;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        run.rx.borrow().version,
        version,
        "{drained:?}\n{:?}",
        run.rx.borrow()
    );
    assert!(run.redis.writes().is_empty(), "nothing to write back");
    run.stop().await;
}

#[tokio::test]
async fn a_restarted_redis_gets_its_live_processes_back_and_loses_the_dead() {
    let mut run = start(
        FakeRedis::new(&["a/127.0.0.1:1", "b/127.0.0.1:2"]),
        config(),
    );
    run.until("synced", |d| d.is_synced() && d.routed.len() == 2)
        .await;
    run.prober
        .alive
        .lock()
        .unwrap()
        .insert("127.0.0.1:1".to_owned());
    // Redis restarts empty: a new run_id and a history of its own.
    run.redis.with(|d| {
        d.run_id = "run-2".to_owned();
        d.replid = "hist-2".to_owned();
        d.members.clear();
    });
    let after = run
        .until("b dropped", |d| {
            d.persisted().redis_run_id.as_deref() == Some("run-2") && state_of(d, "b").is_none()
        })
        .await;
    assert_eq!(state_of(&after, "a"), Some("active"));
    let restore = run.written(|w| matches!(w, Write::Restore { .. })).await;
    assert_eq!(
        restore,
        Write::Restore {
            members: vec!["a/127.0.0.1:1".to_owned()]
        }
    );
    let metrics = &run.status.metrics;
    assert_eq!(metrics.redis_restarts.load(Relaxed), 1);
    assert_eq!(metrics.registrations_restored.load(Relaxed), 1);
    assert_eq!(metrics.registrations_dropped_dead.load(Relaxed), 1);
    run.stop().await;
}

#[tokio::test]
async fn a_dead_process_is_unrouted_and_evicted_through_a_plan() {
    let mut config = config();
    config.liveness.mode = LivenessMode::IpcOrTcp;
    let redis = FakeRedis::new(&["a/127.0.0.1:1"]);
    // Its IPC channel has a listener, which never answers.
    redis.with(|d| d.ping_receivers = 1);
    let mut run = start(redis, config);
    let dead = run
        .until("a dead", |d| state_of(d, "a") == Some("dead"))
        .await;
    assert!(
        dead.persisted().members.is_empty(),
        "a dead process is not persisted"
    );
    let evict = run.written(|w| matches!(w, Write::Evict { .. })).await;
    assert_eq!(
        evict,
        Write::Evict {
            member: "a/127.0.0.1:1".to_owned(),
            process_id: "a".to_owned()
        }
    );
    assert_eq!(run.status.metrics.processes_died.load(Relaxed), 1);
    run.stop().await;
}

#[tokio::test]
async fn a_process_answering_only_tcp_stays_routed() {
    let mut config = config();
    config.liveness.mode = LivenessMode::IpcOrTcp;
    let mut run = start(FakeRedis::new(&["a/127.0.0.1:1"]), config);
    run.prober
        .alive
        .lock()
        .unwrap()
        .insert("127.0.0.1:1".to_owned());
    run.until("synced", DesiredState::is_synced).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(state_of(&run.rx.borrow(), "a"), Some("active"));
    assert!(run.redis.writes().is_empty());
    run.stop().await;
}

#[tokio::test]
async fn expired_leases_are_unregistered_through_a_plan() {
    let redis = FakeRedis::new(&[]);
    redis.with(|d| d.expired_leases = vec!["x/127.0.0.1:5".to_owned()]);
    let run = start(redis, config());
    let write = run
        .written(|w| matches!(w, Write::ExpireLease { .. }))
        .await;
    assert_eq!(
        write,
        Write::ExpireLease {
            member: "x/127.0.0.1:5".to_owned()
        }
    );
    assert_eq!(run.status.metrics.leases_expired.load(Relaxed), 1);
    run.stop().await;
}

#[tokio::test]
async fn a_refused_member_is_reported_once_however_often_it_is_read() {
    // 127.0.0.1:9 is the agent's API here: never an upstream.
    let mut run = start(
        FakeRedis::new(&["a/127.0.0.1:1", "evil/127.0.0.1:9"]),
        config(),
    );
    let synced = run.until("synced", DesiredState::is_synced).await;
    assert!(state_of(&synced, "evil").is_none());
    let snapshots = run.status.metrics.redis_snapshots.load(Relaxed);
    for _ in 0..250 {
        if run.status.metrics.redis_snapshots.load(Relaxed) >= snapshots + 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(run.status.metrics.redis_snapshots.load(Relaxed) >= snapshots + 3);
    assert_eq!(run.status.metrics.rejected(SOURCE, "upstream_agent_api"), 1);
    run.stop().await;
}

#[tokio::test]
async fn a_drain_ends_when_its_process_stops_accepting_connections() {
    let mut config = config();
    config.drain_check_interval = Duration::from_millis(40);
    let mut run = start(FakeRedis::new(&["a/127.0.0.1:1"]), config);
    run.prober
        .alive
        .lock()
        .unwrap()
        .insert("127.0.0.1:1".to_owned());
    run.until("synced", DesiredState::is_synced).await;
    run.redis.set_members(&[]);
    run.redis.publish("remove", "a/127.0.0.1:1");
    run.until("a draining", |d| state_of(d, "a") == Some("draining"))
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(state_of(&run.rx.borrow(), "a"), Some("draining"));
    run.prober.alive.lock().unwrap().clear();
    run.until("a gone", |d| d.routed.is_empty()).await;
    run.stop().await;
}
