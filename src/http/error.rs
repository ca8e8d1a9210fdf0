//! Every error the API answers, typed: a [`Code`] fixes the HTTP status and the `code` string
//! clients match on, so one cannot drift from the other; the message says what to do. The wire
//! shape is the README's `{"error": {"code": ..., "message": ...}}`.

use std::fmt;

use super::server::Response;
use crate::export::Refusal as ExportRefusal;
use crate::status::Refusal as JobRefusal;

/// What went wrong, as the API's `error.code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// The body is not the JSON the endpoint takes (400).
    BadJson,
    /// A value in the body is out of range or of the wrong kind (400).
    BadValue,
    /// An export's time range is malformed (400).
    BadRange,
    /// An export's time range holds no snapshot (400).
    EmptyRange,
    /// An export would exceed its size limit (400).
    TooLarge,
    /// A query parameter is unknown or malformed (400).
    BadQuery,
    /// No or a wrong token (401).
    Unauthorized,
    /// A write from a page of another origin (403).
    CrossOrigin,
    /// No such camera, export or endpoint (404).
    NotFound,
    /// The camera has no (such) snapshot (404).
    NoSnapshot,
    /// The method is not one the endpoint takes (405).
    MethodNotAllowed,
    /// The job or export is not in a state that allows it (409).
    Conflict,
    /// Every job id has been used (500).
    IdsExhausted,
    /// A stored file could not be read (500).
    Store,
    /// Something that cannot happen did (500).
    Internal,
    /// A bounded resource is full or did not answer in time; try again (503).
    Busy,
    /// The camera delivered no frame in time (503).
    NoFrame,
    /// The export queue is full (503, with Retry-After).
    QueueFull,
    /// The service is stopping (503).
    ShuttingDown,
}

impl Code {
    /// The HTTP status this error is answered with.
    pub fn status(self) -> u16 {
        use Code::*;
        match self {
            BadJson | BadValue | BadRange | EmptyRange | TooLarge | BadQuery => 400,
            Unauthorized => 401,
            CrossOrigin => 403,
            NotFound | NoSnapshot => 404,
            MethodNotAllowed => 405,
            Conflict => 409,
            IdsExhausted | Store | Internal => 500,
            Busy | NoFrame | QueueFull | ShuttingDown => 503,
        }
    }

    /// The `error.code` string.
    pub fn as_str(self) -> &'static str {
        use Code::*;
        match self {
            BadJson => "bad_json",
            BadValue => "bad_value",
            BadRange => "bad_range",
            EmptyRange => "empty_range",
            TooLarge => "too_large",
            BadQuery => "bad_query",
            Unauthorized => "unauthorized",
            CrossOrigin => "cross_origin",
            NotFound => "not_found",
            NoSnapshot => "no_snapshot",
            MethodNotAllowed => "method_not_allowed",
            Conflict => "conflict",
            IdsExhausted => "ids_exhausted",
            Store => "store",
            Internal => "internal",
            Busy => "busy",
            NoFrame => "no_frame",
            QueueFull => "queue_full",
            ShuttingDown => "shutting_down",
        }
    }

    /// Every code, for tests and documentation.
    pub const ALL: [Code; 19] = {
        use Code::*;
        [
            BadJson,
            BadValue,
            BadRange,
            EmptyRange,
            TooLarge,
            BadQuery,
            Unauthorized,
            CrossOrigin,
            NotFound,
            NoSnapshot,
            MethodNotAllowed,
            Conflict,
            IdsExhausted,
            Store,
            Internal,
            Busy,
            NoFrame,
            QueueFull,
            ShuttingDown,
        ]
    };
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
        for c in Code::ALL {
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
