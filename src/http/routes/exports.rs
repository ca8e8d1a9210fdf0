//! `/api/exports`: the queue of export jobs (list, submit), one export (read, cancel or
//! delete) and its file (a tar archive to download or a GIF to show).

use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_DISPOSITION};
use http::{Method, StatusCode};
use serde::Serialize;

use super::{not_found, Api};
use crate::export::{self, Deleted, ExportView};
use crate::http::error::ApiError;
use crate::http::reply::{json, with_body, Body, Request, Response, WithHeader};

/// `GET /api/exports`.
#[derive(Serialize)]
struct List {
    active: Vec<ExportView>,
    finished: Vec<ExportView>,
    queued: usize,
    running: usize,
    max_queued: usize,
}

impl Api {
    /// `GET /api/exports` (the queue, newest first) and `POST /api/exports` (a new export).
    pub(super) fn exports(&self, req: &Request) -> Response {
        if req.method() == Method::POST {
            return match self.exports.submit(req.body()) {
                Ok(v) => json(StatusCode::ACCEPTED, &v),
                Err(r) => ApiError::from(r).into(),
            };
        }
        let (active, finished) = self.exports.list();
        let (queued, running) = self.exports.depth();
        json(StatusCode::OK, &List { active, finished, queued, running, max_queued: self.exports.max_queued() })
    }

    /// `/api/exports/{id}`: `GET` reads it, `DELETE` cancels a queued or running one (202
    /// while it stops) or forgets a finished one with its file.
    pub(super) fn export(&self, req: &Request, id: &str) -> Response {
        let Some(id) = export_id(id) else { return not_found(req.uri().path()) };
        if req.method() == Method::DELETE {
            return match self.exports.delete(id) {
                Ok(Deleted::Cancelling(v)) => json(StatusCode::ACCEPTED, &v),
                Ok(Deleted::Cancelled(v) | Deleted::Removed(v)) => json(StatusCode::OK, &v),
                Err(r) => ApiError::from(r).into(),
            };
        }
        match self.exports.get(id) {
            Some(v) => json(StatusCode::OK, &v),
            None => ApiError::from(export::not_found(id)).into(),
        }
    }

    /// `GET /api/exports/{id}/file`: read as the client takes it.
    pub(super) fn export_file(&self, req: &Request, id: &str) -> Response {
        let Some(id) = export_id(id) else { return not_found(req.uri().path()) };
        match self.exports.open_file(id) {
            Ok((file, len, v)) => {
                let disposition = match v.kind {
                    export::Kind::Archive => "attachment",
                    export::Kind::Timelapse => "inline",
                };
                with_body(StatusCode::OK, v.kind.content_type(), Body::file(file, len))
                    .with_text(CONTENT_DISPOSITION, format!("{disposition}; filename=\"{}\"", v.filename))
                    .with(CACHE_CONTROL, HeaderValue::from_static("no-cache"))
            }
            Err(r) => ApiError::from(r).into(),
        }
    }
}

/// An export id: digits only (no sign, no spaces), within u64.
fn export_id(id: &str) -> Option<u64> {
    id.parse::<u64>().ok().filter(|_| id.bytes().all(|b| b.is_ascii_digit()))
}
