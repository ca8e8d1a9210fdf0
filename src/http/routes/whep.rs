//! WHEP (draft-ietf-wish-whep): `POST /api/cameras/<camera>/whep` with an SDP offer makes a
//! WebRTC session and answers 201 with the SDP answer, its `Location` and `ETag`; `PATCH` on the `Location`
//! adds trickled ICE candidates (204); `DELETE` ends it (200); `OPTIONS` answers 204. The
//! `webrtc` thread does the work ([`crate::webrtc::Handle`]). Mainsail and Fluidd append
//! `/whep` to the stream URL pasted into them, so `http://HOST:PORT/api/cameras/<camera>` is
//! the URL to paste (docs/webrtc.md).

use std::net::{IpAddr, Ipv4Addr};

use http::header::{HeaderName, HeaderValue, CONTENT_TYPE, ETAG, IF_MATCH, LOCATION, RETRY_AFTER};
use http::{Method, StatusCode};

use super::Api;
use crate::http::conns::Peer;
use crate::http::error::{ApiError, Code};
use crate::http::reply::{no_body, with_body, Body, Request, Response, WithHeader};
use crate::webrtc::{parse_frag, Refused, SessionId};

const SDP: &str = "application/sdp";
const SDPFRAG: &str = "application/trickle-ice-sdpfrag";
const ACCEPT_POST: HeaderName = HeaderName::from_static("accept-post");
const ACCEPT_PATCH: HeaderName = HeaderName::from_static("accept-patch");

impl Api {
    /// `/api/cameras/{name}/whep`.
    pub(super) async fn whep(&self, req: &Request, index: usize, name: &str) -> Response {
        let Some(webrtc) = self.webrtc.as_ref().filter(|w| w.serves(index)) else { return no_webrtc(name) };
        if req.method() == Method::OPTIONS {
            return no_body(StatusCode::NO_CONTENT).with(ACCEPT_POST, HeaderValue::from_static(SDP));
        }
        if let Err(e) = content_type(req, SDP).and_then(|()| body_size(req)) {
            return e.into();
        }
        let Ok(offer) = std::str::from_utf8(req.body()) else {
            return ApiError::new(Code::BadSdp, "the offer is not UTF-8 text").into();
        };
        // The address the viewer reached HTTP on is the one it can reach for media too.
        let local = req
            .extensions()
            .get::<Peer>()
            .and_then(Peer::local_addr)
            .map_or(IpAddr::V4(Ipv4Addr::LOCALHOST), |a| a.ip());
        match webrtc.offer(index, offer, local).await {
            Ok(answer) => {
                let location = format!("/api/cameras/{name}/whep/{}", answer.id);
                with_body(StatusCode::CREATED, SDP, Body::full(answer.sdp))
                    .with_text(LOCATION, location)
                    .with_text(ETAG, etag(answer.id))
                    .with(ACCEPT_PATCH, HeaderValue::from_static(SDPFRAG))
            }
            Err(r) => refused(r),
        }
    }

    /// `/api/cameras/{name}/whep/{session}`.
    pub(super) async fn whep_session(&self, req: &Request, index: usize, name: &str, session: &str) -> Response {
        let Some(webrtc) = self.webrtc.as_ref().filter(|w| w.serves(index)) else { return no_webrtc(name) };
        let Some(id) = SessionId::parse(session) else { return refused(Refused::NoSession) };
        match *req.method() {
            Method::OPTIONS => no_body(StatusCode::NO_CONTENT).with(ACCEPT_PATCH, HeaderValue::from_static(SDPFRAG)),
            Method::DELETE => match webrtc.end(index, id).await {
                Ok(()) => no_body(StatusCode::OK),
                Err(r) => refused(r),
            },
            // PATCH (the table admits nothing else).
            _ => {
                if let Err(e) =
                    content_type(req, SDPFRAG).and_then(|()| body_size(req)).and_then(|()| if_match(req, id))
                {
                    return e.into();
                }
                let frag = std::str::from_utf8(req.body())
                    .map_err(|_| ApiError::new(Code::BadSdp, "the sdpfrag is not UTF-8 text"))
                    .and_then(|t| parse_frag(t).map_err(|e| ApiError::new(Code::BadSdp, e.to_string())));
                match frag {
                    Ok(frag) => match webrtc.trickle(index, id, frag).await {
                        Ok(()) => no_body(StatusCode::NO_CONTENT),
                        Err(r) => refused(r),
                    },
                    Err(e) => e.into(),
                }
            }
        }
    }
}

/// A session's `ETag`: its id, quoted.
fn etag(id: SessionId) -> String {
    format!("\"{id}\"")
}

/// The body's type must be `want` (parameters aside).
fn content_type(req: &Request, want: &str) -> Result<(), ApiError> {
    let got = req.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let essence = got.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case(want) {
        return Ok(());
    }
    Err(ApiError::new(Code::UnsupportedType, format!("send the body as Content-Type: {want} (got {got:?})")))
}

/// A WHEP body is at most [`crate::webrtc::MAX_BODY`] bytes.
fn body_size(req: &Request) -> Result<(), ApiError> {
    let max = crate::webrtc::MAX_BODY;
    if req.body().len() <= max {
        return Ok(());
    }
    Err(ApiError::new(Code::BodyTooLarge, format!("a WHEP body may be at most {max} bytes")))
}

/// `If-Match`, when given, is `*` or the session's `ETag` (Mainsail sends the ETag, Fluidd `*`).
fn if_match(req: &Request, id: SessionId) -> Result<(), ApiError> {
    let Some(v) = req.headers().get(IF_MATCH) else { return Ok(()) };
    let v = v.to_str().unwrap_or("").trim();
    let ours = etag(id);
    if v == "*" || v.split(',').any(|t| t.trim() == ours || t.trim() == ours.trim_matches('"')) {
        return Ok(());
    }
    Err(ApiError::new(Code::PreconditionFailed, format!("If-Match: {v} is not this session's ETag, {ours} (or *)")))
}

fn no_webrtc(name: &str) -> Response {
    let msg = format!("camera {name:?} has no WebRTC: give it `video`, and leave webrtc.enabled on");
    ApiError::new(Code::NotFound, msg).into()
}

fn refused(r: Refused) -> Response {
    let code = match r {
        Refused::Full(_) | Refused::Busy => Code::Busy,
        Refused::Offer(_) | Refused::TooManyCandidates(_) => Code::BadSdp,
        Refused::NoSession | Refused::OtherCamera => Code::NotFound,
        Refused::Restart => Code::IceRestart,
        Refused::Closing => Code::ShuttingDown,
    };
    let busy = code == Code::Busy;
    let response = Response::from(ApiError::new(code, r.to_string()));
    if busy {
        response.with(RETRY_AFTER, HeaderValue::from_static("1"))
    } else {
        response
    }
}
