//! Every error the API answers, typed: a [`Code`] fixes the HTTP status and the `code` string
//! clients match on, so one cannot drift from the other; the message says what to do. The wire
//! shape is the README's `{"error": {"code": ..., "message": ...}}`.

use std::fmt;

use super::server::Response;
use crate::export::Refusal as ExportRefusal;
use crate::status::Refusal as JobRefusal;

/// Declares [`Code`] from one table, so a variant, its status and its string are written once.
macro_rules! codes {
    ($($(#[doc = $doc:literal])* $name:ident => $status:literal, $text:literal;)*) => {
        /// What went wrong, as the API's `error.code`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Code {
            $($(#[doc = $doc])* $name,)*
        }

        impl Code {
            /// The HTTP status this error is answered with.
            pub fn status(self) -> u16 {
                match self {
                    $(Code::$name => $status,)*
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
    BadJson => 400, "bad_json";
    /// A value in the body is out of range or of the wrong kind.
    BadValue => 400, "bad_value";
    /// An export's time range is malformed.
    BadRange => 400, "bad_range";
    /// An export's time range holds no snapshot.
    EmptyRange => 400, "empty_range";
    /// An export would exceed its size limit.
    TooLarge => 400, "too_large";
    /// A query parameter is unknown or malformed.
    BadQuery => 400, "bad_query";
    /// No or a wrong token.
    Unauthorized => 401, "unauthorized";
    /// A write from a page of another origin.
    CrossOrigin => 403, "cross_origin";
    /// No such camera, export or endpoint.
    NotFound => 404, "not_found";
    /// The camera has no (such) snapshot.
    NoSnapshot => 404, "no_snapshot";
    /// The method is not one the endpoint takes.
    MethodNotAllowed => 405, "method_not_allowed";
    /// The job or export is not in a state that allows it.
    Conflict => 409, "conflict";
    /// Every job id has been used.
    IdsExhausted => 500, "ids_exhausted";
    /// A stored file could not be read.
    Store => 500, "store";
    /// Something that cannot happen did.
    Internal => 500, "internal";
    /// A bounded resource is full or did not answer in time; try again.
    Busy => 503, "busy";
    /// The camera delivered no frame in time.
    NoFrame => 503, "no_frame";
    /// The export queue is full (answered with Retry-After).
    QueueFull => 503, "queue_full";
    /// The service is stopping.
    ShuttingDown => 503, "shutting_down";
    /// A core thread broke or hangs (`/healthz`); the service exits or is restarted.
    Unhealthy => 503, "unhealthy";
    /// The request's `Host` is not one of this service's names (DNS rebinding).
    Host => 403, "host";
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
const QUEUE_RETRY_AFTER_S: &str = "10";

impl From<ApiError> for Response {
    fn from(e: ApiError) -> Response {
        let r = Response::error(e.code.status(), e.code.as_str(), &e.message);
        match e.code {
            Code::QueueFull => r.with_header("Retry-After", QUEUE_RETRY_AFTER_S.into()),
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
            assert!((400..600).contains(&c.status()), "{c:?}");
        }
    }

    #[test]
    fn a_full_queue_tells_when_to_retry() {
        let r: Response = ApiError::from(ExportRefusal::QueueFull("4 exports queued".into())).into();
        assert_eq!(r.status, 503);
        assert!(r.headers.iter().any(|(n, v)| *n == "Retry-After" && v == QUEUE_RETRY_AFTER_S));
    }
}
