//! Camera controls in Home Assistant: one entity per control (`number` for an int, `switch`
//! for a bool, `select` for a menu, `button` for a button) on the camera's device, a retained
//! state `<camera>/controls` (`{"<name>": value}`: numbers, `true`/`false`, a menu item's
//! name), and one command topic `<camera>/controls/set` that takes what `PUT
//! /api/cameras/<camera>/controls` takes. A change goes HA → camjobd → camera, and the
//! camera's read-back comes back as the state.

use serde_json::{json, Map, Value};

use super::discovery::Config;
use super::Names;
use crate::controls::{Control, Kind};

/// The object id of a control's entity (`<camera>_ctl_<name>`), distinct from the camera's own.
pub fn object_id(camera: &str, control: &str) -> String {
    format!("{camera}_ctl_{control}")
}

/// Whether a discovery topic is one of `camera`'s control entities.
pub fn is_control_topic(names: &Names, camera: &str, topic: &str) -> bool {
    topic.contains(&format!("/{}/{}", names.node_id, object_id(camera, "")))
}

/// The discovery configs of `camera`'s controls (empty when discovery is off).
pub fn configs(names: &Names, camera: &str, source_kind: &str, list: &[Control]) -> Vec<Config> {
    let Some(disc) = &names.discovery_prefix else { return Vec::new() };
    // The camera's device, as the camera's own entities name it (the same identifiers).
    let base = super::discovery::configs(names, camera, source_kind);
    let Some(device) = base.first().map(|c| c.payload["device"].clone()) else { return Vec::new() };
    let state = names.camera(camera, "controls");
    let set = names.camera(camera, "controls/set");
    list.iter()
        .map(|c| {
            let object_id = object_id(camera, &c.name);
            let value = format!("value_json[{}]", json!(c.name));
            let (component, mut fields) = match c.kind {
                Kind::Int => (
                    "number",
                    json!({
                        "state_topic": state, "command_topic": set,
                        "value_template": format!("{{{{ {value} }}}}"),
                        "command_template": format!("{{{{ {{{}: value | int}} | tojson }}}}", json!(c.name)),
                        "min": c.min, "max": c.max, "step": c.step, "mode": "slider",
                    }),
                ),
                Kind::Bool => (
                    "switch",
                    json!({
                        "state_topic": state, "command_topic": set,
                        "value_template": format!("{{{{ 'ON' if {value} else 'OFF' }}}}"),
                        "payload_on": json!({&c.name: true}).to_string(),
                        "payload_off": json!({&c.name: false}).to_string(),
                        // The state is the template's ON/OFF, not the command payloads.
                        "state_on": "ON",
                        "state_off": "OFF",
                    }),
                ),
                Kind::Menu => (
                    "select",
                    json!({
                        "state_topic": state, "command_topic": set,
                        "value_template": format!("{{{{ {value} }}}}"),
                        "command_template": format!("{{{{ {{{}: value}} | tojson }}}}", json!(c.name)),
                        "options": c.menu.iter().map(|m| m.name.clone()).collect::<Vec<_>>(),
                    }),
                ),
                Kind::Button => {
                    ("button", json!({"command_topic": set, "payload_press": json!({&c.name: true}).to_string()}))
                }
            };
            if let Some(unit) = c.unit {
                fields["unit_of_measurement"] = json!(unit);
            }
            fields["entity_category"] = json!("config");
            fields["name"] = json!(c.label);
            fields["unique_id"] = json!(format!("{}_{object_id}", names.node_id));
            fields["availability_topic"] = json!(names.availability());
            fields["device"] = device.clone();
            fields["origin"] = json!({"name": "camjobd", "sw_version": env!("CARGO_PKG_VERSION")});
            Config { topic: format!("{disc}/{component}/{}/{object_id}/config", names.node_id), payload: fields }
        })
        .collect()
}

/// The retained `<camera>/controls` state: each control's value (buttons have none).
pub fn state(list: &[Control]) -> Vec<u8> {
    let mut o = Map::new();
    for c in list {
        let v = match (c.kind, c.value) {
            (Kind::Button, _) | (_, None) => continue,
            (Kind::Bool, Some(v)) => json!(v != 0),
            (Kind::Menu, Some(v)) => c.menu.iter().find(|m| m.value == v).map_or(json!(v), |m| json!(m.name)),
            (Kind::Int, Some(v)) => json!(v),
        };
        o.insert(c.name.clone(), v);
    }
    serde_json::to_vec(&Value::Object(o)).expect("plain data")
}

#[cfg(test)]
mod tests {
    use super::super::discovery::tests::names;
    use super::*;
    use crate::controls::MenuItem;

    fn list() -> Vec<Control> {
        let c = |id, name: &str, kind, value| Control {
            id,
            name: name.into(),
            label: name.into(),
            kind,
            min: 0,
            max: 255,
            step: 1,
            default: 0,
            value,
            menu: vec![],
            inactive: false,
            unit: None,
        };
        vec![
            c(1, "brightness", Kind::Int, Some(40)),
            c(2, "moving_bar", Kind::Bool, Some(0)),
            Control {
                menu: vec![MenuItem { value: 0, name: "Ramps".into() }, MenuItem { value: 1, name: "Grey".into() }],
                ..c(3, "pattern", Kind::Menu, Some(1))
            },
            c(4, "restart_count", Kind::Button, None),
        ]
    }

    #[test]
    fn each_kind_becomes_its_entity_on_the_cameras_device() {
        let cs = configs(&names(), "cam0", "synthetic", &list());
        let kinds: Vec<&str> = cs.iter().map(|c| c.topic.split('/').nth(1).unwrap()).collect();
        assert_eq!(kinds, ["number", "switch", "select", "button"]);
        assert_eq!(cs[0].topic, "homeassistant/number/camjobd-pi/cam0_ctl_brightness/config");
        for c in &cs {
            assert_eq!(c.payload["device"]["identifiers"][0], "camjobd-pi_cam0");
            assert_eq!(c.payload["command_topic"], "camjobd/pi/cam0/controls/set");
            assert!(is_control_topic(&names(), "cam0", &c.topic));
        }
        assert_eq!(cs[0].payload["command_template"], "{{ {\"brightness\": value | int} | tojson }}");
        assert_eq!(cs[1].payload["payload_on"], "{\"moving_bar\":true}");
        assert_eq!(
            (cs[1].payload["state_on"].as_str(), cs[1].payload["state_off"].as_str()),
            (Some("ON"), Some("OFF"))
        );
        assert_eq!(cs[2].payload["options"], json!(["Ramps", "Grey"]));
        assert_eq!(cs[3].payload["payload_press"], "{\"restart_count\":true}");
        assert!(!is_control_topic(&names(), "cam0", "homeassistant/sensor/camjobd-pi/cam0_state/config"));
    }

    #[test]
    fn the_state_carries_what_the_templates_read() {
        let s: Value = serde_json::from_slice(&state(&list())).unwrap();
        assert_eq!(s, json!({"brightness": 40, "moving_bar": false, "pattern": "Grey"}));
    }
}
