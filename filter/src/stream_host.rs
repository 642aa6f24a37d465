//! The host calls of the network (TCP edge) context, behind [`StreamHost`] so
//! [`crate::stream`] is tested with a mock.
//!
//! Several SDK calls used here panic on a status other than `Ok` (and a panic aborts the
//! VM): each is made only where Envoy 1.40 returns `Ok` for a network context (checked
//! against the real Envoy by `tests/e2e/tests/edge_tcp.rs`).

use std::time::{Duration, UNIX_EPOCH};

use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, Status};

/// Filter-state key of `tcp_proxy`'s per-connection cluster (`PerConnectionCluster`).
pub const TCP_PROXY_CLUSTER_KEY: &str = "envoy.tcp_proxy.cluster";

/// Envoy's foreign function that creates a typed filter-state object (Envoy PR 29320).
pub const SET_FILTER_STATE: &str = "set_envoy_filter_state";

/// The host calls a connection needs.
pub trait StreamHost {
    /// The bytes received so far (Envoy keeps them while the filter pauses).
    ///
    /// # Errors
    /// The host refused the call.
    fn downstream_data(&self, size: usize) -> Result<Vec<u8>, Status>;
    /// Replaces the first `len` received bytes with `bytes`.
    fn replace_downstream_data(&mut self, len: usize, bytes: &[u8]) -> Result<(), Status>;
    /// Makes `tcp_proxy` connect this connection to `cluster`.
    ///
    /// # Errors
    /// The host refused the call (an Envoy without the foreign function).
    fn set_upstream_cluster(&mut self, cluster: &str) -> Result<(), Status>;
    /// The downstream peer's address (`ip:port`), if the host has one.
    fn client_address(&self) -> Option<String>;
    /// Wall-clock time in milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
    /// Closes the connection of context `context_id` (a context of this VM, still open).
    ///
    /// # Errors
    /// The host refused the call.
    fn close_connection(&mut self, context_id: u32) -> Result<(), Status>;
}

/// The argument of [`SET_FILTER_STATE`]: the protobuf `SetEnvoyFilterStateArguments`
/// (path = 1, value = 2, span = 3 with `DownstreamConnection` = 2), written by hand for two
/// short strings rather than pulling a protobuf crate into the module.
pub fn filter_state_argument(path: &str, value: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(path.len() + value.len() + 8);
    for (tag, s) in [(0x0a, path), (0x12, value)] {
        out.push(tag);
        put_varint(&mut out, s.len());
        out.extend_from_slice(s.as_bytes());
    }
    out.extend_from_slice(&[0x18, 0x02]);
    out
}

fn put_varint(out: &mut Vec<u8>, mut v: usize) {
    while v >= 0x80 {
        out.push(u8::try_from(v & 0x7f).unwrap_or_default() | 0x80);
        v >>= 7;
    }
    out.push(u8::try_from(v).unwrap_or_default());
}

/// The real host.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProxyStreamHost;

impl StreamHost for ProxyStreamHost {
    fn downstream_data(&self, size: usize) -> Result<Vec<u8>, Status> {
        Ok(hostcalls::get_buffer(BufferType::DownstreamData, 0, size)?.unwrap_or_default())
    }

    fn replace_downstream_data(&mut self, len: usize, bytes: &[u8]) -> Result<(), Status> {
        hostcalls::set_buffer(BufferType::DownstreamData, 0, len, bytes)
    }

    fn set_upstream_cluster(&mut self, cluster: &str) -> Result<(), Status> {
        let arg = filter_state_argument(TCP_PROXY_CLUSTER_KEY, cluster);
        hostcalls::call_foreign_function(SET_FILTER_STATE, Some(&arg)).map(|_| ())
    }

    fn client_address(&self) -> Option<String> {
        let bytes = hostcalls::get_property(vec!["source", "address"]).ok()??;
        String::from_utf8(bytes).ok()
    }

    fn now_ms(&self) -> u64 {
        hostcalls::get_current_time()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    fn close_connection(&mut self, context_id: u32) -> Result<(), Status> {
        hostcalls::set_effective_context(context_id)?;
        hostcalls::close_downstream()
    }
}

/// The time `timeout` after `now_ms`, in milliseconds, saturating.
pub fn deadline(now_ms: u64, timeout: Duration) -> u64 {
    now_ms.saturating_add(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_state_argument_is_the_protobuf_envoy_reads() {
        let arg = filter_state_argument(TCP_PROXY_CLUSTER_KEY, "colyseus-process-p1");
        let mut want = vec![0x0a, 23];
        want.extend_from_slice(b"envoy.tcp_proxy.cluster");
        want.extend_from_slice(&[0x12, 19]);
        want.extend_from_slice(b"colyseus-process-p1");
        want.extend_from_slice(&[0x18, 0x02]);
        assert_eq!(arg, want);
        // Lengths of 128 and more take two varint bytes.
        let long = "x".repeat(300);
        let arg = filter_state_argument("p", &long);
        assert_eq!(&arg[3..6], &[0x12, 0xac, 0x02]);
    }
}
