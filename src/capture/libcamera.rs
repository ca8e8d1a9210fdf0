//! The `libcamera` source: a Raspberry Pi CSI camera (Camera Module 3, HQ, ...) through
//! `rpicam-vid`, the way Raspberry Pi OS Bookworm reaches it. camjobd finds the program on
//! `PATH` (`rpicam-vid`, or `libcamera-vid` on older images), builds its arguments from the
//! config, and runs it as a [pipe](super::pipe) source: frames are passed through. What
//! rpicam-vid says on stderr before it fails becomes a reason that says what to do.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use super::pipe::PipeOpener;
use super::{Opener, Source, SourceError};
use crate::config::{LibcameraConfig, PipeConfig};

/// The programs tried, in order: the Bookworm name, then the Bullseye one.
pub const PROGRAMS: [&str; 2] = ["rpicam-vid", "libcamera-vid"];

/// Opens the camera by starting rpicam-vid.
pub struct LibcameraOpener {
    config: LibcameraConfig,
    max_frame_bytes: usize,
}

impl LibcameraOpener {
    /// An opener for `config`, delivering frames of at most `max_frame_bytes`.
    pub fn new(config: LibcameraConfig, max_frame_bytes: usize) -> Self {
        LibcameraOpener { config, max_frame_bytes }
    }
}

impl Opener for LibcameraOpener {
    fn open(&mut self, job_id: u64) -> Result<Box<dyn Source>, SourceError> {
        // Looked up at every open: installing rpicam-apps fixes a failed job on its next start.
        let Some(program) = find_program(std::env::var_os("PATH").as_deref()) else {
            return Err(SourceError::fatal(
                "neither rpicam-vid nor libcamera-vid is on PATH: install the camera apps (`sudo apt install rpicam-apps` on Raspberry Pi OS Bookworm)",
            ));
        };
        let command = argv(&program.to_string_lossy(), &self.config);
        let name = program.file_name().map_or_else(|| "rpicam-vid".into(), |n| n.to_string_lossy().into_owned());
        PipeOpener::new(PipeConfig { command }, self.max_frame_bytes).with_explainer(explain, name).open(job_id)
    }
}

/// The first of [`PROGRAMS`] found as an executable file in `path` (a `PATH` value).
pub fn find_program(path: Option<&OsStr>) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let dirs: Vec<PathBuf> = std::env::split_paths(path?).collect();
    PROGRAMS.iter().find_map(|name| {
        dirs.iter()
            .map(|d| d.join(name))
            .find(|p| Path::new(p).metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
    })
}

/// rpicam-vid's arguments: camjobd's own (an endless MJPEG stream on stdout, no preview
/// window), the size, rate and quality, the camera, then `extra_args`.
pub fn argv(program: &str, c: &LibcameraConfig) -> Vec<String> {
    let mut a: Vec<String> =
        [program, "-t", "0", "--codec", "mjpeg", "--nopreview", "-o", "-"].into_iter().map(String::from).collect();
    for (flag, value) in
        [("--width", c.width), ("--height", c.height), ("--framerate", c.fps), ("--quality", c.quality.into())]
    {
        a.push(flag.into());
        a.push(value.to_string());
    }
    if let Some(n) = c.camera {
        a.push("--camera".into());
        a.push(n.to_string());
    }
    a.extend(c.extra_args.iter().cloned());
    a
}

/// rpicam-vid's (and libcamera's) failure messages, as reasons that say what to do.
pub fn explain(stderr: &str) -> Option<&'static str> {
    let s = stderr.to_ascii_lowercase();
    const KNOWN: [(&str, &str); 8] = [
        ("legacy camera stack", "the legacy camera stack is on: turn it off (raspi-config → Interface Options → Legacy Camera) and reboot"),
        ("only supports the raspberry pi", "rpicam-vid runs only on a Raspberry Pi: elsewhere use a USB camera (the v4l2 source)"),
        ("no cameras available", "no camera found: check the ribbon cable (power off first) and the video group; run `rpicam-hello --list-cameras`"),
        ("in use by another process", "the camera is busy: stop the other program using it (`sudo fuser -v /dev/media*` names it)"),
        ("failed to acquire camera", "the camera is busy: stop the other program using it (`sudo fuser -v /dev/media*` names it)"),
        ("selected camera is not available", "source.camera names a camera that is not connected: `rpicam-hello --list-cameras` lists them"),
        ("failed to allocate capture buffers", "not enough CMA memory for the camera's buffers: lower width and height, or raise cma in /boot/firmware/config.txt"),
        ("device timeout", "the camera stopped delivering frames: check the ribbon cable and the power supply"),
    ];
    KNOWN.iter().find(|(needle, _)| s.contains(needle)).map(|(_, why)| *why)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_from_the_config() {
        let c = LibcameraConfig { camera: Some(1), extra_args: vec!["--hflip".into()], ..LibcameraConfig::default() };
        assert_eq!(
            argv("rpicam-vid", &c).join(" "),
            "rpicam-vid -t 0 --codec mjpeg --nopreview -o - --width 1280 --height 720 --framerate 15 --quality 80 --camera 1 --hflip"
        );
        let c = LibcameraConfig::default();
        assert!(!argv("libcamera-vid", &c).contains(&"--camera".to_string()));
    }

    #[test]
    fn the_program_is_found_on_path_preferring_rpicam_vid() {
        use std::os::unix::fs::PermissionsExt;
        let guard = tempfile::tempdir().unwrap();
        let base = guard.path();
        let (old, new) = (base.join("old"), base.join("new"));
        for d in [&old, &new] {
            std::fs::create_dir_all(d).unwrap();
        }
        let make = |p: &Path, mode: u32| {
            std::fs::write(p, "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        make(&old.join("libcamera-vid"), 0o755);
        let path = std::env::join_paths([&old, &new]).unwrap();
        assert_eq!(find_program(Some(&path)), Some(old.join("libcamera-vid")));
        make(&new.join("rpicam-vid"), 0o644); // not executable: not it
        assert_eq!(find_program(Some(&path)), Some(old.join("libcamera-vid")));
        make(&new.join("rpicam-vid"), 0o755);
        assert_eq!(find_program(Some(&path)), Some(new.join("rpicam-vid")));
        assert_eq!(find_program(Some(OsStr::new("/nonexistent"))), None);
        assert_eq!(find_program(None), None);
    }

    #[test]
    fn rpicam_failures_become_reasons() {
        assert!(explain("ERROR: *** no cameras available ***").unwrap().contains("rpicam-hello --list-cameras"));
        assert!(explain("INFO Camera camera.cpp:1033 Pipeline handler in use by another process")
            .unwrap()
            .contains("busy"));
        assert!(explain("ERROR: *** selected camera is not available ***").unwrap().contains("source.camera"));
        assert!(explain("ERROR: the system appears to be configured for the legacy camera stack")
            .unwrap()
            .contains("Legacy Camera"));
        assert!(explain("ERROR: Device timeout detected, attempting a restart!!!")
            .unwrap()
            .contains("stopped delivering"));
        // A libcamera EBUSY line alone is not "busy": too many things say that.
        assert_eq!(explain("ERROR V4L2 v4l2_videodevice.cpp:1248 Unable to set format: Device or resource busy"), None);
        assert_eq!(explain("something else"), None);
    }
}
