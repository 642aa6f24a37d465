//! `redis-cli MONITOR`: which client wrote what.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::{wait_for, Proc};

/// `redis-cli MONITOR` on a server, appended to a file, and started again at once when the
/// server drops it (Sentinel kills every normal client of a replica it promotes).
pub struct Monitor {
    pub path: PathBuf,
    stop: Arc<AtomicBool>,
    current: Arc<Mutex<Option<Proc>>>,
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Dropping the Proc kills it; the loop then sees `stop`.
        self.current.lock().unwrap().take();
    }
}

impl Monitor {
    pub fn start(dir: &Path, port: u16, name: &str) -> Monitor {
        let path = dir.join(format!("{name}.monitor"));
        std::fs::File::create(&path).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let current: Arc<Mutex<Option<Proc>>> = Arc::default();
        {
            let (path, stop, current) = (path.clone(), stop.clone(), current.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let out = std::fs::OpenOptions::new()
                        .append(true)
                        .open(&path)
                        .unwrap();
                    let proc = Proc::spawn(
                        "redis-cli monitor",
                        Command::new("redis-cli")
                            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "monitor"])
                            .stdout(out)
                            .stderr(Stdio::null()),
                    );
                    let pid = proc.pid();
                    *current.lock().unwrap() = Some(proc);
                    // Wait for this redis-cli to end, polling so `stop` is seen.
                    loop {
                        let running = current
                            .lock()
                            .unwrap()
                            .as_mut()
                            .is_some_and(|p| p.pid() == pid && p.is_running());
                        if !running {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
            });
        }
        wait_for("MONITOR started", Duration::from_secs(5), || {
            std::fs::read_to_string(&path)
                .ok()
                .filter(|s| s.starts_with("OK"))
        });
        Monitor {
            path,
            stop,
            current,
        }
    }

    /// The commands (lowercased words) sent from these local ports of 127.0.0.1.
    pub fn commands_from(&self, ports: &BTreeSet<u16>) -> Vec<Vec<String>> {
        let text = std::fs::read_to_string(&self.path).unwrap_or_default();
        commands_from(&text, ports)
    }
}

/// Commands that change data, as MONITOR prints them (lowercased). Not PUBLISH: the
/// liveness ping is one.
pub const WRITES: &[&str] = &[
    "sadd", "srem", "hset", "hdel", "hincrby", "set", "del", "unlink", "expire", "pexpire",
    "multi", "exec", "incr", "lpush", "rpush", "zadd", "zrem", "flushall", "flushdb",
];

/// See [`Monitor::commands_from`]. A MONITOR line is
/// `1700000000.123456 [0 127.0.0.1:50000] "SADD" "key" "member"`.
pub fn commands_from(monitor: &str, ports: &BTreeSet<u16>) -> Vec<Vec<String>> {
    monitor
        .lines()
        .filter_map(|line| {
            let (_, rest) = line.split_once(" [")?;
            let (who, args) = rest.split_once("] ")?;
            let port: u16 = who
                .split_whitespace()
                .nth(1)?
                .rsplit_once(':')?
                .1
                .parse()
                .ok()?;
            ports.contains(&port).then(|| {
                args.split("\" \"")
                    .map(|w| w.trim_matches('"').to_lowercase())
                    .collect()
            })
        })
        .collect()
}

/// Local ports of `pid`'s TCP connections to 127.0.0.1:`remote` (from /proc: which
/// sockets the process holds, and where they go).
pub fn tcp_ports_of(pid: u32, remote: u16) -> BTreeSet<u16> {
    let inodes: BTreeSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.filter_map(|e| {
                let link = std::fs::read_link(e.ok()?.path()).ok()?;
                let l = link.to_str()?;
                Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
            })
            .collect()
        })
        .unwrap_or_default();
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let remote_hex = format!("0100007F:{remote:04X}");
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (local, rem, inode) = (f.get(1)?, f.get(2)?, f.get(9)?);
            (*rem == remote_hex && inodes.contains(*inode))
                .then(|| u16::from_str_radix(local.rsplit_once(':')?.1, 16).ok())
                .flatten()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monitor_lines_are_attributed_to_their_client() {
        let log = "OK\n\
            1.2 [0 127.0.0.1:6000] \"SADD\" \"colyseus:nodes\" \"p/127.0.0.1:1\"\n\
            1.3 [0 127.0.0.1:5000] \"PUBLISH\" \"p:x\" \"[]\"\n\
            1.4 [0 127.0.0.1:5000] \"SREM\" \"colyseus:nodes\" \"q\"\n";
        let ours = commands_from(log, &BTreeSet::from([5000]));
        assert_eq!(
            ours,
            [
                vec!["publish", "p:x", "[]"],
                vec!["srem", "colyseus:nodes", "q"]
            ]
        );
    }
}
