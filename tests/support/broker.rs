//! A real MQTT broker for the tests (Debian's mosquitto, started on a free loopback port
//! with a config written to a temp dir) and a subscriber that records what it sees.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{Client, Event, MqttOptions, Packet, QoS};

/// `mosquitto`, from PATH or /usr/sbin (where Debian puts it).
fn mosquitto() -> PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':').chain(["/usr/sbin", "/usr/local/sbin"]) {
        let p = Path::new(dir).join("mosquitto");
        if p.is_file() {
            return p;
        }
    }
    panic!("mosquitto not found: apt-get install mosquitto (scripts/test.sh does)");
}

/// A free loopback port (bound, then released for the broker).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A running mosquitto; killed on drop.
pub struct Broker {
    pub port: u16,
    child: Child,
    dir: PathBuf,
}

impl Broker {
    /// Starts mosquitto on a free port; `extra` is appended to its config (auth, TLS).
    pub fn start(dir: &Path, extra: &str) -> Broker {
        Broker::start_on(dir, free_port(), extra)
    }

    /// Starts mosquitto on `port` (for a broker that comes back where it was).
    pub fn start_on(dir: &Path, port: u16, extra: &str) -> Broker {
        let conf = dir.join(format!("mosquitto-{port}.conf"));
        std::fs::write(&conf, format!("listener {port} 127.0.0.1\npersistence false\nlog_dest stderr\n{}\n", extra))
            .unwrap();
        let log = std::fs::File::create(dir.join(format!("mosquitto-{port}.log"))).unwrap();
        let child = Command::new(mosquitto())
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start mosquitto");
        let b = Broker { port, child, dir: dir.to_path_buf() };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "mosquitto did not listen on {port}: {}", b.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        b
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join(format!("mosquitto-{}.log", self.port))).unwrap_or_default()
    }

    /// Stops the broker and waits for it to be gone.
    pub fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        // SIGCONT first, in case a test left it stopped.
        // SAFETY: kill touches no memory; the pid is our child.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGCONT);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One message a subscriber saw.
#[derive(Debug, Clone)]
pub struct Seen {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
    pub at: Instant,
}

impl Seen {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload)
            .unwrap_or_else(|e| panic!("{}: not JSON ({e}): {}", self.topic, self.text()))
    }
}

/// A subscriber recording every message on its filters.
pub struct Sub {
    pub client: Client,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Sub {
    /// Connects to `port` and subscribes to `filters` (waits until subscribed).
    pub fn new(port: u16, id: &str, filters: &[&str]) -> Sub {
        Sub::with_login(port, id, filters, None)
    }

    pub fn with_login(port: u16, id: &str, filters: &[&str], login: Option<(&str, &str)>) -> Sub {
        let mut o = MqttOptions::new(id, "127.0.0.1", port);
        o.set_keep_alive(Duration::from_secs(30)).set_max_packet_size(1 << 22, 1 << 22);
        if let Some((u, p)) = login {
            o.set_credentials(u, p);
        }
        let (client, mut conn) = Client::new(o, 64);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let suback = Arc::new(Mutex::new(false));
        let (s, k) = (Arc::clone(&seen), Arc::clone(&suback));
        std::thread::spawn(move || {
            for ev in conn.iter() {
                match ev {
                    Ok(Event::Incoming(Packet::Publish(p))) => s.lock().unwrap().push(Seen {
                        topic: p.topic.clone(),
                        payload: p.payload.to_vec(),
                        retain: p.retain,
                        at: Instant::now(),
                    }),
                    Ok(Event::Incoming(Packet::SubAck(_))) => *k.lock().unwrap() = true,
                    Ok(_) => {}
                    Err(_) => std::thread::sleep(Duration::from_millis(100)),
                }
            }
        });
        for f in filters {
            client.subscribe(*f, QoS::AtLeastOnce).unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while !*suback.lock().unwrap() {
            assert!(Instant::now() < deadline, "subscriber {id} not subscribed within 10 s");
            std::thread::sleep(Duration::from_millis(10));
        }
        Sub { client, seen }
    }

    /// Everything seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Messages on `topic` so far.
    pub fn on(&self, topic: &str) -> Vec<Seen> {
        self.seen().into_iter().filter(|m| m.topic == topic).collect()
    }

    /// Waits (bounded) for a message on `topic` satisfying `pred`; returns the first.
    pub fn wait(&self, topic: &str, within: Duration, pred: impl Fn(&Seen) -> bool) -> Seen {
        self.wait_since(topic, Instant::now() - Duration::from_secs(3600), within, pred)
    }

    /// Like `wait`, counting only messages that arrived at or after `since`.
    pub fn wait_since(&self, topic: &str, since: Instant, within: Duration, pred: impl Fn(&Seen) -> bool) -> Seen {
        let deadline = Instant::now() + within;
        loop {
            if let Some(m) = self.seen().into_iter().find(|m| m.topic == topic && m.at >= since && pred(m)) {
                return m;
            }
            if Instant::now() > deadline {
                let on: Vec<_> = self.on(topic).iter().map(|m| m.text()).collect();
                panic!("no such message on {topic} within {within:?}; seen there: {on:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Publishes (QoS 1).
    pub fn publish(&self, topic: &str, payload: &str, retain: bool) {
        self.client.publish(topic, QoS::AtLeastOnce, retain, payload.as_bytes().to_vec()).unwrap();
    }
}
