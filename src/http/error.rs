//! Every error the API answers, typed: a [`Code`] fixes the HTTP status and the `code` string
//! clients match on, so one cannot drift from the other; the message says what to do. The wire
//! shape is the README's `{"error": {"code": ..., "message": ...}}`. The server's own refusals
//! (body limits, timeouts, a full table, a panic) are codes here too.

use std::fmt;

use http::header::{HeaderValue, RETRY_AFTER};
use http::StatusCode;
use serde::Serialize;

use super::reply::{json, Response, WithHeader};
use crate::export::Refusal as ExportRefusal;
use crate::status::Refusal as JobRefusal;

/// Declares [`Code`] from one table, so a variant, its status and its string are written once.
macro_rules! codes {
    ($($(#[doc = $doc:literal])* $name:ident => $status:ident, $text:literal;)*) => {
        /// What went wrong, as the API's `error.code`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Code {
            $($(#[doc = $doc])* $name,)*
        }

        impl Code {
            /// The HTTP status this error is answered with.
            pub fn status(self) -> StatusCode {
                match self {
                    $(Code::$name => StatusCode::$status,)*
                }
            }

            /// The `error.code` string.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Code::$name => $text,)*
                }
            }

            /// Every code, for tests and documentation.
            pub const ALL: &'static [Code] = &[$(Code::$name),*];
        }
    };
}

codes! {
    /// The body is not the JSON the endpoint takes.
    BadJson => BAD_REQUEST, "bad_json";
    /// A value in the body is out of range or of the wrong kind.
    BadValue => BAD_REQUEST, "bad_value";
    /// An export's time range is malformed.
    BadRange => BAD_REQUEST, "bad_range";
    /// An export's time range holds no snapshot.
    EmptyRange => BAD_REQUEST, "empty_range";
    /// An export would exceed its size limit.
    TooLarge => BAD_REQUEST, "too_large";
    /// A query parameter is unknown or malformed.
    BadQuery => BAD_REQUEST, "bad_query";
    /// No or a wrong token.
    Unauthorized => UNAUTHORIZED, "unauthorized";
    /// A write from a page of another origin.
    CrossOrigin => FORBIDDEN, "cross_origin";
    /// No such camera, export or endpoint.
    NotFound => NOT_FOUND, "not_found";
    /// The camera has no (such) snapshot.
    NoSnapshot => NOT_FOUND, "no_snapshot";
    /// The method is not one the endpoint takes.
    MethodNotAllowed => METHOD_NOT_ALLOWED, "method_not_allowed";
    /// The job or export is not in a state that allows it.
    Conflict => CONFLICT, "conflict";
    /// Every job id has been used.
    IdsExhausted => INTERNAL_SERVER_ERROR, "ids_exhausted";
    /// A stored file could not be read.
    Store => INTERNAL_SERVER_ERROR, "store";
    /// Something that cannot happen did.
    Internal => INTERNAL_SERVER_ERROR, "internal";
    /// A bounded resource is full or did not answer in time; try again.
    Busy => SERVICE_UNAVAILABLE, "busy";
    /// The camera delivered no frame in time.
    NoFrame => SERVICE_UNAVAILABLE, "no_frame";
    /// The export queue is full (answered with Retry-After).
    QueueFull => SERVICE_UNAVAILABLE, "queue_full";
    /// The service is stopping.
    ShuttingDown => SERVICE_UNAVAILABLE, "shutting_down";
    /// A core thread broke or hangs (`/healthz`); the service exits or is restarted.
    Unhealthy => SERVICE_UNAVAILABLE, "unhealthy";
    /// The request's `Host` is not one of this service's names (DNS rebinding).
    Host => FORBIDDEN, "host";
    /// A request the server cannot read (a `Content-Length` that is not a number, a body cut
    /// short).
    BadRequest => BAD_REQUEST, "bad_request";
    /// The body did not arrive within `http.read_timeout_ms`.
    Timeout => REQUEST_TIMEOUT, "timeout";
    /// A body sent with `Transfer-Encoding` (only `Content-Length` bodies are taken).
    LengthRequired => LENGTH_REQUIRED, "length_required";
    /// A body over `http.max_body_bytes`.
    BodyTooLarge => PAYLOAD_TOO_LARGE, "body_too_large";
    /// A WHEP offer or trickle body that cannot be read or answered (the message says why).
    BadSdp => BAD_REQUEST, "bad_sdp";
    /// A body of a type the endpoint does not take (WHEP: `application/sdp`,
    /// `application/trickle-ice-sdpfrag`).
    UnsupportedType => UNSUPPORTED_MEDIA_TYPE, "unsupported_type";
    /// `If-Match` names another version of the resource (a WHEP session's `ETag`).
    PreconditionFailed => PRECONDITION_FAILED, "precondition_failed";
    /// A WHEP trickle body with new ICE credentials (an ICE restart, not supported).
    IceRestart => UNPROCESSABLE_ENTITY, "ice_restart";
}

/// An API error: its code and a sentence for the person reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// What went wrong.
    pub code: Code,
    /// What happened and what to do.
    pub message: String,
}

impl ApiError {
    /// An error with `code` and `message`.
    pub fn new(code: Code, message: impl Into<String>) -> ApiError {
        ApiError { code, message: message.into() }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.code.status(), self.code.as_str(), self.message)
    }
}

/// How long a client waits before retrying a full export queue.
const QUEUE_RETRY_AFTER_S: HeaderValue = HeaderValue::from_static("10");

/// The wire shape.
#[derive(Serialize)]
struct Wire<'a> {
    error: WireError<'a>,
}

#[derive(Serialize)]
struct WireError<'a> {
    code: &'static str,
    message: &'a str,
}

impl From<ApiError> for Response {
    fn from(e: ApiError) -> Response {
        let r = json(e.code.status(), &Wire { error: WireError { code: e.code.as_str(), message: &e.message } });
        match e.code {
            Code::QueueFull => r.with(RETRY_AFTER, QUEUE_RETRY_AFTER_S),
            _ => r,
        }
    }
}

impl From<JobRefusal> for ApiError {
    fn from(r: JobRefusal) -> ApiError {
        match r {
            JobRefusal::Conflict(msg) => ApiError::new(Code::Conflict, msg),
            JobRefusal::IdsExhausted(msg) => ApiError::new(Code::IdsExhausted, msg),
        }
    }
}

impl From<ExportRefusal> for ApiError {
    fn from(r: ExportRefusal) -> ApiError {
        match r {
            ExportRefusal::BadJson(msg) => ApiError::new(Code::BadJson, msg),
            ExportRefusal::BadValue(msg) => ApiError::new(Code::BadValue, msg),
            ExportRefusal::BadRange(msg) => ApiError::new(Code::BadRange, msg),
            ExportRefusal::EmptyRange(msg) => ApiError::new(Code::EmptyRange, msg),
            ExportRefusal::TooLarge(msg) => ApiError::new(Code::TooLarge, msg),
            ExportRefusal::NotFound(msg) => ApiError::new(Code::NotFound, msg),
            ExportRefusal::NotFinished(msg) => ApiError::new(Code::Conflict, msg),
            ExportRefusal::QueueFull(msg) => ApiError::new(Code::QueueFull, msg),
            ExportRefusal::NoId(msg) => ApiError::new(Code::Internal, msg),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_snake_case_and_map_to_error_statuses() {
        let mut seen = std::collections::HashSet::new();
        for &c in Code::ALL {
            assert!(seen.insert(c.as_str()), "{c:?} spelled twice");
            assert!(c.as_str().bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "{c:?}");
            assert!(c.status().is_client_error() || c.status().is_server_error(), "{c:?}");
        }
    }

    #[test]
    fn a_full_queue_tells_when_to_retry() {
        let r: Response = ApiError::from(ExportRefusal::QueueFull("4 exports queued".into())).into();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers().get(RETRY_AFTER), Some(&QUEUE_RETRY_AFTER_S));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_wire_shape() {
        use http_body_util::BodyExt;
        let r: Response = ApiError::new(Code::NotFound, "no \"x\"").into();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert_eq!(r.headers()[http::header::CONTENT_TYPE], "application/json");
        let body = r.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], br#"{"error":{"code":"not_found","message":"no \"x\""}}"#);
    }
}
