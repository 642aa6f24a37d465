//! Where registrations come from. Each source reads and converts; it decides nothing.

/// MongooseDriver's room listings (`roomcaches`) through the official `mongodb` driver.
pub mod mongo;
pub mod redis;
/// `@colyseus/traefik` (Colyseus 0.17+): its `traefik/...` Redis keys, parsed (pure, no I/O).
pub mod traefik;
