//! One sync round, decided without I/O: what each camera wants registered, what Moonraker
//! lists, and the steps between them. camjobd marks what it makes (`extra_data.camjobd` =
//! its instance) and only ever changes or deletes webcams with its own mark; a webcam of the
//! same name without it (made in the UI, in `moonraker.conf`, by another camjobd) is a
//! conflict, left alone.

use serde_json::{json, Map, Value};

/// The `extra_data` key that marks camjobd's webcams; its value is the instance.
pub const MARK: &str = "camjobd";
/// Beside the mark: the camera the webcam is for, and the name camjobd gave it. A webcam the
/// user renamed in Mainsail (its name no longer the one camjobd gave) stays theirs to name: it
/// is still found by its camera and kept in sync, never deleted and made again.
pub const CAMERA_MARK: &str = "camjobd_camera";
/// See [`CAMERA_MARK`].
pub const NAME_MARK: &str = "camjobd_name";

/// What one camera wants Moonraker to list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    /// The camera.
    pub camera: String,
    /// The webcam's name in Moonraker.
    pub name: String,
    /// Mainsail's and Fluidd's service (how the UI shows it).
    pub service: String,
    /// The live view's URL.
    pub stream_url: String,
    /// The snapshot URL.
    pub snapshot_url: String,
    /// The camera's frame rate, when known (a pipe's is not).
    pub target_fps: Option<u32>,
    /// `W:H`, when the frame size is known; sent only when camjobd makes the webcam.
    pub aspect_ratio: Option<String>,
}

/// A webcam as `GET /server/webcams/list` shows it (the fields camjobd looks at).
#[derive(Debug, Clone, PartialEq)]
pub struct Listed {
    /// Its name (unique in Moonraker).
    pub name: String,
    /// `database` (made through the API or a UI) or `config` (`[webcam]` in `moonraker.conf`).
    pub source: String,
    /// Its service.
    pub service: String,
    /// Its stream URL.
    pub stream_url: String,
    /// Its snapshot URL.
    pub snapshot_url: String,
    /// Its target frame rate.
    pub target_fps: Option<i64>,
    /// Its `extra_data` (kept whole when camjobd updates its own).
    pub extra_data: Map<String, Value>,
}

impl Listed {
    /// Reads one entry of the list; `None` for an entry without a name.
    pub fn from_json(v: &Value) -> Option<Listed> {
        let text = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        Some(Listed {
            name: v.get("name")?.as_str()?.to_string(),
            source: text("source"),
            service: text("service"),
            stream_url: text("stream_url"),
            snapshot_url: text("snapshot_url"),
            target_fps: v.get("target_fps").and_then(Value::as_i64),
            extra_data: v.get("extra_data").and_then(Value::as_object).cloned().unwrap_or_default(),
        })
    }

    /// The instance that made it, if a camjobd did.
    pub fn mark(&self) -> Option<&str> {
        self.extra_data.get(MARK).and_then(Value::as_str)
    }

    fn extra(&self, key: &str) -> Option<&str> {
        self.extra_data.get(key).and_then(Value::as_str)
    }

    /// Made by `instance` for `camera`, and renamed since by the user (its name is not the
    /// one camjobd gave it).
    fn renamed_for(&self, instance: &str, camera: &str) -> bool {
        self.mark() == Some(instance)
            && self.extra(CAMERA_MARK) == Some(camera)
            && self.extra(NAME_MARK).is_some_and(|n| n != self.name)
    }

    /// Made by `instance` for a camera none of `wanted` is (older marks without the camera:
    /// by name).
    fn orphaned(&self, instance: &str, wanted: &[Wanted]) -> bool {
        self.mark() == Some(instance)
            && match self.extra(CAMERA_MARK) {
                Some(camera) if self.renamed_for(instance, camera) => !wanted.iter().any(|w| w.camera == camera),
                _ => !wanted.iter().any(|w| w.name == self.name),
            }
    }
}

/// One request of a round.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// `POST /server/webcams/item` with this body: a new webcam, or an update of camjobd's own
    /// (Moonraker finds it by name and sets only the fields sent).
    Post {
        /// Index into the wanted list.
        wanted: usize,
        /// The JSON body.
        body: Value,
    },
    /// `DELETE /server/webcams/item?name=...`: a webcam this instance made for a camera it no
    /// longer has (or no longer registers).
    Delete {
        /// The webcam's name.
        name: String,
    },
}

/// A round's steps, and what is in each camera's way.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// In order: posts, then deletes.
    pub steps: Vec<Step>,
    /// Per wanted webcam: why it cannot be registered, if it cannot.
    pub conflicts: Vec<Option<String>>,
}

/// What the round must do so that Moonraker lists `wanted` as camjobd (`instance`) wants.
pub fn plan(wanted: &[Wanted], listed: &[Listed], instance: &str) -> Plan {
    let mut steps = Vec::new();
    let mut conflicts = Vec::with_capacity(wanted.len());
    for (i, w) in wanted.iter().enumerate() {
        // The camera's webcam under the name the user gave it, else the one of camjobd's name.
        let renamed = listed.iter().find(|l| l.renamed_for(instance, &w.camera));
        let Some(l) = renamed.or_else(|| listed.iter().find(|l| l.name == w.name)) else {
            steps.push(Step::Post { wanted: i, body: w.create_body(instance) });
            conflicts.push(None);
            continue;
        };
        if l.mark() != Some(instance) {
            conflicts.push(Some(conflict_reason(w, l)));
            continue;
        }
        if !w.matches(l) {
            steps.push(Step::Post { wanted: i, body: w.update_body(l, instance) });
        }
        conflicts.push(None);
    }
    for l in listed {
        if l.orphaned(instance, wanted) {
            steps.push(Step::Delete { name: l.name.clone() });
        }
    }
    Plan { steps, conflicts }
}

/// What is in the way of `w`, and what to do.
fn conflict_reason(w: &Wanted, l: &Listed) -> String {
    let what = match (l.source.as_str(), l.mark()) {
        ("config", _) => "a [webcam] section in moonraker.conf".to_string(),
        (_, Some(other)) => format!("another camjobd (instance {other:?}; give each its own moonraker.instance)"),
        _ => "a webcam made by hand (in Mainsail, Fluidd or through the API)".to_string(),
    };
    format!(
        "Moonraker already has a webcam named {:?}, from {what}; camjobd leaves it alone: remove it, or register camera {} under another name (cameras[].moonraker.name)",
        w.name, w.camera
    )
}

impl Wanted {
    /// Whether Moonraker's entry has every field camjobd sets. The rest (flip, rotation, icon,
    /// location, idle rate) are the user's to change in the UI.
    fn matches(&self, l: &Listed) -> bool {
        l.service == self.service
            && l.stream_url == self.stream_url
            && l.snapshot_url == self.snapshot_url
            && self.target_fps.is_none_or(|f| l.target_fps == Some(i64::from(f)))
    }

    /// The fields camjobd owns.
    fn owned(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("name".into(), json!(self.name));
        m.insert("service".into(), json!(self.service));
        m.insert("stream_url".into(), json!(self.stream_url));
        m.insert("snapshot_url".into(), json!(self.snapshot_url));
        if let Some(f) = self.target_fps {
            m.insert("target_fps".into(), json!(f));
        }
        m
    }

    /// A new webcam: the owned fields, the mark, and what camjobd knows of the picture (not
    /// flipped or rotated: a camera's flips are in its frames already).
    pub fn create_body(&self, instance: &str) -> Value {
        let mut m = self.owned();
        m.insert("enabled".into(), json!(true));
        m.insert("flip_horizontal".into(), json!(false));
        m.insert("flip_vertical".into(), json!(false));
        m.insert("rotation".into(), json!(0));
        if let Some(a) = &self.aspect_ratio {
            m.insert("aspect_ratio".into(), json!(a));
        }
        m.insert("extra_data".into(), json!({ MARK: instance, CAMERA_MARK: self.camera, NAME_MARK: self.name }));
        Value::Object(m)
    }

    /// An update of camjobd's own webcam: the owned fields, and its `extra_data` with the mark
    /// (should the webcam go between the list and this post, it comes back marked).
    fn update_body(&self, l: &Listed, instance: &str) -> Value {
        let mut m = self.owned();
        // Moonraker finds the webcam by name: a renamed one keeps the user's.
        m.insert("name".into(), json!(l.name));
        let mut extra = l.extra_data.clone();
        extra.insert(MARK.into(), json!(instance));
        extra.insert(CAMERA_MARK.into(), json!(self.camera));
        extra.entry(NAME_MARK).or_insert_with(|| json!(self.name));
        m.insert("extra_data".into(), Value::Object(extra));
        Value::Object(m)
    }
}

/// `W:H` in lowest terms (`1280x720` → `16:9`), as Moonraker's `aspect_ratio` takes it.
pub fn aspect_ratio(width: u32, height: u32) -> Option<String> {
    fn gcd(a: u32, b: u32) -> u32 {
        if b == 0 {
            a
        } else {
            gcd(b, a % b)
        }
    }
    let g = gcd(width, height);
    (g > 0).then(|| format!("{}:{}", width / g, height / g))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wanted(camera: &str, name: &str) -> Wanted {
        Wanted {
            camera: camera.into(),
            name: name.into(),
            service: "mjpegstreamer-adaptive".into(),
            stream_url: format!("http://p:8080/api/cameras/{camera}/stream.mjpeg"),
            snapshot_url: format!("http://p:8080/snapshot?camera={camera}"),
            target_fps: Some(15),
            aspect_ratio: Some("4:3".into()),
        }
    }

    /// As Moonraker lists what `w`'s create body made.
    fn listed_as(w: &Wanted, instance: &str) -> Listed {
        let mut v = w.create_body(instance);
        v["source"] = json!("database");
        Listed::from_json(&v).unwrap()
    }

    #[test]
    fn missing_is_made_marked_and_what_matches_is_left() {
        let w = vec![wanted("cam0", "cam0")];
        let p = plan(&w, &[], "pi");
        assert_eq!(p.conflicts, vec![None]);
        let [Step::Post { wanted: 0, body }] = p.steps.as_slice() else { panic!("{p:?}") };
        assert_eq!(body["extra_data"], json!({"camjobd": "pi", "camjobd_camera": "cam0", "camjobd_name": "cam0"}));
        assert_eq!((body["name"].as_str(), body["target_fps"].as_u64()), (Some("cam0"), Some(15)));
        assert_eq!(body["aspect_ratio"], "4:3");
        let p = plan(&w, &[listed_as(&w[0], "pi")], "pi");
        assert!(p.steps.is_empty(), "{p:?}");
    }

    #[test]
    fn own_webcams_are_updated_keeping_the_users_fields_and_extra_data() {
        let w = vec![wanted("cam0", "cam0")];
        let mut l = listed_as(&w[0], "pi");
        l.stream_url = "http://old:8080/stream".into();
        l.extra_data.insert("ui".into(), json!(1));
        let p = plan(&w, &[l], "pi");
        let [Step::Post { body, .. }] = p.steps.as_slice() else { panic!("{p:?}") };
        assert_eq!(body["stream_url"], w[0].stream_url);
        assert_eq!(
            body["extra_data"],
            json!({"camjobd": "pi", "camjobd_camera": "cam0", "camjobd_name": "cam0", "ui": 1})
        );
        assert!(body.get("flip_horizontal").is_none() && body.get("aspect_ratio").is_none(), "the user's to set");
        // A pipe camera's rate is unknown: whatever the user set stays.
        let mut pipe = wanted("cam0", "cam0");
        pipe.target_fps = None;
        let mut l = listed_as(&pipe, "pi");
        l.target_fps = Some(5);
        assert!(plan(&[pipe], &[l], "pi").steps.is_empty());
    }

    #[test]
    fn others_webcams_are_conflicts_and_never_touched() {
        let w = vec![wanted("cam0", "cam0"), wanted("cam1", "cam1"), wanted("cam2", "cam2")];
        let mut by_hand = listed_as(&w[0], "pi");
        by_hand.extra_data.clear();
        let mut in_conf = by_hand.clone();
        in_conf.name = "cam1".into();
        in_conf.source = "config".into();
        let other = listed_as(&w[2], "other-pi");
        let p = plan(&w, &[by_hand, in_conf, other], "pi");
        assert!(p.steps.is_empty(), "{p:?}");
        let reasons: Vec<String> = p.conflicts.into_iter().map(Option::unwrap).collect();
        assert!(reasons[0].contains("made by hand") && reasons[0].contains("cameras[].moonraker.name"), "{reasons:?}");
        assert!(reasons[1].contains("moonraker.conf"), "{reasons:?}");
        assert!(reasons[2].contains("another camjobd (instance \"other-pi\""), "{reasons:?}");
    }

    #[test]
    fn only_own_webcams_no_camera_claims_are_deleted() {
        let gone = listed_as(&wanted("old", "old"), "pi");
        let theirs = listed_as(&wanted("x", "x"), "other-pi");
        let mut by_hand = listed_as(&wanted("y", "y"), "pi");
        by_hand.extra_data.clear();
        let w = vec![wanted("cam0", "cam0")];
        let p = plan(&w, &[gone, theirs, by_hand, listed_as(&w[0], "pi")], "pi");
        assert_eq!(p.steps, vec![Step::Delete { name: "old".into() }]);
    }

    #[test]
    fn a_webcam_renamed_in_the_ui_stays_the_users_and_is_kept_in_sync() {
        let w = vec![wanted("cam1", "cam1")];
        let mut renamed = listed_as(&w[0], "pi");
        renamed.name = "Bed".into();
        renamed.stream_url = "http://old/".into();
        let p = plan(&w, std::slice::from_ref(&renamed), "pi");
        let [Step::Post { body, .. }] = p.steps.as_slice() else { panic!("{p:?}") };
        assert_eq!((body["name"].as_str(), body["stream_url"].as_str()), (Some("Bed"), Some(w[0].stream_url.as_str())));
        // Its camera removed from the config: deleted, as camjobd's own.
        let p = plan(&[wanted("cam0", "cam0")], &[renamed], "pi");
        assert!(p.steps.contains(&Step::Delete { name: "Bed".into() }), "{p:?}");
        // Renamed in camjobd's config (not in the UI): the old one goes, the new one is made.
        let old = listed_as(&wanted("cam1", "cam1"), "pi");
        let p = plan(&[wanted("cam1", "Printer")], &[old], "pi");
        assert!(p.steps.contains(&Step::Delete { name: "cam1".into() }), "{p:?}");
        assert!(p.steps.iter().any(|s| matches!(s, Step::Post { body, .. } if body["name"] == "Printer")), "{p:?}");
    }

    #[test]
    fn aspect_ratios_in_lowest_terms() {
        assert_eq!(aspect_ratio(1280, 720).as_deref(), Some("16:9"));
        assert_eq!(aspect_ratio(640, 480).as_deref(), Some("4:3"));
        assert_eq!(aspect_ratio(1296, 972).as_deref(), Some("4:3"));
        assert_eq!(aspect_ratio(0, 0), None);
    }
}
