//! What the Moonraker registration did, for `/api/status.moonraker`.

/// The registration's published state.
#[derive(Debug, Default)]
pub struct Registration {}

impl Registration {
    /// The `/api/status.moonraker` object, or `None` when Moonraker is not configured.
    pub fn to_json(&self) -> Option<serde_json::Value> {
        None
    }
}
