//! Where the desired routing state goes. Today: Envoy config files in a watched directory
//! ([`envoy_files`]). A delta-xDS gRPC server would be a second sink with the same input.

pub mod envoy_files;
#[cfg(feature = "daemon")]
pub mod xds;
