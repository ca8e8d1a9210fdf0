//! The `led` section: which status LED camjobd drives, if any (a GPIO pin or a kernel LED).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::Checker;

/// The status LED backend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "lowercase")]
pub enum LedConfig {
    /// No LED.
    #[default]
    None,
    /// An LED on a GPIO line, through the kernel's GPIO character device (`/dev/gpiochipN`;
    /// the user needs the `gpio` group). Without `chip`, `pin` is the Raspberry Pi's BCM
    /// number and the line is the one the board names `GPIO<pin>` (on every Pi, the Pi 5's
    /// RP1 included); with `chip`, `pin` is the line's offset on that chip (other boards).
    Gpio {
        /// BCM pin number, 0–53 (the 40-pin header exposes 0–27); with `chip`, the offset.
        pin: u8,
        /// The LED lights when the pin is low (wired to 3.3 V through the LED).
        #[serde(default)]
        active_low: bool,
        /// A GPIO chip: a name like `gpiochip0` or its `/dev` path (`gpiodetect` lists them).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        chip: Option<String>,
    },
    /// A kernel LED: `/sys/class/leds/<name>/brightness` (the Pi's `ACT` LED, say), or any
    /// brightness file given as `path`. Its trigger is set to `none` while camjobd runs and
    /// put back at exit.
    Sysfs {
        /// The LED's name under `/sys/class/leds`.
        #[serde(default)]
        name: Option<String>,
        /// A brightness file, instead of `name`.
        #[serde(default)]
        path: Option<PathBuf>,
    },
}

impl LedConfig {
    /// The brightness file of a `sysfs` LED.
    pub fn sysfs_path(&self) -> Option<PathBuf> {
        match self {
            LedConfig::Sysfs { path: Some(p), .. } => Some(p.clone()),
            LedConfig::Sysfs { name: Some(n), .. } => Some(PathBuf::from("/sys/class/leds").join(n).join("brightness")),
            _ => None,
        }
    }

    /// Checks the pin or the sysfs LED's name.
    pub(super) fn validate(&self, v: &mut Checker) {
        match self {
            // The SoC's GPIO lines (BCM2835 to BCM2711 have 54); only 0–27 reach the header.
            LedConfig::Gpio { pin, chip: None, .. } => v.range("led.pin", *pin, 0, 53),
            LedConfig::Gpio { chip: Some(c), .. } => {
                let name = c.strip_prefix("/dev/").unwrap_or(c);
                let ok = name.starts_with("gpiochip") && !name.contains('/');
                v.check(
                    "led.chip",
                    ok,
                    "must be a GPIO chip like \"gpiochip0\" or \"/dev/gpiochip0\" (gpiodetect lists them)",
                );
            }
            LedConfig::Sysfs { name, path } => {
                v.check(
                    "led",
                    name.is_some() != path.is_some(),
                    "a sysfs LED needs name (under /sys/class/leds) or path, not both",
                );
                if let Some(n) = name {
                    // A name, not a path: it is joined under /sys/class/leds.
                    let ok = !n.is_empty() && !n.contains('/') && n != "." && n != "..";
                    v.check("led.name", ok, "must be an LED name like \"ACT\" (ls /sys/class/leds)");
                }
            }
            LedConfig::None => {}
        }
    }
}
