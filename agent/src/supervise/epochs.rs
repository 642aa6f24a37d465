//! Envoy's hot restart under `run`: the next epoch, same base id, from the command line of
//! the start; the old Envoy drains beside it. Epochs are kept in memory by [`Supervisor`].

use std::time::Duration;

use tokio::time::Instant;

use super::{plan, spawn_envoy, Supervisor, EPOCH_LIVE_TIMEOUT, STOP_GRACE};

impl Supervisor {
    /// Validates the bootstrap, starts the next epoch and waits until it is live; the
    /// replaced Envoy is kept as draining. Refused per [`plan::may_hot_restart`].
    pub(super) async fn hot_restart(&mut self, force: bool) -> Result<String, String> {
        let draining: Vec<u32> = self
            .retiring
            .iter()
            .filter(|c| !c.has_exited())
            .map(|c| c.pid)
            .collect();
        plan::may_hot_restart(
            self.plan.hot_restart,
            self.base_id.is_some(),
            &draining,
            force,
        )
        .map_err(|e| e.to_string())?;
        // A config or binary the new Envoy would refuse is caught before anything changes.
        let check = tokio::process::Command::new(&self.plan.envoy_bin)
            .arg("--mode")
            .arg("validate")
            .arg("-c")
            .arg(self.plan.layout.bootstrap())
            .output()
            .await
            .map_err(|e| format!("cannot run envoy --mode validate: {e}"))?;
        if !check.status.success() {
            let text = String::from_utf8_lossy(&check.stderr);
            let last = text
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            return Err(format!(
                "envoy --mode validate refuses the bootstrap; nothing changed: {last}"
            ));
        }
        let next = self.epoch + 1;
        let mut new = spawn_envoy(&self.plan, next, self.base_id.as_deref(), &self.exits_tx)
            .map_err(|_| "cannot start the new Envoy".to_owned())?;
        let admin = self.plan.admin.clone();
        let expected = format!("server.hot_restart_epoch: {next}");
        let deadline = Instant::now() + EPOCH_LIVE_TIMEOUT;
        loop {
            if new.has_exited() {
                return Err(format!(
                    "the new Envoy (epoch {next}) exited (its error is above); the old one (pid {}) still serves",
                    self.envoy.pid
                ));
            }
            let stats = admin
                .get(
                    "/stats?filter=^server.hot_restart_epoch$",
                    Duration::from_secs(1),
                )
                .await;
            let ready = admin.get("/ready", Duration::from_secs(1)).await;
            let epoch_ok =
                matches!(&stats, Ok((200, body)) if body.lines().any(|l| l.trim() == expected));
            if epoch_ok && matches!(&ready, Ok((200, body)) if body.starts_with("LIVE")) {
                break;
            }
            if Instant::now() > deadline {
                new.stop(STOP_GRACE).await;
                return Err(format!("the new Envoy (epoch {next}) was not live after {EPOCH_LIVE_TIMEOUT:?}; stopped it"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let old = std::mem::replace(&mut self.envoy, new);
        let old_pid = old.pid;
        self.retiring.push(old);
        self.epoch = next;
        Ok(format!(
            "epoch {next} (pid {}) serves; the old Envoy (pid {old_pid}) drains and exits within {}s",
            self.envoy.pid,
            self.plan.parent_shutdown_secs()
        ))
    }
}
