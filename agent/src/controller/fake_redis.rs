//! Test doubles for the controller's unit tests only: `FakeRedis` stands in for Redis
//! presence (it is not a Redis client; the e2e suite runs the real Redis) and `FakeProber`
//! answers probes from a list of live addresses.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use super::plan::Write;
use super::{PresenceSession, PresenceSource, Prober};
use crate::model::Registration;
use crate::sources::redis::{Message, RedisSourceError, Snapshot};
use crate::sources::redis_lineage::Lineage;

/// What the fake Redis holds, and what the controller wrote to it.
#[derive(Debug, Default)]
pub(super) struct FakeData {
    pub run_id: String,
    pub replid: String,
    pub members: Vec<Vec<u8>>,
    pub down: bool,
    pub expired_leases: Vec<String>,
    /// Receivers each liveness ping finds (0: nobody listens, so a TCP probe follows).
    pub ping_receivers: u64,
    pub writes: Vec<Write>,
}

/// A fake Redis presence source (test double, not a Redis client).
#[derive(Clone)]
pub(super) struct FakeRedis {
    data: Arc<Mutex<FakeData>>,
    announce: mpsc::UnboundedSender<Message>,
    messages: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Message>>>,
}

impl FakeRedis {
    pub fn new(members: &[&str]) -> Self {
        let (announce, rx) = mpsc::unbounded_channel();
        let fake = Self {
            data: Arc::new(Mutex::new(FakeData {
                run_id: "run-1".to_owned(),
                replid: "hist-1".to_owned(),
                ..FakeData::default()
            })),
            announce,
            messages: Arc::new(tokio::sync::Mutex::new(rx)),
        };
        fake.set_members(members);
        fake
    }

    pub fn with<T>(&self, f: impl FnOnce(&mut FakeData) -> T) -> T {
        f(&mut self.data.lock().unwrap())
    }

    pub fn set_members(&self, members: &[&str]) {
        self.with(|d| d.members = members.iter().map(|m| m.as_bytes().to_vec()).collect());
    }

    /// Publishes on the discovery channel, as Colyseus does.
    pub fn publish(&self, action: &str, member: &str) {
        let payload = crate::layout::announcement(action, member).into_bytes();
        self.announce.send(Message::Announcement(payload)).unwrap();
    }

    pub fn writes(&self) -> Vec<Write> {
        self.with(|d| d.writes.clone())
    }

    fn fail_if_down(&self) -> Result<(), RedisSourceError> {
        if self.with(|d| d.down) {
            Err(RedisSourceError::Closed)
        } else {
            Ok(())
        }
    }
}

impl PresenceSource for FakeRedis {
    type Session = FakeRedis;

    fn identity(&self) -> String {
        "redis://fake:6379/0".to_owned()
    }

    async fn connect(&self) -> Result<FakeRedis, RedisSourceError> {
        self.fail_if_down()?;
        Ok(self.clone())
    }
}

impl PresenceSession for FakeRedis {
    async fn snapshot(&mut self) -> Result<Snapshot, RedisSourceError> {
        self.fail_if_down()?;
        Ok(self.with(|d| Snapshot {
            run_id: d.run_id.clone(),
            lineage: Lineage {
                replid: Some(d.replid.clone()),
                replid2: None,
            },
            members: d.members.clone(),
        }))
    }

    async fn roomcount(&mut self) -> Result<Vec<(String, String)>, RedisSourceError> {
        self.fail_if_down()?;
        Ok(Vec::new())
    }

    async fn next_message(&mut self) -> Result<Message, RedisSourceError> {
        let mut rx = self.messages.lock().await;
        rx.recv().await.ok_or(RedisSourceError::Closed)
    }

    fn try_next_message(&mut self) -> Option<Message> {
        self.messages.try_lock().ok()?.try_recv().ok()
    }

    async fn ping(&mut self, pings: &[(String, String)]) -> Result<Vec<u64>, RedisSourceError> {
        let n = self.with(|d| d.ping_receivers);
        Ok(vec![n; pings.len()])
    }

    async fn expired_leases(&mut self) -> Result<Vec<String>, RedisSourceError> {
        Ok(self.with(|d| std::mem::take(&mut d.expired_leases)))
    }

    async fn write(&mut self, write: &Write) -> Result<(), RedisSourceError> {
        self.fail_if_down()?;
        self.with(|d| d.writes.push(write.clone()));
        Ok(())
    }
}

/// Answers probes: an endpoint is alive if listed.
#[derive(Clone, Default)]
pub(super) struct FakeProber {
    pub alive: Arc<Mutex<BTreeSet<String>>>,
}

impl Prober for FakeProber {
    async fn partition(&self, regs: Vec<Registration>) -> (Vec<Registration>, Vec<Registration>) {
        let alive = self.alive.lock().unwrap().clone();
        regs.into_iter()
            .partition(|r| alive.contains(&r.endpoint.to_string()))
    }

    async fn alive_once(&self, endpoint: crate::model::Endpoint) -> bool {
        self.alive.lock().unwrap().contains(&endpoint.to_string())
    }
}
