//! The HTTP API: a bounded server of our own ([`server`]) and the routes ([`routes`]).
//!
//! The server owns sockets, threads and limits; the routes turn requests into reads of the
//! published state and commands to the supervisor. Neither imports the capture code.

pub mod metrics;
pub mod routes;
pub mod server;
