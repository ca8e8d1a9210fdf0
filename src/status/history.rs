//! Each camera's last day at a glance: frame rate, drops and state, one point a minute, in a
//! ring fixed at start-up (`GET /api/cameras/<camera>/history`, the dashboard's chart).

/// One camera's history ring.
#[derive(Debug, Default)]
pub struct History {}

impl History {
    /// An empty ring.
    pub fn new() -> History {
        History {}
    }
}
