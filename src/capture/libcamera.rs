//! The `libcamera` source: a Raspberry Pi CSI camera (Camera Module 3, HQ, ...) through
//! `rpicam-vid`, the way Raspberry Pi OS Bookworm reaches it. camjobd finds the program on
//! `PATH` (`rpicam-vid`, or `libcamera-vid` on older images), builds its arguments from the
//! config, and runs it as a [pipe](super::pipe) source: its JPEGs are passed through, or, when
//! the camera has H.264 too ([`Output::Yuv420`]), its raw I420 frames are handed to camjobd's
//! JPEG and H.264 encoders (one camera program, one picture, two outputs). What rpicam-vid
//! says on stderr before it fails becomes a reason that says what to do.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use std::time::Duration;

use super::pipe::PipeOpener;
use super::{Applied, Dest, Opener, Read, Source, SourceError};
use crate::config::{LibcameraConfig, PipeConfig};
use crate::controls::{Control, Kind, MenuItem, Saved};

/// The programs tried, in order: the Bookworm name, then the Bullseye one.
pub const PROGRAMS: [&str; 2] = ["rpicam-vid", "libcamera-vid"];

/// What rpicam-vid writes on stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// JPEGs from the Pi's JPEG encoder (`--codec mjpeg`), passed through.
    Mjpeg,
    /// Raw I420 frames (`--codec yuv420`), encoded by camjobd: JPEG when due, H.264 while
    /// somebody watches.
    Yuv420,
}

/// Opens the camera by starting rpicam-vid.
pub struct LibcameraOpener {
    config: LibcameraConfig,
    max_frame_bytes: usize,
    output: Output,
}

impl LibcameraOpener {
    /// An opener for `config`, delivering frames of at most `max_frame_bytes` as `output`.
    pub fn new(config: LibcameraConfig, max_frame_bytes: usize, output: Output) -> Self {
        LibcameraOpener { config, max_frame_bytes, output }
    }
}

impl Opener for LibcameraOpener {
    fn open(&mut self, job_id: u64, saved: &Saved) -> Result<Box<dyn Source>, SourceError> {
        // Looked up at every open: installing rpicam-apps fixes a failed job on its next start.
        let Some(program) = find_program(std::env::var_os("PATH").as_deref()) else {
            return Err(SourceError::fatal(
                "neither rpicam-vid nor libcamera-vid is on PATH: install the camera apps (`sudo apt install rpicam-apps` on Raspberry Pi OS Bookworm)",
            ));
        };
        let mut values: Vec<i64> = CONTROLS.iter().map(|c| c.default).collect();
        let (fit, _) = saved.resolve(&list(&values));
        for (id, v) in fit {
            values[id as usize - FIRST_ID as usize] = v;
        }
        let mut camera = Libcamera {
            program: program.to_string_lossy().into_owned(),
            config: self.config.clone(),
            max_frame_bytes: self.max_frame_bytes,
            output: self.output,
            job_id,
            values,
            inner: None,
            before: None,
            reverted: None,
        };
        camera.inner = Some(camera.spawn()?);
        Ok(Box::new(camera))
    }
}

/// rpicam-vid running with the current control values; a change restarts it with new ones.
struct Libcamera {
    program: String,
    config: LibcameraConfig,
    max_frame_bytes: usize,
    output: Output,
    job_id: u64,
    /// One value per [`CONTROLS`] entry.
    values: Vec<i64>,
    /// `None` only while restarting.
    inner: Option<Box<dyn Source>>,
    /// The values before the last change, until rpicam-vid delivers a frame with the new ones:
    /// if it exits first, they come back.
    before: Option<Vec<i64>>,
    /// Why rpicam-vid failed with the changed values (for [`Source::take_reverted`]).
    reverted: Option<String>,
}

impl Libcamera {
    fn spawn(&self) -> Result<Box<dyn Source>, SourceError> {
        let mut command = argv(&self.program, &self.config, self.output);
        command.extend(control_args(&self.values, &self.config.extra_args));
        let name = Path::new(&self.program)
            .file_name()
            .map_or_else(|| "rpicam-vid".into(), |n| n.to_string_lossy().into_owned());
        let mut pipe = PipeOpener::new(PipeConfig { command }, self.max_frame_bytes).with_explainer(explain, name);
        if self.output == Output::Yuv420 {
            pipe = pipe.with_i420(self.config.width as usize, self.config.height as usize);
        }
        pipe.open(self.job_id, &Saved::default())
    }
}

impl Source for Libcamera {
    fn delivers(&self) -> super::Delivers {
        match self.output {
            Output::Mjpeg => super::Delivers::Jpeg,
            Output::Yuv420 => super::Delivers::Yuv,
        }
    }

    fn read(&mut self, dst: Dest<'_>, wait: Duration) -> Result<Read, SourceError> {
        let Some(inner) = self.inner.as_mut() else {
            return Err(SourceError::fatal("rpicam-vid could not be restarted with the new control values"));
        };
        match inner.read(dst, wait) {
            Err(e) if e.fatal && self.before.is_some() => {
                // rpicam-vid refused what the last change asked (an option this camera lacks):
                // the values from before, which worked, and a frame gap; not a recovery.
                self.values = self.before.take().expect("checked");
                self.inner = None;
                self.inner = Some(self.spawn().map_err(|_| e.clone())?);
                self.reverted = Some(e.message);
                Ok(Read::Timeout)
            }
            Ok(r @ (Read::Frame { .. } | Read::Raw | Read::Consumed)) => {
                self.before = None;
                Ok(r)
            }
            other => other,
        }
    }

    fn take_reverted(&mut self) -> Option<String> {
        self.reverted.take()
    }

    fn controls(&mut self) -> Vec<Control> {
        list(&self.values)
    }

    fn set_controls(&mut self, changes: &[(u32, i64)]) -> Result<Applied, String> {
        let mut values = self.values.clone();
        for &(id, v) in changes {
            let i = id.checked_sub(FIRST_ID).map(|i| i as usize).filter(|&i| i < CONTROLS.len());
            values[i.ok_or_else(|| format!("rpicam-vid has no control {id}"))?] = v;
        }
        if values == self.values {
            return Ok(Applied::Live);
        }
        // The first of several changes before a frame is the one to go back to.
        self.before.get_or_insert_with(|| self.values.clone());
        self.values = values;
        // The old rpicam-vid holds the camera: it is stopped (and reaped) before the new starts.
        self.inner = None;
        self.inner = Some(self.spawn().map_err(|e| e.message)?);
        Ok(Applied::Restarted)
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

/// rpicam-vid's arguments: camjobd's own (an endless stream on stdout, no preview window),
/// the size, rate and (for JPEGs) quality, the camera, then `extra_args`.
pub fn argv(program: &str, c: &LibcameraConfig, output: Output) -> Vec<String> {
    let codec = match output {
        Output::Mjpeg => "mjpeg",
        Output::Yuv420 => "yuv420",
    };
    let mut a: Vec<String> =
        [program, "-t", "0", "--codec", codec, "--nopreview", "-o", "-"].into_iter().map(String::from).collect();
    for (flag, value) in [("--width", c.width), ("--height", c.height), ("--framerate", c.fps)] {
        a.push(flag.into());
        a.push(value.to_string());
    }
    if output == Output::Mjpeg {
        a.push("--quality".into());
        a.push(c.quality.to_string());
    }
    if let Some(n) = c.camera {
        a.push("--camera".into());
        a.push(n.to_string());
    }
    a.extend(c.extra_args.iter().cloned());
    a
}

/// How a control becomes rpicam-vid options.
#[derive(Clone, Copy)]
enum Arg {
    /// `--flag <item>` unless the value is the default (the menu's items are rpicam's words).
    Word(&'static str, &'static [&'static str]),
    /// `--flag <value / scale>` unless the value is the default.
    Scaled(&'static str, f64),
    /// `--flag` when on.
    Switch(&'static str),
    /// `--lens-position <value / 100>`, only with manual focus.
    LensPosition,
}

/// One rpicam-vid option camjobd offers as a control.
struct Spec {
    label: &'static str,
    arg: Arg,
    min: i64,
    max: i64,
    step: i64,
    default: i64,
    unit: Option<&'static str>,
}

/// The first control id (ids follow [`CONTROLS`]' order).
const FIRST_ID: u32 = 1;
/// Index of `autofocus_mode` in [`CONTROLS`], and its `manual` item.
const AF_MODE: usize = 0;
const AF_MANUAL: i64 = 1;

const fn menu(label: &'static str, flag: &'static str, items: &'static [&'static str]) -> Spec {
    Spec { label, arg: Arg::Word(flag, items), min: 0, max: items.len() as i64 - 1, step: 1, default: 0, unit: None }
}

const fn scaled(
    label: &'static str,
    flag: &'static str,
    range: (i64, i64, i64),
    scale: f64,
    unit: &'static str,
) -> Spec {
    Spec {
        label,
        arg: Arg::Scaled(flag, scale),
        min: range.0,
        max: range.1,
        step: 1,
        default: range.2,
        unit: Some(unit),
    }
}

/// What rpicam-vid can change (its `--help`), as integers: fractions are scaled (a brightness
/// of 25 is `--brightness 0.25`) so every control fits the API's int/bool/menu/button. A
/// value at its default adds no option, leaving rpicam-vid's (and the tuning file's) own.
const CONTROLS: [Spec; 15] = [
    menu("Autofocus Mode", "--autofocus-mode", &["default", "manual", "auto", "continuous"]),
    menu("Autofocus Range", "--autofocus-range", &["normal", "macro", "full"]),
    menu("Autofocus Speed", "--autofocus-speed", &["normal", "fast"]),
    Spec {
        label: "Lens Position",
        arg: Arg::LensPosition,
        min: 0,
        max: 1500,
        step: 1,
        default: 100,
        unit: Some("1/100 dioptre"),
    },
    scaled("Shutter", "--shutter", (0, 10_000_000, 0), 1.0, "us, 0 automatic"),
    scaled("Gain", "--gain", (0, 6400, 0), 100.0, "1/100, 0 automatic"),
    scaled("EV", "--ev", (-100, 100, 0), 10.0, "1/10 stop"),
    menu("AWB", "--awb", &["auto", "incandescent", "tungsten", "fluorescent", "indoor", "daylight", "cloudy"]),
    scaled("Brightness", "--brightness", (-100, 100, 0), 100.0, "%"),
    scaled("Contrast", "--contrast", (0, 400, 100), 100.0, "%"),
    scaled("Saturation", "--saturation", (0, 400, 100), 100.0, "%"),
    scaled("Sharpness", "--sharpness", (0, 400, 100), 100.0, "%"),
    menu("Denoise", "--denoise", &["auto", "off", "cdn_off", "cdn_fast", "cdn_hq"]),
    Spec { label: "Horizontal Flip", arg: Arg::Switch("--hflip"), min: 0, max: 1, step: 1, default: 0, unit: None },
    Spec { label: "Vertical Flip", arg: Arg::Switch("--vflip"), min: 0, max: 1, step: 1, default: 0, unit: None },
];

/// The controls with `values` (one per [`CONTROLS`] entry).
fn list(values: &[i64]) -> Vec<Control> {
    CONTROLS
        .iter()
        .zip(values)
        .enumerate()
        .map(|(i, (s, &v))| Control {
            id: FIRST_ID + i as u32,
            name: crate::controls::snake(s.label),
            label: s.label.into(),
            kind: match s.arg {
                Arg::Word(..) => Kind::Menu,
                Arg::Switch(_) => Kind::Bool,
                _ => Kind::Int,
            },
            min: s.min,
            max: s.max,
            step: s.step,
            default: s.default,
            value: Some(v),
            menu: match s.arg {
                Arg::Word(_, items) => {
                    items.iter().enumerate().map(|(i, n)| MenuItem { value: i as i64, name: (*n).into() }).collect()
                }
                _ => vec![],
            },
            inactive: matches!(s.arg, Arg::LensPosition) && values[AF_MODE] != AF_MANUAL,
            unit: s.unit,
        })
        .collect()
}

/// The rpicam-vid options for `values` (one per [`CONTROLS`] entry), defaults left out, and
/// options already in `extra_args` left to it (rpicam-vid refuses an option given twice).
fn control_args(values: &[i64], extra_args: &[String]) -> Vec<String> {
    let mut a = Vec::new();
    for (s, &v) in CONTROLS.iter().zip(values) {
        let flag = match s.arg {
            Arg::Word(f, _) | Arg::Scaled(f, _) | Arg::Switch(f) => f,
            Arg::LensPosition => "--lens-position",
        };
        if extra_args.iter().any(|e| e == flag || e.starts_with(&format!("{flag}="))) {
            continue;
        }
        match s.arg {
            _ if v == s.default && !matches!(s.arg, Arg::LensPosition) => {}
            Arg::Word(flag, items) => a.extend([flag.to_string(), items[v.clamp(0, s.max) as usize].to_string()]),
            Arg::Scaled(flag, scale) => a.extend([flag.to_string(), format!("{}", v as f64 / scale)]),
            Arg::Switch(flag) => a.push(flag.to_string()),
            Arg::LensPosition if values[AF_MODE] == AF_MANUAL => {
                a.extend(["--lens-position".to_string(), format!("{}", v as f64 / 100.0)])
            }
            Arg::LensPosition => {}
        }
    }
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
            argv("rpicam-vid", &c, Output::Mjpeg).join(" "),
            "rpicam-vid -t 0 --codec mjpeg --nopreview -o - --width 1280 --height 720 --framerate 15 --quality 80 --camera 1 --hflip"
        );
        // Raw frames: no JPEG quality (camjobd's encoders have it).
        assert_eq!(
            argv("rpicam-vid", &c, Output::Yuv420).join(" "),
            "rpicam-vid -t 0 --codec yuv420 --nopreview -o - --width 1280 --height 720 --framerate 15 --camera 1 --hflip"
        );
        let c = LibcameraConfig::default();
        assert!(!argv("libcamera-vid", &c, Output::Mjpeg).contains(&"--camera".to_string()));
    }

    #[test]
    fn control_values_become_options_and_defaults_add_none() {
        let mut values: Vec<i64> = CONTROLS.iter().map(|c| c.default).collect();
        assert!(control_args(&values, &[]).is_empty());
        let names: Vec<String> = list(&values).into_iter().map(|c| c.name).collect();
        assert_eq!(names[..4], ["autofocus_mode", "autofocus_range", "autofocus_speed", "lens_position"]);
        values[3] = 250; // lens position alone: not manual focus, so no option
        assert!(control_args(&values, &[]).is_empty());
        values[AF_MODE] = AF_MANUAL;
        values[6] = -15;
        values[8] = 25;
        values[13] = 1;
        assert_eq!(
            control_args(&values, &[]).join(" "),
            "--autofocus-mode manual --lens-position 2.5 --ev -1.5 --brightness 0.25 --hflip"
        );
        // What extra_args already says is left to it.
        let extra = ["--hflip".to_string(), "--ev=-1".to_string()];
        assert_eq!(
            control_args(&values, &extra).join(" "),
            "--autofocus-mode manual --lens-position 2.5 --brightness 0.25"
        );
        values[4] = 20000;
        values[5] = 150;
        assert!(control_args(&values, &[]).join(" ").contains("--shutter 20000 --gain 1.5"));
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
