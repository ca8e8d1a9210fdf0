//! `GET /api/cameras/{name}/history`: the camera's last day, one point a minute.

use super::super::error::ApiError;
use super::super::reply::Response;
use crate::status::CameraShared;

/// The history of `cam` as JSON.
pub(super) fn history(_query: &str, _cam: &CameraShared) -> Result<Response, ApiError> {
    Err(ApiError::new(super::super::error::Code::NotFound, "not built yet"))
}
