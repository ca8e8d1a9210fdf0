//! The status LED: which blink pattern each job state shows, the backends, and the `led`
//! thread that drives one.
//!
//! The pattern is a pure function of the state and the time, so it is tested without
//! hardware. Backends implement [`Led`]: [`SysfsLed`] (a kernel LED's `brightness` file) and
//! [`GpioLed`] (a line through the kernel's GPIO character device, with gpiocdev). A backend that cannot be opened or written is disabled
//! with one warning and an event; it never stops a job.

use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::config::LedConfig;
use crate::events::{EventKind, EventLog};
use crate::lifecycle::JobState;
use crate::shutdown::Stop;
use crate::status::CameraShared;

/// Slow blink half-period (STARTING, RECOVERING).
pub const SLOW_MS: u64 = 500;
/// Fast blink half-period (FAILED).
pub const FAST_MS: u64 = 100;

/// Whether the LED is lit for `state` at monotonic time `t_ms`:
/// RUNNING steady on, STARTING/RECOVERING slow blink, FAILED fast blink, otherwise off.
pub fn lit(state: JobState, t_ms: u64) -> bool {
    match state {
        JobState::Running => true,
        JobState::Starting | JobState::Recovering => (t_ms / SLOW_MS) % 2 == 0,
        JobState::Failed => (t_ms / FAST_MS) % 2 == 0,
        _ => false,
    }
}

/// The state one LED shows for several cameras: the one that most needs attention.
pub fn summary(states: impl IntoIterator<Item = JobState>) -> JobState {
    let rank = |s: JobState| match s {
        JobState::Failed => 5,
        JobState::Recovering => 4,
        JobState::Starting => 3,
        JobState::Running => 2,
        JobState::Stopping => 1,
        _ => 0,
    };
    states.into_iter().max_by_key(|s| rank(*s)).unwrap_or(JobState::Idle)
}

/// Why an LED cannot be used. Each says what to do on the board.
#[derive(Debug)]
pub enum LedError {
    /// The `brightness` file could not be opened.
    Open {
        /// The file.
        path: PathBuf,
        /// What the kernel said.
        source: io::Error,
    },
    /// A write to the LED failed.
    Write(io::Error),
    /// The kernel offers no GPIO character device (`/dev/gpiochip*`).
    NoGpioChips,
    /// No access to a GPIO chip's device.
    NoGpioAccess(PathBuf),
    /// No line has the name the Raspberry Pi gives header pins (`GPIO17`).
    NoNamedLine(String),
    /// The line is already requested by another program (or by a kernel driver).
    Busy {
        /// The line, as the config names it.
        line: String,
        /// Who holds it, as the kernel says.
        consumer: String,
    },
    /// The chip or the line could not be used for another reason.
    Gpio {
        /// The line, as the config names it.
        line: String,
        /// What the kernel said.
        source: gpiocdev::Error,
    },
    /// `kind: "sysfs"` without `name` or `path`.
    NoSysfsPath,
}

impl fmt::Display for LedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LedError::Open { path, source } => {
                let hint = match source.kind() {
                    io::ErrorKind::NotFound => "; ls /sys/class/leds lists the LEDs this board has",
                    io::ErrorKind::PermissionDenied => {
                        "; the service user needs write access (a udev rule, or run the unit's ExecStartPre as root)"
                    }
                    _ => "",
                };
                write!(f, "cannot open the LED {}: {source}{hint}", path.display())
            }
            LedError::Write(e) => write!(f, "cannot set the LED: {e}"),
            LedError::NoGpioChips => f.write_str("this board has no GPIO character device (/dev/gpiochip*): GPIO LEDs need it; use led.kind \"sysfs\" or \"none\""),
            LedError::NoGpioAccess(p) => write!(f, "no access to {}: add the service user to the gpio group (the package does, where the group exists: sudo adduser camjobd gpio)", p.display()),
            LedError::NoNamedLine(name) => write!(f, "no GPIO line is named {name} (a Raspberry Pi names its header pins so; gpioinfo lists this board's lines): set led.chip and give the line's offset as led.pin, or use led.kind \"sysfs\" or \"none\""),
            LedError::Busy { line, consumer } => write!(f, "GPIO line {line} is in use by \"{consumer}\" (another program, or a driver from a dtoverlay): free it or choose another pin"),
            LedError::Gpio { line, source } => write!(f, "cannot use GPIO line {line}: {source}"),
            LedError::NoSysfsPath => f.write_str("a sysfs LED needs name or path"),
        }
    }
}

/// An LED backend.
pub trait Led: Send {
    /// Turns the LED on or off. An error disables the LED (the caller logs it once).
    fn set(&mut self, on: bool) -> Result<(), LedError>;
}

/// A kernel LED: writes `1`/`0` to its `brightness` file (opened once, rewritten in place).
/// Its trigger (`mmc0` for the Pi's ACT LED) is set to `none` so the kernel stops driving it,
/// and put back when this is dropped.
pub struct SysfsLed {
    file: fs::File,
    trigger: Option<(PathBuf, String)>,
}

impl SysfsLed {
    /// Opens `brightness` for writing; sets the trigger beside it (if any) to `none`.
    pub fn open(brightness: &Path) -> Result<SysfsLed, LedError> {
        let file = fs::OpenOptions::new()
            .write(true)
            .open(brightness)
            .map_err(|source| LedError::Open { path: brightness.to_path_buf(), source })?;
        let trigger_path = brightness.with_file_name("trigger");
        // "none rc-feedback [mmc0] timer ..." — the bracketed one is active.
        let trigger = fs::read_to_string(&trigger_path).ok().and_then(|t| {
            let active = t.split_whitespace().find(|w| w.starts_with('['))?.trim_matches(['[', ']']).to_string();
            (active != "none" && fs::write(&trigger_path, "none").is_ok()).then_some((trigger_path, active))
        });
        Ok(SysfsLed { file, trigger })
    }
}

impl Led for SysfsLed {
    fn set(&mut self, on: bool) -> Result<(), LedError> {
        // Each write goes to offset 0 (`pwrite`): the file stays open, no seek is needed.
        self.file.write_at(if on { b"1" } else { b"0" }, 0).map(|_| ()).map_err(LedError::Write)
    }
}

impl Drop for SysfsLed {
    fn drop(&mut self) {
        let _ = self.file.write_at(b"0", 0);
        if let Some((path, trigger)) = &self.trigger {
            let _ = fs::write(path, trigger);
        }
    }
}

/// An LED on a GPIO line, requested as an output through the GPIO character device. The
/// kernel applies `active_low`; the line is released (off first) when this is dropped.
pub struct GpioLed {
    line: gpiocdev::Request,
}

impl GpioLed {
    /// Requests the line as an output, LED off: `GPIO<pin>` by name, or offset `pin` on `chip`.
    pub fn open(pin: u8, active_low: bool, chip: Option<&str>) -> Result<GpioLed, LedError> {
        let chips = gpio_chips();
        if chips.is_empty() {
            return Err(LedError::NoGpioChips);
        }
        // A chip the user may not open hides its lines from the search: say so, rather than
        // "no such line".
        if let Some(p) = chips.iter().find(|p| {
            fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(p)
                .is_err_and(|e| e.kind() == io::ErrorKind::PermissionDenied)
        }) {
            return Err(LedError::NoGpioAccess(p.clone()));
        }
        let (path, offset, line) = match chip {
            Some(c) => {
                let path = PathBuf::from("/dev").join(c.strip_prefix("/dev/").unwrap_or(c));
                let line = format!("{} of {}", pin, path.display());
                (path, u32::from(pin), line)
            }
            None => {
                let name = format!("GPIO{pin}");
                let found = gpiocdev::find_named_line(&name).ok_or_else(|| LedError::NoNamedLine(name.clone()))?;
                (found.chip, found.info.offset, name)
            }
        };
        let gpio = |source| LedError::Gpio { line: line.clone(), source };
        let info = gpiocdev::Chip::from_path(&path).and_then(|c| c.line_info(offset)).map_err(gpio)?;
        if info.used {
            return Err(LedError::Busy { line, consumer: info.consumer });
        }
        let mut b = gpiocdev::Request::builder();
        b.on_chip(&path).with_consumer("camjobd").with_line(offset).as_output(gpiocdev::line::Value::Inactive);
        if active_low {
            b.as_active_low();
        }
        let line = b.request().map_err(gpio)?;
        Ok(GpioLed { line })
    }
}

/// The GPIO character devices this kernel offers.
fn gpio_chips() -> Vec<PathBuf> {
    let mut chips: Vec<PathBuf> = fs::read_dir("/dev")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_str().is_some_and(|n| n.starts_with("gpiochip")))
        .map(|e| e.path())
        .collect();
    chips.sort();
    chips
}

impl Led for GpioLed {
    fn set(&mut self, on: bool) -> Result<(), LedError> {
        let value = if on { gpiocdev::line::Value::Active } else { gpiocdev::line::Value::Inactive };
        self.line.set_lone_value(value).map_err(|source| LedError::Write(io::Error::other(source)))
    }
}

impl Drop for GpioLed {
    fn drop(&mut self) {
        // A released line keeps its last value on most drivers: off before letting go.
        let _ = self.set(false);
    }
}

/// Opens the configured LED; `Ok(None)` for `none`.
pub fn open(config: &LedConfig) -> Result<Option<Box<dyn Led>>, LedError> {
    Ok(match config {
        LedConfig::None => None,
        LedConfig::Gpio { pin, active_low, chip } => Some(Box::new(GpioLed::open(*pin, *active_low, chip.as_deref())?)),
        LedConfig::Sysfs { .. } => {
            let path = config.sysfs_path().ok_or(LedError::NoSysfsPath)?;
            Some(Box::new(SysfsLed::open(&path)?))
        }
    })
}

/// How often the `led` thread looks at the state (a quarter of the fast blink's half-period
/// would be finer than any eye; this keeps the fast blink even).
const TICK: Duration = Duration::from_millis(FAST_MS / 2);

/// The `led` thread: shows the state that most needs attention across cameras until `stop`,
/// then turns the LED off. A write error disables the LED with one warning and an event; the
/// thread then waits for `stop` (a core thread that returns early fails the service).
pub fn run(cameras: &[Arc<CameraShared>], events: &EventLog, mut led: Box<dyn Led>, stop: Stop) {
    let mut shown = None;
    loop {
        let state = summary(cameras.iter().map(|c| c.state()));
        let on = lit(state, crate::clock::mono_ms());
        if shown != Some(on) {
            if let Err(e) = led.set(on) {
                disable(events, &e);
                while !stop.wait(Duration::from_secs(3600)) {}
                return;
            }
            shown = Some(on);
        }
        if stop.wait(TICK) {
            let _ = led.set(false);
            return;
        }
    }
}

/// Logs and records why the LED is off for good.
pub fn disable(events: &EventLog, why: &LedError) {
    events.push(EventKind::Info, "", None, None, format_args!("status LED disabled: {why}; jobs go on"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_per_state() {
        assert!((0..2000).step_by(50).all(|t| lit(JobState::Running, t)));
        for s in [JobState::Idle, JobState::Stopped, JobState::Completed, JobState::Stopping] {
            assert!((0..2000).step_by(50).all(|t| !lit(s, t)), "{s:?}");
        }
        let toggles = |s| {
            (0..2000u64).step_by(10).map(|t| lit(s, t)).collect::<Vec<_>>().windows(2).filter(|w| w[0] != w[1]).count()
        };
        assert_eq!(toggles(JobState::Starting), 3);
        assert_eq!(toggles(JobState::Recovering), 3);
        assert_eq!(toggles(JobState::Failed), 19);
    }

    #[test]
    fn sysfs_led_writes_brightness_and_restores_the_trigger() {
        let guard = tempfile::tempdir().unwrap();
        let dir = guard.path();
        let (b, t) = (dir.join("brightness"), dir.join("trigger"));
        fs::write(&b, "0").unwrap();
        fs::write(&t, "none timer [mmc0] heartbeat\n").unwrap();
        let mut led = SysfsLed::open(&b).unwrap();
        assert_eq!(fs::read_to_string(&t).unwrap(), "none", "the kernel's trigger is switched off");
        led.set(true).unwrap();
        assert_eq!(fs::read_to_string(&b).unwrap(), "1");
        led.set(false).unwrap();
        assert_eq!(fs::read_to_string(&b).unwrap(), "0");
        led.set(true).unwrap();
        drop(led);
        assert_eq!(fs::read_to_string(&b).unwrap(), "0", "off at exit");
        assert_eq!(fs::read_to_string(&t).unwrap(), "mmc0", "trigger put back");
        let e = SysfsLed::open(&dir.join("nope/brightness")).err().unwrap().to_string();
        assert!(e.contains("ls /sys/class/leds"), "{e}");
    }

    #[test]
    fn gpio_without_the_line_says_what_to_do() {
        // CI and the qemu-user cross tests run on x86 hosts without a GPIO17 (the VM test
        // drives a real line on gpio-sim): the message must say what to configure instead.
        // On a Pi the line is requested (or refused for a reason a Pi can have).
        let on_a_pi = fs::read_to_string("/proc/device-tree/model").is_ok_and(|m| m.contains("Raspberry Pi"));
        match (on_a_pi, GpioLed::open(17, false, None)) {
            (false, Err(LedError::NoGpioChips | LedError::NoNamedLine(_) | LedError::NoGpioAccess(_))) => {}
            (false, Ok(_)) => panic!("a line GPIO17 was requested on a board that is not a Pi"),
            (false, Err(e)) => panic!("off a Pi, GPIO must say the line is not there: {e}"),
            (true, _) => {}
        }
        for advice in [LedError::NoGpioChips.to_string(), LedError::NoNamedLine("GPIO17".into()).to_string()] {
            assert!(advice.contains(r#"use led.kind "sysfs" or "none""#), "{advice}");
        }
        assert!(LedError::NoNamedLine("GPIO17".into()).to_string().contains("led.chip"));
        assert!(LedError::NoGpioAccess("/dev/gpiochip0".into()).to_string().contains("gpio group"));
    }

    /// Records what the thread asks of the LED; fails from the `fail_at`th call on.
    struct FakeLed {
        calls: Arc<std::sync::Mutex<Vec<bool>>>,
        fail_at: usize,
    }

    impl Led for FakeLed {
        fn set(&mut self, on: bool) -> Result<(), LedError> {
            let mut c = self.calls.lock().unwrap();
            if c.len() + 1 >= self.fail_at {
                return Err(LedError::Write(io::Error::other("write failed (fake)")));
            }
            c.push(on);
            Ok(())
        }
    }

    fn shared_in(state: JobState) -> Arc<crate::status::Shared> {
        let (tx, _rx) = crossbeam_channel::bounded(1);
        let shared = Arc::new(crate::status::Shared::new(crate::config::Config::default(), tx));
        shared.cameras[0].job.lock().unwrap().state = state;
        shared
    }

    #[test]
    fn the_led_thread_blinks_the_state_and_ends_off() {
        let shared = shared_in(JobState::Failed);
        let calls = Arc::new(std::sync::Mutex::new(Vec::new()));
        let led = Box::new(FakeLed { calls: Arc::clone(&calls), fail_at: usize::MAX });
        let stop = Stop::new();
        let (sh, s) = (Arc::clone(&shared), stop.clone());
        let t = std::thread::spawn(move || run(&sh.cameras, &sh.events, led, s));
        std::thread::sleep(Duration::from_millis(1000));
        shared.cameras[0].job.lock().unwrap().state = JobState::Running;
        std::thread::sleep(Duration::from_millis(300));
        let running_from = calls.lock().unwrap().len();
        std::thread::sleep(Duration::from_millis(300));
        stop.trigger();
        t.join().unwrap();
        let c = calls.lock().unwrap().clone();
        // FAILED: a change every 100 ms, only changes are written.
        assert!((4..=14).contains(&running_from), "{running_from} writes in 1 s of FAILED (+ RUNNING): {c:?}");
        assert!(c.windows(2).all(|w| w[0] != w[1]), "only changes are written: {c:?}");
        assert_eq!(c.len(), running_from + 1, "RUNNING is steady: just the final off");
        assert_eq!(c.last(), Some(&false), "off at the end");
    }

    #[test]
    fn a_failing_led_is_disabled_with_an_event() {
        let shared = shared_in(JobState::Failed);
        let led = Box::new(FakeLed { calls: Arc::default(), fail_at: 3 });
        let stop = Stop::new();
        let (sh, s) = (Arc::clone(&shared), stop.clone());
        let t = std::thread::spawn(move || run(&sh.cameras, &sh.events, led, s));
        let mut events = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while events.is_empty() {
            assert!(std::time::Instant::now() < deadline, "no event");
            std::thread::sleep(Duration::from_millis(10));
            shared.events.page(0, 10, &mut events);
        }
        // Disabled, the thread waits for the stop token (returning early would fail the service).
        assert!(!t.is_finished());
        stop.trigger();
        t.join().unwrap();
        let msg = events.iter().map(|e| e.message.as_str()).find(|m| m.starts_with("status LED disabled"));
        assert_eq!(msg, Some("status LED disabled: cannot set the LED: write failed (fake); jobs go on"));
    }

    #[test]
    fn summary_shows_the_worst() {
        assert_eq!(summary([JobState::Running, JobState::Failed, JobState::Idle]), JobState::Failed);
        assert_eq!(summary([JobState::Running, JobState::Stopped]), JobState::Running);
        assert_eq!(summary([]), JobState::Idle);
    }
}
