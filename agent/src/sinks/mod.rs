//! Where the desired routing state goes: Envoy config files in a watched directory
//! ([`envoy_files`]), and, with `sync --xds-listen`, an xDS gRPC server ([`xds`]) serving
//! the same clusters to any number of Envoys. Both take the same input.

pub mod envoy_files;
#[cfg(feature = "daemon")]
pub mod xds;
