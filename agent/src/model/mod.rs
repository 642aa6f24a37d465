//! The desired routing state, and how Redis presence data changes it. Pure: no I/O.
//!
//! Colyseus 0.11-0.16 registers each process as a member `"{processId}/{host}:{port}"` of the
//! set `colyseus:nodes` and announces changes on `colyseus:nodes:discovery` as a JSON string
//! `"add,{member}"` / `"remove,{member}"`. [`Registry`] is the set of routable processes built
//! from those, with every bad input turned into a [`Rejection`] instead of an error, so one
//! bad member never stops the others from routing.
//!
//! Layout: [`member`] (members, addresses and announcements parsed, every bad input a
//! [`Rejection`]) and [`registry`] (the known processes and their states).

mod member;
mod registry;

pub use member::{
    parse_announcement, parse_host_port, parse_member, Announcement, Endpoint, Host, Registration,
    Rejection,
};
pub use registry::{Entry, Outcome, ProcessState, Registry};
