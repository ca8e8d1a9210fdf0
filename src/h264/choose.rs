//! Which encoder makes a camera's H.264 (`video.encoder`), and the sentence that says why,
//! logged at start and shown in the camera's `video.encoder` in `/api/status`.
//!
//! `auto` takes the V4L2 memory-to-memory encoder when one is found by what it can do (a Pi
//! 0–4's `bcm2835-codec`), else OpenH264. Whatever `auto` chose falls back to OpenH264 if it
//! fails at start or on frames ([`super::stage`]), so an encoder that misbehaves on some board
//! costs CPU, not the stream. `v4l2m2m` asked for by name has no fallback: its failure is the
//! service's.

use std::path::{Path, PathBuf};

use crate::config::EncoderKind;

/// The encoder a camera's H.264 stage makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// OpenH264 on the stage's thread.
    Software,
    /// The V4L2 M2M encoder at this device.
    M2m(PathBuf),
}

/// What was chosen and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// The encoder.
    pub backend: Backend,
    /// One sentence for the log and the API.
    pub why: String,
    /// OpenH264 takes over if the backend fails (only for what `auto` chose).
    pub fallback: bool,
}

/// Looks for a V4L2 M2M H.264 encoder: at `device` when given, else on every `/dev/video*`.
/// Answers the device and a short description, or why none is usable.
pub type Probe<'a> = &'a dyn Fn(Option<&Path>) -> Result<(PathBuf, String), String>;

/// Chooses for `kind`; `device` is `video.device`; `jpeg_input`: the camera's frames are
/// JPEGs, which the stage decodes first. `Err`: `v4l2m2m` was asked for and cannot be had.
pub fn choose(kind: EncoderKind, device: Option<&Path>, jpeg_input: bool, probe: Probe<'_>) -> Result<Choice, String> {
    let input = if jpeg_input { " from the camera's JPEGs, decoded" } else { "" };
    let software = |why: &str| Choice {
        backend: Backend::Software,
        why: format!("software (OpenH264){input}, {why}"),
        fallback: false,
    };
    match kind {
        EncoderKind::Software => Ok(software("as configured")),
        EncoderKind::V4l2m2m => match probe(device) {
            Ok((path, what)) => Ok(Choice {
                why: format!("V4L2 M2M encoder {} ({what}){input}, as configured", path.display()),
                backend: Backend::M2m(path),
                fallback: false,
            }),
            Err(why) => Err(format!("video.encoder is \"v4l2m2m\" but {why}; use \"auto\" to fall back to software")),
        },
        // `source` is refused by the config check in this version; auto as for the others.
        EncoderKind::Auto | EncoderKind::Source => match probe(device) {
            Ok((path, what)) => Ok(Choice {
                why: format!(
                    "V4L2 M2M encoder {} ({what}){input}, chosen by auto (software if it fails)",
                    path.display()
                ),
                backend: Backend::M2m(path),
                fallback: true,
            }),
            Err(why) => Ok(software(&format!("chosen by auto: {why}"))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(d: Option<&Path>) -> Result<(PathBuf, String), String> {
        Ok((d.map_or_else(|| PathBuf::from("/dev/video11"), Path::to_path_buf), "bcm2835-codec-encode".into()))
    }

    fn none(_: Option<&Path>) -> Result<(PathBuf, String), String> {
        Err("no V4L2 M2M H.264 encoder was found".into())
    }

    #[test]
    fn auto_takes_the_m2m_encoder_when_found_with_a_fallback_and_says_why() {
        let c = choose(EncoderKind::Auto, None, false, &found).unwrap();
        assert_eq!(c.backend, Backend::M2m("/dev/video11".into()));
        assert!(c.fallback);
        assert_eq!(
            c.why,
            "V4L2 M2M encoder /dev/video11 (bcm2835-codec-encode), chosen by auto (software if it fails)"
        );
        let c = choose(EncoderKind::Auto, None, true, &none).unwrap();
        assert_eq!((c.backend, c.fallback), (Backend::Software, false));
        assert_eq!(
            c.why,
            "software (OpenH264) from the camera's JPEGs, decoded, chosen by auto: no V4L2 M2M H.264 encoder was found"
        );
    }

    #[test]
    fn an_encoder_named_in_the_config_is_that_one_or_an_error() {
        let c = choose(EncoderKind::Software, None, false, &found).unwrap();
        assert_eq!((c.backend, c.why.as_str()), (Backend::Software, "software (OpenH264), as configured"));
        let c = choose(EncoderKind::V4l2m2m, Some(Path::new("/dev/video31")), false, &found).unwrap();
        assert_eq!((c.backend, c.fallback), (Backend::M2m("/dev/video31".into()), false));
        let e = choose(EncoderKind::V4l2m2m, None, false, &none).unwrap_err();
        assert!(e.contains("no V4L2 M2M H.264 encoder was found") && e.contains("\"auto\""), "{e}");
    }
}
