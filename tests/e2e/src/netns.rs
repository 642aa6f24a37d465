//! Hosts of their own for fleet tests: network namespaces (each with its own address, its
//! own loopback and its own ports) joined by a bridge in this machine's namespace, which
//! holds the gateway address. What runs on the machine (Redis, the game servers, the
//! players) binds the gateway address and is reached from every host; a process started on
//! a host with [`Host::command`] sees only its own namespace. Everything is deleted when the
//! [`Network`] is dropped, even when the test fails.
//!
//! Needs root (`ip netns`, veth, bridge; `iproute2` from `scripts/setup.sh`). A subnet of
//! 10.231.0.0/16 per test process; no traffic leaves the machine.

use std::process::Command;

/// A place to run a process: a namespace, or this machine on a loopback address.
#[derive(Debug, Clone)]
pub struct Host {
    pub ip: String,
    netns: Option<String>,
}

impl Host {
    /// This machine's namespace, on `ip` (a 127.0.0.0/8 address).
    pub fn loopback(ip: &str) -> Host {
        Host {
            ip: ip.to_owned(),
            netns: None,
        }
    }

    /// `program` to be run on this host (`ip netns exec` execs it: the pid is the program's).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        match &self.netns {
            None => Command::new(program),
            Some(ns) => {
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", ns]).arg(program);
                cmd
            }
        }
    }
}

/// A bridge, the gateway address on it and the namespaces made so far.
pub struct Network {
    tag: String,
    subnet: String,
    namespaces: Vec<String>,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("`ip` (iproute2) runs");
    assert!(
        out.status.success(),
        "ip {}: {} (network namespaces need root and iproute2)",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

impl Network {
    /// A bridge with the gateway `10.231.N.1/24`, N from this process's id.
    pub fn new() -> Network {
        let pid = std::process::id();
        let tag = format!("ce{pid}");
        let subnet = format!("10.231.{}", pid % 250 + 1);
        let net = Network {
            tag,
            subnet,
            namespaces: Vec::new(),
        };
        net.remove_leftovers();
        let bridge = net.bridge();
        ip(&["link", "add", &bridge, "type", "bridge"]);
        ip(&[
            "addr",
            "add",
            &format!("{}/24", net.gateway()),
            "dev",
            &bridge,
        ]);
        ip(&["link", "set", &bridge, "up"]);
        net
    }

    /// The machine's address on the bridge: bind what every host must reach to it.
    pub fn gateway(&self) -> String {
        format!("{}.1", self.subnet)
    }

    /// The subnet, for `--upstream-allow-cidrs`.
    pub fn cidr(&self) -> String {
        format!("{}.0/24", self.subnet)
    }

    fn bridge(&self) -> String {
        format!("{}b", self.tag)
    }

    /// A new host (namespace) on the bridge, at the next address (`.11`, `.12`, ...).
    pub fn host(&mut self, name: &str) -> Host {
        let i = self.namespaces.len() + 1;
        let ns = format!("{}-{name}", self.tag);
        let (outside, inside) = (format!("{}v{i}", self.tag), format!("{}p{i}", self.tag));
        let addr = format!("{}.{}", self.subnet, 10 + i);
        ip(&["netns", "add", &ns]);
        self.namespaces.push(ns.clone());
        ip(&[
            "link", "add", &outside, "type", "veth", "peer", "name", &inside,
        ]);
        ip(&["link", "set", &inside, "netns", &ns]);
        ip(&["link", "set", &outside, "master", &self.bridge(), "up"]);
        let exec = |args: &[&str]| {
            let mut full = vec!["netns", "exec", &ns, "ip"];
            full.extend_from_slice(args);
            ip(&full);
        };
        exec(&["addr", "add", &format!("{addr}/24"), "dev", &inside]);
        exec(&["link", "set", &inside, "up"]);
        exec(&["link", "set", "lo", "up"]);
        Host {
            ip: addr,
            netns: Some(ns),
        }
    }

    /// A run killed before its drop left these behind (same pid, so same names).
    fn remove_leftovers(&self) {
        let listed = Command::new("ip").args(["netns", "list"]).output();
        if let Ok(out) = listed {
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                let name = line.split_whitespace().next().unwrap_or_default();
                if name.starts_with(&format!("{}-", self.tag)) {
                    let _ = Command::new("ip").args(["netns", "del", name]).status();
                }
            }
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge()])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

impl Default for Network {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Network {
    /// Deleting a namespace deletes its end of the veth pair, and so the pair.
    fn drop(&mut self) {
        for ns in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge()])
            .status();
    }
}
