//! Checks made before `run` starts anything: every address it will listen on is free, and
//! the files it needs exist. Each failure is one line naming the variable to change.

use std::io::ErrorKind;
use std::path::Path;

use crate::supervise::plan::{Claim, ClaimAddr, Plan};

/// Why `run` will not start, in one line.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// Another process holds an address (exit code [`super::EX_UNAVAILABLE`]).
    #[error("{what} {addr} is already in use ({detail}); stop what holds it or set {variable}")]
    Taken {
        what: &'static str,
        variable: &'static str,
        addr: String,
        detail: String,
    },
    /// A setting names something that is not there (exit code [`super::EX_USAGE`]).
    #[error("{0}")]
    Config(String),
}

/// Every claim of `plan`, in order, then sync's xDS server when it is given one; the first
/// taken one refuses the start.
///
/// # Errors
/// The first address in use, an xDS address that does not parse, or a stale Unix socket
/// that cannot be removed.
pub fn check_addresses(plan: &Plan) -> Result<(), Refusal> {
    plan.claims().iter().try_for_each(check_claim)?;
    let env = std::env::var("COLYSEUS_ENVOY_XDS_LISTEN").ok();
    match plan.xds_claim(env.as_deref()).map_err(Refusal::Config)? {
        Some(xds) => check_claim(&xds),
        None => Ok(()),
    }
}

fn check_claim(claim: &Claim) -> Result<(), Refusal> {
    let taken = |addr: String, detail: String| Refusal::Taken {
        what: claim.what,
        variable: claim.variable,
        addr,
        detail,
    };
    match &claim.addr {
        // A plain bind (without SO_REUSEPORT) fails while anyone listens there, Envoys
        // included; the probe socket closes at once.
        ClaimAddr::Tcp(addr) => match std::net::TcpListener::bind(addr) {
            Ok(_) => Ok(()),
            Err(e) => Err(taken(addr.to_string(), e.to_string())),
        },
        ClaimAddr::Unix(path) => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => Err(taken(
                format!("unix:{}", path.display()),
                "something answers on it".to_owned(),
            )),
            // Left by a process that died: nobody answers, so it can go.
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => std::fs::remove_file(path)
                .map_err(|e| {
                    Refusal::Config(format!(
                        "cannot remove the stale socket {}: {e}",
                        path.display()
                    ))
                }),
            Err(_) => Ok(()),
        },
    }
}

/// The files `run` needs, named by the variable that sets them.
///
/// # Errors
/// The first missing or unusable one.
pub fn check_files(plan: &Plan) -> Result<(), Refusal> {
    if plan.filter_wasm.as_os_str().is_empty() {
        return Err(Refusal::Config(
            "COLYSEUS_ENVOY_FILTER_WASM is not set (expected the path of the filter's .wasm, \
             which scripts/build-filter.sh builds)"
                .to_owned(),
        ));
    }
    if !plan.filter_wasm.is_file() {
        return Err(Refusal::Config(format!(
            "COLYSEUS_ENVOY_FILTER_WASM={}: no such file (expected the filter's .wasm, which \
             scripts/build-filter.sh builds)",
            plan.filter_wasm.display()
        )));
    }
    if find_program(&plan.envoy_bin).is_none() {
        return Err(Refusal::Config(format!(
            "ENVOY_BIN={}: not an executable file, nor a program in PATH (expected Envoy, \
             e.g. .venv/bin/envoy after scripts/setup.sh)",
            plan.envoy_bin.display()
        )));
    }
    Ok(())
}

/// `program` if it is a path to a file, else the first match in `PATH`.
pub fn find_program(program: &Path) -> Option<std::path::PathBuf> {
    if program.components().count() > 1 {
        return program.is_file().then(|| program.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(addr: ClaimAddr) -> Claim {
        Claim {
            what: "the public listener",
            variable: "PORT",
            addr,
        }
    }

    #[test]
    fn a_listening_port_is_refused_with_its_variable() {
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = held.local_addr().unwrap();
        let err = check_claim(&claim(ClaimAddr::Tcp(addr)))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with(&format!("the public listener {addr} is already in use")));
        assert!(err.ends_with("set PORT"), "{err}");
        drop(held);
        assert!(check_claim(&claim(ClaimAddr::Tcp(addr))).is_ok());
    }

    #[test]
    fn a_stale_unix_socket_is_removed_and_a_live_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let live = std::os::unix::net::UnixListener::bind(&path).unwrap();
        assert!(check_claim(&claim(ClaimAddr::Unix(path.clone()))).is_err());
        drop(live);
        assert!(path.exists(), "a closed listener leaves its file");
        assert!(check_claim(&claim(ClaimAddr::Unix(path.clone()))).is_ok());
        assert!(!path.exists());
    }
}
