//! The layers every request passes on its way to the [`Handler`] and back, in this order:
//!
//! 1. **limits** ([`read_body`]): `Transfer-Encoding` is 411, a `Content-Length` over
//!    `max_body_bytes` 413 before a byte is read, a body not arrived within `read_timeout_ms`
//!    408; the body is read whole into the request.
//! 2. **CORS** ([`preflight`], and `Access-Control-Allow-Origin` on reads in [`finish`]) when
//!    `http.cors_origin` is set: reads only, WHEP's offers, trickles and ends among them (they
//!    only start or stop viewing; Mainsail and Fluidd send them from their own origin).
//! 3. **panic → 500** ([`CatchPanic`]): a handler that panics is answered 500 and counted; the
//!    server goes on.
//! 4. **HEAD and framing** ([`finish`]): a HEAD answer states GET's length and sends nothing;
//!    204 and 304 have no body and no type; framing headers are hyper's.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{
    HeaderName, HeaderValue, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
    ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, TRANSFER_ENCODING,
};
use http::{Method, StatusCode};
use http_body_util::BodyExt;

use super::{bump, Answer, Handler, Limits, Stats};
use crate::http::conns::{Busy, Conn};
use crate::http::error::{ApiError, Code};
use crate::http::reply::{no_body, Body, Request, Response, WithHeader};
use crate::logging::Quiet;

/// Handler panics are logged once a minute, with a count.
static PANIC_LOG: Quiet = Quiet::new();

/// One request through the layers and the handler: what the server runs for every request,
/// and what the fuzz target drives.
pub(super) async fn respond<B>(
    handler: &dyn Handler,
    limits: &Limits,
    stats: &Stats,
    conn: Option<&Arc<Conn>>,
    req: http::Request<B>,
) -> Response
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let head = req.method() == Method::HEAD;
    let whep = is_whep(req.uri().path());
    let read = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) || whep;
    let cors = if read { limits.cors_origin.as_ref() } else { None };
    let mut req = match read_body(req, limits, stats).await {
        Ok(req) => req,
        Err(refused) => return finish(refused, head, cors, true),
    };
    // Busy (not evictable) from here until the response body is finished or dropped: a
    // connection still waiting for a body it declared stays evictable, so sockets that
    // promise bodies they never send cannot fill the table.
    let busy = conn.map(Busy::new);
    bump(&stats.requests);
    let response = match preflight(&req, cors, whep) {
        Some(r) => r,
        None => {
            if let Some(peer) = conn.and_then(|c| c.peer()) {
                req.extensions_mut().insert(peer);
            }
            // For the log, should it panic (both clones share the request's bytes).
            let (method, uri) = (req.method().clone(), req.uri().clone());
            CatchPanic(handler.handle(req)).await.unwrap_or_else(|msg| {
                bump(&stats.handler_panics);
                PANIC_LOG.error(format_args!("http: a handler panicked on {method} {}: {msg}", uri.path()));
                ApiError::new(Code::Internal, "the request failed inside camjobd; the service goes on (see the log)")
                    .into()
            })
        }
    };
    let mut response = finish(response, head, cors, false);
    if whep && cors.is_some() {
        // WHEP clients read the session's URL and version.
        let expose = HeaderValue::from_static("ETag, Location, Accept-Patch, Accept-Post, Link");
        response.headers_mut().insert(ACCESS_CONTROL_EXPOSE_HEADERS, expose);
    }
    response.body_mut().hold(busy);
    response
}

/// The limits on a body: it is declared by `Content-Length`, at most `max_body_bytes`, and
/// arrives within `read_timeout_ms`. `Err` is the refusal (counted).
async fn read_body<B>(req: http::Request<B>, limits: &Limits, stats: &Stats) -> Result<Request, Response>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let refuse = |e: ApiError| {
        bump(&stats.bad_requests);
        Response::from(e)
    };
    let (parts, body) = req.into_parts();
    if parts.headers.contains_key(TRANSFER_ENCODING) {
        let msg = "send a Content-Length body (Transfer-Encoding is not accepted)";
        return Err(refuse(ApiError::new(Code::LengthRequired, msg)));
    }
    let declared = match parts.headers.get(CONTENT_LENGTH).map(|v| v.to_str().ok().and_then(|s| s.parse::<u64>().ok()))
    {
        None => 0,
        Some(Some(n)) => n,
        Some(None) => return Err(refuse(ApiError::new(Code::BadRequest, "Content-Length is not a number"))),
    };
    if declared > limits.max_body_bytes as u64 {
        let msg = format!("the body may be at most {} bytes (http.max_body_bytes)", limits.max_body_bytes);
        return Err(refuse(ApiError::new(Code::BodyTooLarge, msg)));
    }
    if declared == 0 {
        return Ok(Request::from_parts(parts, Bytes::new()));
    }
    let limited = http_body_util::Limited::new(body, limits.max_body_bytes);
    match tokio::time::timeout(limits.read_timeout, limited.collect()).await {
        Ok(Ok(b)) => Ok(Request::from_parts(parts, b.to_bytes())),
        Ok(Err(e)) => Err(refuse(ApiError::new(Code::BadRequest, format!("cannot read the body: {e}")))),
        Err(_) => {
            bump(&stats.timeouts);
            Err(ApiError::new(Code::Timeout, "the body did not arrive within http.read_timeout_ms").into())
        }
    }
}

/// A CORS preflight (`OPTIONS` with `http.cors_origin` set), answered here: reads only
/// (writes are for the dashboard and scripts), and WHEP.
fn preflight(req: &Request, cors: Option<&HeaderValue>, whep: bool) -> Option<Response> {
    let (methods, headers) = if whep {
        ("POST, PATCH, DELETE, OPTIONS", "Authorization, Content-Type, If-Match")
    } else {
        ("GET, HEAD", "Authorization")
    };
    (req.method() == Method::OPTIONS && cors.is_some()).then(|| {
        let r = no_body(StatusCode::NO_CONTENT)
            .with(ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static(methods))
            .with(ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static(headers))
            .with(ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
        if !whep {
            return r;
        }
        // WHEP's OPTIONS says what the resource takes, preflight or not (Mainsail sends one
        // of its own before every offer and wants exactly 204).
        r.with(HeaderName::from_static("accept-post"), HeaderValue::from_static("application/sdp"))
            .with(HeaderName::from_static("accept-patch"), HeaderValue::from_static("application/trickle-ice-sdpfrag"))
    })
}

/// A WHEP path: `/api/cameras/<camera>/whep` or `/api/cameras/<camera>/whep/<session>`.
fn is_whep(path: &str) -> bool {
    let Some(rest) = path.strip_prefix("/api/cameras/") else { return false };
    let mut parts = rest.split('/');
    let (name, whep, session, more) = (parts.next(), parts.next(), parts.next(), parts.next());
    name.is_some_and(|n| !n.is_empty()) && whep == Some("whep") && session != Some("") && more.is_none()
}

/// A handler's answer as it goes on the wire: framing headers are hyper's (a handler's are
/// dropped); 204 and 304 have neither body nor type; a HEAD answer says the length GET would
/// send and sends nothing; CORS on reads; `Connection: close` after a refusal.
pub(super) fn finish(mut r: Response, head: bool, cors: Option<&HeaderValue>, close: bool) -> Response {
    let no_body = matches!(r.status(), StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED);
    let len = r.body().known_len();
    if no_body {
        *r.body_mut() = Body::empty();
    } else if head {
        *r.body_mut() = r.body().for_head();
    }
    let h = r.headers_mut();
    for framing in [CONTENT_LENGTH, TRANSFER_ENCODING, CONNECTION] {
        h.remove(framing);
    }
    if no_body {
        h.remove(CONTENT_TYPE);
    } else if let Some(n) = len.filter(|_| head) {
        // hyper sends no length for an empty body; a HEAD answer says what GET would send.
        h.insert(CONTENT_LENGTH, HeaderValue::from(n));
    }
    if let Some(origin) = cors {
        h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    }
    if close {
        h.insert(CONNECTION, HeaderValue::from_static("close"));
    }
    r
}

/// Catches a panic while polling the handler's future (the message is returned).
struct CatchPanic<'a>(Answer<'a>);

impl Future for CatchPanic<'_> {
    type Output = Result<Response, String>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let fut = &mut self.0;
        match std::panic::catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
            Ok(Poll::Ready(r)) => Poll::Ready(Ok(r)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(p) => Poll::Ready(Err(crate::error::panic_message(&*p).to_string())),
        }
    }
}
