//! The root context: checks the plugin configuration once and hands it to each request.

use std::rc::Rc;

use log::{error, info, warn};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;
use routing::{PluginConfig, PluginConfigError, RoutingConfig};

use crate::http::RoomRouter;

/// One per VM (so one per Envoy worker thread).
#[derive(Debug, Default)]
pub struct Root {
    /// The last configuration `on_configure` accepted, shared with every request context.
    config: Option<Rc<RoutingConfig>>,
}

/// Parses and checks the plugin configuration bytes; empty means all defaults.
///
/// # Errors
/// Invalid JSON, an unknown field, or an unsafe header or cluster naming scheme.
pub fn parse_config(bytes: &[u8]) -> Result<RoutingConfig, PluginConfigError> {
    RoutingConfig::try_from(PluginConfig::from_json(bytes)?)
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        // Messages below the host's level are then dropped before they cost a host call.
        // Envoy's level is read here only: a change through the admin API applies at the
        // next configuration.
        match hostcalls::get_log_level() {
            Ok(level) => proxy_wasm::set_log_level(level),
            Err(status) => warn!("reading the host log level: host returned {status:?}"),
        }
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        match parse_config(&bytes) {
            Ok(config) => {
                info!(
                    "routing by header {} to clusters {}{{processId}} and {}",
                    config.header,
                    config.names.prefix(),
                    config.names.all()
                );
                self.config = Some(Rc::new(config));
                true
            }
            Err(e) => {
                error!("refusing plugin configuration: {e}");
                false
            }
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        // Returning `None` would make the SDK panic: an unconfigured context answers 500.
        Some(Box::new(RoomRouter::new(context_id, self.config.clone())))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_defaults_and_refuses_bad_config() {
        assert_eq!(parse_config(b"").unwrap().header, "x-colyseus-cluster");
        assert_eq!(parse_config(b"{}").unwrap().names.all(), "colyseus-all");
        assert!(parse_config(br#"{"header":"X-Bad"}"#).is_err());
        assert!(parse_config(b"{").is_err());
    }
}
