//! `run`: the whole proxy as one command. Renders the bootstrap, starts the sync agent and
//! Envoy as children and supervises them:
//! - before anything starts, every address it will listen on must be free
//!   ([`preflight`]: Envoy binds with SO_REUSEPORT, so a second Envoy on a taken port would
//!   start and take half the players);
//! - it waits for its own children's readiness (the API port was free, so what answers
//!   is its own agent);
//! - SIGTERM/SIGINT stops Envoy first, then the agent;
//! - a crashed sync agent is restarted (with backoff) while Envoy keeps serving its config;
//! - SIGHUP or `run hot-restart` hot-restarts Envoy; epochs are kept in memory, and a third
//!   epoch while the second still drains is refused unless forced ([`plan::may_hot_restart`]).
//!
//! Layout: [`args`] (settings), [`plan`] (pure: command lines, claims, the epoch rule),
//! [`preflight`], [`children`], [`control`] (the socket `run hot-restart` talks to),
//! `epochs` (the hot restart), and the supervision loop here.

pub mod args;
pub mod children;
pub mod control;
mod epochs;
mod outcome;
pub mod plan;
pub mod preflight;

use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::process::Signal;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{error, info, warn};

pub use args::{ProxyArgs, RunAction, RunArgs};
use children::{ChildProc, Exit, Role};
pub use outcome::{exit_code, Outcome, EX_UNAVAILABLE, EX_USAGE};
use plan::Plan;

/// Longest wait for a child to stop after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Longest wait for a new Envoy epoch to go live.
const EPOCH_LIVE_TIMEOUT: Duration = Duration::from_secs(30);

pub async fn run(args: RunArgs) -> Outcome {
    match args.action {
        Some(RunAction::HotRestart { force, run_dir }) => {
            let socket = plan::Layout { dir: run_dir }.control_socket();
            match control::request_hot_restart(&socket, force).await {
                Ok(done) => Outcome::Done(Some(format!("hot restart: {done}"))),
                Err(why) => Outcome::Failed(format!("hot restart refused: {why}")),
            }
        }
        None => start(args.proxy).await,
    }
}

async fn start(args: ProxyArgs) -> Outcome {
    let dir =
        match std::fs::create_dir_all(&args.run_dir).and_then(|()| args.run_dir.canonicalize()) {
            Ok(d) => d,
            Err(e) => {
                return Outcome::Usage(format!(
                    "RUN_DIR={}: cannot create it ({e}); expected a writable directory",
                    args.run_dir.display()
                ))
            }
        };
    let plan = Plan::new(&args, &dir);
    if let Err(e) = preflight::check_files(&plan) {
        return Outcome::Usage(e.to_string());
    }
    match preflight::check_addresses(&plan) {
        Ok(()) => {}
        Err(e @ preflight::Refusal::Taken { .. }) => return Outcome::Unavailable(e.to_string()),
        Err(e) => return Outcome::Usage(e.to_string()),
    }
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => return Outcome::Failed(format!("cannot find this program's own path: {e}")),
    };
    if let Err(outcome) = render_bootstrap(&plan, &exe).await {
        return outcome;
    }
    match Supervisor::start(plan, exe, args.ready_timeout).await {
        Ok(s) => s.supervise().await,
        Err(outcome) => outcome,
    }
}

/// Runs `bootstrap` (its errors go to stderr as they are) into `$RUN_DIR/envoy.json`.
async fn render_bootstrap(plan: &Plan, exe: &Path) -> Result<(), Outcome> {
    let config_dir = plan.layout.config_dir();
    std::fs::create_dir_all(&config_dir)
        .map_err(|e| Outcome::Usage(format!("cannot create {}: {e}", config_dir.display())))?;
    let out = tokio::process::Command::new(exe)
        .args(plan.bootstrap_args())
        .stderr(std::process::Stdio::inherit())
        .output()
        .await
        .map_err(|e| Outcome::Failed(format!("cannot run bootstrap: {e}")))?;
    if !out.status.success() {
        let why = "the bootstrap settings were refused (see the line above)".to_owned();
        return Err(if out.status.code() == Some(i32::from(EX_USAGE)) {
            Outcome::Usage(why)
        } else {
            Outcome::Failed(why)
        });
    }
    crate::atomic_file::write(&plan.layout.dir, "envoy.json", &out.stdout)
        .map(|_| ())
        .map_err(|e| Outcome::Failed(format!("cannot write envoy.json: {e}")))
}

/// The running children and what `run` remembers about them.
struct Supervisor {
    plan: Plan,
    exe: PathBuf,
    sync: ChildProc,
    envoy: ChildProc,
    /// Envoys replaced by a hot restart, still draining.
    retiring: Vec<ChildProc>,
    epoch: u32,
    /// The base id epoch 0 picked (`None` without hot restart).
    base_id: Option<String>,
    exits_tx: mpsc::UnboundedSender<Exit>,
    exits: mpsc::UnboundedReceiver<Exit>,
    requests: mpsc::Receiver<control::Request>,
    sync_started: Instant,
    sync_backoff: Duration,
    signals: Signals,
}

struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }
}

impl Supervisor {
    /// Starts the agent, waits for its first sync, starts Envoy and waits until it is live.
    async fn start(plan: Plan, exe: PathBuf, ready_timeout: Duration) -> Result<Self, Outcome> {
        let mut signals =
            Signals::new().map_err(|e| Outcome::Failed(format!("cannot handle signals: {e}")))?;
        let (req_tx, requests) = mpsc::channel(4);
        control::serve(&plan.layout.control_socket(), req_tx).map_err(|e| {
            Outcome::Failed(format!(
                "cannot listen on {}: {e}",
                plan.layout.control_socket().display()
            ))
        })?;
        let (exits_tx, exits) = mpsc::unbounded_channel();
        let mut sync = spawn_sync(&plan, &exe, &exits_tx)?;
        info!(pid = sync.pid, api = %plan.api, "Sync agent started; waiting for its first sync.");
        let api = crate::envoy_admin::AdminEndpoint::Tcp(plan.api);
        let waited = wait_until(ready_timeout, &sync, &mut signals, || async {
            matches!(
                api.get("/ready", Duration::from_secs(1)).await,
                Ok((200, _))
            )
        })
        .await;
        match waited {
            Waited::Ready => info!("Agent ready (first sync done)."),
            Waited::TimedOut => warn!(
                "The agent is not ready after {ready_timeout:?} (is Redis reachable?); starting \
                 Envoy with the config that exists, the agent keeps retrying."
            ),
            Waited::ChildExited => {
                return Err(Outcome::Failed(
                    "the sync agent exited at start (its error is above)".to_owned(),
                ))
            }
            Waited::Signalled => {
                sync.stop(STOP_GRACE).await;
                return Err(Outcome::Done(None));
            }
        }
        let mut envoy = spawn_envoy(&plan, 0, None, &exits_tx)?;
        let admin = plan.admin.clone();
        let waited = wait_until(ready_timeout.max(EPOCH_LIVE_TIMEOUT), &envoy, &mut signals, || async {
            matches!(admin.get("/ready", Duration::from_secs(1)).await, Ok((200, body)) if body.starts_with("LIVE"))
        })
        .await;
        if waited != Waited::Ready {
            envoy.stop(STOP_GRACE).await;
            sync.stop(STOP_GRACE).await;
            return Err(match waited {
                Waited::Signalled => Outcome::Done(None),
                Waited::ChildExited => {
                    Outcome::Failed("Envoy exited at start (its error is above)".to_owned())
                }
                _ => Outcome::Failed(format!("Envoy is not live after {EPOCH_LIVE_TIMEOUT:?}")),
            });
        }
        let base_id = if plan.hot_restart {
            std::fs::read_to_string(plan.layout.base_id_file())
                .ok()
                .map(|s| s.trim().to_owned())
        } else {
            None
        };
        let host = match plan.public.ip() {
            ip if ip.is_unspecified() => "127.0.0.1".to_owned(),
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
            ip => ip.to_string(),
        };
        info!(
            envoy_pid = envoy.pid,
            sync_pid = sync.pid,
            admin = %plan.admin,
            "Listening on {}: http://{host}:{port} ws://{host}:{port}; agent API http://{}/processes.",
            plan.public,
            plan.api,
            port = plan.public.port(),
        );
        Ok(Supervisor {
            plan,
            exe,
            sync,
            envoy,
            retiring: Vec::new(),
            epoch: 0,
            base_id,
            exits_tx,
            exits,
            requests,
            sync_started: Instant::now(),
            sync_backoff: Duration::from_secs(1),
            signals,
        })
    }

    async fn supervise(mut self) -> Outcome {
        let mut sync_restart_at: Option<Instant> = None;
        let failure = loop {
            let restart_at =
                sync_restart_at.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                _ = self.signals.term.recv() => break None,
                _ = self.signals.int.recv() => break None,
                _ = self.signals.hup.recv() => match self.hot_restart(false).await {
                    Ok(done) => info!("Hot restart (SIGHUP): {done}."),
                    Err(why) => warn!("Hot restart (SIGHUP) refused: {why}."),
                },
                Some(req) = self.requests.recv() => {
                    let outcome = self.hot_restart(req.force).await;
                    match &outcome {
                        Ok(done) => info!("Hot restart: {done}."),
                        Err(why) => warn!("Hot restart refused: {why}."),
                    }
                    let _ = req.reply.send(outcome);
                }
                Some((role, pid, status)) = self.exits.recv() => {
                    let how = status.map_or("unknown status".to_owned(), |s| s.to_string());
                    match role {
                        Role::Sync if pid == self.sync.pid => {
                            if self.sync_started.elapsed() > Duration::from_secs(30) {
                                self.sync_backoff = Duration::from_secs(1);
                            }
                            error!(pid, "The sync agent exited ({how}); restarting it in {:?}. Envoy keeps serving its last config.", self.sync_backoff);
                            sync_restart_at = Some(Instant::now() + self.sync_backoff);
                            self.sync_backoff = (self.sync_backoff * 2).min(Duration::from_secs(30));
                        }
                        Role::Envoy { .. } if pid == self.envoy.pid => {
                            break Some(format!("Envoy (pid {pid}) exited ({how})"));
                        }
                        Role::Envoy { epoch } => {
                            info!(pid, "The Envoy of epoch {epoch} has finished draining ({how}).");
                            self.retiring.retain(|c| c.pid != pid);
                        }
                        Role::Sync => {}
                    }
                }
                _ = tokio::time::sleep_until(restart_at), if sync_restart_at.is_some() => {
                    sync_restart_at = None;
                    match spawn_sync(&self.plan, &self.exe, &self.exits_tx) {
                        Ok(child) => {
                            info!(pid = child.pid, "Sync agent restarted.");
                            self.sync = child;
                            self.sync_started = Instant::now();
                        }
                        Err(_) => {
                            sync_restart_at = Some(Instant::now() + self.sync_backoff);
                        }
                    }
                }
            }
        };
        self.shutdown().await;
        match failure {
            None => Outcome::Done(None),
            Some(why) => Outcome::Failed(format!("{why}; stopped the agent too")),
        }
    }

    /// Envoy first (every epoch), so no player is routed by a config nobody updates; then
    /// the agent.
    async fn shutdown(&mut self) {
        info!(pid = self.envoy.pid, "Stopping Envoy, then the agent.");
        let mut envoys: Vec<&mut ChildProc> = std::iter::once(&mut self.envoy)
            .chain(self.retiring.iter_mut())
            .collect();
        for envoy in &envoys {
            envoy.signal(Signal::TERM);
        }
        for envoy in &mut envoys {
            envoy.stop(STOP_GRACE).await;
        }
        info!(pid = self.sync.pid, "Envoy stopped; stopping the agent.");
        self.sync.stop(STOP_GRACE).await;
        info!("Stopped.");
    }
}

fn spawn_sync(
    plan: &Plan,
    exe: &Path,
    exits: &mpsc::UnboundedSender<Exit>,
) -> Result<ChildProc, Outcome> {
    ChildProc::spawn(Role::Sync, exe.as_os_str(), &plan.sync_args(), exits)
        .map_err(|e| Outcome::Failed(format!("cannot start the sync agent: {e}")))
}

fn spawn_envoy(
    plan: &Plan,
    epoch: u32,
    base_id: Option<&str>,
    exits: &mpsc::UnboundedSender<Exit>,
) -> Result<ChildProc, Outcome> {
    let child = ChildProc::spawn(
        Role::Envoy { epoch },
        plan.envoy_bin.as_os_str(),
        &plan.envoy_args(epoch, base_id),
        exits,
    )
    .map_err(|e| {
        Outcome::Failed(format!(
            "cannot start Envoy ({}): {e}",
            plan.envoy_bin.display()
        ))
    })?;
    info!(pid = child.pid, epoch, "Envoy started.");
    Ok(child)
}

#[derive(Debug, PartialEq, Eq)]
enum Waited {
    Ready,
    TimedOut,
    ChildExited,
    Signalled,
}

/// Polls `ready` every 100 ms until it holds, `child` exits, SIGTERM/SIGINT arrives or
/// `timeout` passes.
async fn wait_until<F, Fut>(
    timeout: Duration,
    child: &ChildProc,
    signals: &mut Signals,
    mut ready: F,
) -> Waited
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if child.has_exited() {
            return Waited::ChildExited;
        }
        if ready().await {
            return Waited::Ready;
        }
        if Instant::now() > deadline {
            return Waited::TimedOut;
        }
        tokio::select! {
            _ = signals.term.recv() => return Waited::Signalled,
            _ = signals.int.recv() => return Waited::Signalled,
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
}
