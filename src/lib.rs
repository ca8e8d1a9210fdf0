//! camjobd: a camera job service for Raspberry Pi class boards. The backend owns the capture
//! job, memory is fixed at start-up, a watchdog turns a dead camera into an explicit state,
//! and a bounded HTTP API serves status, the latest JPEG and a live MJPEG stream. The README
//! states the contract (command line, config, HTTP API, lifecycle) and how to run, test and
//! deploy.
//!
//! # Layout
//!
//! Dependencies flow one way, top to bottom:
//!
//! - `main.rs` — command line → [`config`] → [`job::Service`] → wait for a signal.
//! - [`job`] — wires the threads: [`job::supervisor`] (single writer of job state),
//!   [`job::capture`] (one loop per camera).
//! - [`capture`] — the [`capture::Source`] trait and its backends (synthetic, pipe + MJPEG
//!   splitter, V4L2). Only backends touch devices or processes.
//! - [`encode`] — the encoder threads of a raw (YUYV) camera: capture hands them frames and
//!   never waits; they publish in capture order. [`jpeg`] — libjpeg-turbo's codec (planar
//!   YUV 4:2:2 encoder, DCT-scaled decoder), the only foreign code besides the backends.
//! - [`watchdog`] — stall and error-threshold decisions from heartbeats.
//! - [`http`] — hyper on a small tokio runtime ([`http::server`]), the API and the URLs other
//!   tools paste ([`http::routes`]), the MJPEG stream ([`http::stream`]) and Prometheus metrics
//!   ([`http::metrics`]); the dashboard page is embedded.
//! - [`led`] — the status LED: pattern, sysfs and GPIO backends, the `led` thread.
//! - [`notify`] — systemd's notify protocol (READY, STATUS, WATCHDOG), used by `main`.
//! - [`mqtt`] — state, events and commands on an MQTT broker, Home Assistant discovery, a
//!   bounded outbox (the `mqtt` thread, when configured). Like HTTP it reads published state
//!   and sends commands; nothing waits on it.
//! - [`export`] — queued export jobs (archive, timelapse) and their `export-N` workers.
//! - [`store`] — everything in `storage.dir`: the job id file, snapshot files and their
//!   retention (the `store` thread), change scores ([`store::change`]) and the event journal
//!   ([`store::journal`]).
//! - [`status`] — published state (job records, heartbeats, commands, job history) that the
//!   threads share; [`live`] — each camera's live view (newest frame, stream demand, the copies
//!   HTTP readers hold); [`index`] — the on-disk snapshot index.
//! - [`lifecycle`] — the job states and the pure state machine the supervisor applies; a leaf
//!   that `events`, `status`, `led`, `mqtt` and `http` name states from.
//! - [`ring`] (snapshot ring), [`frame`] (frame pool), [`events`] (event ring), [`logging`]
//!   (non-blocking log sink), [`config`], [`error`], [`shutdown`] (the stop token), [`clock`],
//!   [`sys`] (statvfs and thread priority). `unsafe` lives only in the capture backends,
//!   [`jpeg`] and [`sys`].
//!
//! # Threads
//!
//! `capture-<camera>`, `enc<N>-<camera>` (`encoder_threads` per camera whose source can deliver
//! raw frames), `supervisor`, `watchdog`, `store`, `export-N`, `led` (when an LED is
//! configured), `http` (and `http-N` runtime workers when `http.workers` > 1), `mqtt` (when
//! `mqtt` is configured), `log`: a fixed
//! set started once; connections and streams are tasks on the runtime, never threads. Each
//! is handed the same [`shutdown::Stop`].

#![deny(missing_docs)]

pub mod capture;
pub mod clock;
pub mod config;
pub mod encode;
pub mod error;
pub mod events;
pub mod export;
pub mod frame;
pub mod http;
pub mod index;
pub mod job;
pub mod jpeg;
pub mod led;
pub mod lifecycle;
pub mod live;
pub mod logging;
pub mod mqtt;
pub mod notify;
pub mod ring;
pub mod shutdown;
pub mod status;
pub mod store;
pub mod sys;
pub mod watchdog;
