//! The integration tests, as one crate: one module per area, so that tokio, hyper, rustls and
//! retina are linked into one test binary instead of one per file. Most modules drive the real
//! `camjobd` binary through `common`.
//!
//! `cargo test --test it` runs them all; `cargo test --test it rtsp::` one module.
//!
//! Tests of different modules run beside each other in this one process (up to
//! `--test-threads`). That is safe because no test here changes the process: none sets an
//! environment variable, changes directory or installs a signal handler, and the thread,
//! descriptor and memory counts the tests assert are the daemon's (`/proc/<its pid>`), not
//! this process's. What a module shares only within itself (the RTSP tests' `SERIAL` turn)
//! stays in that module.
//!
//! `tests/alloc.rs` stays a crate of its own: its counting `#[global_allocator]` counts every
//! allocation of the process, so it must be alone in its process.

#[path = "../common/mod.rs"]
mod common;

mod board;
mod clock;
mod controls;
mod exports;
mod fuzz_regressions;
mod hardening;
mod history;
mod http_api;
mod libcamera;
mod lifecycle;
mod live_view;
mod moonraker;
mod mqtt;
mod pipe_source;
mod rtsp;
mod store;
mod structure;
mod webrtc;
