//! The board side through the real binary: the status LED (a sysfs LED against a temp file,
//! a GPIO LED on a machine that is not a Pi) and systemd's notify protocol.

use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::json;

const SEC: Duration = Duration::from_secs(1);

/// Samples the brightness file for `window` and returns (samples lit, changes).
fn watch(path: &std::path::Path, window: Duration) -> (usize, usize, usize) {
    let t0 = Instant::now();
    let (mut on, mut n, mut changes, mut last) = (0, 0, 0, None);
    while t0.elapsed() < window {
        let v = std::fs::read_to_string(path).unwrap_or_default();
        let lit = v.trim() == "1";
        on += usize::from(lit);
        n += 1;
        if last.is_some_and(|l| l != lit) {
            changes += 1;
        }
        last = Some(lit);
        std::thread::sleep(Duration::from_millis(10));
    }
    (on, n, changes)
}

#[test]
fn a_sysfs_led_shows_running_steady_failed_fast_and_off_at_exit() {
    let dir = temp_dir("led-sysfs");
    let led = dir.path().join("leds/ACT");
    std::fs::create_dir_all(&led).unwrap();
    std::fs::write(led.join("brightness"), "0").unwrap();
    std::fs::write(led.join("trigger"), "none [mmc0] timer\n").unwrap();
    let cam = synthetic(
        "cam0",
        json!({"source": {"fault": {"stall_after_frames": 60}}, "watchdog": {"stall_timeout_ms": 300, "max_recoveries": 0}}),
    );
    let mut cfg = config(&dir, json!([cam]), json!({}));
    cfg["led"] = json!({"kind": "sysfs", "path": led.join("brightness")});
    let mut d = Daemon::builder(dir, &cfg).start();
    d.wait_state("cam0", "RUNNING", 10 * SEC);
    let brightness = led.join("brightness");
    assert_eq!(
        std::fs::read_to_string(led.join("trigger")).unwrap(),
        "none",
        "the kernel trigger is off while camjobd runs"
    );
    // The LED thread looks every 50 ms; then RUNNING is steady on. The camera stalls after 60
    // frames (~1.2 s at 50 fps) and may not recover: FAILED.
    let deadline = Instant::now() + SEC;
    while std::fs::read_to_string(&brightness).unwrap() != "1" {
        assert!(Instant::now() < deadline, "the LED never came on");
        std::thread::sleep(Duration::from_millis(5));
    }
    let (on, n, changes) = watch(&brightness, Duration::from_millis(300));
    let still_running = d.camera("cam0")["job"]["state"] == "RUNNING";
    assert!(on == n && changes == 0 || !still_running, "RUNNING is steady on: {on}/{n}, {changes} changes");
    d.wait_state("cam0", "FAILED", 10 * SEC);
    let (on, n, changes) = watch(&brightness, SEC);
    println!("FAILED: lit {on} of {n} samples, {changes} changes in 1 s");
    assert!(changes >= 6, "FAILED blinks fast (100 ms half-period): {changes} changes in 1 s");
    assert!(on > n / 4 && on < n * 3 / 4, "about half lit: {on}/{n}");
    assert!(d.terminate(5 * SEC).unwrap().success());
    assert_eq!(std::fs::read_to_string(&brightness).unwrap(), "0", "off at exit");
    assert_eq!(std::fs::read_to_string(led.join("trigger")).unwrap(), "mmc0", "the kernel trigger is back");
}

#[test]
fn an_led_that_cannot_be_opened_is_disabled_and_the_job_goes_on() {
    for (tag, led) in [
        ("led-gpio", json!({"kind": "gpio", "pin": 17})),
        ("led-missing", json!({"kind": "sysfs", "name": "no-such-led-here"})),
    ] {
        let dir = temp_dir(tag);
        let mut cfg = config(&dir, json!([synthetic("cam0", json!({}))]), json!({}));
        cfg["led"] = led;
        let d = Daemon::builder(dir, &cfg).start();
        d.wait_state("cam0", "RUNNING", 10 * SEC);
        let ev = d.wait_event(5 * SEC, |e| e["message"].as_str().is_some_and(|m| m.starts_with("status LED disabled")));
        let msg = ev["message"].as_str().unwrap();
        println!("{tag}: {msg}");
        if tag == "led-gpio" {
            // Not a Pi here: no GPIO character device, or no line named GPIO17 (on a Pi without
            // access: the gpio group). Each says what to do instead.
            let said = ["no GPIO character device", "no GPIO line is named GPIO17", "gpio group"];
            assert!(said.iter().any(|s| msg.contains(s)), "{msg}");
            assert!(msg.contains("led.kind") || msg.contains("gpio group"), "{msg}");
        } else {
            assert!(msg.contains("ls /sys/class/leds"), "{msg}");
        }
        assert!(!d.threads_named("led"), "no led thread when the LED is disabled");
    }
}

#[test]
fn systemd_hears_ready_status_watchdog_and_stopping() {
    use std::os::unix::net::UnixDatagram;
    let dir = temp_dir("notify");
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let cfg = config(&dir, json!([synthetic("cam0", json!({}))]), json!({}));
    let sock_env = sock_path.to_str().unwrap().to_string();
    // A 400 ms watchdog: camjobd must ping every 200 ms.
    let mut d = Daemon::builder(dir, &cfg).env("NOTIFY_SOCKET", &sock_env).env("WATCHDOG_USEC", "400000").start();
    let mut got: Vec<(Instant, String)> = Vec::new();
    let mut buf = [0u8; 4096];
    let t0 = Instant::now();
    while t0.elapsed() < 2 * SEC {
        if let Ok(n) = sock.recv(&mut buf) {
            got.push((Instant::now(), String::from_utf8_lossy(&buf[..n]).into_owned()));
        }
    }
    let ready = got.iter().find(|(_, m)| m.contains("READY=1")).expect("READY=1");
    assert!(ready.1.contains(&format!("MAINPID={}", d.pid())), "{}", ready.1);
    assert!(ready.1.contains("STATUS=http://"), "{}", ready.1);
    let pings: Vec<Instant> = got.iter().filter(|(_, m)| m == "WATCHDOG=1").map(|(t, _)| *t).collect();
    let gaps: Vec<u128> = pings.windows(2).map(|w| (w[1] - w[0]).as_millis()).collect();
    println!("notify: {} messages in 2 s, {} watchdog pings, gaps {gaps:?} ms", got.len(), pings.len());
    assert!(pings.len() >= 6, "WATCHDOG=1 every 200 ms: {} pings", pings.len());
    assert!(gaps.iter().all(|&g| g < 400), "a gap reached the watchdog timeout: {gaps:?}");
    // A later STATUS names the camera's state.
    let deadline = Instant::now() + 8 * SEC;
    loop {
        if let Ok(n) = sock.recv(&mut buf) {
            let m = String::from_utf8_lossy(&buf[..n]).into_owned();
            if m.starts_with("STATUS=") && m.contains("cam0 RUNNING") {
                break;
            }
        }
        assert!(Instant::now() < deadline, "no STATUS with cam0 RUNNING");
    }
    assert!(d.terminate(5 * SEC).unwrap().success());
    let mut stopping = false;
    while let Ok(n) = sock.recv(&mut buf) {
        stopping |= String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1");
    }
    assert!(stopping, "STOPPING=1 on the way out");
}
