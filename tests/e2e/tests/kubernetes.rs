//! `deploy/kubernetes/`: each overlay, rendered by `kubectl kustomize` (offline), passes the
//! Kubernetes schemas (`kubernetes-validate --strict`, PyPI, in `.venv`: ships its schemas),
//! has the shape the README promises, and the Envoy bootstrap its init container renders
//! passes `envoy --mode validate`.
#![cfg(feature = "e2e")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Command, Stdio};

use e2e::*;
use serde_json::Value;

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn render(overlay: &str) -> String {
    let dir = root().join("deploy/kubernetes/overlays").join(overlay);
    let (ok, yaml) = run(Command::new("kubectl").arg("kustomize").arg(&dir));
    assert!(
        ok,
        "kubectl kustomize {overlay} (kubectl must be on PATH: it renders the overlays):\n{yaml}"
    );
    yaml
}

fn validate(file: &Path) -> (bool, String) {
    let exe = root().join(".venv/bin/kubernetes-validate");
    assert!(
        exe.is_file(),
        "{} missing: run scripts/setup.sh (requirements-dev.txt pins kubernetes-validate)",
        exe.display()
    );
    run(Command::new(exe).arg("--strict").arg(file))
}

/// The rendered documents as JSON (PyYAML comes with kubernetes-validate).
fn documents(yaml: &str) -> Vec<Value> {
    let mut py = Command::new(root().join(".venv/bin/python"))
        .args([
            "-c",
            "import json, sys, yaml; json.dump([d for d in yaml.safe_load_all(sys.stdin) if d], sys.stdout)",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    py.stdin.take().unwrap().write_all(yaml.as_bytes()).unwrap();
    let out = py.wait_with_output().unwrap();
    assert!(out.status.success());
    serde_json::from_slice(&out.stdout).unwrap()
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind}/{name}"))
}

fn container<'a>(pod: &'a Value, name: &str) -> &'a Value {
    pod["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

#[test]
fn manifests_pass_the_schemas_and_envoy_validates_their_bootstrap() {
    let dir = scratch("kubernetes");
    for overlay in ["local", "production"] {
        let yaml = render(overlay);
        let file = dir.join(format!("{overlay}.yaml"));
        std::fs::write(&file, &yaml).unwrap();
        let (ok, out) = validate(&file);
        assert!(ok, "{overlay}: {out}");
        println!("{overlay}: {}", out.lines().count());

        let docs = documents(&yaml);
        // Only Envoy is published.
        let published: Vec<&Value> = docs
            .iter()
            .filter(|d| d["kind"] == "Service" && d["spec"]["type"] == "LoadBalancer")
            .collect();
        assert_eq!(published.len(), 1, "{overlay}: LoadBalancer Services");
        assert_eq!(published[0]["metadata"]["name"], "colyseus-envoy");
        find(&docs, "PodDisruptionBudget", "colyseus-envoy");

        let proxy = find(&docs, "Deployment", "colyseus-envoy");
        let pod = &proxy["spec"]["template"]["spec"];
        assert_eq!(
            proxy["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"],
            0
        );
        // The grace period covers the drain of the preStop hook.
        let envoy = container(pod, "envoy");
        let drain: u64 = envoy["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == "DRAIN_SECONDS")
            .and_then(|e| e["value"].as_str()?.parse().ok())
            .unwrap();
        let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
        assert!(
            grace > drain,
            "{overlay}: grace {grace} s <= drain {drain} s"
        );
        let pre_stop = envoy["lifecycle"]["preStop"]["exec"]["command"].to_string();
        assert!(pre_stop.contains("drain_listeners?graceful"), "{pre_stop}");

        // Game servers register their pod IP.
        let game = find(&docs, "Deployment", "colyseus-game");
        let env = &container(&game["spec"]["template"]["spec"], "game")["env"];
        let self_host = env
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == "SELF_HOSTNAME")
            .unwrap();
        assert_eq!(
            self_host["valueFrom"]["fieldRef"]["fieldPath"],
            "status.podIP"
        );

        // The init container's bootstrap command, run here with the pod's paths moved into
        // the scratch directory, gives a bootstrap Envoy accepts.
        let init = &pod["initContainers"][0];
        let args: Vec<String> = init["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_owned())
            .collect();
        let state = dir.join(format!("{overlay}-state"));
        std::fs::create_dir_all(state.join("envoy-config")).unwrap();
        std::fs::copy(filter_wasm(), state.join("colyseus_envoy_filter.wasm")).unwrap();
        let state_s = state.to_str().unwrap();
        let args: Vec<String> = args
            .iter()
            .map(|a| a.replace("/var/lib/colyseus-envoy", state_s))
            .collect();
        // The agent container's own command writes the cds.json Envoy requires.
        let api = format!("127.0.0.1:{}", free_port());
        let sync_args: Vec<String> = container(pod, "agent")["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                a.as_str()
                    .unwrap()
                    .replace("/var/lib/colyseus-envoy", state_s)
            })
            .map(|a| {
                if a == "127.0.0.1:9902" {
                    api.clone()
                } else {
                    a
                }
            })
            .collect();
        let mut sync = Proc::spawn(
            "agent",
            Command::new(agent_bin())
                .args(&sync_args)
                .env("REDIS_URL", format!("redis://127.0.0.1:{}", free_port()))
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        let cds = state.join("envoy-config/cds.json");
        wait_for(
            "the agent's cds.json",
            std::time::Duration::from_secs(10),
            || {
                assert!(sync.is_running(), "{overlay}: agent {sync_args:?} exited");
                cds.exists().then_some(())
            },
        );
        sync.stop(std::time::Duration::from_secs(5));
        let (ok, bootstrap) = run(Command::new(agent_bin()).args(&args));
        assert!(ok, "{overlay}: agent {args:?}:\n{bootstrap}");
        let envoy_json = state.join("envoy.json");
        std::fs::write(&envoy_json, &bootstrap).unwrap();
        let (ok, out) = run(Command::new(envoy_bin())
            .args(["--mode", "validate", "-c"])
            .arg(&envoy_json));
        assert!(ok, "{overlay}: envoy --mode validate:\n{out}");
    }

    // The validator does refuse a bad manifest (so a pass means something).
    let bad = render("local").replace(
        "terminationGracePeriodSeconds: 330",
        "terminationGracePeriodSecond: 330",
    );
    let file = dir.join("bad.yaml");
    std::fs::write(&file, bad).unwrap();
    let (ok, out) = validate(&file);
    assert!(!ok, "a misspelt field passed: {out}");
}
