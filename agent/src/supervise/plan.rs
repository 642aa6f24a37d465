//! Pure decisions of `run`: the children's command lines, the addresses that must be free
//! before anything starts, and whether a hot restart may proceed. No I/O here.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::envoy_admin::AdminEndpoint;
use crate::supervise::args::ProxyArgs;

/// Files `run` keeps in its directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub dir: PathBuf,
}

impl Layout {
    pub fn bootstrap(&self) -> PathBuf {
        self.dir.join("envoy.json")
    }
    pub fn config_dir(&self) -> PathBuf {
        self.dir.join("envoy-config")
    }
    pub fn state_file(&self) -> PathBuf {
        self.dir.join("agent-state.json")
    }
    pub fn base_id_file(&self) -> PathBuf {
        self.dir.join("envoy-base-id")
    }
    /// The control socket `run hot-restart` talks to.
    pub fn control_socket(&self) -> PathBuf {
        self.dir.join("run.sock")
    }
    pub fn default_admin(&self) -> AdminEndpoint {
        AdminEndpoint::Unix(self.dir.join(crate::config::ADMIN_SOCKET))
    }
}

/// The settings `run` derived from its arguments, shared by every step.
#[derive(Debug, Clone)]
pub struct Plan {
    pub layout: Layout,
    pub public: SocketAddr,
    pub tls: Option<SocketAddr>,
    pub admin: AdminEndpoint,
    pub api: SocketAddr,
    pub envoy_bin: PathBuf,
    /// Empty when unset: [`crate::supervise::preflight::check_files`] refuses that.
    pub filter_wasm: PathBuf,
    pub hot_restart: bool,
    parent_shutdown: u32,
    envoy_base: Vec<String>,
    sync_extra: Vec<String>,
    bootstrap_extra: Vec<String>,
}

/// An address that must be free, and the variable that sets it (for the refusal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub what: &'static str,
    pub variable: &'static str,
    pub addr: ClaimAddr,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimAddr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl Plan {
    /// `dir` is `RUN_DIR` made absolute (Envoy and the children may run elsewhere).
    pub fn new(args: &ProxyArgs, dir: &Path) -> Plan {
        let layout = Layout {
            dir: dir.to_path_buf(),
        };
        let mut envoy_base = vec![
            "-c".to_owned(),
            layout.bootstrap().display().to_string(),
            "--log-level".to_owned(),
            args.envoy_log_level.clone(),
        ];
        if let Some(n) = args.envoy_concurrency {
            envoy_base.extend(["--concurrency".to_owned(), n.to_string()]);
        }
        if args.hot_restart {
            envoy_base.extend([
                "--drain-time-s".to_owned(),
                args.drain_time.to_string(),
                "--parent-shutdown-time-s".to_owned(),
                args.parent_shutdown_time.to_string(),
            ]);
        } else {
            envoy_base.push("--disable-hot-restart".to_owned());
        }
        Plan {
            admin: args
                .admin_addr
                .clone()
                .unwrap_or_else(|| layout.default_admin()),
            layout,
            public: SocketAddr::new(args.ip, args.port),
            tls: args
                .tls_cert
                .as_ref()
                .map(|_| SocketAddr::new(args.ip, args.tls_port)),
            api: args.api_addr,
            envoy_bin: args.envoy_bin.clone(),
            filter_wasm: args.filter_wasm.clone().unwrap_or_default(),
            hot_restart: args.hot_restart,
            parent_shutdown: args.parent_shutdown_time,
            envoy_base,
            sync_extra: args.sync_args.clone(),
            bootstrap_extra: args.bootstrap_args.clone(),
        }
    }

    /// Seconds a replaced Envoy may keep its connections (`ENVOY_PARENT_SHUTDOWN_TIME`).
    pub fn parent_shutdown_secs(&self) -> u32 {
        self.parent_shutdown
    }

    /// Everything `run` and its children will listen on. Envoy binds its listeners with
    /// SO_REUSEPORT, so a second Envoy on a taken port would start and share the players:
    /// these are checked before anything starts.
    pub fn claims(&self) -> Vec<Claim> {
        let mut claims = vec![Claim {
            what: "the public listener",
            variable: "PORT",
            addr: ClaimAddr::Tcp(self.public),
        }];
        if let Some(tls) = self.tls {
            claims.push(Claim {
                what: "the HTTPS listener",
                variable: "COLYSEUS_ENVOY_TLS_PORT",
                addr: ClaimAddr::Tcp(tls),
            });
        }
        claims.push(Claim {
            what: "Envoy's admin",
            variable: "ADMIN_ADDR",
            addr: match &self.admin {
                AdminEndpoint::Tcp(a) => ClaimAddr::Tcp(*a),
                AdminEndpoint::Unix(p) => ClaimAddr::Unix(p.clone()),
            },
        });
        claims.push(Claim {
            what: "the agent's API",
            variable: "AGENT_API_ADDR",
            addr: ClaimAddr::Tcp(self.api),
        });
        claims.push(Claim {
            what: "run's control socket (another `run` with this RUN_DIR?)",
            variable: "RUN_DIR",
            addr: ClaimAddr::Unix(self.layout.control_socket()),
        });
        claims
    }

    /// The claim of sync's xDS server, when sync is given one: by `--sync-arg=--xds-listen`
    /// (`=ADDR` or the next `--sync-arg`; the last wins, as for sync) or else by `env`, the
    /// `COLYSEUS_ENVOY_XDS_LISTEN` sync inherits.
    ///
    /// # Errors
    /// The address does not parse as `ip:port`, in words naming where it was set.
    pub fn xds_claim(&self, env: Option<&str>) -> Result<Option<Claim>, String> {
        let mut flag = None;
        let mut args = self.sync_extra.iter();
        while let Some(a) = args.next() {
            if a == "--xds-listen" {
                flag = args.next().map(String::as_str);
            } else if let Some(v) = a.strip_prefix("--xds-listen=") {
                flag = Some(v);
            }
        }
        let (value, from) = match (flag, env) {
            (Some(v), _) => (v, "--sync-arg --xds-listen"),
            (None, Some(v)) if !v.is_empty() => (v, "COLYSEUS_ENVOY_XDS_LISTEN"),
            _ => return Ok(None),
        };
        let addr: SocketAddr = value
            .parse()
            .map_err(|e| format!("{from}={value}: {e} (expected ip:port, e.g. 10.0.0.2:18000)"))?;
        Ok(Some(Claim {
            what: "sync's xDS server",
            variable: "COLYSEUS_ENVOY_XDS_LISTEN",
            addr: ClaimAddr::Tcp(addr),
        }))
    }

    /// `bootstrap`'s arguments; the rest comes from the inherited environment.
    pub fn bootstrap_args(&self) -> Vec<String> {
        let mut a = vec![
            "bootstrap".to_owned(),
            "--ip".to_owned(),
            self.public.ip().to_string(),
            "--port".to_owned(),
            self.public.port().to_string(),
            "--admin-addr".to_owned(),
            self.admin.to_string(),
            "--agent-api-addr".to_owned(),
            self.api.to_string(),
            "--config-dir".to_owned(),
            self.layout.config_dir().display().to_string(),
            "--filter-wasm".to_owned(),
            self.filter_wasm.display().to_string(),
        ];
        if let Some(tls) = self.tls {
            a.extend(["--tls-port".to_owned(), tls.port().to_string()]);
        }
        a.extend(self.bootstrap_extra.iter().cloned());
        a
    }

    /// `sync`'s arguments (`REDIS_URL` and every other sync variable are inherited).
    pub fn sync_args(&self) -> Vec<String> {
        let mut a = vec![
            "sync".to_owned(),
            "--config-dir".to_owned(),
            self.layout.config_dir().display().to_string(),
            "--state-file".to_owned(),
            self.layout.state_file().display().to_string(),
            "--api-addr".to_owned(),
            self.api.to_string(),
            "--admin-addr".to_owned(),
            self.admin.to_string(),
        ];
        a.extend(self.sync_extra.iter().cloned());
        a
    }

    /// Envoy's arguments for `epoch` (0: the first Envoy, which picks a free base id and
    /// writes it down; later epochs reuse `base_id`).
    pub fn envoy_args(&self, epoch: u32, base_id: Option<&str>) -> Vec<String> {
        let mut a = self.envoy_base.clone();
        if !self.hot_restart {
            return a;
        }
        match base_id {
            Some(id) if epoch > 0 => a.extend(["--base-id".to_owned(), id.to_owned()]),
            _ => {
                a.push("--use-dynamic-base-id".to_owned());
                a.push("--base-id-path".to_owned());
                a.push(self.layout.base_id_file().display().to_string());
            }
        }
        a.extend(["--restart-epoch".to_owned(), epoch.to_string()]);
        a
    }
}

/// Why a hot restart is refused, in words for the operator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HotRestartRefused {
    #[error(
        "this Envoy runs without hot restart (ENVOY_HOT_RESTART=false); restart `run` instead"
    )]
    Disabled,
    #[error("Envoy has not started yet")]
    NotStarted,
    #[error(
        "the Envoy replaced by the last hot restart (pid {0}) still drains; a hot restart now \
         would make Envoy terminate it and cut its connections. Try again once it has exited \
         (at most ENVOY_PARENT_SHUTDOWN_TIME after that restart), or use --force"
    )]
    StillDraining(u32),
}

/// Envoy hands over between two processes, one serving and one draining: a third epoch
/// makes Envoy terminate the draining one, so it is refused unless `force`.
///
/// # Errors
/// The refusal, with its reason.
pub fn may_hot_restart(
    enabled: bool,
    started: bool,
    draining: &[u32],
    force: bool,
) -> Result<(), HotRestartRefused> {
    if !enabled {
        return Err(HotRestartRefused::Disabled);
    }
    if !started {
        return Err(HotRestartRefused::NotStarted);
    }
    match draining.first() {
        Some(pid) if !force => Err(HotRestartRefused::StillDraining(*pid)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        args: ProxyArgs,
    }

    fn plan(extra: &[&str]) -> Plan {
        let mut argv = vec!["t", "--filter-wasm", "/f.wasm", "--port", "8080"];
        argv.extend(extra);
        Plan::new(&Wrap::parse_from(argv).args, Path::new("/run/p"))
    }

    #[test]
    fn epochs_share_the_base_id_the_first_one_picked() {
        let p = plan(&["--envoy-concurrency", "2"]);
        let first = p.envoy_args(0, None).join(" ");
        assert!(first.contains("--use-dynamic-base-id --base-id-path /run/p/envoy-base-id"));
        assert!(first.ends_with("--restart-epoch 0"));
        assert!(first.contains("--concurrency 2"));
        let next = p.envoy_args(1, Some("7")).join(" ");
        assert!(next.contains("--base-id 7 --restart-epoch 1"));
        assert!(!next.contains("dynamic"));
        // The drain times are given to every epoch alike.
        assert!(next.contains("--drain-time-s 600 --parent-shutdown-time-s 900"));
    }

    #[test]
    fn without_hot_restart_envoy_gets_no_epoch() {
        let p = plan(&["--hot-restart", "false"]);
        let a = p.envoy_args(0, None).join(" ");
        assert!(a.ends_with("--disable-hot-restart"));
        assert!(!a.contains("epoch"));
        assert_eq!(
            may_hot_restart(p.hot_restart, true, &[], true),
            Err(HotRestartRefused::Disabled)
        );
    }

    #[test]
    fn children_get_the_same_addresses_and_the_extra_arguments() {
        let p = plan(&[
            "--sync-arg=--balance",
            "--sync-arg=even",
            "--bootstrap-arg=--trusted-hops",
            "--bootstrap-arg=1",
        ]);
        let b = p.bootstrap_args().join(" ");
        let s = p.sync_args().join(" ");
        assert!(b.starts_with("bootstrap --ip 0.0.0.0 --port 8080"));
        assert!(b.contains("--admin-addr unix:/run/p/envoy-admin.sock"));
        assert!(b.contains("--agent-api-addr 127.0.0.1:9902"));
        assert!(b.ends_with("--trusted-hops 1"));
        assert!(s.contains("--admin-addr unix:/run/p/envoy-admin.sock"));
        assert!(s.contains("--api-addr 127.0.0.1:9902"));
        assert!(s.contains("--config-dir /run/p/envoy-config"));
        assert!(s.ends_with("--balance even"));
    }

    #[test]
    fn claims_name_the_variable_and_include_tls_only_when_on() {
        let vars: Vec<&str> = plan(&[]).claims().iter().map(|c| c.variable).collect();
        assert_eq!(vars, ["PORT", "ADMIN_ADDR", "AGENT_API_ADDR", "RUN_DIR"]);
        let tls = plan(&["--tls-cert", "/c.pem", "--tls-port", "8443"]);
        assert_eq!(tls.claims()[1].variable, "COLYSEUS_ENVOY_TLS_PORT");
        assert!(tls.bootstrap_args().join(" ").contains("--tls-port 8443"));
    }

    #[test]
    fn the_xds_server_is_claimed_from_the_sync_args_or_the_variable() {
        let none = plan(&[]);
        assert_eq!(none.xds_claim(None), Ok(None));
        let by_env = none.xds_claim(Some("127.0.0.1:18000")).unwrap().unwrap();
        assert_eq!(
            by_env.addr,
            ClaimAddr::Tcp("127.0.0.1:18000".parse().unwrap())
        );
        assert_eq!(by_env.variable, "COLYSEUS_ENVOY_XDS_LISTEN");
        // The flag wins over the variable, in both spellings, the last one counting.
        let split = plan(&["--sync-arg=--xds-listen", "--sync-arg=127.0.0.1:1"]);
        let joined = plan(&[
            "--sync-arg=--xds-listen=127.0.0.1:1",
            "--sync-arg=--xds-listen=127.0.0.1:2",
        ]);
        for (p, port) in [(split, 1), (joined, 2)] {
            let claim = p.xds_claim(Some("127.0.0.1:9")).unwrap().unwrap();
            assert_eq!(claim.addr, ClaimAddr::Tcp(([127, 0, 0, 1], port).into()));
        }
        let bad = plan(&[]).xds_claim(Some("localhost")).unwrap_err();
        assert!(
            bad.starts_with("COLYSEUS_ENVOY_XDS_LISTEN=localhost: "),
            "{bad}"
        );
    }

    #[test]
    fn a_third_epoch_is_refused_while_the_second_drains_unless_forced() {
        assert_eq!(may_hot_restart(true, true, &[], false), Ok(()));
        assert_eq!(
            may_hot_restart(true, true, &[42], false),
            Err(HotRestartRefused::StillDraining(42))
        );
        assert_eq!(may_hot_restart(true, true, &[42], true), Ok(()));
        assert_eq!(
            may_hot_restart(true, false, &[], true),
            Err(HotRestartRefused::NotStarted)
        );
    }
}
