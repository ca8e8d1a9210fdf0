//! camjobd: a camera job service for Raspberry Pi class boards. The backend owns the capture
//! job, memory is fixed at start-up, a watchdog turns a dead camera into an explicit state,
//! and a bounded HTTP API serves status, the latest JPEG and a live MJPEG stream (H.264 over
//! RTSP and WebRTC beside it). The README is the front door; `docs/` states the contract
//! (command line, config, HTTP API, RTSP, WebRTC, MQTT, lifecycle, store) and how to run, test
//! and deploy.
//!
//! # Layout
//!
//! Each module imports only modules listed below it (the structure test checks that there is
//! no import cycle between them):
//!
//! - `main.rs` — command line → [`config`] → [`job::Service`] → wait for a signal; systemd's
//!   notify protocol through [`notify`].
//! - [`job`] — wires the threads: [`job::supervisor`] (single writer of job state),
//!   [`job::capture`] (one loop per camera).
//! - [`http`] — on the `http` crate's types: hyper on a small tokio runtime ([`http::server`]
//!   and its layers), the route table, the API and the URLs other tools paste
//!   ([`http::routes`]) with one typed error ([`http::error`]), the MJPEG stream
//!   ([`http::stream`]), one counter table ([`http::stats`]) and Prometheus metrics
//!   ([`http::metrics`]); the dashboard is embedded.
//! - [`export`] — queued export jobs (archive, timelapse): records and their pure state
//!   machine, request checks, start-up recovery, the `export-N` workers and their pacing.
//! - [`store`] — everything in `storage.dir`: the job id file, snapshot files and their
//!   retention (the `store` thread), change scores ([`store::change`]) and the event journal
//!   ([`store::journal`]).
//! - [`mqtt`] — state, events and commands on an MQTT broker, Home Assistant discovery, a
//!   bounded outbox (the `mqtt` thread, when configured). Like HTTP it reads published state
//!   and sends commands; nothing waits on it.
//! - [`moonraker`] — each camera's webcam registered with Moonraker (Mainsail, Fluidd, Obico)
//!   and kept in sync: a pure plan per round ([`moonraker::plan`]) and an HTTP client on
//!   hyper (the `moonraker` thread, when configured). It only publishes what it did
//!   ([`status::moonraker`]); nothing waits on it.
//! - [`led`] — the status LED: pattern, sysfs and GPIO backends, the `led` thread.
//! - [`watchdog`] — stall and error-threshold decisions from heartbeats.
//! - [`capture`] — the [`capture::Source`] trait and its backends (synthetic, pipe + MJPEG
//!   splitter, libcamera through rpicam-vid, V4L2). Only backends touch devices or processes.
//! - [`status`] — published state the threads share: job types ([`status::job`]), heartbeats
//!   ([`status::heartbeat`]), store counters ([`status::store`]), a camera's controls as
//!   published, the values kept and the queue of changes to capture ([`status::controls`]),
//!   one camera's parts ([`status::CameraShared`]) and [`status::Shared`]. [`error`] — start-up errors.
//! - [`budget`] — what a config costs the board (memory committed and at most, threads and
//!   tasks) against its memory, its control group and the installed unit's limits.
//! - [`rtsp`] — the RTSP server (the `rtsp` thread: a small tokio runtime, one task per
//!   client): requests, sessions over TCP or UDP, RTP from each camera's H.264 ring, Digest and
//!   Basic for the token.
//! - [`webrtc`] — WHEP playback (the `webrtc` thread: str0m sessions on one UDP socket, no
//!   thread per viewer) from the same H.264 ring; HTTP hands it offers, trickles and ends.
//! - [`h264`] — H.264 beside the JPEGs: the encoder trait and its software backend (OpenH264),
//!   the `h264-<camera>` thread that runs it while a client (RTSP or WebRTC) watches, the
//!   fixed ring of access units every client reads, RTP packetization and sender reports.
//! - [`config`] — the config file, one file per section under `config/`, each key's path and
//!   bounds stated once in its section's `validate`.
//! - [`encode`] — the encoder threads of a raw (YUYV) camera: capture hands them frames and
//!   never waits; they publish in capture order. [`events`] (event ring), [`index`] (on-disk
//!   snapshot index), [`live`] (each camera's live view: newest frame, stream demand, the
//!   copies HTTP readers hold), [`ring`] (snapshot ring).
//! - Leaves: [`lifecycle`] (job states and the pure state machine), [`controls`] (camera
//!   controls: what a camera offers, the checks a change passes, the saved file), [`frame`] (frame pool),
//!   [`jpeg`] (libjpeg-turbo: planar YUV 4:2:2 encoder, DCT-scaled decoder), [`clock`],
//!   [`shutdown`] (the stop token and the panic policy), [`logging`] (non-blocking log sink),
//!   [`notify`], [`sys`] (directory-relative file operations, statvfs, thread priority, TCP
//!   progress, cgroup limits, malloc settings), [`testhook`] (faults the tests inject, debug
//!   builds only).
//!
//! `unsafe` lives only in the leaves that talk to the kernel or to C: `capture/pipe.rs` (the
//! child's set-up before exec), [`jpeg`] (libjpeg-turbo), `h264/m2m/sys.rs` (the hardware
//! encoder's ioctls and mmap) and [`sys`] (what rustix does not wrap); also checked by the
//! structure test.
//!
//! # Threads
//!
//! `capture-<camera>`, `enc<N>-<camera>` (`encoder_threads` per camera whose source can deliver
//! raw frames), `h264-<camera>` (per camera with `video`), `supervisor`, `watchdog`, `store`,
//! `signals` (SIGTERM/SIGINT → the stop token), `export-N`, `led` (when an LED is configured),
//! `http` (and `http-N` runtime workers when `http.workers` > 1), `rtsp` (when a camera has
//! `video` and `rtsp.bind` is set), `webrtc` (when a camera has `video` and `webrtc.enabled`),
//! `mqtt` (when `mqtt` is configured), `moonraker` (when `moonraker` is configured; and
//! `moonraker-dns` while it looks up a host name in `moonraker.url`), `log`: a fixed
//! set started once ([`budget`] counts it); connections and streams are tasks on the runtime,
//! never threads. Each is handed the same [`shutdown::Stop`]; one that panics fails the
//! service through it (exit 1).

#![deny(missing_docs)]

pub mod budget;
pub mod capture;
pub mod clock;
pub mod config;
pub mod controls;
pub mod encode;
pub mod error;
pub mod events;
pub mod export;
pub mod frame;
pub mod h264;
pub mod http;
pub mod index;
pub mod job;
pub mod jpeg;
pub mod led;
pub mod lifecycle;
pub mod live;
pub mod logging;
pub mod moonraker;
pub mod mqtt;
pub mod notify;
pub mod ring;
pub mod rtsp;
pub mod shutdown;
pub mod status;
pub mod store;
pub mod sys;
pub mod testhook;
pub mod watchdog;
pub mod webrtc;
