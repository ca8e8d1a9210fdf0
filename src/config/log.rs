//! The `log` section: how much camjobd logs (to stderr, through the `log` thread).

use serde::{Deserialize, Serialize};

/// Logging settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `error`, `warn`, `info`, `debug` or `trace`.
    pub level: LogLevel,
}

/// See [`LogConfig::level`]. Parsed by serde, so a bad value is refused while the document is
/// read, naming `log.level` and the allowed values; there is nothing left to check afterwards.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// Warnings and errors.
    Warn,
    /// What camjobd does (the default).
    #[default]
    Info,
    /// Details for debugging.
    Debug,
    /// Everything.
    Trace,
}

impl From<LogLevel> for ::log::LevelFilter {
    fn from(level: LogLevel) -> Self {
        match level {
            LogLevel::Error => ::log::LevelFilter::Error,
            LogLevel::Warn => ::log::LevelFilter::Warn,
            LogLevel::Info => ::log::LevelFilter::Info,
            LogLevel::Debug => ::log::LevelFilter::Debug,
            LogLevel::Trace => ::log::LevelFilter::Trace,
        }
    }
}
