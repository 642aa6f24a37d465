//! The per-connection context of the TCP edge (`bootstrap --edge-path tcp`): holds the
//! connection until its request head is in, then lets `tcp_proxy` connect it either
//! straight to a game process (a room WebSocket to a live process, raw TCP from then on) or
//! to the HTTP connection manager's internal listener (everything else). The decision is
//! [`routing::edge::decide`]; this module only applies it.
//!
//! Bounds: the head must fit `maxHeadBytes` (else the HCM gets it, and its 431) and arrive
//! within `headTimeoutMs` (else the connection is closed: by the next data, or by the root
//! context's tick for a connection that sends nothing, see [`close_expired`]).

use std::rc::Rc;

use log::{debug, warn};
use proxy_wasm::traits::{Context, StreamContext};
use proxy_wasm::types::{Action, PeerType};
use routing::edge::{self, Edge};
use routing::RoutingConfig;

use crate::decide::UNDEFINED_PROCESS;
use crate::root::Shared;
use crate::stream_host::{deadline, ProxyStreamHost, StreamHost};

/// One connection's context.
pub struct EdgeRouter {
    context_id: u32,
    /// `None` (or without `edge`) only if no configuration was accepted: Envoy then creates
    /// no contexts, so this is defensive.
    config: Option<Rc<RoutingConfig>>,
    shared: Rc<Shared>,
    /// The connection has gone on (to a process or the HCM): later data is not looked at.
    decided: bool,
}

impl EdgeRouter {
    pub fn new(context_id: u32, config: Option<Rc<RoutingConfig>>, shared: Rc<Shared>) -> Self {
        Self {
            context_id,
            config,
            shared,
            decided: false,
        }
    }

    /// Holds the connection (so `tcp_proxy` does not connect yet) and starts its deadline.
    pub fn on_connection(&mut self, host: &mut impl StreamHost) -> Action {
        let Some(edge) = self.config.as_ref().and_then(|c| c.edge.as_ref()) else {
            // Unconfigured: the HCM (tcp_proxy's default cluster) decides.
            self.decided = true;
            return Action::Continue;
        };
        let until = deadline(host.now_ms(), edge.head_timeout);
        self.shared
            .paused
            .borrow_mut()
            .insert(self.context_id, until);
        Action::Pause
    }

    /// Reads the head received so far and applies the decision once it is complete.
    pub fn on_data(&mut self, host: &mut impl StreamHost, size: usize, end: bool) -> Action {
        if self.decided {
            return Action::Continue;
        }
        let id = self.context_id;
        let Some(config) = self.config.clone() else {
            return self.go_on();
        };
        let Some(settings) = config.edge.as_ref() else {
            return self.go_on();
        };
        let expired = self
            .shared
            .paused
            .borrow()
            .get(&id)
            .is_some_and(|&until| host.now_ms() >= until);
        if expired {
            debug!(
                "#{id} no request head within {:?}: closing",
                settings.head_timeout
            );
            return self.close(host);
        }
        let data = match host.downstream_data(size) {
            Ok(d) => d,
            Err(status) => {
                warn!("#{id} reading the request head: host returned {status:?}");
                return self.go_on();
            }
        };
        let Some(client_ip) = host.client_address().as_deref().and_then(edge::client_ip) else {
            debug!("#{id} no client IP address: to the HTTP connection manager");
            return self.go_on();
        };
        let cx = edge::Context {
            names: &config.names,
            routing_header: &config.header,
            client_ip: &client_ip,
            scheme: &settings.scheme,
            max_head_len: settings.max_head_len,
        };
        let decision = {
            let known = self.shared.known.borrow();
            let fetched = known.count().is_some();
            edge::decide(&data, &cx, |pid| {
                fetched && pid != UNDEFINED_PROCESS && known.contains(pid)
            })
        };
        match decision {
            // A client that half-closes mid-head: the HCM answers what it got.
            Edge::Wait if end => self.go_on(),
            Edge::Wait => Action::Pause,
            Edge::Hcm(why) => {
                debug!("#{id} to the HTTP connection manager: {why:?}");
                self.go_on()
            }
            Edge::Raw {
                cluster,
                head,
                head_len,
            } => {
                // The head is rewritten first: a connection never reaches a process with
                // the client's forwarding headers.
                if let Err(status) = host.replace_downstream_data(head_len, &head) {
                    warn!("#{id} rewriting the request head: host returned {status:?}");
                    return self.go_on();
                }
                match host.set_upstream_cluster(&cluster) {
                    Ok(()) => debug!("#{id} raw to cluster {cluster}"),
                    // Rewritten but not routed: the HCM gets it and rewrites it again.
                    Err(status) => warn!(
                        "#{id} setting the connection's cluster to {cluster}: host returned {status:?}"
                    ),
                }
                self.go_on()
            }
        }
    }

    /// The connection closed: forget its deadline.
    pub fn on_close(&mut self) {
        self.shared.paused.borrow_mut().remove(&self.context_id);
    }

    fn go_on(&mut self) -> Action {
        self.decided = true;
        self.shared.paused.borrow_mut().remove(&self.context_id);
        Action::Continue
    }

    fn close(&mut self, host: &mut impl StreamHost) -> Action {
        self.decided = true;
        self.shared.paused.borrow_mut().remove(&self.context_id);
        if let Err(status) = host.close_connection(self.context_id) {
            warn!(
                "#{} closing the connection: host returned {status:?}",
                self.context_id
            );
        }
        Action::Pause
    }
}

/// Closes the connections still without a complete head past their deadline (called from
/// the root context's tick; a connection that sends nothing gets no other callback).
pub fn close_expired(shared: &Shared, host: &mut impl StreamHost) {
    let now = host.now_ms();
    let expired: Vec<u32> = {
        let mut paused = shared.paused.borrow_mut();
        let ids: Vec<u32> = paused
            .iter()
            .filter(|&(_, &until)| now >= until)
            .map(|(&id, _)| id)
            .collect();
        for id in &ids {
            paused.remove(id);
        }
        ids
    };
    for id in expired {
        debug!("#{id} no request head in time: closing");
        if let Err(status) = host.close_connection(id) {
            warn!("#{id} closing the connection: host returned {status:?}");
        }
    }
}

impl Context for EdgeRouter {}

/// Only the connection's start, its downstream data (until decided) and its close are
/// handled; the upstream callbacks stay at the SDK's defaults and are stripped from the
/// module (`strip_callbacks::UNUSED_CALLBACKS`), so raw traffic from a game process never
/// enters the VM.
impl StreamContext for EdgeRouter {
    fn on_new_connection(&mut self) -> Action {
        self.on_connection(&mut ProxyStreamHost)
    }

    fn on_downstream_data(&mut self, data_size: usize, end_of_stream: bool) -> Action {
        self.on_data(&mut ProxyStreamHost, data_size, end_of_stream)
    }

    fn on_downstream_close(&mut self, _peer_type: PeerType) {
        self.on_close();
    }
}

#[cfg(test)]
#[path = "stream_tests.rs"]
pub(crate) mod tests;
