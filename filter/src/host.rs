//! The only module that calls the proxy-wasm host, behind [`Host`] so [`crate::http`] can
//! be tested with a mock.
//!
//! The SDK's header getters that return `String` unwrap a UTF-8 conversion, and a panic
//! aborts the VM (every later request then fails), so header values are read as bytes.
//! Other SDK host calls panic only on a status the ABI does not allow for them.

use proxy_wasm::hostcalls;
use proxy_wasm::types::{MapType, Status};

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
}

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
}
