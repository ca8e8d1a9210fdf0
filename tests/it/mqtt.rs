//! MQTT against a real broker: Debian's mosquitto, started by each test on a free loopback
//! port. camjobd runs as the real binary; a subscriber records what reaches the broker.

#[path = "../support/broker.rs"]
mod broker;

use std::time::{Duration, Instant};

use crate::common::{self, config, synthetic, temp_dir, Daemon, TempDir};
use broker::{Broker, Seen, Sub};
use serde_json::{json, Value};

/// A config with `cameras` and an `mqtt` section for `url`, under topic prefix `prefix`.
fn mqtt_config(dir: &TempDir, cameras: Value, url: &str, prefix: &str, extra: Value) -> Value {
    let mut cfg = config(dir, cameras, json!({}));
    let mut m = json!({
        "url": url,
        "client_id": prefix.replace('/', "-"),
        "topic_prefix": prefix,
        "keepalive_s": 5,
    });
    common::merge(&mut m, extra);
    cfg["mqtt"] = m;
    cfg
}

/// A slow synthetic camera (the broker tests care about states, not frames).
fn cam(name: &str) -> Value {
    synthetic(
        name,
        json!({"source": {"kind": "synthetic", "width": 160, "height": 120, "fps": 10}, "snapshot_interval_ms": 1000}),
    )
}

fn status_mqtt(d: &Daemon) -> Value {
    d.get("/api/status").json()["mqtt"].clone()
}

fn wait_mqtt(d: &Daemon, within: Duration, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let m = status_mqtt(d);
        if pred(&m) {
            return m;
        }
        assert!(Instant::now() < deadline, "{what} not within {within:?}; mqtt status {m:#}\nstderr:\n{}", d.stderr());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every discovery config `sub` saw for prefix `ha1/pi` has what Home Assistant requires.
fn check_discovery(sub: &Sub) {
    let configs: Vec<_> = sub.seen().into_iter().filter(|m| m.topic.starts_with("homeassistant/")).collect();
    let components: std::collections::BTreeSet<_> =
        configs.iter().map(|m| m.topic.split('/').nth(1).unwrap().to_string()).collect();
    for c in ["sensor", "binary_sensor", "button", "image"] {
        assert!(components.contains(c), "no {c} announced: {components:?}");
    }
    assert!(configs.len() >= 10, "{} configs", configs.len());
    let mut ids = std::collections::HashSet::new();
    for m in &configs {
        assert!(
            m.topic.starts_with("homeassistant/") && m.topic.ends_with("/config") && m.topic.contains("/ha1-pi/"),
            "{}",
            m.topic
        );
        let p = m.json();
        assert!(ids.insert(p["unique_id"].as_str().expect("unique_id").to_string()), "unique_id twice: {p}");
        assert!(p["state_topic"].is_string() || p["command_topic"].is_string() || p["url_topic"].is_string(), "{p}");
        assert_eq!(p["availability_topic"], "ha1/pi/availability");
        assert_eq!(p["device"]["identifiers"][0], "ha1-pi_cam0");
        assert!(p["device"]["name"].as_str().unwrap().starts_with("cam0"));
    }
    let problem = configs.iter().find(|m| m.topic.contains("/binary_sensor/")).unwrap().json();
    assert_eq!(problem["device_class"], "problem");
    assert_eq!(problem["state_topic"], "ha1/pi/cam0/state");
}

#[test]
fn home_assistant_discovers_the_camera_sees_its_state_and_drives_it() {
    let dir = temp_dir("mqtt-ha");
    let broker = Broker::start(dir.path(), "allow_anonymous true");
    let sub = Sub::new(broker.port, "watcher", &["ha1/#", "homeassistant/#"]);
    // A command someone left retained must not run at every (re)connection.
    sub.publish("ha1/pi/cam0/command", "stop", true);
    let cfg = mqtt_config(&dir, json!([cam("cam0")]), &broker.url(), "ha1/pi", json!({}));
    let mut d = Daemon::builder(temp_dir("mqtt-ha-d"), &cfg).start();
    let res = sub.wait("ha1/pi/cam0/command/result", Duration::from_secs(10), |_| true).json();
    assert_eq!(res["error"], "retained", "{res}");
    sub.publish("ha1/pi/cam0/command", "", true); // cleared

    // Availability, retained.
    let online = sub.wait("ha1/pi/availability", Duration::from_secs(10), |m| m.text() == "online");
    assert!(online.payload == b"online");

    // Discovery: every config has what Home Assistant requires.
    sub.wait("ha1/pi/cam0/state", Duration::from_secs(10), |m| m.text() == "RUNNING");
    check_discovery(&sub);

    // The job JSON is retained and carries the API's counters.
    let job = sub.wait("ha1/pi/cam0/job", Duration::from_secs(5), |m| {
        m.json()["frames_captured"].as_u64() > Some(0) && m.json()["state"] == "RUNNING"
    });
    let j = job.json();
    assert_eq!(j["state"], "RUNNING");
    assert!(j["last_frame_age_s"].as_f64().is_some_and(|a| a < 5.0), "{j}");

    // The image entity's URL serves the snapshot.
    let url = sub.wait("ha1/pi/cam0/snapshot_url", Duration::from_secs(5), |_| true).text();
    let path =
        url.split_once(&d.addr.to_string()).map(|(_, p)| p.to_string()).expect("the URL names the bound address");
    let r = d.get(&path);
    assert_eq!((r.status, r.header("Content-Type")), (200, Some("image/jpeg")), "{url}");

    // A state change through the API reaches the broker within 1 s.
    let t0 = Instant::now();
    assert_eq!(d.post("/api/cameras/cam0/stop", "").status, 202);
    let stopped = sub.wait_since("ha1/pi/cam0/state", t0, Duration::from_secs(5), |m| m.text() == "STOPPED");
    let latency = stopped.at - t0;
    println!("API stop -> STOPPED on the broker: {:.0} ms", latency.as_secs_f64() * 1000.0);
    assert!(latency < Duration::from_secs(1), "{latency:?}");

    // Commands: a button's word, JSON with a limit, and refusals with reasons.
    let t1 = Instant::now();
    sub.publish("ha1/pi/cam0/command", "start", false);
    let res = sub.wait_since("ha1/pi/cam0/command/result", t1, Duration::from_secs(5), |_| true).json();
    assert_eq!(
        (res["ok"].clone(), res["action"].clone(), res["state"].clone()),
        (json!(true), json!("start"), json!("STARTING"))
    );
    sub.wait_since("ha1/pi/cam0/state", t1, Duration::from_secs(5), |m| m.text() == "RUNNING");
    let t2 = Instant::now();
    sub.publish("ha1/pi/cam0/command", "start", false);
    let res = sub.wait_since("ha1/pi/cam0/command/result", t2, Duration::from_secs(5), |_| true).json();
    assert_eq!((res["ok"].clone(), res["error"].clone()), (json!(false), json!("conflict")), "{res}");
    sub.publish("ha1/pi/cam0/command", "stop", false);
    sub.wait_since("ha1/pi/cam0/state", t2, Duration::from_secs(5), |m| m.text() == "STOPPED");
    let t3 = Instant::now();
    sub.publish("ha1/pi/cam0/command", r#"{"action": "start", "max_frames": 3}"#, false);
    sub.wait_since("ha1/pi/cam0/state", t3, Duration::from_secs(10), |m| m.text() == "COMPLETED");
    assert_eq!(d.camera("cam0")["job"]["max_frames"], 3);
    let t4 = Instant::now();
    sub.publish("ha1/pi/cam0/command", "dance", false);
    let res = sub.wait_since("ha1/pi/cam0/command/result", t4, Duration::from_secs(5), |_| true).json();
    assert_eq!(res["error"], "bad_command");
    assert!(res["message"].as_str().unwrap().contains("unknown command \"dance\""), "{res}");
    assert_eq!(d.camera("cam0")["job"]["state"], "COMPLETED");

    // Counters in the API and in /metrics.
    let m = status_mqtt(&d);
    assert_eq!(m["connected"], true);
    assert!(m["commands"].as_u64() >= Some(3) && m["commands_refused"].as_u64() >= Some(3), "{m}");
    assert!(m["published"].as_u64() > Some(15), "{m}");
    assert_eq!(m["dropped"], 0);
    let metrics = d.get("/metrics").text();
    assert!(metrics.contains("camjobd_mqtt_connected 1\n"), "{metrics}");
    assert!(metrics.contains("camjobd_mqtt_messages_dropped_total 0\n"));
    assert!(d.threads_named("mqtt"));

    // Every event reaches `events`, as in /api/events.
    let events: Vec<Value> = sub.on("ha1/pi/events").iter().map(|m| m.json()).collect();
    let states: Vec<&str> =
        events.iter().filter(|e| e["kind"] == "state").filter_map(|e| e["state"].as_str()).collect();
    assert!(states.windows(2).any(|w| w == ["STOPPING", "STOPPED"]), "{states:?}");
    assert!(states.contains(&"COMPLETED"), "{states:?}");

    // A clean stop says offline (retained) after the jobs' final states.
    let t6 = Instant::now();
    sub.publish("ha1/pi/cam0/command", "start", false);
    sub.wait_since("ha1/pi/cam0/state", t6, Duration::from_secs(5), |m| m.text() == "RUNNING");
    let status = d.terminate(Duration::from_secs(10)).expect("camjobd exits");
    assert!(status.success(), "{status:?}\n{}", d.stderr());
    let off = sub.wait_since("ha1/pi/availability", t6, Duration::from_secs(5), |m| m.text() == "offline");
    let last_state = sub.on("ha1/pi/cam0/state").last().unwrap().clone();
    assert_eq!(last_state.text(), "STOPPED");
    assert!(last_state.at <= off.at);
    // What a new subscriber (Home Assistant restarting) reads: the retained values.
    let late = Sub::new(broker.port, "late", &["ha1/pi/availability", "ha1/pi/cam0/state"]);
    late.wait("ha1/pi/availability", Duration::from_secs(5), |m| m.retain && m.text() == "offline");
    late.wait("ha1/pi/cam0/state", Duration::from_secs(5), |m| m.retain && m.text() == "STOPPED");
}

#[test]
fn a_broker_down_at_start_is_connected_later_and_a_restarted_broker_gets_everything_again() {
    let dir = temp_dir("mqtt-down");
    let port = broker::free_port();
    let cfg = mqtt_config(&dir, json!([cam("cam0")]), &format!("mqtt://127.0.0.1:{port}"), "down/pi", json!({}));
    let d = Daemon::builder(temp_dir("mqtt-down-d"), &cfg).start();
    // Not an error: the camera runs and the API says why MQTT is not connected.
    d.wait_state("cam0", "RUNNING", Duration::from_secs(10));
    let m = wait_mqtt(&d, Duration::from_secs(5), "a connection error", |m| m["last_error"].is_string());
    assert_eq!(m["connected"], false);
    assert!(m["last_error"].as_str().unwrap().contains("is the broker running"), "{m}");

    let b = Broker::start_on(dir.path(), port, "allow_anonymous true");
    let t0 = Instant::now();
    // Backoff 1, 2, 4, 8 s (±20 %) at most before the broker appeared.
    wait_mqtt(&d, Duration::from_secs(30), "a connection", |m| m["connected"] == true);
    println!("connected {:.1} s after the broker came up", t0.elapsed().as_secs_f64());
    let sub = Sub::new(port, "w1", &["down/pi/#"]);
    sub.wait("down/pi/availability", Duration::from_secs(5), |m| m.text() == "online");
    sub.wait("down/pi/cam0/state", Duration::from_secs(5), |m| m.text() == "RUNNING");

    // The broker restarts (and forgets every retained message: persistence off).
    b.stop();
    wait_mqtt(&d, Duration::from_secs(20), "the loss noticed", |m| m["connected"] == false);
    let b = Broker::start_on(dir.path(), port, "allow_anonymous true");
    let t1 = Instant::now();
    wait_mqtt(&d, Duration::from_secs(30), "a reconnection", |m| m["connected"] == true && m["connections"] == 2);
    println!("reconnected {:.1} s after the broker came back", t1.elapsed().as_secs_f64());
    let sub = Sub::new(b.port, "w2", &["down/pi/#", "homeassistant/#"]);
    // Published again after the restart (retained, or live if this subscriber came first).
    sub.wait("down/pi/availability", Duration::from_secs(5), |m| m.text() == "online");
    sub.wait("down/pi/cam0/state", Duration::from_secs(5), |m| m.text() == "RUNNING");
    sub.wait("homeassistant/sensor/down-pi/cam0_state/config", Duration::from_secs(5), |m| !m.payload.is_empty());
    // Commands work on the new connection.
    let t2 = Instant::now();
    sub.publish("down/pi/cam0/command", "stop", false);
    sub.wait_since("down/pi/cam0/state", t2, Duration::from_secs(5), |m| m.text() == "STOPPED");
}

#[test]
fn kill_9_is_announced_by_the_last_will() {
    let dir = temp_dir("mqtt-will");
    let broker = Broker::start(dir.path(), "allow_anonymous true");
    let sub = Sub::new(broker.port, "w", &["will/pi/availability"]);
    let cfg = mqtt_config(&dir, json!([cam("cam0")]), &broker.url(), "will/pi", json!({"keepalive_s": 5}));
    let mut d = Daemon::builder(temp_dir("mqtt-will-d"), &cfg).start();
    sub.wait("will/pi/availability", Duration::from_secs(10), |m| m.text() == "online");
    let t0 = Instant::now();
    d.child.kill().unwrap();
    let off = sub.wait_since("will/pi/availability", t0, Duration::from_secs(8), |m| m.text() == "offline");
    let after = off.at - t0;
    println!("kill -9 -> offline through the last will: {:.0} ms (keepalive 5 s)", after.as_secs_f64() * 1000.0);
    assert!(after <= Duration::from_millis(7500), "{after:?}");
}

#[test]
fn username_and_password_against_a_broker_that_requires_them() {
    let dir = temp_dir("mqtt-auth");
    let pw = dir.path().join("passwd");
    std::fs::write(&pw, "").unwrap();
    let out = std::process::Command::new("mosquitto_passwd")
        .arg("-b")
        .arg(&pw)
        .arg("cam")
        .arg("s3cret pass")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let broker = Broker::start(dir.path(), &format!("allow_anonymous false\npassword_file {}", pw.display()));
    let good = dir.path().join("good");
    std::fs::write(&good, "s3cret pass\n").unwrap();
    let bad = dir.path().join("bad");
    std::fs::write(&bad, "guess\n").unwrap();

    let cfg = mqtt_config(
        &dir,
        json!([cam("cam0")]),
        &broker.url(),
        "auth/bad",
        json!({"username": "cam", "password_file": bad}),
    );
    let refused = Daemon::builder(temp_dir("mqtt-auth-bad"), &cfg).start();
    let m = wait_mqtt(&refused, Duration::from_secs(10), "a refusal", |m| m["last_error"].is_string());
    assert!(m["last_error"].as_str().unwrap().contains("mqtt.username and mqtt.password_file"), "{m}");
    assert_eq!(m["connected"], false);
    refused.wait_state("cam0", "RUNNING", Duration::from_secs(5));

    let cfg = mqtt_config(
        &dir,
        json!([cam("cam0")]),
        &broker.url(),
        "auth/good",
        json!({"username": "cam", "password_file": good}),
    );
    let d = Daemon::builder(temp_dir("mqtt-auth-good"), &cfg).start();
    wait_mqtt(&d, Duration::from_secs(10), "a connection", |m| m["connected"] == true);
    let sub = Sub::with_login(broker.port, "w", &["auth/good/#"], Some(("cam", "s3cret pass")));
    sub.wait("auth/good/cam0/state", Duration::from_secs(5), |m| m.text() == "RUNNING");
    // The password is never printed.
    let shown = common::check_config(&d.dir.path().join("config.json"));
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.status.success() && text.contains("password_file") && !text.contains("s3cret"), "{text}");
}

#[test]
fn a_stalled_broker_costs_messages_counted_never_frames() {
    let dir = temp_dir("mqtt-stall");
    let broker = Broker::start(dir.path(), "allow_anonymous true");
    // A subscriber that never reads: the broker's business, camjobd must not notice.
    let mut stuck = std::net::TcpStream::connect(("127.0.0.1", broker.port)).unwrap();
    {
        use std::io::Write;
        // CONNECT (clean session, keepalive 0, id "stuck") then SUBSCRIBE to # at QoS 0.
        let connect = [0x10, 17, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 0, 0, 5, b's', b't', b'u', b'c', b'k'];
        let subscribe = [0x82, 6, 0, 1, 0, 1, b'#', 0];
        stuck.write_all(&connect).unwrap();
        stuck.write_all(&subscribe).unwrap();
    }
    let cams = json!([cam("a"), cam("b"), cam("c")]);
    let cfg = mqtt_config(&dir, cams, &broker.url(), "stall/pi", json!({"outbox": 32}));
    let d = Daemon::builder(temp_dir("mqtt-stall-d"), &cfg).start();
    let sub = Sub::new(broker.port, "w", &["stall/pi/+/job", "stall/pi/+/state"]);
    wait_mqtt(&d, Duration::from_secs(10), "a connection", |m| m["connected"] == true);
    sub.wait("stall/pi/c/job", Duration::from_secs(5), |m| m.json()["frames_captured"].as_u64() > Some(10));
    assert_eq!(status_mqtt(&d)["dropped"], 0, "a stuck subscriber must cost camjobd nothing");

    // The broker stops reading (SIGSTOP): keep-alive fails and camjobd notices; reconnects
    // time out. Meanwhile jobs change: the outbox (32) fills with their events and states, and
    // the oldest events make room, counted; states stay.
    let before: Vec<u64> =
        ["a", "b", "c"].iter().map(|c| d.camera(c)["job"]["frames_captured"].as_u64().unwrap()).collect();
    let t0 = Instant::now();
    common::signal(broker.pid(), libc::SIGSTOP);
    let cycle = || {
        assert_eq!(d.post("/api/cameras/a/stop", "").status, 202);
        d.wait_state("a", "STOPPED", Duration::from_secs(5));
        assert_eq!(d.post("/api/cameras/a/start", "").status, 202);
        d.wait_state("a", "RUNNING", Duration::from_secs(5));
    };
    // Before camjobd notices: these go to the client and the socket, and the broker never
    // acknowledges them; they must be sent again after the reconnection.
    for _ in 0..3 {
        cycle();
    }
    wait_mqtt(&d, Duration::from_secs(30), "the stall noticed", |m| m["connected"] == false);
    println!("broker stopped: noticed after {:.1} s", t0.elapsed().as_secs_f64());
    for _ in 0..3 {
        cycle();
    }
    let m = wait_mqtt(&d, Duration::from_secs(5), "drops", |m| m["dropped"].as_u64() > Some(0));
    println!("while the broker is stopped: {m}");
    assert_eq!(m["queued"], 32, "the outbox holds its limit");
    common::signal(broker.pid(), libc::SIGCONT);
    let t1 = Instant::now();
    let m = wait_mqtt(&d, Duration::from_secs(60), "a reconnection", |m| m["connected"] == true && m["queued"] == 0);
    println!("broker resumed: caught up in {:.1} s; {m}", t1.elapsed().as_secs_f64());
    let metrics = d.get("/metrics").text();
    assert!(metrics.contains(&format!("camjobd_mqtt_messages_dropped_total {}\n", m["dropped"])), "{metrics}");
    // Every state went through, in order (repeats aside: a state is published again at each
    // reconnection, and QoS 1 may deliver twice), ending where the camera is.
    // (From the first STOPPING: the subscriber began with the retained RUNNING.)
    let mut broker_states: Vec<String> = sub.on("stall/pi/a/state").iter().map(|m| m.text()).collect();
    broker_states.dedup();
    let from = |v: &mut Vec<String>| {
        let i = v.iter().position(|s| s == "STOPPING").unwrap_or(0);
        v.drain(..i);
    };
    from(&mut broker_states);
    let events = d.get("/api/events?limit=256").json();
    let mut api_states: Vec<String> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "state" && e["camera"] == "a")
        .map(|e| e["state"].as_str().unwrap().to_string())
        .collect();
    api_states.dedup();
    from(&mut api_states);
    assert_eq!(broker_states, api_states);
    assert_eq!(broker_states.last().map(String::as_str), Some("RUNNING"));
    assert_eq!(broker_states.iter().filter(|s| *s == "STOPPED").count(), 6, "{broker_states:?}");
    // Capture never waited: no frame dropped, and frames kept coming at the camera's rate.
    for (i, c) in ["b", "c"].iter().enumerate() {
        let job = d.camera(c)["job"].clone();
        assert_eq!(job["frames_dropped"], 0, "{c}: {job}");
        let got = job["frames_captured"].as_u64().unwrap() - before[i + 1];
        let expected = 10.0 * t0.elapsed().as_secs_f64();
        assert!(got as f64 > expected * 0.8, "{c}: {got} frames in {:?} at 10 fps", t0.elapsed());
    }
    drop(stuck);
}

#[test]
fn a_camera_removed_from_the_config_has_its_retained_topics_cleared() {
    let dir = temp_dir("mqtt-gone");
    let broker = Broker::start(dir.path(), "allow_anonymous true");
    let eight: Vec<Value> = (0..8).map(|i| cam(&format!("cam{i}"))).collect();
    let data = temp_dir("mqtt-gone-d");
    let cfg = mqtt_config(&data, json!(eight), &broker.url(), "gone/pi", json!({}));
    let sub = Sub::new(broker.port, "w", &["gone/pi/#", "homeassistant/#"]);
    let mut d = Daemon::builder(data, &cfg).start();
    sub.wait("gone/pi/cam7/state", Duration::from_secs(10), |m| m.text() == "RUNNING");
    sub.wait("homeassistant/sensor/gone-pi/cam7_last_frame_age/config", Duration::from_secs(5), |_| true);
    // And the control entities (announced once each camera has opened).
    for gone in ["cam6", "cam7"] {
        sub.wait(&format!("homeassistant/number/gone-pi/{gone}_ctl_brightness/config"), Duration::from_secs(5), |_| {
            true
        });
    }
    assert!(d.terminate(Duration::from_secs(10)).unwrap().success());
    // Two cameras removed.
    let data = temp_dir("mqtt-gone-d2");
    let cfg = mqtt_config(&data, json!(eight[..6]), &broker.url(), "gone/pi", json!({}));
    let t0 = Instant::now();
    let d = Daemon::builder(data, &cfg).start();
    sub.wait_since("gone/pi/cam5/state", t0, Duration::from_secs(10), |m| m.text() == "RUNNING");
    for gone in ["cam6", "cam7"] {
        for entity in [
            "state",
            "problem",
            "start",
            "stop",
            "snapshot",
            "frames",
            "dropped",
            "errors",
            "recoveries",
            "last_frame_age",
        ] {
            let component = match entity {
                "problem" => "binary_sensor",
                "start" | "stop" => "button",
                "snapshot" => "image",
                _ => "sensor",
            };
            let topic = format!("homeassistant/{component}/gone-pi/{gone}_{entity}/config");
            sub.wait_since(&topic, t0, Duration::from_secs(5), |m| m.payload.is_empty());
        }
        // The topics go when the 5 s search for leftovers ends (after every config).
        sub.wait_since(&format!("gone/pi/{gone}/state"), t0, Duration::from_secs(15), |m| m.payload.is_empty());
        // Home Assistant drops the entities before their topics empty: every cleared config
        // arrived before the first cleared state, job or snapshot topic of that camera.
        let seen: Vec<_> = sub.seen().into_iter().filter(|m| m.at >= t0 && m.payload.is_empty()).collect();
        let is_config = |m: &&Seen| m.topic.contains(&format!("/{gone}_")) && m.topic.ends_with("/config");
        let last_config = seen.iter().rposition(|m| is_config(&m));
        let first_topic = seen.iter().position(|m| m.topic.starts_with(&format!("gone/pi/{gone}/")));
        let topics: Vec<_> = seen.iter().map(|m| &m.topic).collect();
        assert!(last_config < first_topic, "{gone}: a retained topic was cleared before a config: {topics:?}");
        // Each once, though a config is found twice (named by the state, and retained itself):
        // the camera's 10 and its 4 control entities.
        assert_eq!(seen.iter().filter(is_config).count(), 14, "{topics:?}");
    }
    // Nothing the broker sent back was lost on the way in.
    let m = status_mqtt(&d);
    assert_eq!((m["incoming_dropped"].as_u64(), m["commands_refused"].as_u64()), (Some(0), Some(0)), "{m}");
    // A new subscriber finds only the six cameras' configs retained.
    let late = Sub::new(broker.port, "late", &["homeassistant/#", "gone/pi/+/state"]);
    late.wait("homeassistant/sensor/gone-pi/cam5_state/config", Duration::from_secs(5), |m| m.retain);
    std::thread::sleep(Duration::from_millis(300)); // retained messages arrive right after SUBACK
    let stale: Vec<_> = late
        .seen()
        .into_iter()
        .filter(|m| m.topic.contains("cam6") || m.topic.contains("cam7"))
        .map(|m| m.topic)
        .collect();
    assert!(stale.is_empty(), "still retained: {stale:?}");
}

/// Home Assistant reads `<camera>/job` as the state's attributes: an automation triggered by
/// "Problem turned on" must find the reason there, so the job JSON of a new state arrives no
/// later than the state itself.
#[test]
fn the_job_with_its_reason_arrives_before_the_state_it_explains() {
    let dir = temp_dir("mqtt-reason");
    let broker = Broker::start(dir.path(), "allow_anonymous true");
    let stalls = synthetic(
        "cam0",
        json!({"source": {"fault": {"stall_after_frames": 20}}, "watchdog": {"stall_timeout_ms": 300, "max_recoveries": 1, "backoff_initial_ms": 100}}),
    );
    let data = temp_dir("mqtt-reason-d");
    let cfg = mqtt_config(&data, json!([stalls]), &broker.url(), "why/pi", json!({}));
    let sub = Sub::new(broker.port, "w", &["why/pi/cam0/#"]);
    let _d = Daemon::builder(data, &cfg).start();
    sub.wait("why/pi/cam0/state", Duration::from_secs(15), |m| m.text() == "FAILED");
    // The job that says FAILED must be retained too; let the last messages land.
    sub.wait("why/pi/cam0/job", Duration::from_secs(5), |m| m.json()["state"] == "FAILED");
    let seen = sub.seen();
    for state in ["RECOVERING", "FAILED"] {
        let at = seen.iter().position(|m| m.topic == "why/pi/cam0/state" && m.text() == state).expect(state);
        let job = seen[..at].iter().rev().find(|m| m.topic == "why/pi/cam0/job").map(|m| m.json());
        let job = job.unwrap_or_else(|| panic!("no job JSON before the {state} state"));
        assert_eq!(job["state"], state, "the job JSON just before {state}: {job}");
        let reason = job["reason"].as_str().unwrap_or("");
        assert!(!reason.is_empty(), "{state} without its reason in the job JSON before it: {job}");
    }
}

#[test]
fn a_clean_stop_of_8_cameras_leaves_every_state_stopped_then_offline() {
    let dir = temp_dir("mqtt-bye");
    let broker = Broker::start(dir.path(), "allow_anonymous true");
    let eight: Vec<Value> = (0..8).map(|i| cam(&format!("c{i}"))).collect();
    let cfg = mqtt_config(&dir, json!(eight), &broker.url(), "bye/pi", json!({}));
    let sub = Sub::new(broker.port, "w", &["bye/pi/+/state"]);
    let mut d = Daemon::builder(temp_dir("mqtt-bye-d"), &cfg).start();
    for i in 0..8 {
        sub.wait(&format!("bye/pi/c{i}/state"), Duration::from_secs(10), |m| m.text() == "RUNNING");
    }
    assert!(d.terminate(Duration::from_secs(10)).unwrap().success());
    let late = Sub::new(broker.port, "late", &["bye/pi/availability", "bye/pi/+/state"]);
    late.wait("bye/pi/availability", Duration::from_secs(5), |m| m.retain && m.text() == "offline");
    for i in 0..8 {
        late.wait(&format!("bye/pi/c{i}/state"), Duration::from_secs(5), |m| m.retain);
    }
    let states: Vec<String> =
        late.seen().into_iter().filter(|m| m.topic.ends_with("/state")).map(|m| m.text()).collect();
    assert!(states.iter().all(|s| s == "STOPPED"), "{states:?}");
    // Said goodbye itself: the broker saw a DISCONNECT, not a dropped socket (no will).
    let log = broker.log();
    assert!(log.contains("client-bye-pi disconnected.") || log.contains("bye-pi disconnected."), "{log}");
    assert!(!log.contains("bye-pi closed its connection") && !log.contains("disconnected due to"), "{log}");
}

#[test]
fn a_retained_message_too_large_for_camjobd_slows_its_reconnects_and_is_named() {
    let dir = temp_dir("mqtt-big");
    let broker = Broker::start(dir.path(), "allow_anonymous true");
    let sub = Sub::new(broker.port, "w", &["big/pi/ghost/state"]);
    // 2 MiB retained where camjobd looks for leftovers: beyond the 1 MiB it can read at all
    // (rumqttc reads a packet whole; smaller ones are refused with the link kept, below).
    sub.client.publish("big/pi/ghost/state", rumqttc::QoS::AtLeastOnce, true, vec![b'x'; 2 << 20]).unwrap();
    sub.wait("big/pi/ghost/state", Duration::from_secs(5), |m| m.payload.len() == 2 << 20);
    let cfg = mqtt_config(&dir, json!([cam("cam0")]), &broker.url(), "big/pi", json!({}));
    let d = Daemon::builder(temp_dir("mqtt-big-d"), &cfg).start();
    let m = wait_mqtt(&d, Duration::from_secs(20), "the reason", |m| {
        m["last_error"].as_str().is_some_and(|e| e.contains("keeps closing"))
    });
    let e = m["last_error"].as_str().unwrap();
    assert!(e.contains("over the 1024 KiB camjobd can read") && e.contains("mosquitto_pub -r -n -t"), "{e}");
    // The backoff grows (1, 2, 4, 8 s): at most one more attempt in the next 6 s, not six.
    let before = m["connections"].as_u64().unwrap();
    std::thread::sleep(Duration::from_secs(6));
    let after = status_mqtt(&d)["connections"].as_u64().unwrap();
    println!("connections after the third short one: {before}, 6 s later: {after}");
    assert!(after - before <= 2, "{before} -> {after}");
    d.wait_state("cam0", "RUNNING", Duration::from_secs(1));
    // Cleared: the next attempt connects and stays.
    sub.publish("big/pi/ghost/state", "", true);
    wait_mqtt(&d, Duration::from_secs(40), "a lasting connection", |m| {
        m["connected"] == true && m["connections"].as_u64() > Some(after)
    });
    let n = status_mqtt(&d)["connections"].clone();
    std::thread::sleep(Duration::from_secs(1));
    let m = status_mqtt(&d);
    assert_eq!((m["connected"].clone(), m["connections"].clone()), (json!(true), n), "{m}");
}

#[test]
fn mqtts_with_a_ca_file() {
    let dir = temp_dir("mqtt-tls");
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl").args(args).current_dir(dir.path()).output().expect("openssl");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=test CA",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(dir.path().join("ext.cnf"), "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n").unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    // mosquitto drops root for its own user, which must read the key.
    for f in ["server.key", "server.pem"] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path().join(f), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let tls = format!(
        "allow_anonymous true\ncertfile {}\nkeyfile {}",
        dir.path().join("server.pem").display(),
        dir.path().join("server.key").display()
    );
    let broker = Broker::start(dir.path(), &tls);
    let url = format!("mqtts://127.0.0.1:{}", broker.port);
    let cfg = mqtt_config(&dir, json!([cam("cam0")]), &url, "tls/pi", json!({"ca_file": dir.path().join("ca.pem")}));
    let d = Daemon::builder(temp_dir("mqtt-tls-d"), &cfg).start();
    wait_mqtt(&d, Duration::from_secs(10), "a TLS connection", |m| m["connected"] == true);
    // The system roots do not know this CA: refused, with a reason.
    let cfg = mqtt_config(&dir, json!([cam("cam0")]), &url, "tls/sys", json!({}));
    let d2 = Daemon::builder(temp_dir("mqtt-tls-d2"), &cfg).start();
    let m = wait_mqtt(&d2, Duration::from_secs(10), "a TLS refusal", |m| m["last_error"].is_string());
    assert!(m["last_error"].as_str().unwrap().starts_with("TLS"), "{m}");
    assert_eq!(m["connected"], false);
}

#[test]
fn bad_mqtt_settings_stop_the_start_naming_the_key() {
    let dir = temp_dir("mqtt-cfg");
    let not_pem = dir.path().join("ca.pem");
    std::fs::write(&not_pem, "hello\n").unwrap();
    for (m, key, says) in [
        (json!({"url": "tcp://x:1883"}), "mqtt.url", "must start with mqtt:// or mqtts://"),
        (json!({"url": "mqtt://u:p@x"}), "mqtt.url", "mqtt.password_file"),
        (json!({"topic_prefix": "a/#"}), "mqtt.topic_prefix", "wildcards"),
        (json!({"keepalive_s": 1}), "mqtt.keepalive_s", ">= 5"),
        (json!({"outbox": 100000}), "mqtt.outbox", "<= 4096"),
        (json!({"outbox": 16}), "mqtt.outbox", ">= 32"),
        (json!({"password_file": "/x"}), "mqtt.password_file", "needs mqtt.username"),
        (json!({"username": "u", "password_file": dir.path().join("missing")}), "mqtt.password_file", "cannot read"),
        (json!({"url": "mqtts://127.0.0.1", "ca_file": not_pem}), "mqtt.ca_file", "no usable CERTIFICATE"),
        (json!({"ca_file": "/etc/hostname"}), "mqtt.ca_file", "mqtts://"),
        (json!({"client_id": "a b"}), "mqtt.client_id", "A-Z a-z 0-9"),
        (json!({"topic_prefix": "home", "discovery_prefix": "home/ha"}), "mqtt.discovery_prefix", "inside it"),
        (json!({"brokr": 1}), "mqtt", "unknown field `brokr`"),
    ] {
        let mut cfg = config(&dir, json!([cam("cam0")]), json!({}));
        cfg["mqtt"] = m.clone();
        let file = dir.path().join("c.json");
        std::fs::write(&file, cfg.to_string()).unwrap();
        // Refused by --check-config and by the start alike.
        for check in [true, false] {
            let mut cmd = std::process::Command::new(common::bin());
            cmd.arg("--config").arg(&file);
            if check {
                cmd.arg("--check-config");
            }
            let out = cmd.output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{m}: {err}");
            assert!(err.contains(key) && err.contains(says), "{m}: {err}");
        }
    }
}

/// 20 camjobd processes (one synthetic camera each) on one broker; one subscriber sees all 20
/// online and every state change.
#[test]
fn a_fleet_of_20_on_one_broker() {
    const N: usize = 20;
    let dir = temp_dir("mqtt-fleet");
    let broker = Broker::start(dir.path(), "allow_anonymous true\nmax_connections -1");
    let sub = Sub::new(broker.port, "fleet-watch", &["fleet/+/availability", "fleet/+/cam0/state", "fleet/+/events"]);
    let t0 = Instant::now();
    let fleet: Vec<Daemon> = (0..N)
        .map(|i| {
            let d = temp_dir(&format!("fleet{i}"));
            let one = synthetic("cam0", json!({"source": {"kind": "synthetic", "width": 160, "height": 120, "fps": 5}, "snapshot_interval_ms": 1000, "frame_buffers": 4, "max_frame_bytes": 65536}));
            let cfg = mqtt_config(&d, json!([one]), &broker.url(), &format!("fleet/n{i:02}"), json!({"discovery_prefix": null}));
            Daemon::builder(d, &cfg).start()
        })
        .collect();
    let online = |s: &Sub| {
        (0..N).filter(|i| s.on(&format!("fleet/n{i:02}/availability")).iter().any(|m| m.text() == "online")).count()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while online(&sub) < N {
        assert!(Instant::now() < deadline, "{} of {N} online", online(&sub));
        std::thread::sleep(Duration::from_millis(20));
    }
    let all_online = t0.elapsed();
    for i in 0..N {
        sub.wait(&format!("fleet/n{i:02}/cam0/state"), Duration::from_secs(10), |m| m.text() == "RUNNING");
    }
    // Stop then start every camera through MQTT; time each change from command to broker.
    let mut latencies = Vec::new();
    for (word, want) in [("stop", "STOPPED"), ("start", "RUNNING")] {
        let sent: Vec<Instant> = (0..N)
            .map(|i| {
                let t = Instant::now();
                sub.publish(&format!("fleet/n{i:02}/cam0/command"), word, false);
                t
            })
            .collect();
        for (i, t) in sent.iter().enumerate() {
            let m =
                sub.wait_since(&format!("fleet/n{i:02}/cam0/state"), *t, Duration::from_secs(10), |m| m.text() == want);
            latencies.push((m.at - *t).as_secs_f64() * 1000.0);
        }
    }
    // Every change of every camera, in order, on its events topic and its state topic.
    for i in 0..N {
        let states: Vec<String> = sub
            .on(&format!("fleet/n{i:02}/events"))
            .iter()
            .map(|m| m.json())
            .filter(|e| e["kind"] == "state")
            .map(|e| e["state"].as_str().unwrap().to_string())
            .collect();
        let tail: Vec<&str> = states.iter().map(String::as_str).skip_while(|s| *s != "STOPPING").collect();
        assert_eq!(tail, ["STOPPING", "STOPPED", "STARTING", "RUNNING"], "n{i:02}: {states:?}");
        let topic: Vec<String> = sub.on(&format!("fleet/n{i:02}/cam0/state")).iter().map(|m| m.text()).collect();
        let tail: Vec<&str> = topic.iter().map(String::as_str).skip_while(|s| *s != "STOPPING").collect();
        assert_eq!(tail, ["STOPPING", "STOPPED", "STARTING", "RUNNING"], "n{i:02}: {topic:?}");
    }
    latencies.sort_by(f64::total_cmp);
    let rss: Vec<u64> = fleet.iter().map(|d| rss_kib(d.pid())).collect();
    let dropped: u64 = fleet.iter().map(|d| status_mqtt(d)["dropped"].as_u64().unwrap()).sum();
    println!(
        "fleet: {N} camjobd on one broker, all online {:.2} s after the first start; {} state changes by MQTT command, command -> state on the broker median {:.0} ms, max {:.0} ms; messages dropped {dropped}; RSS per process median {} KiB",
        all_online.as_secs_f64(),
        latencies.len(),
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1],
        { let mut r = rss.clone(); r.sort(); r[N / 2] },
    );
    assert_eq!(dropped, 0);
    assert!(latencies[latencies.len() - 1] < 2000.0, "{latencies:?}");
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn snapshots_as_jpeg_on_the_broker_when_asked_rate_capped() {
    let dir = temp_dir("mqtt-jpeg");
    let broker = Broker::start(dir.path(), "allow_anonymous true");
    let sub = Sub::new(broker.port, "w", &["jpeg/pi/cam0/snapshot", "homeassistant/image/#"]);
    // Snapshots kept 5 times a second, announced at most once a second.
    let one = synthetic(
        "cam0",
        json!({"source": {"kind": "synthetic", "width": 160, "height": 120, "fps": 10}, "snapshot_interval_ms": 200}),
    );
    let cfg = mqtt_config(
        &dir,
        json!([one]),
        &broker.url(),
        "jpeg/pi",
        json!({"snapshot_jpeg": true, "snapshot_interval_s": 1}),
    );
    let _d = Daemon::builder(temp_dir("mqtt-jpeg-d"), &cfg).start();
    let first = sub.wait("jpeg/pi/cam0/snapshot", Duration::from_secs(10), |m| !m.payload.is_empty());
    assert!(first.payload.starts_with(&[0xFF, 0xD8]) && first.payload.ends_with(&[0xFF, 0xD9]), "not a JPEG");
    let image = sub.wait("homeassistant/image/jpeg-pi/cam0_snapshot/config", Duration::from_secs(5), |_| true).json();
    assert_eq!(
        (image["image_topic"].as_str(), image["content_type"].as_str()),
        (Some("jpeg/pi/cam0/snapshot"), Some("image/jpeg"))
    );
    std::thread::sleep(Duration::from_secs(4));
    let since_first: Vec<_> = sub.on("jpeg/pi/cam0/snapshot").into_iter().filter(|m| m.at >= first.at).collect();
    let span = since_first.last().unwrap().at - first.at;
    println!("{} snapshots on the broker in {:.1} s (kept: 5/s; cap 1/s)", since_first.len(), span.as_secs_f64());
    assert!(since_first.len() >= 3, "{}", since_first.len());
    assert!(since_first.len() as f64 <= span.as_secs_f64() + 1.5, "{} in {span:?}", since_first.len());
}

#[test]
fn an_oversize_command_is_refused_with_the_link_kept_and_floods_are_not_logged_line_by_line() {
    let dir = temp_dir("mqtt-oversize");
    let broker = Broker::start(dir.path(), "allow_anonymous true");
    let sub = Sub::new(broker.port, "w", &["ov/pi/#"]);
    let cfg = mqtt_config(&dir, json!([cam("cam0")]), &broker.url(), "ov/pi", json!({}));
    let d = Daemon::builder(temp_dir("mqtt-oversize-d"), &cfg).start();
    sub.wait("ov/pi/cam0/state", Duration::from_secs(10), |m| m.text() == "RUNNING");
    wait_mqtt(&d, Duration::from_secs(10), "connected", |m| m["connected"] == true);
    // 70 KB, not retained, on the command topic: refused and counted, the connection stays.
    sub.client.publish("ov/pi/cam0/command", rumqttc::QoS::AtLeastOnce, false, vec![b'x'; 70_000]).unwrap();
    let m = wait_mqtt(&d, Duration::from_secs(10), "the refusal", |m| m["incoming_refused"] == 1);
    assert_eq!((m["connected"].clone(), m["connections"].clone()), (json!(true), json!(1)), "{m}");
    let e = m["last_error"].as_str().unwrap_or_default();
    assert!(e.contains("refused a message of 70000 bytes on ov/pi/cam0/command") && e.contains("stays up"), "{e}");
    // The link works: a command after it is answered.
    sub.publish("ov/pi/cam0/command", "stop", false);
    let r = sub.wait("ov/pi/cam0/command/result", Duration::from_secs(5), |m| m.json()["action"] == "stop").json();
    assert_eq!(r["ok"], true, "{r}");
    assert!(sub.on("ov/pi/availability").iter().all(|m| m.text() == "online"), "went offline");

    // 400 commands for a camera it does not have and 400 it cannot parse: one line each in
    // the log, the rest counted.
    let before = d.get("/api/status").json();
    let n = |v: &Value| v["commands_refused"].as_u64().unwrap() + v["incoming_dropped"].as_u64().unwrap();
    let seen_before = n(&before["mqtt"]);
    for i in 0..400 {
        sub.publish("ov/pi/ghost/command", "start", false);
        sub.publish("ov/pi/cam0/command", &format!("garbage {i}"), false);
        if i % 20 == 19 {
            // In bursts the incoming queue takes (it holds 80; the publisher empties it 10 times
            // a second): most are refused rather than dropped at the queue.
            std::thread::sleep(Duration::from_millis(150));
        }
    }
    // Each is refused (a log line held back), or dropped at the bounded incoming queue.
    let m = wait_mqtt(&d, Duration::from_secs(20), "800 refused or dropped", |m| n(m) >= seen_before + 800);
    assert_eq!(m["connected"], true);
    let refused = m["commands_refused"].as_u64().unwrap() - before["mqtt"]["commands_refused"].as_u64().unwrap();
    let status = d.get("/api/status").json();
    let (suppressed, dropped) =
        (status["log_lines_suppressed"].as_u64().unwrap(), status["log_lines_dropped"].as_u64().unwrap());
    let held = suppressed - before["log_lines_suppressed"].as_u64().unwrap();
    println!("{refused} refused, {} dropped at the queue, {held} log lines held back", m["incoming_dropped"]);
    assert!(refused >= 400 && held + 2 >= refused, "{refused} refused, {held} lines held back");
    assert!(dropped >= suppressed, "log_lines_dropped {dropped} counts the {suppressed} held back");
    let log = d.stderr();
    let lines = |what: &str| log.lines().filter(|l| l.contains(what)).count();
    assert_eq!(lines("command for unknown camera \"ghost\""), 1, "{log}");
    assert_eq!(lines("command on ov/pi/cam0/command refused"), 1, "{log}");
}

#[test]
fn a_panic_in_the_network_task_exits_1() {
    let dir = temp_dir("mqtt-panic");
    let broker = Broker::start(dir.path(), "allow_anonymous true");
    let cfg = mqtt_config(&dir, json!([cam("cam0")]), &broker.url(), "pn/pi", json!({}));
    let mut d = Daemon::builder(temp_dir("mqtt-panic-d"), &cfg).env("CAMJOBD_TEST_FAULT", "mqtt-panic").start();
    let status = d.wait_exit(Duration::from_secs(15)).unwrap_or_else(|| panic!("still running:\n{}", d.stderr()));
    let log = d.stderr();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("thread mqtt (network task) panicked; stopping the service"), "{log}");
}

#[test]
fn camera_controls_round_trip_from_home_assistant_to_the_camera_and_back() {
    let dir = temp_dir("mqtt-ctl");
    let broker = Broker::start(dir.path(), "allow_anonymous true");
    let sub = Sub::new(broker.port, "watcher", &["hc/#", "homeassistant/#"]);
    let cfg = mqtt_config(&dir, json!([cam("cam0")]), &broker.url(), "hc/pi", json!({}));
    let d = Daemon::builder(temp_dir("mqtt-ctl-d"), &cfg).start();
    let secs = Duration::from_secs;
    // One entity per control, on the camera's device, once the camera has opened.
    let config = |component: &str, name: &str| {
        let topic = format!("homeassistant/{component}/hc-pi/cam0_ctl_{name}/config");
        let p = sub.wait(&topic, secs(10), |_| true).json();
        assert_eq!(p["device"]["identifiers"][0], "hc-pi_cam0", "{p}");
        assert_eq!(p["command_topic"], "hc/pi/cam0/controls/set", "{p}");
        assert_eq!(p["availability_topic"], "hc/pi/availability", "{p}");
        p
    };
    let number = config("number", "brightness");
    assert_eq!(
        (number["min"].clone(), number["max"].clone(), number["step"].clone()),
        (json!(-64), json!(64), json!(1))
    );
    assert_eq!(number["state_topic"], "hc/pi/cam0/controls");
    let switch = config("switch", "moving_bar");
    let select = config("select", "pattern");
    assert_eq!(select["options"], json!(["Ramps", "Grey"]));
    let button = config("button", "restart_count");
    sub.wait("hc/pi/cam0/controls", secs(5), |m| {
        m.json() == json!({"brightness": 0, "moving_bar": true, "pattern": "Ramps"})
    });

    // What Home Assistant sends for each (its templates rendered): the camera's read-back
    // returns as the state, and the API agrees.
    let t = Instant::now();
    sub.publish("hc/pi/cam0/controls/set", r#"{"brightness": 12}"#, false);
    sub.publish("hc/pi/cam0/controls/set", switch["payload_off"].as_str().unwrap(), false);
    sub.publish("hc/pi/cam0/controls/set", r#"{"pattern": "Grey"}"#, false);
    sub.publish("hc/pi/cam0/controls/set", button["payload_press"].as_str().unwrap(), false);
    let want = json!({"brightness": 12, "moving_bar": false, "pattern": "Grey"});
    let state = sub.wait_since("hc/pi/cam0/controls", t, secs(5), |m| m.json() == want);
    println!("HA change -> camera -> state on the broker: {:.0} ms", (state.at - t).as_secs_f64() * 1000.0);
    let api = d.get("/api/cameras/cam0/controls").json();
    let b = api["controls"].as_array().unwrap().iter().find(|c| c["name"] == "brightness").unwrap().clone();
    assert_eq!(b["value"], 12, "{api}");

    // A value out of range is answered with what would have been taken.
    let t = Instant::now();
    sub.publish("hc/pi/cam0/controls/set", r#"{"brightness": 99}"#, false);
    let res = sub.wait_since("hc/pi/cam0/controls/set/result", t, secs(5), |_| true).json();
    assert_eq!(res["ok"], false, "{res}");
    let msg = res["message"].as_str().unwrap();
    assert!(msg.contains("brightness") && msg.contains("from -64 to 64"), "{msg}");
}
