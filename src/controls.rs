//! Camera controls (focus, exposure, white balance, ...): what a camera offers, as every backend
//! describes it, the checks a request to change them passes, and the file that keeps the
//! values a user chose (`<storage.dir>/<camera>/controls.json`) so that they are applied again
//! on every open.
//!
//! Every value is an `i64`: a bool is 0 or 1, a menu value is the index of its item, a button
//! has none. Names are the driver's labels in snake case (`Exposure, Auto Priority` →
//! `exposure_auto_priority`, as `v4l2-ctl` names them), stable across opens, so they key the
//! saved file, the API and the MQTT entities.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// What kind of value a control takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An integer in `min..=max` on a grid of `step` from `min`.
    Int,
    /// On or off (0 or 1).
    Bool,
    /// One item of [`Control::menu`] (its `value`).
    Menu,
    /// An action with no value (pressed with `true`).
    Button,
}

impl Kind {
    /// The API's `type`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Int => "int",
            Kind::Bool => "bool",
            Kind::Menu => "menu",
            Kind::Button => "button",
        }
    }
}

/// One item of a menu control.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MenuItem {
    /// The value that selects it.
    pub value: i64,
    /// What the driver calls it.
    pub name: String,
}

/// One control as the camera describes it, with its current value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Control {
    /// The backend's id (a V4L2 control id; libcamera and synthetic controls number their own).
    pub id: u32,
    /// The key: the label in snake case.
    pub name: String,
    /// The driver's label.
    pub label: String,
    /// What it takes.
    pub kind: Kind,
    /// Smallest value.
    pub min: i64,
    /// Largest value.
    pub max: i64,
    /// Grid from `min` (at least 1).
    pub step: i64,
    /// The driver's default.
    pub default: i64,
    /// The current value (`None` for a button, or when the camera could not say).
    pub value: Option<i64>,
    /// The items of a menu (possibly sparse: drivers skip values they do not support).
    pub menu: Vec<MenuItem>,
    /// The driver says it has no effect now (manual exposure while exposure is automatic).
    pub inactive: bool,
    /// What the number counts, when it is not obvious (`us`, `%`, `1/100 dioptre`).
    pub unit: Option<&'static str>,
}

impl Control {
    /// The API's view of the control.
    pub fn to_json(&self) -> Value {
        let shown = |v: i64| match self.kind {
            Kind::Bool => json!(v != 0),
            _ => json!(v),
        };
        let mut o = json!({
            "id": self.id,
            "name": self.name,
            "label": self.label,
            "type": self.kind.as_str(),
            "min": self.min,
            "max": self.max,
            "step": self.step,
            "default": shown(self.default),
            "value": if self.kind == Kind::Button { Value::Null } else { self.value.map_or(Value::Null, shown) },
            "menu": self.menu.iter().map(|m| json!({"value": m.value, "name": m.name})).collect::<Vec<_>>(),
            "inactive": self.inactive,
        });
        if let Some(unit) = self.unit {
            o["unit"] = json!(unit);
        }
        o
    }

    /// The range in words, for an error that says what would have been taken.
    pub fn range(&self) -> String {
        match self.kind {
            Kind::Int if self.step > 1 => {
                format!("an integer from {} to {} in steps of {}", self.min, self.max, self.step)
            }
            Kind::Int => format!("an integer from {} to {}", self.min, self.max),
            Kind::Bool => "true or false".into(),
            Kind::Button => "true (a button is pressed, it has no value)".into(),
            Kind::Menu => {
                let items: Vec<String> = self.menu.iter().map(|m| format!("{} ({:?})", m.value, m.name)).collect();
                format!("one of {}", items.join(", "))
            }
        }
    }

    /// The value `v` (from a request) means for this control, or why it does not fit.
    pub fn accept(&self, v: &Value) -> Result<i64, String> {
        let got = || format!("control {:?} takes {}; got {v}", self.name, self.range());
        match self.kind {
            Kind::Int => {
                let n = v.as_i64().ok_or_else(got)?;
                // In i128: a 64-bit control's range minus an i64 from a request cannot overflow.
                let on_grid = (i128::from(n) - i128::from(self.min)) % i128::from(self.step.max(1)) == 0;
                (n >= self.min && n <= self.max && on_grid).then_some(n).ok_or_else(got)
            }
            Kind::Bool => match v {
                Value::Bool(b) => Ok(i64::from(*b)),
                Value::Number(n) if n.as_i64() == Some(0) || n.as_i64() == Some(1) => Ok(n.as_i64().unwrap_or(0)),
                _ => Err(got()),
            },
            Kind::Button => match v {
                Value::Bool(true) | Value::Null => Ok(1),
                Value::Number(n) if n.as_i64() == Some(1) => Ok(1),
                _ => Err(got()),
            },
            Kind::Menu => {
                let found = match v {
                    Value::Number(n) => self.menu.iter().find(|m| Some(m.value) == n.as_i64()),
                    Value::String(s) => self.menu.iter().find(|m| m.name.eq_ignore_ascii_case(s.trim())),
                    _ => None,
                };
                found.map(|m| m.value).ok_or_else(got)
            }
        }
    }
}

/// The label in snake case: lower-case ASCII letters and digits, runs of anything else one `_`.
pub fn snake(label: &str) -> String {
    let mut out = String::with_capacity(label.len());
    for c in label.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.is_empty() && !out.ends_with('_') {
            out.push('_');
        }
    }
    while out.ends_with('_') {
        out.pop();
    }
    out
}

/// Makes every name in `list` unique: a driver may give two controls labels that differ only in
/// punctuation (`Exposure, Auto` and `Exposure Auto`); the later ones get their id appended
/// (`exposure_auto_0x009a0901`), so a name never picks the wrong control.
pub fn unique_names(list: &mut [Control]) {
    let mut seen = std::collections::HashSet::new();
    for c in list.iter_mut() {
        if c.name.is_empty() {
            c.name = format!("control_{:#010x}", c.id);
        }
        if !seen.insert(c.name.clone()) {
            c.name = format!("{}_{:#010x}", c.name, c.id);
            seen.insert(c.name.clone());
        }
    }
}

/// New values, checked against the list: `(index into the list, value)`, switches and menus
/// before numbers: a camera takes a manual value only once its automatic mode is off
/// (`focus_automatic_continuous` before `focus_absolute`), whatever the order in the request.
pub type Changes = Vec<(usize, i64)>;

/// Why a request to change controls was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The body is not a JSON object of `name: value`.
    NotAnObject,
    /// The object is empty.
    Empty,
    /// No control has this name or id.
    Unknown {
        /// The key as sent.
        key: String,
        /// The names the camera has.
        known: String,
    },
    /// The value does not fit the control (the message names it and its range).
    Invalid(String),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::NotAnObject => {
                f.write_str(r#"expected a JSON object of control names (or ids) and values, e.g. {"brightness": 140}"#)
            }
            Refusal::Empty => f.write_str("no control named: send at least one name and value"),
            Refusal::Unknown { key, known } => write!(f, "this camera has no control {key:?}; it has: {known}"),
            Refusal::Invalid(why) => f.write_str(why),
        }
    }
}

/// Checks a request's body (`{"<name or id>": value, ...}`) against `list`.
pub fn check(list: &[Control], body: &Value) -> Result<Changes, Refusal> {
    let Value::Object(map) = body else { return Err(Refusal::NotAnObject) };
    if map.is_empty() {
        return Err(Refusal::Empty);
    }
    let mut out = Changes::with_capacity(map.len());
    for (key, v) in map {
        let by_id = parse_id(key);
        let Some(i) = list.iter().position(|c| c.name == *key || Some(c.id) == by_id) else {
            let known: Vec<&str> = list.iter().map(|c| c.name.as_str()).collect();
            return Err(Refusal::Unknown { key: key.clone(), known: known.join(", ") });
        };
        if out.iter().any(|&(j, _)| j == i) {
            return Err(Refusal::Invalid(format!("control {:?} is named twice (by name and by id)", list[i].name)));
        }
        out.push((i, list[i].accept(v).map_err(Refusal::Invalid)?));
    }
    out.sort_by_key(|&(i, _)| list[i].kind == Kind::Int);
    Ok(out)
}

/// A control id written in decimal or as `0x...` hex (how `v4l2-ctl` prints them).
fn parse_id(key: &str) -> Option<u32> {
    let (digits, radix) = key.strip_prefix("0x").map_or((key, 10), |hex| (hex, 16));
    // Digits only: `from_str_radix` would take a sign (`+1`).
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    u32::from_str_radix(digits, radix).ok()
}

/// The values a user chose, by control name: saved in the camera's directory and applied at
/// every open. Buttons are actions and never saved.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Saved {
    /// The file's format (1).
    pub version: u32,
    /// Name → value.
    pub values: BTreeMap<String, i64>,
}

/// The saved file's name inside the camera's directory.
pub const FILE: &str = "controls.json";
/// A saved file longer than this is not read (it is a user's handful of values).
pub const FILE_MAX: usize = 64 * 1024;
/// Saved values at most (a camera offers a few dozen controls).
pub const SAVED_MAX: usize = 256;

impl Saved {
    /// Reads a saved file's bytes; a file that is not ours is refused with the reason.
    pub fn parse(bytes: &[u8]) -> Result<Saved, String> {
        if bytes.len() > FILE_MAX {
            return Err(format!("longer than {FILE_MAX} bytes"));
        }
        let s: Saved = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if s.version != 1 {
            return Err(format!("version {} (this camjobd writes 1)", s.version));
        }
        if s.values.len() > SAVED_MAX {
            return Err(format!("{} values (at most {SAVED_MAX})", s.values.len()));
        }
        Ok(s)
    }

    /// The file's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = serde_json::to_vec_pretty(&Saved { version: 1, values: self.values.clone() }).unwrap_or_default();
        b.push(b'\n');
        b
    }

    /// The saved values that fit `list` now, as `(id, value)`; what no longer fits (another
    /// camera plugged in, a driver update) is returned apart, to be reported and left alone.
    pub fn resolve(&self, list: &[Control]) -> (Vec<(u32, i64)>, Vec<String>) {
        let (mut fit, mut skipped) = (Vec::new(), Vec::new());
        for (name, &v) in &self.values {
            match list.iter().find(|c| c.name == *name) {
                Some(c) if c.kind != Kind::Button && c.accept(&stored_json(c, v)).is_ok() => {
                    fit.push((c.kind == Kind::Int, c.id, v))
                }
                _ => skipped.push(name.clone()),
            }
        }
        // Modes before the values they govern, as in [`check`].
        fit.sort_by_key(|&(int, _, _)| int);
        (fit.into_iter().map(|(_, id, v)| (id, v)).collect(), skipped)
    }
}

/// A stored value as a request would have sent it (bools as `true`/`false`).
fn stored_json(c: &Control, v: i64) -> Value {
    match c.kind {
        Kind::Bool => json!(v != 0),
        _ => json!(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn int(name: &str, min: i64, max: i64, step: i64) -> Control {
        Control {
            id: 0x0098_0900,
            name: name.into(),
            label: name.into(),
            kind: Kind::Int,
            min,
            max,
            step,
            default: min,
            value: Some(min),
            menu: vec![],
            inactive: false,
            unit: None,
        }
    }

    fn menu() -> Control {
        Control {
            id: 7,
            name: "power_line_frequency".into(),
            kind: Kind::Menu,
            min: 0,
            max: 2,
            menu: vec![MenuItem { value: 0, name: "Disabled".into() }, MenuItem { value: 2, name: "60 Hz".into() }],
            ..int("x", 0, 2, 1)
        }
    }

    #[test]
    fn labels_become_stable_names() {
        assert_eq!(snake("Exposure, Auto Priority"), "exposure_auto_priority");
        assert_eq!(snake("White Balance Temperature"), "white_balance_temperature");
        assert_eq!(snake("  Integer 32 Bits  "), "integer_32_bits");
        assert_eq!(snake("Gain (dB)"), "gain_db");
    }

    #[test]
    fn names_are_made_unique() {
        let with_id = |name: &str, id| Control { id, ..int(name, 0, 1, 1) };
        let mut list = vec![with_id("exposure_auto", 7), with_id("exposure_auto", 0x009a_0901), with_id("", 9)];
        unique_names(&mut list);
        let names: Vec<&str> = list.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["exposure_auto", "exposure_auto_0x009a0901", "control_0x00000009"]);
    }

    #[test]
    fn values_are_checked_against_the_range_and_named_in_the_error() {
        let list = [int("brightness", 0, 255, 1), int("zoom", 100, 500, 10), menu()];
        assert_eq!(check(&list, &json!({"brightness": 140, "zoom": 250})), Ok(vec![(0, 140), (1, 250)]));
        assert_eq!(
            check(&list, &json!({"brightness": 140, "power_line_frequency": 2})),
            Ok(vec![(2, 2), (0, 140)]),
            "modes first"
        );
        let e = check(&list, &json!({"brightness": 300})).unwrap_err().to_string();
        assert!(e.contains("\"brightness\"") && e.contains("from 0 to 255") && e.contains("300"), "{e}");
        let e = check(&list, &json!({"zoom": 255})).unwrap_err().to_string();
        assert!(e.contains("steps of 10"), "off the grid: {e}");
        assert!(check(&list, &json!({"brightness": "140"})).is_err(), "a string is not an integer");
        assert_eq!(check(&list, &json!({"power_line_frequency": "60 hz"})), Ok(vec![(2, 2)]));
        assert_eq!(check(&list, &json!({"power_line_frequency": 0})), Ok(vec![(2, 0)]));
        assert!(check(&list, &json!({"power_line_frequency": 1})).is_err(), "1 is not an item");
        let e = check(&list, &json!({"focus": 1})).unwrap_err().to_string();
        assert!(e.contains("\"focus\"") && e.contains("brightness, zoom, power_line_frequency"), "{e}");
        assert_eq!(check(&list, &json!({"0x00980900": 1})), Ok(vec![(0, 1)]), "by id in hex");
        assert_eq!(check(&list, &json!({"7": 2})), Ok(vec![(2, 2)]), "by id in decimal");
        assert_eq!(check(&list, &json!({})), Err(Refusal::Empty));
        let e = check(&list, &json!({"brightness": 1, "0x00980900": 2})).unwrap_err().to_string();
        assert!(e.contains("named twice"), "{e}");
        assert!(matches!(check(&list, &json!({"+7": 2})), Err(Refusal::Unknown { .. })), "no sign on an id");
        let e = check(&list, &json!({"brightness": i64::MAX})).unwrap_err().to_string();
        assert!(e.contains("9223372036854775807"), "no overflow at the edge: {e}");
        let wide = Control { min: i64::MIN, max: i64::MAX, step: 7, ..int("wide", 0, 0, 1) };
        assert!(wide.accept(&json!(i64::MAX)).is_err() && wide.accept(&json!(i64::MIN)).is_ok());
        assert_eq!(check(&list, &json!([1])), Err(Refusal::NotAnObject));
    }

    #[test]
    fn bools_and_buttons() {
        let b = Control { kind: Kind::Bool, max: 1, ..int("hflip", 0, 1, 1) };
        assert_eq!(b.accept(&json!(true)), Ok(1));
        assert_eq!(b.accept(&json!(0)), Ok(0));
        assert!(b.accept(&json!(2)).is_err());
        assert_eq!(b.to_json()["value"], json!(false));
        let p = Control { kind: Kind::Button, ..int("reset", 0, 0, 1) };
        assert_eq!(p.accept(&json!(true)), Ok(1));
        assert!(p.accept(&json!(false)).is_err());
        assert_eq!(p.to_json()["value"], Value::Null);
    }

    #[test]
    fn saved_values_round_trip_and_what_no_longer_fits_is_set_apart() {
        let mut s = Saved { version: 1, values: BTreeMap::new() };
        s.values.insert("brightness".into(), 200);
        s.values.insert("zoom".into(), 255);
        s.values.insert("gone".into(), 1);
        let back = Saved::parse(&s.to_bytes()).unwrap();
        assert_eq!(back, s);
        let list = [int("brightness", 0, 255, 1), int("zoom", 100, 500, 10)];
        assert_eq!(back.resolve(&list), (vec![(0x0098_0900, 200)], vec!["gone".to_string(), "zoom".to_string()]));
        assert!(Saved::parse(b"{\"version\": 2, \"values\": {}}").unwrap_err().contains("version 2"));
        assert!(Saved::parse(b"{\"version\": 1, \"values\": {}, \"x\": 1}").is_err());
        assert!(Saved::parse(&vec![b' '; FILE_MAX + 1]).unwrap_err().contains("longer"));
    }
}
