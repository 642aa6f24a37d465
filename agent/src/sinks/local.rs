//! The sinks of one host, applied in order by one task (see [`crate::sinks`]).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use tokio::sync::watch;
use tracing::{debug, error, info};

use crate::controller::{DesiredState, Provenance};
use crate::metrics::Metrics;
use crate::sinks::api_view::ApiView;
use crate::sinks::envoy_files::EnvoyFilesSink;
use crate::sinks::state_file::StateFileSink;
use crate::status::Status;

/// The CDS files, the API's view and the state file.
#[derive(Debug)]
pub struct LocalSinks {
    /// `None` with `sync --no-cds-file`: no Envoy on this host reads a file (xDS only).
    pub files: Option<EnvoyFilesSink>,
    pub api: ApiView,
    pub state_file: Option<StateFileSink>,
}

impl LocalSinks {
    /// Applies one state. A synced state goes to the files first; if they cannot be
    /// written, Envoy keeps the previous config and the API and state file stay with it.
    pub fn apply(&mut self, state: &DesiredState, metrics: &Metrics) {
        if let Some(files) = &mut self.files {
            if !Self::write_files(files, state, metrics) {
                return;
            }
        }
        self.api.apply(state);
        if let Some(file) = &mut self.state_file {
            file.apply(state);
        }
    }

    /// Writes `state` for Envoy where it should be; `false` if a synced state could not
    /// be written (the API and the state file then stay with what Envoy has).
    fn write_files(files: &mut EnvoyFilesSink, state: &DesiredState, metrics: &Metrics) -> bool {
        match state.provenance {
            Provenance::Restored {
                replaces_other_fleet,
            } => {
                // Envoy cannot start without the file. Where there is none yet, nothing can
                // be lost by writing what the agent knows (possibly no process) before Redis
                // answers; nor where the file routes another Redis's fleet.
                if !files.cds_path().exists() || replaces_other_fleet {
                    match files.apply(&state.routed, &state.weights) {
                        Ok(_) => info!(
                            processes = state.routed.len(),
                            "Wrote the initial Envoy config."
                        ),
                        Err(e) => error!(error = %e, "Cannot write the initial Envoy config."),
                    }
                }
            }
            Provenance::Synced => match files.apply(&state.routed, &state.weights) {
                Ok(true) => {
                    metrics.config_writes.fetch_add(1, Relaxed);
                    debug!(
                        processes = state.routed.len(),
                        version = state.version,
                        "Wrote Envoy config."
                    );
                }
                Ok(false) => {}
                Err(e) => {
                    metrics.config_write_failures.fetch_add(1, Relaxed);
                    error!(error = %e, "Cannot write Envoy config; Envoy keeps the previous one.");
                    return false;
                }
            },
        }
        true
    }
}

/// Applies every version `rx` sees (the newest, when several came at once) until the
/// controller stops.
pub async fn run(
    mut rx: watch::Receiver<Arc<DesiredState>>,
    mut sinks: LocalSinks,
    status: Arc<Status>,
) {
    loop {
        let state = rx.borrow_and_update().clone();
        sinks.apply(&state, &status.metrics);
        if rx.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::Weights;
    use crate::controller::desired::Publisher;
    use crate::model::Registry;
    use crate::sinks::envoy_files::{ClusterOptions, HealthCheck, CDS_FILE};
    use crate::state::RedisOrigin;
    use routing::ClusterNames;
    use std::path::Path;
    use std::time::Duration;

    fn sinks(dir: &Path, status: &Arc<Status>) -> LocalSinks {
        let options = ClusterOptions {
            names: ClusterNames::default(),
            connect_timeout: Duration::from_millis(2500),
            max_connections: 100,
            health_check: HealthCheck::Tcp {
                interval: Duration::from_secs(2),
            },
        };
        LocalSinks {
            files: Some(EnvoyFilesSink::new(dir.to_path_buf(), options)),
            api: ApiView::new(status.clone()),
            state_file: Some(StateFileSink::new(dir.join("state.json"))),
        }
    }

    fn state(members: &[&str], provenance: Provenance) -> DesiredState {
        let now = std::time::Instant::now();
        let registry = Registry::default()
            .from_members(members.iter().copied(), 1, now)
            .0;
        DesiredState {
            version: 0,
            provenance,
            routed: registry.clone(),
            weights: Weights::new(),
            registered: registry,
            origin: RedisOrigin {
                url: "redis://127.0.0.1:6379/0".into(),
                db: 0,
            },
            run_id: None,
        }
    }

    const RESTORED: Provenance = Provenance::Restored {
        replaces_other_fleet: false,
    };

    #[test]
    fn a_restored_state_is_written_only_where_envoy_has_no_config_or_another_fleets() {
        let dir = tempfile::tempdir().unwrap();
        let status = Arc::new(Status::new(ClusterNames::default()));
        let mut local = sinks(dir.path(), &status);
        local.apply(&state(&["a/127.0.0.1:1"], RESTORED), &status.metrics);
        let first = std::fs::read(dir.path().join(CDS_FILE)).unwrap();
        assert!(!status.is_ready(), "ready waits for a synced state");
        assert!(!dir.path().join("state.json").exists());
        // Restarted with a config in place: kept until Redis answers.
        let mut restarted = sinks(dir.path(), &status);
        restarted.apply(&state(&["b/127.0.0.1:2"], RESTORED), &status.metrics);
        assert_eq!(std::fs::read(dir.path().join(CDS_FILE)).unwrap(), first);
        let other_fleet = Provenance::Restored {
            replaces_other_fleet: true,
        };
        restarted.apply(&state(&[], other_fleet), &status.metrics);
        assert_ne!(std::fs::read(dir.path().join(CDS_FILE)).unwrap(), first);
    }

    #[test]
    fn a_synced_state_reaches_envoy_then_the_api_then_the_state_file() {
        let dir = tempfile::tempdir().unwrap();
        let status = Arc::new(Status::new(ClusterNames::default()));
        let mut local = sinks(dir.path(), &status);
        local.apply(
            &state(&["a/127.0.0.1:1"], Provenance::Synced),
            &status.metrics,
        );
        assert!(status.is_ready());
        assert_eq!(status.metrics.config_writes.load(Relaxed), 1);
        let saved = crate::state::load(&dir.path().join("state.json")).unwrap();
        assert_eq!(saved.members, ["a/127.0.0.1:1"]);
        // Envoy's file cannot be written: the API and the state file stay with Envoy.
        std::fs::create_dir(dir.path().join(".cds.json.tmp")).unwrap();
        local.apply(
            &state(&["b/127.0.0.1:2"], Provenance::Synced),
            &status.metrics,
        );
        assert_eq!(status.metrics.config_write_failures.load(Relaxed), 1);
        let saved = crate::state::load(&dir.path().join("state.json")).unwrap();
        assert_eq!(saved.members, ["a/127.0.0.1:1"]);
        assert_eq!(status.processes().len(), 1);
        assert_eq!(status.processes()[0].process_id, "a");
    }

    #[tokio::test]
    async fn the_task_applies_the_newest_state_and_ends_with_the_controller() {
        let dir = tempfile::tempdir().unwrap();
        let status = Arc::new(Status::new(ClusterNames::default()));
        let publisher = Publisher::new(state(&[], RESTORED));
        let rx = publisher.subscribe();
        publisher.publish(state(&["a/127.0.0.1:1"], Provenance::Synced));
        publisher.publish(state(
            &["a/127.0.0.1:1", "b/127.0.0.1:2"],
            Provenance::Synced,
        ));
        let task = tokio::spawn(run(rx, sinks(dir.path(), &status), status.clone()));
        drop(publisher);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
        let saved = crate::state::load(&dir.path().join("state.json")).unwrap();
        assert_eq!(saved.members.len(), 2);
    }
}
