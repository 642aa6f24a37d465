//! The only module that calls the proxy-wasm host, behind [`Host`] so [`crate::http`] can
//! be tested with a mock.
//!
//! The SDK's header getters that return `String` unwrap a UTF-8 conversion, and a panic
//! aborts the VM (every later request then fails), so header values are read as bytes.
//! Other SDK host calls panic only on a status the ABI does not allow for them.

use std::time::{Duration, UNIX_EPOCH};

use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, MapType, Status};

/// The host calls a request needs.
pub trait Host {
    /// The value of a request header, as bytes.
    ///
    /// # Errors
    /// The host refused the call.
    fn request_header(&self, name: &str) -> Result<Option<Vec<u8>>, Status>;
    /// Removes every value of a request header.
    ///
    /// # Errors
    /// The host refused the call.
    fn remove_request_header(&mut self, name: &str) -> Result<(), Status>;
    /// Sets a request header to one value, replacing any other.
    ///
    /// # Errors
    /// The host refused the call.
    fn set_request_header(&mut self, name: &str, value: &str) -> Result<(), Status>;
    /// Answers the request locally; the request is not forwarded.
    ///
    /// # Errors
    /// The host refused the call.
    fn send_local_reply(
        &mut self,
        status: u32,
        headers: Vec<(&str, &str)>,
        body: &[u8],
    ) -> Result<(), Status>;
    /// Sends `GET {path}` to an Envoy cluster, with `node` (this Envoy's node id) in
    /// [`routing::wire::NODE_HEADER`] when given; the answer arrives in the calling
    /// context's `on_http_call_response` with the returned token.
    ///
    /// # Errors
    /// The host refused the call (unknown cluster, bad headers).
    fn dispatch_get(
        &mut self,
        cluster: &str,
        path: &str,
        node: Option<&str>,
        timeout: Duration,
    ) -> Result<u32, Status>;
    /// The status and body of the call answer being delivered; `None` status when the call
    /// failed or timed out (Envoy then reports zero headers, and reading them would be
    /// refused with a status the SDK panics on, so they are not read).
    fn call_response(&self, num_headers: usize, body_size: usize) -> (Option<u32>, Vec<u8>);
    /// A header of the call answer being delivered, if the answer has headers and this one.
    fn call_header(&self, num_headers: usize, name: &str) -> Option<Vec<u8>>;
    /// Lets a paused request continue.
    ///
    /// # Errors
    /// The host refused the call.
    fn resume_request(&mut self) -> Result<(), Status>;
    /// Wall-clock time in milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
    /// Makes the host call the root context's `on_tick` every `period`.
    ///
    /// # Errors
    /// The host refused the call.
    fn set_tick_period(&mut self, period: Duration) -> Result<(), Status>;
}

/// This Envoy's node id (property `node.id`), raw; `None` if the host has none to give.
pub fn node_id() -> Option<Vec<u8>> {
    hostcalls::get_property(vec!["node", "id"]).ok().flatten()
}

/// Bodies of agent answers larger than this are not read (a room answer is ~200 bytes; a
/// process list of 10,000 processes fits).
pub const MAX_CALL_BODY: usize = 4 << 20;

/// The real host: acts on the request of the context the host is currently calling.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProxyHost;

impl Host for ProxyHost {
    fn request_header(&self, name: &str) -> Result<Option<Vec<u8>>, Status> {
        hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, name)
    }

    fn remove_request_header(&mut self, name: &str) -> Result<(), Status> {
        hostcalls::remove_map_value(MapType::HttpRequestHeaders, name)
    }

    fn set_request_header(&mut self, name: &str, value: &str) -> Result<(), Status> {
        hostcalls::set_map_value(MapType::HttpRequestHeaders, name, Some(value))
    }

    fn send_local_reply(
        &mut self,
        status: u32,
        headers: Vec<(&str, &str)>,
        body: &[u8],
    ) -> Result<(), Status> {
        hostcalls::send_http_response(status, headers, Some(body))
    }

    fn dispatch_get(
        &mut self,
        cluster: &str,
        path: &str,
        node: Option<&str>,
        timeout: Duration,
    ) -> Result<u32, Status> {
        let mut headers = vec![
            (":method", "GET"),
            (":path", path),
            (":authority", cluster),
            ("accept", "application/json"),
        ];
        if let Some(node) = node {
            headers.push((routing::wire::NODE_HEADER, node));
        }
        hostcalls::dispatch_http_call(cluster, headers, None, vec![], timeout)
    }

    fn call_response(&self, num_headers: usize, body_size: usize) -> (Option<u32>, Vec<u8>) {
        if num_headers == 0 {
            return (None, Vec::new());
        }
        let status = hostcalls::get_map_value_bytes(MapType::HttpCallResponseHeaders, ":status")
            .ok()
            .flatten()
            .and_then(|v| std::str::from_utf8(&v).ok()?.parse().ok());
        let body = if body_size == 0 || body_size > MAX_CALL_BODY {
            Vec::new()
        } else {
            hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size)
                .ok()
                .flatten()
                .unwrap_or_default()
        };
        (status, body)
    }

    fn call_header(&self, num_headers: usize, name: &str) -> Option<Vec<u8>> {
        if num_headers == 0 {
            return None;
        }
        hostcalls::get_map_value_bytes(MapType::HttpCallResponseHeaders, name)
            .ok()
            .flatten()
    }

    fn resume_request(&mut self) -> Result<(), Status> {
        hostcalls::resume_http_request()
    }

    fn now_ms(&self) -> u64 {
        hostcalls::get_current_time()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    fn set_tick_period(&mut self, period: Duration) -> Result<(), Status> {
        hostcalls::set_tick_period(period)
    }
}
