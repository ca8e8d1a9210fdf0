//! The request and response types of the API — the `http` crate's, with the body collected
//! ([`Request`]) and camjobd's [`Body`] ([`Response`]) — and the few builders every handler
//! uses: a status with a content type and a body, JSON from anything serde writes, headers.

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use http::StatusCode;
use serde::Serialize;

pub use super::body::Body;

/// A request as handlers see it: its body read whole (at most `http.max_body_bytes`). The
/// connection's [`super::conns::Peer`] is in its extensions (absent outside a real connection:
/// the fuzz target, unit tests). HEAD arrives as HEAD and is answered like GET: the server
/// sends the head and drops the body.
pub type Request = http::Request<Bytes>;

/// What handlers answer. The server frames it (`Content-Length` or chunked, `Connection`);
/// those headers are dropped if a handler sets them. 204 and 304 go without `Content-Type`.
pub type Response = http::Response<Body>;

/// `content_type` with `body`.
pub fn with_body(status: StatusCode, content_type: &'static str, body: Body) -> Response {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// No body and no content type (204, 304).
pub fn no_body(status: StatusCode) -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = status;
    r
}

/// `application/json` from a value serde writes.
pub fn json(status: StatusCode, value: &impl Serialize) -> Response {
    // The API's values are plain data: maps with string keys, numbers, strings.
    json_bytes(status, serde_json::to_vec(value).expect("plain data"))
}

/// `application/json` from bytes that already are JSON.
pub fn json_bytes(status: StatusCode, bytes: Vec<u8>) -> Response {
    with_body(status, "application/json", Body::full(bytes))
}

/// Adding headers to a response as it is built.
pub trait WithHeader: Sized {
    /// Appends `name: value`.
    fn with(self, name: HeaderName, value: HeaderValue) -> Self;

    /// Appends `name: value` with a value made at run time; a value that is not a valid header
    /// value (CR, LF, NUL: it would split the response) is left out.
    fn with_text(self, name: HeaderName, value: String) -> Self {
        match HeaderValue::try_from(value) {
            Ok(v) => self.with(name, v),
            Err(_) => self,
        }
    }
}

impl WithHeader for Response {
    fn with(mut self, name: HeaderName, value: HeaderValue) -> Response {
        self.headers_mut().append(name, value);
        self
    }
}

/// camjobd's own headers.
pub mod names {
    use http::header::HeaderName;

    /// The capture time of a frame (Unix seconds), as ustreamer sends it.
    pub const X_TIMESTAMP: HeaderName = HeaderName::from_static("x-timestamp");
    /// The job state a placeholder frame stands for.
    pub const X_CAMJOBD_STATE: HeaderName = HeaderName::from_static("x-camjobd-state");
    /// Tells nginx not to buffer the stream.
    pub const X_ACCEL_BUFFERING: HeaderName = HeaderName::from_static("x-accel-buffering");
}
