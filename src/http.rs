//! The HTTP API on the `http` crate's types: hyper on a small tokio runtime ([`server`], its
//! layers and its table of open connections [`conns`]), requests and responses
//! ([`reply`], camjobd's response [`body`]), the route table and handlers ([`routes`]) with one
//! typed error ([`error`]), the MJPEG live stream ([`stream`]) and its placeholder frame
//! ([`placeholder`]), the server's counters ([`stats`]) and Prometheus metrics ([`metrics`]).
//!
//! The server owns sockets, the runtime and limits; the routes turn requests into reads of
//! the published state and commands to the supervisor. None of them imports the capture code:
//! frames come from [`crate::live`].

pub mod body;
pub mod conns;
pub mod error;
pub mod metrics;
pub mod placeholder;
pub mod reply;
pub mod routes;
pub mod server;
pub mod stats;
pub mod stream;
