//! `GET` and `PUT /api/cameras/{name}/controls`: the camera's controls and new values for them.

use super::super::error::{ApiError, Code};
use super::super::reply::{Request, Response};
use super::Api;

impl Api {
    /// `/api/cameras/{name}/controls`.
    pub(super) async fn controls(&self, _req: &Request, _index: usize) -> Response {
        ApiError::new(Code::NotFound, "not built yet").into()
    }
}
