//! Home Assistant MQTT discovery: per camera a device with its sensors, a `problem` binary
//! sensor, start and stop buttons and an image entity, each a retained config under
//! `<discovery_prefix>/<component>/<node_id>/<camera>_<entity>/config`. Every entity carries
//! the availability topic, so the whole device greys out when camjobd goes away.

use serde_json::{json, Value};

use super::Names;
use crate::lifecycle::JobState;

/// One discovery config: its topic and payload.
pub struct Config {
    /// `<discovery_prefix>/<component>/<node_id>/<object_id>/config`.
    pub topic: String,
    /// The JSON config.
    pub payload: Value,
}

/// A sensor read from the job JSON.
struct JobSensor {
    /// Object id suffix.
    suffix: &'static str,
    name: &'static str,
    /// The job JSON's field.
    field: &'static str,
    unit: Option<&'static str>,
    state_class: &'static str,
    /// Shown under "Diagnostic" in Home Assistant.
    diagnostic: bool,
}

const fn sensor(
    suffix: &'static str,
    name: &'static str,
    field: &'static str,
    unit: Option<&'static str>,
    state_class: &'static str,
    diagnostic: bool,
) -> JobSensor {
    JobSensor { suffix, name, field, unit, state_class, diagnostic }
}

const JOB_SENSORS: [JobSensor; 5] = [
    sensor("frames", "Frames", "frames_captured", Some("frames"), "total_increasing", false),
    sensor("dropped", "Dropped frames", "frames_dropped", Some("frames"), "total_increasing", true),
    sensor("errors", "Errors", "errors_total", None, "total_increasing", true),
    sensor("recoveries", "Recoveries", "recoveries", None, "total_increasing", true),
    sensor("last_frame_age", "Last frame age", "last_frame_age_s", Some("s"), "measurement", false),
];

/// The object ids camjobd announces for `camera` (used to recognise its own configs).
pub fn object_ids(camera: &str) -> Vec<String> {
    ["state", "problem", "start", "stop", "snapshot"]
        .into_iter()
        .chain(JOB_SENSORS.iter().map(|s| s.suffix))
        .map(|e| format!("{camera}_{e}"))
        .collect()
}

/// The discovery configs of one camera (empty when discovery is off).
pub fn configs(names: &Names, camera: &str, source_kind: &str) -> Vec<Config> {
    let Some(disc) = &names.discovery_prefix else { return Vec::new() };
    let cam_topic = |leaf: &str| format!("{}/{camera}/{leaf}", names.topic_prefix);
    let device = json!({
        "identifiers": [format!("{}_{camera}", names.node_id)],
        "name": format!("{camera} ({})", names.host),
        "manufacturer": "camjobd",
        "model": format!("camjobd {source_kind} camera"),
        "sw_version": env!("CARGO_PKG_VERSION"),
        "configuration_url": format!("{}/", names.http_url),
    });
    let entity = |component: &str, suffix: &str, name: &str, mut fields: Value| {
        let object_id = format!("{camera}_{suffix}");
        let common = json!({
            "name": name,
            "unique_id": format!("{}_{object_id}", names.node_id),
            "availability_topic": names.availability(),
            "payload_available": "online",
            "payload_not_available": "offline",
            "device": device.clone(),
            "origin": { "name": "camjobd", "sw_version": env!("CARGO_PKG_VERSION") },
        });
        if let (Some(f), Value::Object(c)) = (fields.as_object_mut(), common) {
            f.extend(c);
        }
        Config { topic: format!("{disc}/{component}/{}/{object_id}/config", names.node_id), payload: fields }
    };
    let states: Vec<&str> = JobState::ALL.iter().map(|s| s.as_str()).collect();
    let mut out = vec![
        entity(
            "sensor",
            "state",
            "State",
            json!({"state_topic": cam_topic("state"), "device_class": "enum", "options": states, "icon": "mdi:cctv"}),
        ),
        entity(
            "binary_sensor",
            "problem",
            "Problem",
            json!({
                "state_topic": cam_topic("state"),
                "device_class": "problem",
                "value_template": "{{ 'ON' if value in ('FAILED', 'RECOVERING') else 'OFF' }}",
                "json_attributes_topic": cam_topic("job"),
                "json_attributes_template": "{{ {'reason': value_json.reason, 'job_id': value_json.id} | tojson }}",
            }),
        ),
        entity(
            "button",
            "start",
            "Start job",
            json!({"command_topic": cam_topic("command"), "payload_press": "start", "icon": "mdi:play"}),
        ),
        entity(
            "button",
            "stop",
            "Stop job",
            json!({"command_topic": cam_topic("command"), "payload_press": "stop", "icon": "mdi:stop"}),
        ),
    ];
    let image = if names.snapshot_jpeg {
        json!({"image_topic": cam_topic("snapshot"), "content_type": "image/jpeg"})
    } else {
        json!({"url_topic": cam_topic("snapshot_url")})
    };
    out.push(entity("image", "snapshot", "Snapshot", image));
    for s in &JOB_SENSORS {
        let mut f = json!({
            "state_topic": cam_topic("job"),
            "value_template": format!("{{{{ value_json.{} }}}}", s.field),
            "state_class": s.state_class,
        });
        if let Some(u) = s.unit {
            f["unit_of_measurement"] = u.into();
        }
        if s.suffix == "last_frame_age" {
            f["device_class"] = "duration".into();
        }
        if s.diagnostic {
            f["entity_category"] = "diagnostic".into();
        }
        out.push(entity("sensor", s.suffix, s.name, f));
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Names for a host `pi` with discovery on (also the control entities' tests').
    pub(crate) fn names() -> Names {
        Names {
            topic_prefix: "camjobd/pi".into(),
            discovery_prefix: Some("homeassistant".into()),
            node_id: "camjobd-pi".into(),
            host: "pi".into(),
            http_url: "http://pi.local:8080".into(),
            snapshot_jpeg: false,
        }
    }

    #[test]
    fn every_entity_has_what_home_assistant_requires() {
        let cs = configs(&names(), "cam0", "synthetic");
        assert_eq!(cs.len(), object_ids("cam0").len());
        let mut ids = std::collections::HashSet::new();
        for c in &cs {
            let p = &c.payload;
            let parts: Vec<_> = c.topic.split('/').collect();
            assert_eq!((parts[0], parts[2], parts[4]), ("homeassistant", "camjobd-pi", "config"), "{}", c.topic);
            assert!(object_ids("cam0").contains(&parts[3].to_string()), "{}", c.topic);
            assert!(ids.insert(p["unique_id"].as_str().unwrap().to_string()), "duplicate unique_id");
            assert_eq!(p["availability_topic"], "camjobd/pi/availability");
            assert_eq!(p["device"]["identifiers"][0], "camjobd-pi_cam0");
            let component = parts[1];
            match component {
                "sensor" | "binary_sensor" => {
                    assert!(p["state_topic"].as_str().unwrap().starts_with("camjobd/pi/cam0/"))
                }
                "button" => assert_eq!(p["command_topic"], "camjobd/pi/cam0/command"),
                "image" => assert_eq!(p["url_topic"], "camjobd/pi/cam0/snapshot_url"),
                other => panic!("unexpected component {other}"),
            }
        }
    }

    #[test]
    fn discovery_off_announces_nothing_and_jpeg_mode_uses_the_image_topic() {
        let mut n = names();
        n.snapshot_jpeg = true;
        let image = configs(&n, "cam0", "v4l2").into_iter().find(|c| c.topic.contains("/image/")).unwrap();
        assert_eq!(image.payload["image_topic"], "camjobd/pi/cam0/snapshot");
        assert_eq!(image.payload["content_type"], "image/jpeg");
        n.discovery_prefix = None;
        assert!(configs(&n, "cam0", "v4l2").is_empty());
    }
}
