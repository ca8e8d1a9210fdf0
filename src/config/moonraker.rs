//! The `moonraker` section, and each camera's `moonraker` key: which Moonraker camjobd
//! registers its cameras with (`POST /server/webcams/item`), under which names and services,
//! and the base of the URLs it registers. Absent or `null` turns registration off. Everything
//! here is checked at start-up (exit 2 naming the key); a Moonraker that is down is not a
//! config error (camjobd registers when it comes up).

use std::fmt;
use std::path::PathBuf;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{CameraConfig, Checker, ConfigError, WebrtcConfig};

/// The services camjobd's URLs work with, as Mainsail and Fluidd name them: the first three
/// show the MJPEG stream or snapshots; `webrtc-mediamtx` plays the camera's H.264 over WHEP.
pub const SERVICES: [&str; 4] = ["mjpegstreamer-adaptive", "mjpegstreamer", "uv4l-mjpeg", "webrtc-mediamtx"];

/// The service that needs the camera's `video` (its stream URL is the WHEP endpoint's base).
pub const WEBRTC_SERVICE: &str = "webrtc-mediamtx";

/// Longest webcam name, instance and base URL camjobd sends.
const MAX_NAME: usize = 64;
const MAX_URL: usize = 200;

/// Checked in `validate` and read in `load_api_key_file`.
const API_KEY_FILE: &str = "moonraker.api_key_file";

/// Registration with Moonraker (`moonraker`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MoonrakerConfig {
    /// Moonraker's API: `http://host[:port]` (port 80 when left out).
    pub url: String,
    /// A file holding Moonraker's API key (first line), sent as `X-Api-Key`; `null`: none
    /// (camjobd's address must then be among Moonraker's `trusted_clients`).
    pub api_key_file: Option<PathBuf>,
    /// The key read from `api_key_file` (never printed, never in the config file).
    #[serde(skip)]
    pub api_key: Option<String>,
    /// The webcam service cameras are registered with (a camera's `moonraker.service` wins).
    pub service: String,
    /// Where viewers reach camjobd's HTTP API: `http(s)://host[:port][/path]`, or a path
    /// (`/webcam`) on the UI's own host through its proxy; `null`: from `http.bind`.
    pub base_url: Option<String>,
    /// What marks the webcams this camjobd registered (`extra_data.camjobd`), so that it
    /// removes only its own; `null`: the host name. Two camjobd on one host that register with
    /// one Moonraker need one each.
    pub instance: Option<String>,
}

impl Default for MoonrakerConfig {
    fn default() -> Self {
        MoonrakerConfig {
            url: "http://127.0.0.1:7125".into(),
            api_key_file: None,
            api_key: None,
            service: "mjpegstreamer-adaptive".into(),
            base_url: None,
            instance: None,
        }
    }
}

/// A camera's `moonraker` key: `false` (not registered), or an object that overrides the
/// webcam's `name` (default: the camera's) and `service` (default: `moonraker.service`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CameraMoonraker {
    /// `false` in the config: this camera is not registered.
    pub skip: bool,
    /// The webcam's name in Moonraker; `None`: the camera's name.
    pub name: Option<String>,
    /// The webcam's service; `None`: `moonraker.service`.
    pub service: Option<String>,
}

impl CameraMoonraker {
    /// Nothing set: registered under the camera's name with the section's service.
    pub fn is_default(&self) -> bool {
        *self == CameraMoonraker::default()
    }
}

/// The object form, parsed by serde's derive (unknown keys refused, paths kept).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Overrides {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    service: Option<String>,
}

impl Serialize for CameraMoonraker {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        if self.skip {
            return s.serialize_bool(false);
        }
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry("name", &self.name)?;
        m.serialize_entry("service", &self.service)?;
        m.end()
    }
}

impl<'de> Deserialize<'de> for CameraMoonraker {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = CameraMoonraker;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("false (not registered), true, null, or {\"name\": ..., \"service\": ...}")
            }
            fn visit_bool<E: de::Error>(self, on: bool) -> Result<CameraMoonraker, E> {
                Ok(CameraMoonraker { skip: !on, ..CameraMoonraker::default() })
            }
            fn visit_unit<E: de::Error>(self) -> Result<CameraMoonraker, E> {
                Ok(CameraMoonraker::default())
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<CameraMoonraker, A::Error> {
                let o = Overrides::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(CameraMoonraker { skip: false, name: o.name, service: o.service })
            }
        }
        d.deserialize_any(V)
    }
}

/// A parsed `moonraker.url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MoonrakerUrl {
    /// Host name or address (an IPv6 address without its brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl MoonrakerUrl {
    /// Parses `http://host[:port][/]` (`[v6]:port` for IPv6).
    pub fn parse(url: &str) -> Result<MoonrakerUrl, String> {
        let Some(rest) = url.strip_prefix("http://") else {
            let https = if url.starts_with("https://") {
                " (https is not supported: Moonraker on the printer's host or LAN answers plain http)"
            } else {
                ""
            };
            return Err(format!("{url:?} must start with http://{https}, for example \"http://127.0.0.1:7125\""));
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#', '@']) || rest.contains(char::is_whitespace) {
            return Err(format!(
                "{url:?}: give only http://host:port, Moonraker's own address (no path; the API key goes in moonraker.api_key_file)"
            ));
        }
        let (host, port) = super::host_port(url, rest, 80)?;
        Ok(MoonrakerUrl { host, port })
    }

    /// `host:port` as a `Host` header and a connect target take it (`[v6]:port`).
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Why a webcam name or instance is refused, if it is.
fn name_problem(name: &str) -> Option<String> {
    if name.is_empty() || name.len() > MAX_NAME {
        Some(format!("must be 1 to {MAX_NAME} bytes"))
    } else if name.chars().any(char::is_control) || name.trim() != name {
        Some("must not contain control characters or start or end with a space".into())
    } else {
        None
    }
}

/// Why a service is refused, if it is.
fn service_problem(service: &str) -> Option<String> {
    (!SERVICES.contains(&service)).then(|| {
        format!(
            "{service:?} is not a service camjobd's URLs work with: one of {} (moonraker-obico adopts only services with \"mjpeg\" in the name)",
            SERVICES.map(|s| format!("{s:?}")).join(", ")
        )
    })
}

impl MoonrakerConfig {
    /// Range-checks the section and every camera's `moonraker` key (`cameras[i].moonraker`).
    pub(super) fn validate(
        section: Option<&MoonrakerConfig>,
        cameras: &[CameraConfig],
        webrtc: &WebrtcConfig,
        v: &mut Checker,
    ) {
        let Some(m) = section else {
            for (i, c) in cameras.iter().enumerate() {
                let set = c.moonraker.name.is_some() || c.moonraker.service.is_some();
                v.check(
                    &format!("cameras[{i}].moonraker"),
                    !set,
                    "names a webcam, but there is no top-level moonraker section (its url) to register it with: add one, or remove this key",
                );
            }
            return;
        };
        if let Err(e) = MoonrakerUrl::parse(&m.url) {
            v.fail("moonraker.url", e);
        }
        if let Some(p) = &m.api_key_file {
            v.check(API_KEY_FILE, !p.as_os_str().is_empty(), "must name a file");
        }
        if let Some(problem) = service_problem(&m.service) {
            v.fail("moonraker.service", problem);
        }
        if let Some(u) = &m.base_url {
            let ok = (u.starts_with("http://") || u.starts_with("https://") || u.starts_with('/'))
                && u.len() <= MAX_URL
                && !u.contains(char::is_whitespace)
                && !u.contains(['?', '#']);
            v.check(
                "moonraker.base_url",
                ok,
                "must be an http:// or https:// URL (\"http://printer.local:8080\") or a path on the UI's host (\"/webcam\"), without ? or #",
            );
        }
        if let Some(problem) = m.instance.as_deref().and_then(name_problem) {
            v.fail("moonraker.instance", problem);
        }
        let mut names: Vec<&str> = Vec::new();
        for (i, c) in cameras.iter().enumerate() {
            let cm = &c.moonraker;
            if cm.skip {
                continue;
            }
            let name = cm.name.as_deref().unwrap_or(&c.name);
            v.within(&format!("cameras[{i}].moonraker"), |v| {
                if let Some(problem) = cm.name.as_deref().and_then(name_problem) {
                    v.fail("name", problem);
                }
                if names.contains(&name) {
                    v.fail(
                        "name",
                        format!("{name:?} is registered by an earlier camera; Moonraker's webcam names are unique"),
                    );
                }
                if let Some(problem) = cm.service.as_deref().and_then(service_problem) {
                    v.fail("service", problem);
                }
                let service = cm.service.as_deref().unwrap_or(&m.service);
                if service == WEBRTC_SERVICE && (c.video.is_none() || !webrtc.enabled) {
                    v.fail(
                        "service",
                        format!("{WEBRTC_SERVICE} plays the camera's H.264: it needs this camera's video and webrtc.enabled; use another service for this camera"),
                    );
                }
            });
            names.push(name);
        }
    }

    /// Reads `api_key_file` into `api_key` (after validation).
    pub(super) fn load_api_key_file(&mut self) -> Result<(), ConfigError> {
        let Some(path) = &self.api_key_file else { return Ok(()) };
        let fail = |message: String| ConfigError { path: API_KEY_FILE.into(), message };
        let text = std::fs::read_to_string(path).map_err(|e| {
            fail(format!("cannot read {}: {e}; the service user needs read access to it", path.display()))
        })?;
        let key = text.lines().next().unwrap_or("").trim();
        let ok = !key.is_empty() && key.len() <= 256 && key.bytes().all(|b| b.is_ascii_graphic());
        if !ok {
            return Err(fail(format!(
                "{}: the first line must be Moonraker's API key (1 to 256 printable characters; Moonraker's `GET /access/api_key` from a trusted address returns it)",
                path.display()
            )));
        }
        self.api_key = Some(key.to_string());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn err(json: &str) -> String {
        Config::from_json(json).unwrap_err().to_string()
    }

    #[test]
    fn urls_parse_with_port_80_by_default_and_refuse_what_is_not_moonraker() {
        let u = MoonrakerUrl::parse("http://127.0.0.1:7125").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.authority().as_str()), ("127.0.0.1", 7125, "127.0.0.1:7125"));
        let u = MoonrakerUrl::parse("http://printer.local/").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("printer.local", 80));
        let u = MoonrakerUrl::parse("http://[::1]:7125").unwrap();
        assert_eq!((u.host.as_str(), u.authority().as_str()), ("::1", "[::1]:7125"));
        for bad in ["https://x", "x:7125", "http://", "http://x:0", "http://x/server", "http://k@x", "http://[::1"] {
            assert!(MoonrakerUrl::parse(bad).is_err(), "{bad} accepted");
        }
        assert!(MoonrakerUrl::parse("https://x").unwrap_err().contains("https is not supported"));
    }

    #[test]
    fn the_section_and_the_cameras_keys() {
        let c = Config::from_json(r#"{"moonraker":{}}"#).unwrap();
        let m = c.moonraker.unwrap();
        assert_eq!((m.url.as_str(), m.service.as_str()), ("http://127.0.0.1:7125", "mjpegstreamer-adaptive"));
        assert!(Config::from_json(r#"{"moonraker":null}"#).unwrap().moonraker.is_none());
        let c = Config::from_json(
            r#"{"moonraker":{},"cameras":[{"name":"a","moonraker":false},{"name":"b","moonraker":{"name":"Printer cam","service":"mjpegstreamer"}},{"name":"c","moonraker":null}]}"#,
        )
        .unwrap();
        assert!(c.cameras[0].moonraker.skip);
        assert_eq!(c.cameras[1].moonraker.name.as_deref(), Some("Printer cam"));
        assert!(c.cameras[2].moonraker.is_default());
        // The effective config reads back as itself.
        let printed = serde_json::to_string(&c).unwrap();
        assert_eq!(Config::from_json(&printed).unwrap(), c);
    }

    #[test]
    fn bad_values_name_their_key() {
        for (json, want) in [
            (r#"{"moonraker":{"url":"https://x"}}"#, "moonraker.url: "),
            (r#"{"moonraker":{"url":"http://x:99999"}}"#, "moonraker.url: "),
            (r#"{"moonraker":{"service":"hlsstream"}}"#, "moonraker.service: \"hlsstream\" is not a service"),
            (r#"{"moonraker":{"base_url":"printer.local:8080"}}"#, "moonraker.base_url: "),
            (r#"{"moonraker":{"base_url":"http://x/?a"}}"#, "moonraker.base_url: "),
            (r#"{"moonraker":{"instance":""}}"#, "moonraker.instance: "),
            (r#"{"moonraker":{"api_key_file":""}}"#, "moonraker.api_key_file: "),
            (r#"{"moonraker":{"usl":"x"}}"#, "moonraker.usl: unknown field"),
            (r#"{"moonraker":{},"cameras":[{"moonraker":{"nam":"x"}}]}"#, "cameras[0].moonraker.nam: unknown field"),
            (r#"{"moonraker":{},"cameras":[{"moonraker":5}]}"#, "cameras[0].moonraker: invalid type"),
            (r#"{"moonraker":{},"cameras":[{"moonraker":{"name":" x"}}]}"#, "cameras[0].moonraker.name: "),
            (r#"{"moonraker":{},"cameras":[{"moonraker":{"service":"x"}}]}"#, "cameras[0].moonraker.service: "),
            (
                r#"{"moonraker":{},"cameras":[{"name":"a"},{"name":"b","moonraker":{"name":"a"}}]}"#,
                "cameras[1].moonraker.name: \"a\" is registered by an earlier camera",
            ),
            (r#"{"cameras":[{"moonraker":{"name":"x"}}]}"#, "cameras[0].moonraker: names a webcam"),
            (
                r#"{"moonraker":{"service":"webrtc-mediamtx"},"cameras":[{"name":"a"}]}"#,
                "cameras[0].moonraker.service: webrtc-mediamtx plays",
            ),
        ] {
            let e = err(json);
            assert!(e.starts_with(want), "{json}: {e}");
        }
        // Two cameras may both stay out, and a camera with video may use WebRTC.
        let ok = r#"{"moonraker":{"service":"webrtc-mediamtx"},"cameras":[{"name":"a","video":{}},{"name":"b","moonraker":{"service":"mjpegstreamer"}}]}"#;
        assert!(Config::from_json(ok).is_ok());
    }

    #[test]
    fn the_api_key_file_is_read_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key");
        let mut c = Config::from_json(&format!(r#"{{"moonraker":{{"api_key_file":{key:?}}}}}"#)).unwrap();
        let e = c.load_secret_files().unwrap_err();
        assert!(e.to_string().starts_with("moonraker.api_key_file: cannot read"), "{e}");
        std::fs::write(&key, "\n").unwrap();
        assert!(c.load_secret_files().unwrap_err().to_string().contains("first line must be"));
        std::fs::write(&key, "0123456789abcdef0123456789abcdef\n").unwrap();
        c.load_secret_files().unwrap();
        assert_eq!(c.moonraker.as_ref().unwrap().api_key.as_deref(), Some("0123456789abcdef0123456789abcdef"));
        assert!(!serde_json::to_string(&c).unwrap().contains("0123456789abcdef"), "never printed");
    }
}
