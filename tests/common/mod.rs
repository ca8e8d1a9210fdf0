//! Test harness: runs the real `camjobd` binary on a free loopback port with a config written
//! to a temp dir, and talks to it over raw HTTP/1.1 (so the tests see exactly the bytes a
//! client would). Every wait is a bounded poll with a deadline.
// Compiled into both test crates (tests/it and tests/alloc.rs), each of which calls only some
// helpers: the lint would flag the rest in each. tests/it/structure.rs checks instead that some
// test calls every one.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub use tempfile::TempDir;

/// A fresh temp directory `camjobd-test-<tag>-…` (tempfile's: removed on drop). Mode 0755 rather
/// than tempfile's 0700: mosquitto started as root drops to its own user before it reads the
/// password file and certificates the MQTT tests write here.
pub fn temp_dir(tag: &str) -> TempDir {
    use std::os::unix::fs::PermissionsExt;
    tempfile::Builder::new()
        .prefix(&format!("camjobd-test-{tag}-"))
        .permissions(std::fs::Permissions::from_mode(0o755))
        .tempdir()
        .expect("a temp dir")
}

/// The binary under test: this build's, or `CAMJOBD_TEST_BIN` (to run a test against another
/// build, such as the last landed one, and see it fail there).
pub fn bin() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| std::env::var("CAMJOBD_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_camjobd").into()))
}

/// A running camjobd.
pub struct Daemon {
    pub child: Child,
    pub addr: SocketAddr,
    pub dir: TempDir,
    stderr_log: PathBuf,
    /// Held open and never read, for [`DaemonBuilder::unread_stderr`].
    _unread_stderr: Option<std::process::ChildStderr>,
}

/// Merges `overrides` into a base config that uses a free port and the temp dir.
pub fn config(dir: &TempDir, cameras: Value, http: Value) -> Value {
    let mut h = serde_json::json!({ "bind": "127.0.0.1:0" });
    if let (Some(h), Some(extra)) = (h.as_object_mut(), http.as_object()) {
        for (k, v) in extra {
            h.insert(k.clone(), v.clone());
        }
    }
    serde_json::json!({
        "http": h,
        "storage": { "dir": dir.path().join("data") },
        "log": { "level": "debug" },
        "cameras": cameras,
        // A free UDP port for WebRTC media (the default, 8555, would be shared by parallel tests).
        "webrtc": { "udp_port": 0 },
    })
}

/// How a daemon starts: [`Daemon::builder`], any options, then [`DaemonBuilder::start`].
pub struct DaemonBuilder<'a> {
    dir: TempDir,
    config: &'a Value,
    env: Vec<(String, String)>,
    unread_stderr: bool,
    nofile: Option<u64>,
}

impl Daemon {
    /// The binary with `config` (a full config document) written into `dir`, which the daemon
    /// then owns (removed when it drops).
    pub fn builder(dir: TempDir, config: &Value) -> DaemonBuilder<'_> {
        DaemonBuilder { dir, config, env: Vec::new(), unread_stderr: false, nofile: None }
    }

    /// The common case: `cameras` and `http` merged into [`config`] in a fresh temp dir.
    pub fn start(tag: &str, cameras: Value, http: Value) -> Daemon {
        let dir = temp_dir(tag);
        let cfg = config(&dir, cameras, http);
        Daemon::builder(dir, &cfg).start()
    }

    pub fn get(&self, path: &str) -> Resp {
        request(self.addr, "GET", path, &[], b"")
    }

    pub fn post(&self, path: &str, body: &str) -> Resp {
        request(self.addr, "POST", path, &[], body.as_bytes())
    }

    pub fn camera(&self, name: &str) -> Value {
        let r = self.get(&format!("/api/cameras/{name}"));
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    }

    /// Polls the camera until `pred(job)` holds; panics with the last job after `within`.
    pub fn wait_job(&self, name: &str, within: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let v = self.camera(name);
            if pred(&v["job"]) {
                return v["job"].clone();
            }
            if Instant::now() > deadline {
                panic!("condition not met within {within:?}; last job: {v:#}\nstderr:\n{}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn wait_state(&self, name: &str, state: &str, within: Duration) -> Value {
        self.wait_job(name, within, |j| j["state"] == state)
    }

    /// Polls `/api/events` until an event satisfies `pred`; returns it.
    pub fn wait_event(&self, within: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let ev = self.get("/api/events?limit=256").json();
            if let Some(e) = ev["events"].as_array().unwrap().iter().find(|e| pred(e)) {
                return e.clone();
            }
            if Instant::now() > deadline {
                panic!("no such event within {within:?}; events: {ev:#}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Threads of the daemon process right now.
    pub fn threads(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/task", self.pid())).map(|d| d.count()).unwrap_or(0)
    }

    /// Whether the daemon has a thread with this name.
    pub fn threads_named(&self, name: &str) -> bool {
        std::fs::read_dir(format!("/proc/{}/task", self.pid()))
            .into_iter()
            .flatten()
            .flatten()
            .any(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == name))
    }

    /// SIGTERM, then waits up to `within` for the exit status.
    pub fn terminate(&mut self, within: Duration) -> Option<ExitStatus> {
        signal(self.pid(), libc::SIGTERM);
        self.wait_exit(within)
    }

    /// Waits up to `within` for the daemon to exit by itself; its status, if it did.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl DaemonBuilder<'_> {
    /// An extra environment variable (`NOTIFY_SOCKET`, a test hook, ...).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Extra environment variables.
    pub fn envs(self, vars: &[(&str, &str)]) -> Self {
        vars.iter().fold(self, |b, (k, v)| b.env(k, v))
    }

    /// stderr a pipe that nobody reads (a stuck log reader) instead of `stderr.log`.
    pub fn unread_stderr(mut self) -> Self {
        self.unread_stderr = true;
        self
    }

    /// At most `n` open file descriptors (RLIMIT_NOFILE), to drive EMFILE.
    pub fn nofile(mut self, n: u64) -> Self {
        self.nofile = Some(n);
        self
    }

    /// Starts it and waits (at most 20 s) for the address it prints.
    pub fn start(self) -> Daemon {
        let DaemonBuilder { dir, config, env, unread_stderr, nofile } = self;
        let cfg = dir.path().join("config.json");
        std::fs::write(&cfg, serde_json::to_vec_pretty(config).unwrap()).unwrap();
        let stderr_log = dir.path().join("stderr.log");
        let stderr =
            if unread_stderr { Stdio::piped() } else { Stdio::from(std::fs::File::create(&stderr_log).unwrap()) };
        let mut cmd = Command::new(bin());
        cmd.arg("--config").arg(&cfg).envs(env).stdout(Stdio::piped()).stderr(stderr);
        if let Some(n) = nofile {
            use std::os::unix::process::CommandExt;
            let limit = libc::rlimit { rlim_cur: n, rlim_max: n };
            // SAFETY: runs in the forked child before exec; setrlimit is async-signal-safe and
            // reads only `limit`, a copy owned by this closure.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        let mut child = cmd.spawn().expect("spawn camjobd");
        let unread = child.stderr.take().inspect(|e| {
            use std::os::fd::AsRawFd;
            // The smallest pipe (one page) fills after a few dozen log lines.
            // SAFETY: fcntl on a pipe fd we own; F_SETPIPE_SZ touches no memory of ours.
            unsafe {
                libc::fcntl(e.as_raw_fd(), libc::F_SETPIPE_SZ, 4096);
            }
        });
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let mut r = BufReader::new(stdout);
            let _ = r.read_line(&mut line);
            let _ = tx.send(line);
            // Keep draining so the daemon never blocks on stdout.
            let mut sink = Vec::new();
            let _ = r.read_to_end(&mut sink);
        });
        let line = rx.recv_timeout(Duration::from_secs(20)).unwrap_or_default();
        let addr =
            line.split("http://").nth(1).and_then(|s| s.trim().trim_end_matches('/').parse().ok()).unwrap_or_else(
                || {
                    let _ = child.kill();
                    panic!(
                        "camjobd did not print its address; stdout {line:?}; stderr:\n{}",
                        std::fs::read_to_string(&stderr_log).unwrap_or_default()
                    )
                },
            );
        Daemon { child, addr, dir, stderr_log, _unread_stderr: unread }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // A clean stop first (it reaps pipe children); SIGKILL only if that hangs.
        if self.child.try_wait().ok().flatten().is_none() && self.terminate(Duration::from_secs(3)).is_none() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// `camjobd --config FILE --check-config`: validates a config file and prints the effective config.
pub fn check_config(file: &std::path::Path) -> std::process::Output {
    Command::new(bin()).arg("--config").arg(file).arg("--check-config").output().expect("run camjobd")
}

/// Sends a signal (`libc::SIGTERM`, ...) to a process.
pub fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill touches no memory; the pid is our own child, not yet reaped.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
    /// Asserts a JSON error with this status and returns its code.
    pub fn error_code(&self, status: u16) -> String {
        assert_eq!(self.status, status, "{}", self.text());
        let v = self.json();
        assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
        v["error"]["code"].as_str().unwrap().to_string()
    }
}

/// One request on a fresh connection with `Connection: close`.
pub fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut head =
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    read_response(&mut s, method == "HEAD").expect("a response")
}

/// Reads one response (Content-Length framed).
pub fn read_response(s: &mut TcpStream, head_only: bool) -> std::io::Result<Resp> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("closed after {} bytes", buf.len()),
            ));
        }
        buf.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let mut lines = text.split("\r\n");
    let status: u16 = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_string(), v.trim().to_string())))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.parse().unwrap())
        .unwrap_or(0);
    let mut body = vec![0u8; if head_only { 0 } else { len }];
    s.read_exact(&mut body)?;
    Ok(Resp { status, headers, body })
}

/// A synthetic camera config with overrides merged into it.
pub fn synthetic(name: &str, extra: Value) -> Value {
    let mut cam = serde_json::json!({
        "name": name,
        "source": { "kind": "synthetic", "width": 160, "height": 120, "fps": 50 },
        "snapshot_interval_ms": 100,
    });
    merge(&mut cam, extra);
    cam
}

pub fn merge(base: &mut Value, extra: Value) {
    match (base, extra) {
        (Value::Object(b), Value::Object(e)) => {
            for (k, v) in e {
                match b.get_mut(&k) {
                    Some(slot) if slot.is_object() && v.is_object() => merge(slot, v),
                    _ => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, e) => *b = e,
    }
}

/// A small real JPEG made with the `image` crate.
pub fn jpeg(w: u32, h: u32, shade: u8) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([shade, (x % 256) as u8, (y % 256) as u8]));
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 80).encode_image(&img).unwrap();
    out
}

/// A socket to `addr` whose receive buffer is `rcvbuf` bytes (`None`: the kernel's default,
/// autotuned): a small one keeps what the client has not read yet out of the kernel.
pub fn connect_with_rcvbuf(addr: SocketAddr, rcvbuf: Option<usize>) -> TcpStream {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    if let Some(n) = rcvbuf {
        sock.set_recv_buffer_size(n).unwrap();
    }
    sock.connect_timeout(&addr.into(), Duration::from_secs(5)).unwrap();
    sock.into()
}

/// Reads from `s` at about `bytes_per_s` (a little at a time, as a slow link or
/// `curl --limit-rate` does) into `out`, until `want` bytes or the end; returns how the read
/// ended (`Ok` at `want` bytes, or the error or end of stream).
pub fn read_slowly(s: &mut TcpStream, out: &mut Vec<u8>, want: usize, bytes_per_s: u64) -> std::io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let t0 = Instant::now();
    let start = out.len();
    let mut buf = [0u8; 2048];
    while out.len() - start < want {
        // Bytes allowed by now; wait until a small chunk is allowed.
        let allowed = (t0.elapsed().as_secs_f64() * bytes_per_s as f64) as usize;
        let got = out.len() - start;
        if allowed < got + 512 {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        let room = (allowed - got).min(buf.len()).min(want - got);
        let n = s.read(&mut buf[..room])?;
        if n == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, format!("closed after {got} bytes")));
        }
        out.extend_from_slice(&buf[..n]);
    }
    Ok(())
}
