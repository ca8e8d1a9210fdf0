//! The HTTP API: hyper on a small tokio runtime ([`server`]) with its table of open
//! connections ([`conns`]), the routes ([`routes`]), the MJPEG live stream ([`stream`]) and its
//! placeholder frame ([`placeholder`]), and Prometheus metrics ([`metrics`]).
//!
//! The server owns sockets, the runtime and limits; the routes turn requests into reads of
//! the published state and commands to the supervisor. None of them imports the capture code:
//! frames come from [`crate::live`].

pub mod conns;
pub mod error;
pub mod metrics;
pub mod placeholder;
pub mod routes;
pub mod server;
pub mod stream;
