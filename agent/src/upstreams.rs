//! What Envoy may connect to: every registration's address checked by
//! [`crate::upstream_policy`], and DNS names resolved by the agent itself.
//!
//! A name used to become an Envoy DNS cluster, so Envoy resolved it and connected to
//! whatever it returned, unchecked. Now the agent resolves each name (at once when it first
//! appears, then every `interval`), checks every address it returns, and gives Envoy the
//! checked IP in a STATIC cluster: what Envoy connects to is exactly what was checked. A
//! name that returns any refused address is refused as a whole (and unrouted until it
//! resolves to allowed addresses only); a lookup that fails keeps the last good answer, as
//! Envoy's own DNS clusters do; a name never resolved has no cluster yet.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::sync::mpsc;
use tracing::debug;

use crate::model::{Endpoint, Host, Registration, Registry, Rejection};
use crate::upstream_policy::{Refusal, UpstreamPolicy};

/// Answers of one round of lookups: name -> addresses (empty: the lookup failed).
type Answers = Vec<(String, Vec<IpAddr>)>;

/// The policy, the resolved names, and the lookups in flight.
pub struct Upstreams {
    policy: UpstreamPolicy,
    /// Period of the re-resolution of every name.
    pub interval: Duration,
    /// Last good answer per name (sorted, deduplicated).
    names: BTreeMap<String, Vec<IpAddr>>,
    in_flight: BTreeSet<String>,
    tx: mpsc::UnboundedSender<Answers>,
    rx: mpsc::UnboundedReceiver<Answers>,
}

impl Upstreams {
    pub fn new(policy: UpstreamPolicy, interval: Duration) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Self {
            policy,
            interval,
            names: BTreeMap::new(),
            in_flight: BTreeSet::new(),
            tx,
            rx,
        }
    }

    /// Checks a registration's address: an IP literal at once, a name against its last
    /// answer (a name not resolved yet is checked when it is, see [`Self::record`]).
    ///
    /// # Errors
    /// A [`Rejection::ForbiddenUpstream`] naming the member and the rule it breaks; for a
    /// name, the same rejection [`Self::record`] reports, so it is counted once.
    pub fn admit(&self, reg: &Registration) -> Result<(), Rejection> {
        match &reg.endpoint.host {
            Host::Ip(ip) => {
                self.check(SocketAddr::new(*ip, reg.endpoint.port))
                    .map_err(|refusal| Rejection::ForbiddenUpstream {
                        member: reg.member(),
                        address: reg.endpoint.to_string(),
                        refusal,
                    })
            }
            Host::Name(name) => match self.verdict(&reg.endpoint) {
                Some(Err((addr, refusal))) => Err(refused_name(reg, name, addr, refusal)),
                _ => Ok(()),
            },
        }
    }

    fn check(&self, addr: SocketAddr) -> Result<(), Refusal> {
        self.policy.check(addr, is_local)
    }

    /// The registry as Envoy gets it: names replaced by their checked address, and every
    /// process whose address is refused or not resolved yet left out. Starts lookups of
    /// names seen for the first time.
    pub fn routed(&mut self, registry: &Registry) -> Registry {
        let new: Vec<String> = registry
            .iter()
            .filter_map(|(_, e)| match &e.endpoint.host {
                Host::Name(n) if !self.names.contains_key(n) && !self.in_flight.contains(n) => {
                    Some(n.clone())
                }
                _ => None,
            })
            .collect();
        self.resolve(new);
        registry.routed_view(|_, endpoint| {
            let addr = self.verdict(endpoint)?.ok()?;
            Some(Endpoint {
                host: Host::Ip(addr.ip()),
                port: addr.port(),
            })
        })
    }

    /// Re-resolves every name `registry` holds (the periodic round); forgets the others.
    pub fn refresh(&mut self, registry: &Registry) {
        let names: BTreeSet<String> = registry
            .iter()
            .filter_map(|(_, e)| match &e.endpoint.host {
                Host::Name(n) => Some(n.clone()),
                Host::Ip(_) => None,
            })
            .collect();
        self.names.retain(|n, _| names.contains(n));
        let todo = names
            .into_iter()
            .filter(|n| !self.in_flight.contains(n))
            .collect();
        self.resolve(todo);
    }

    fn resolve(&mut self, names: Vec<String>) {
        if names.is_empty() {
            return;
        }
        self.in_flight.extend(names.iter().cloned());
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let mut answers = Vec::with_capacity(names.len());
            for name in names {
                let found = match tokio::net::lookup_host((name.as_str(), 0)).await {
                    Ok(addrs) => addrs.map(|a| a.ip()).collect(),
                    Err(e) => {
                        debug!(%name, error = %e, "Cannot resolve a registered name.");
                        Vec::new()
                    }
                };
                answers.push((name, found));
            }
            let _ = tx.send(answers);
        });
    }

    /// The next round of answers.
    pub async fn answers(&mut self) -> Option<Answers> {
        self.rx.recv().await
    }

    /// Records answers; returns whether any name's addresses changed, and the rejections
    /// to report (each member at a name whose new addresses are refused).
    pub fn record(&mut self, answers: Answers, registry: &Registry) -> (bool, Vec<Rejection>) {
        let (mut changed, mut rejections) = (false, Vec::new());
        for (name, mut ips) in answers {
            self.in_flight.remove(&name);
            // A failed lookup keeps the last good answer.
            if ips.is_empty() {
                continue;
            }
            ips.sort();
            ips.dedup();
            if self.names.get(&name) == Some(&ips) {
                continue;
            }
            self.names.insert(name.clone(), ips);
            changed = true;
            for (pid, e) in registry.iter() {
                if e.endpoint.host != Host::Name(name.clone()) {
                    continue;
                }
                if let Some(Err((addr, refusal))) = self.verdict(&e.endpoint) {
                    let reg = Registration {
                        process_id: pid.clone(),
                        endpoint: e.endpoint.clone(),
                    };
                    rejections.push(refused_name(&reg, &name, addr, refusal));
                }
            }
        }
        (changed, rejections)
    }

    /// Where Envoy may connect for `endpoint`: its checked address (for a name, IPv4 first,
    /// as Envoy's `V4_PREFERRED`), or the first refused one and why. `None`: a name not
    /// resolved yet.
    fn verdict(&self, endpoint: &Endpoint) -> Option<Result<SocketAddr, (SocketAddr, Refusal)>> {
        let port = endpoint.port;
        let ips = match &endpoint.host {
            Host::Ip(ip) => std::slice::from_ref(ip),
            Host::Name(n) => self.names.get(n)?.as_slice(),
        };
        for ip in ips {
            let addr = SocketAddr::new(*ip, port);
            if let Err(refusal) = self.check(addr) {
                return Some(Err((addr, refusal)));
            }
        }
        let pick = ips.iter().find(|ip| ip.is_ipv4()).or_else(|| ips.first())?;
        Some(Ok(SocketAddr::new(*pick, port)))
    }
}

/// A registration at `name` refused because `name` resolves to `addr`.
fn refused_name(reg: &Registration, name: &str, addr: SocketAddr, refusal: Refusal) -> Rejection {
    Rejection::ForbiddenUpstream {
        member: reg.member(),
        address: format!("{name} -> {addr}"),
        refusal,
    }
}

/// Whether `ip` is one of this host's addresses: only a local address can be bound.
fn is_local(ip: IpAddr) -> bool {
    std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::parse_member;
    use crate::upstream_policy::parse_cidrs;

    fn registry(members: &[&str]) -> Registry {
        Registry::default()
            .from_members(members.iter().copied(), 2567, std::time::Instant::now())
            .0
    }

    fn policy(allow: &str) -> UpstreamPolicy {
        UpstreamPolicy {
            allow: parse_cidrs(allow).unwrap(),
            envoy_admin: None,
            agent_api: Some("127.0.0.1:9902".parse().unwrap()),
        }
    }

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn a_name_already_resolved_is_admitted_only_to_allowed_addresses() {
        let mut up = Upstreams::new(policy(""), Duration::from_secs(5));
        let api = parse_member("api/agent:9902", 2567).unwrap();
        let game = parse_member("game/agent:2567", 2567).unwrap();
        // Not resolved yet: checked when it is.
        assert!(up.admit(&api).is_ok());
        up.in_flight.insert("agent".to_owned());
        let (_, refused) = up.record(
            vec![("agent".to_owned(), ips(&["127.0.0.1"]))],
            &registry(&["api/agent:9902"]),
        );
        // Admitted later (announced after the name resolved): the same rejection.
        assert_eq!(up.admit(&api), Err(refused[0].clone()));
        assert!(up.admit(&game).is_ok());
    }

    #[tokio::test]
    async fn names_are_routed_only_to_checked_addresses() {
        let mut up = Upstreams::new(policy(""), Duration::from_secs(5));
        let reg = registry(&["ip/10.0.0.1:2567", "game/game1:2567", "api/agent:9902"]);
        // As if their lookups were running (the test makes no real DNS query).
        up.in_flight
            .extend(["game1".to_owned(), "agent".to_owned()]);
        // Before any answer: the IP literal only.
        let routed = up.routed(&reg);
        assert_eq!(routed.len(), 1);
        let answers = vec![
            ("game1".to_owned(), ips(&["fd00::7", "10.0.0.7"])),
            ("agent".to_owned(), ips(&["127.0.0.1"])),
        ];
        let (changed, refused) = up.record(answers, &reg);
        assert!(changed);
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].reason(), "upstream_agent_api");
        assert!(
            refused[0].to_string().contains("agent -> 127.0.0.1:9902"),
            "{}",
            refused[0]
        );
        let routed = up.routed(&reg);
        let game = routed
            .get(&routing::ProcessId::parse("game").unwrap())
            .unwrap();
        // IPv4 first, as Envoy's V4_PREFERRED.
        assert_eq!(game.endpoint.host, Host::Ip("10.0.0.7".parse().unwrap()));
        assert!(routed
            .get(&routing::ProcessId::parse("api").unwrap())
            .is_none());
        // Same answer again: nothing changes, nothing is reported twice.
        let again = vec![("agent".to_owned(), ips(&["127.0.0.1"]))];
        assert_eq!(up.record(again, &reg), (false, vec![]));
        // A failed lookup keeps the last good answer.
        assert_eq!(
            up.record(vec![("game1".to_owned(), vec![])], &reg),
            (false, vec![])
        );
        assert_eq!(up.routed(&reg).len(), 2);
        // Any refused address refuses the name: here the metadata address.
        let poisoned = vec![("game1".to_owned(), ips(&["10.0.0.7", "169.254.169.254"]))];
        let (changed, refused) = up.record(poisoned, &reg);
        assert!(changed);
        assert_eq!(refused[0].reason(), "upstream_link_local");
        assert_eq!(up.routed(&reg).len(), 1);
    }

    #[tokio::test]
    async fn literals_are_admitted_by_the_allow_list() {
        let up = Upstreams::new(policy("10.0.0.0/8"), Duration::from_secs(5));
        let ok = parse_member("a/10.1.1.1:2567", 1).unwrap();
        let local = parse_member("b/127.0.0.1:2567", 1).unwrap();
        let name = parse_member("c/game1:2567", 1).unwrap();
        assert_eq!(up.admit(&ok), Ok(()));
        assert_eq!(
            up.admit(&local).unwrap_err().reason(),
            "upstream_not_allowed"
        );
        // Names are checked once resolved.
        assert_eq!(up.admit(&name), Ok(()));
    }
}
