//! The children of `run` (the sync agent and each Envoy epoch): spawned in a process group
//! of their own, so a terminal's Ctrl-C reaches `run` only and `run` decides the order in
//! which they stop; each one's exit is reported on a channel and kept in a watch.

use std::ffi::OsStr;
use std::process::ExitStatus;
use std::time::Duration;

use rustix::process::{kill_process, Pid, Signal};
use tokio::sync::{mpsc, watch};

/// Set in every child's environment to `run`'s pid: the sync agent stops when its parent
/// is no longer that process (a SIGKILLed `run` would otherwise orphan it; Envoy gets
/// SIGTERM from the kernel then, by its own parent-death signal).
pub const SUPERVISOR_PID: &str = "COLYSEUS_ENVOY_SUPERVISOR_PID";

/// Until the parent of this process is no longer the `run` named by [`SUPERVISOR_PID`]
/// (checked every second); forever when not started by `run`.
pub async fn supervisor_gone() {
    let Some(pid) = std::env::var(SUPERVISOR_PID)
        .ok()
        .and_then(|p| p.parse::<i32>().ok())
    else {
        return std::future::pending().await;
    };
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if rustix::process::getppid().map(Pid::as_raw_pid) != Some(pid) {
            return;
        }
    }
}

/// Which child an exit report is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Sync,
    Envoy { epoch: u32 },
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Role::Sync => write!(f, "the sync agent"),
            Role::Envoy { epoch } => write!(f, "Envoy (epoch {epoch})"),
        }
    }
}

/// An exit: who, its pid, and how (`None`: waiting on it failed).
pub type Exit = (Role, u32, Option<ExitStatus>);

/// A running child: its pid, and whether it has exited yet.
#[derive(Debug)]
pub struct ChildProc {
    pub role: Role,
    pub pid: u32,
    exited: watch::Receiver<bool>,
}

impl ChildProc {
    /// Starts `program args` with the inherited environment, stdout and stderr.
    ///
    /// # Errors
    /// The program could not be started.
    pub fn spawn<S: AsRef<OsStr>>(
        role: Role,
        program: &OsStr,
        args: &[S],
        exits: &mpsc::UnboundedSender<Exit>,
    ) -> std::io::Result<ChildProc> {
        let mut child = tokio::process::Command::new(program)
            .args(args)
            .env(SUPERVISOR_PID, std::process::id().to_string())
            .stdin(std::process::Stdio::null())
            .process_group(0)
            .spawn()?;
        let pid = child.id().unwrap_or_default();
        let (tx, exited) = watch::channel(false);
        let exits = exits.clone();
        tokio::spawn(async move {
            let status = child.wait().await.ok();
            let _ = tx.send(true);
            let _ = exits.send((role, pid, status));
        });
        Ok(ChildProc { role, pid, exited })
    }

    pub fn has_exited(&self) -> bool {
        *self.exited.borrow()
    }

    /// Sends `signal` unless the child has exited (its pid may be reused then).
    pub fn signal(&self, signal: Signal) {
        if self.has_exited() {
            return;
        }
        if let Some(pid) = i32::try_from(self.pid).ok().and_then(Pid::from_raw) {
            let _ = kill_process(pid, signal);
        }
    }

    /// Waits until the child has exited.
    pub async fn wait(&mut self) {
        let _ = self.exited.wait_for(|e| *e).await;
    }

    /// SIGTERM, then SIGKILL if it is still running after `grace`.
    pub async fn stop(&mut self, grace: Duration) {
        self.signal(Signal::TERM);
        if tokio::time::timeout(grace, self.wait()).await.is_err() {
            tracing::warn!(
                pid = self.pid,
                "{} did not stop in {grace:?}; SIGKILL.",
                self.role
            );
            self.signal(Signal::KILL);
            self.wait().await;
        }
    }
}
