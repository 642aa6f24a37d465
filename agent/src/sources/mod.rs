//! Where registrations come from. Each source reads and converts; it decides nothing.

pub mod redis;
