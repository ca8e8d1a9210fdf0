//! The `libcamera` source through the real binary, with a stand-in `rpicam-vid` on `PATH`
//! (`tests/support/rpicam-vid`: checks the arguments camjobd passes, plays MJPEG made by
//! ffmpeg, and imitates rpicam's failure messages and exit codes).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::{self, config, temp_dir, Daemon, TempDir};
use serde_json::{json, Value};

const SEC: Duration = Duration::from_secs(1);

/// ffmpeg makes the stand-in's MJPEG (required in scripts/test.sh).
fn have_ffmpeg() -> bool {
    let found = std::process::Command::new("ffmpeg").arg("-version").output().is_ok_and(|o| o.status.success());
    if !found {
        assert!(std::env::var_os("CAMJOBD_REQUIRE_CLIENTS").is_none(), "ffmpeg is required here but not installed");
        eprintln!("SKIPPED: ffmpeg is not installed (apt-get install ffmpeg)");
    }
    found
}

/// A directory holding the stand-in under `name` (rpicam-vid or libcamera-vid).
fn bin_dir(dir: &TempDir, name: &str) -> PathBuf {
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let stand_in = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/rpicam-vid");
    std::fs::copy(stand_in, bin.join(name)).unwrap();
    bin
}

fn path_with(bin: &Path) -> String {
    format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default())
}

fn libcamera_cam(extra: Value) -> Value {
    let mut cam = json!({
        "name": "csi",
        "source": { "kind": "libcamera", "width": 320, "height": 240, "fps": 10, "quality": 70 },
        "snapshot_interval_ms": 500,
        "watchdog": { "max_recoveries": 0, "backoff_initial_ms": 100 },
    });
    common::merge(&mut cam, extra);
    cam
}

fn start(tag: &str, program: &str, cam: Value, env: &[(&str, &str)]) -> Daemon {
    let dir = temp_dir(tag);
    let bin = bin_dir(&dir, program);
    let args = dir.path().join("args");
    let path = path_with(&bin);
    let mut env: Vec<(&str, &str)> = env.to_vec();
    let args_s = args.display().to_string();
    env.push(("PATH", &path));
    env.push(("FAKE_RPICAM_ARGS", &args_s));
    let mut cfg = config(&dir, json!([cam]), json!({}));
    // Served only while a camera has `video`.
    cfg["rtsp"] = json!({"bind": "127.0.0.1:0"});
    Daemon::builder(dir, &cfg).envs(&env).start()
}

/// Width and height from a JPEG's SOF0 marker.
fn jpeg_size(jpeg: &[u8]) -> (u16, u16) {
    let i = jpeg.windows(2).position(|w| w == [0xFF, 0xC0]).expect("SOF0");
    let be = |o: usize| u16::from_be_bytes([jpeg[i + o], jpeg[i + o + 1]]);
    (be(7), be(5))
}

#[test]
fn a_csi_camera_streams_through_rpicam_vid_with_the_configured_arguments() {
    if !have_ffmpeg() {
        return;
    }
    let cam =
        libcamera_cam(json!({"source": {"camera": 1, "extra_args": ["--hflip", "--autofocus-mode", "continuous"]}}));
    let d = start("lc-run", "rpicam-vid", cam, &[]);
    let job = d.wait_state("csi", "RUNNING", 10 * SEC);
    assert_eq!(job["reason"], Value::Null);
    let args = std::fs::read_to_string(d.dir.path().join("args")).unwrap();
    let args: Vec<&str> = args.lines().collect();
    assert!(args[0].ends_with("/bin/rpicam-vid"), "{args:?}");
    assert_eq!(
        args[1..].join(" "),
        "-t 0 --codec mjpeg --nopreview -o - --width 320 --height 240 --framerate 10 --quality 70 --camera 1 --hflip --autofocus-mode continuous"
    );
    // Frames are passed through: the snapshot is the camera's JPEG at the asked size.
    d.wait_job("csi", 10 * SEC, |j| j["snapshots"].as_u64() >= Some(2));
    let r = d.get("/api/cameras/csi/latest.jpg");
    assert_eq!(r.status, 200);
    assert_eq!(jpeg_size(&r.body), (320, 240));
    let v = d.camera("csi");
    assert_eq!(v["job"]["frames_dropped"], 0, "{v}");
}

#[test]
fn libcamera_vid_is_used_where_rpicam_vid_is_missing() {
    if !have_ffmpeg() {
        return;
    }
    let d = start("lc-old", "libcamera-vid", libcamera_cam(json!({})), &[]);
    d.wait_state("csi", "RUNNING", 10 * SEC);
    let args = std::fs::read_to_string(d.dir.path().join("args")).unwrap();
    assert!(args.lines().next().unwrap().ends_with("/bin/libcamera-vid"), "{args}");
}

/// The job fails with a reason containing every one of `says`.
fn fails_saying(tag: &str, fake: &str, says: &[&str]) {
    let d = start(tag, "rpicam-vid", libcamera_cam(json!({})), &[("FAKE_RPICAM", fake)]);
    let job = d.wait_state("csi", "FAILED", 20 * SEC);
    let reason = job["reason"].as_str().unwrap_or_default();
    for s in says {
        assert!(reason.contains(s), "{fake}: reason {reason:?} lacks {s:?}");
    }
}

#[test]
fn no_camera_fails_saying_check_the_ribbon_cable() {
    fails_saying(
        "lc-none",
        "no-camera",
        &["no camera found", "ribbon cable", "rpicam-hello --list-cameras", "no cameras available"],
    );
}

#[test]
fn a_busy_camera_fails_saying_who_to_stop() {
    fails_saying("lc-busy", "busy", &["camera is busy", "fuser", "failed to acquire camera"]);
}

#[test]
fn a_camera_index_not_connected_fails_saying_so() {
    fails_saying("lc-index", "bad-index", &["source.camera", "--list-cameras"]);
}

#[test]
fn without_the_camera_apps_the_job_fails_saying_what_to_install() {
    let dir = temp_dir("lc-missing");
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let cfg = config(&dir, json!([libcamera_cam(json!({}))]), json!({}));
    let empty_s = empty.display().to_string();
    let d = Daemon::builder(dir, &cfg).env("PATH", &empty_s).start();
    let job = d.wait_state("csi", "FAILED", 10 * SEC);
    assert!(job["reason"].as_str().unwrap().contains("sudo apt install rpicam-apps"), "{job}");
}

#[test]
fn a_camera_that_drops_off_is_recovered_and_the_reason_says_why() {
    if !have_ffmpeg() {
        return;
    }
    let cam = libcamera_cam(json!({"watchdog": {"max_recoveries": 5, "backoff_initial_ms": 100}}));
    let d = start("lc-drop", "rpicam-vid", cam, &[("FAKE_RPICAM", "die-after")]);
    d.wait_state("csi", "RUNNING", 10 * SEC);
    let e = d.wait_event(15 * SEC, |e| e["state"] == "RECOVERING");
    let reason = e["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("stopped delivering frames") && reason.contains("Device timeout"), "{e}");
    assert!(reason.starts_with("rpicam-vid exited with status 255"), "{e}");
    // The restarted rpicam-vid delivers again.
    d.wait_job("csi", 15 * SEC, |j| j["state"] == "RUNNING" && j["recoveries"].as_u64() >= Some(1));
}

#[test]
fn extra_args_may_not_take_over_the_stream() {
    let dir = temp_dir("lc-cfg");
    for (args, key) in
        [(json!(["-o", "x.mjpeg"]), "extra_args[0]"), (json!(["--hflip", "--codec=h264"]), "extra_args[1]")]
    {
        let cfg = config(&dir, json!([libcamera_cam(json!({"source": {"extra_args": args}}))]), json!({}));
        let file = dir.path().join("c.json");
        std::fs::write(&file, cfg.to_string()).unwrap();
        let out = common::check_config(&file);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains(&format!("cameras[0].source.{key}")) && err.contains("camjobd's to set"), "{err}");
    }
}

/// `input` (any format ffmpeg reads: a JPEG file, an RTSP URL) as the first frame's RGB pixels
/// at `w x h`.
fn rgb_of(input: &str, w: u32, h: u32) -> Vec<u8> {
    let rtsp: &[&str] = if input.starts_with("rtsp:") { &["-rtsp_transport", "tcp"] } else { &[] };
    let o = std::process::Command::new("timeout")
        .args(["30", "ffmpeg", "-v", "error"])
        .args(rtsp)
        .args(["-i", input, "-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", &format!("{w}x{h}"), "-"])
        .output()
        .unwrap();
    assert_eq!(o.stdout.len(), (w * h * 3) as usize, "{input}: {}", String::from_utf8_lossy(&o.stderr));
    o.stdout
}

/// Mean absolute difference of two RGB pictures, per sample.
fn mean_diff(a: &[u8], b: &[u8]) -> f64 {
    a.iter().zip(b).map(|(x, y)| f64::from(x.abs_diff(*y))).sum::<f64>() / a.len() as f64
}

#[test]
fn with_video_one_rpicam_vid_gives_raw_frames_that_become_both_the_jpegs_and_the_h264() {
    if !have_ffmpeg() {
        return;
    }
    // 640 wide (a multiple of 128: rpicam-vid's rows cannot be padded) and a still picture with
    // colours, so that a wrong stride, a swapped chroma plane or a wrong range shows.
    let (w, h) = (640u32, 480u32);
    let cam = libcamera_cam(json!({"source": {"width": w, "height": h, "fps": 30}, "video": {}}));
    let d = start("lc-yuv420", "rpicam-vid", cam, &[("FAKE_RPICAM_SOURCE", "smptebars")]);
    d.wait_job("csi", 10 * SEC, |j| j["snapshots"].as_u64() >= Some(2));
    let args = std::fs::read_to_string(d.dir.path().join("args")).unwrap();
    let args: Vec<&str> = args.lines().skip(1).collect();
    assert_eq!(args.join(" "), "-t 0 --codec yuv420 --nopreview -o - --width 640 --height 480 --framerate 30");
    let reference = {
        // The stand-in's picture, made by the same ffmpeg that decodes what camjobd made.
        let o = std::process::Command::new("ffmpeg")
            .args(["-v", "error", "-f", "lavfi", "-i", &format!("smptebars=size={w}x{h}:rate=30")])
            .args(["-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
            .output()
            .unwrap();
        o.stdout
    };
    // JPEG: camjobd's encoder, 4:2:0 as it came (luma sampled 2x2), the camera's picture.
    let r = d.get("/api/cameras/csi/latest.jpg");
    assert_eq!(r.status, 200);
    assert_eq!(jpeg_size(&r.body), (w as u16, h as u16));
    let sof = r.body.windows(2).position(|m| m == [0xFF, 0xC0]).unwrap();
    assert_eq!(r.body[sof + 11], 0x22, "4:2:0 JPEG");
    let jpeg = d.dir.path().join("latest.jpg");
    std::fs::write(&jpeg, &r.body).unwrap();
    let diff = mean_diff(&rgb_of(jpeg.to_str().unwrap(), w, h), &reference);
    eprintln!("JPEG vs the camera's picture: {diff:.2} per sample");
    assert!(diff < 6.0, "the JPEG differs from the camera's picture by {diff:.1} per sample");
    // H.264 over RTSP from the same frames: no JPEG decoded on the way.
    let status = d.get("/api/status").json();
    let url = format!("rtsp://{}/csi", status["rtsp"]["bind"].as_str().unwrap());
    let diff = mean_diff(&rgb_of(&url, w, h), &reference);
    eprintln!("H.264 vs the camera's picture: {diff:.2} per sample");
    assert!(diff < 6.0, "the H.264 picture differs from the camera's by {diff:.1} per sample");
    let v = d.camera("csi");
    let enc = v["video"]["encoder"].as_str().unwrap();
    // OpenH264 here; where a V4L2 M2M encoder exists, auto takes that.
    assert!(enc.contains("chosen by auto") && !enc.contains("JPEG"), "{enc}");
    assert!(v["video"]["frames"].as_u64() > Some(0) && v["video"]["failed"] == 0, "{v:#}");
    assert_eq!(v["job"]["frames_dropped"], 0, "{v:#}");
}

#[test]
fn raw_frames_are_asked_for_only_at_sizes_rpicam_vid_cannot_pad() {
    let dir = temp_dir("lc-codec");
    let file = dir.path().join("c.json");
    let cam = libcamera_cam(json!({"source": {"width": 800, "height": 600, "codec": "yuv420"}}));
    std::fs::write(&file, config(&dir, json!([cam]), json!({})).to_string()).unwrap();
    let out = common::check_config(&file);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("cameras[0].source.codec") && err.contains("multiple of 128 and an even height (got 800x600)"),
        "{err}"
    );
}

#[test]
fn with_video_at_a_width_that_could_be_padded_or_codec_mjpeg_the_jpegs_are_decoded_for_h264() {
    if !have_ffmpeg() {
        return;
    }
    for (tag, source) in [
        ("lc-800", json!({"width": 800, "height": 600})),
        ("lc-mjpeg", json!({"width": 640, "height": 480, "codec": "mjpeg"})),
    ] {
        let d = start(tag, "rpicam-vid", libcamera_cam(json!({"source": source, "video": {}})), &[]);
        d.wait_state("csi", "RUNNING", 10 * SEC);
        let args = std::fs::read_to_string(d.dir.path().join("args")).unwrap();
        assert!(args.contains("mjpeg\n") && args.contains("--quality\n70"), "{args}");
        let enc = d.camera("csi")["video"]["encoder"].as_str().unwrap().to_string();
        assert!(enc.contains("from the camera's JPEGs"), "{enc}");
    }
}
