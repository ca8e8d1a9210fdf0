//! Moonraker's HTTP API, over one kept-alive HTTP/1.1 connection (hyper's client, on the
//! `moonraker` thread's runtime). Every step has a deadline: the connect [`CONNECT`], each
//! exchange (request out, whole answer in) [`EXCHANGE`]. The connection's end is watched: a
//! Moonraker that restarts closes it, and the next round then begins at once.

use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, CONNECTION, CONTENT_TYPE, HOST, USER_AGENT};
use http::{Method, Request, StatusCode, Version};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::sync::oneshot;

use crate::config::moonraker::MoonrakerUrl;

/// Longest wait for the TCP connection (and a name lookup) to Moonraker.
pub const CONNECT: Duration = Duration::from_secs(2);
/// Longest wait for one exchange: the request written, the whole answer read.
pub const EXCHANGE: Duration = Duration::from_secs(3);
/// The largest answer read (a list of some hundred webcams); more is an error, never memory.
pub const MAX_ANSWER: usize = 256 << 10;

/// An open connection to Moonraker.
pub struct Conn {
    sender: http1::SendRequest<Full<Bytes>>,
    /// Completes when the connection's task ends: Moonraker closed it, or it broke.
    ended: oneshot::Receiver<()>,
    host: HeaderValue,
    api_key: Option<HeaderValue>,
    /// Moonraker (or a proxy before it) said it closes the connection after its answer: the
    /// end is then no news.
    closes: bool,
}

impl Conn {
    /// Connects to `url` (within [`CONNECT`]).
    pub async fn open(url: &MoonrakerUrl, api_key: Option<&str>) -> Result<Conn, String> {
        let authority = url.authority();
        let tcp = tokio::time::timeout(CONNECT, tokio::net::TcpStream::connect(authority.as_str()))
            .await
            .map_err(|_| format!("no connection to Moonraker at {authority} within {} s", CONNECT.as_secs()))?
            .map_err(|e| connect_error(&authority, &e))?;
        // Requests are small; waiting for their ACKs would only add latency.
        let _ = tcp.set_nodelay(true);
        let (sender, conn) = tokio::time::timeout(CONNECT, http1::handshake(TokioIo::new(tcp)))
            .await
            .map_err(|_| format!("Moonraker at {authority}: HTTP handshake timed out"))?
            .map_err(|e| format!("Moonraker at {authority}: {e}"))?;
        let (tx, ended) = oneshot::channel();
        tokio::spawn(async move {
            // Its error, if any, shows in the exchange that was under way.
            let _ = conn.await;
            let _ = tx.send(());
        });
        let host = HeaderValue::from_str(&authority).map_err(|e| format!("moonraker.url: {e}"))?;
        let api_key =
            api_key.map(HeaderValue::from_str).transpose().map_err(|e| format!("moonraker.api_key_file: {e}"))?;
        Ok(Conn { sender, ended, host, api_key, closes: false })
    }

    /// Completes when the connection has ended (at once if it has).
    pub async fn ended(&mut self) {
        let _ = (&mut self.ended).await;
    }

    /// Whether the connection can take another request.
    pub fn is_open(&self) -> bool {
        !self.sender.is_closed()
    }

    /// Whether the last answer said the connection ends after it (`Connection: close`, or
    /// HTTP/1.0).
    pub fn closes_after_answer(&self) -> bool {
        self.closes
    }

    /// One request; Moonraker's `result` on success, else an error that says what to do.
    pub async fn call(&mut self, method: Method, target: &str, body: Option<&Value>) -> Result<Value, String> {
        let what = format!("{method} {target}");
        let mut req = Request::builder().method(method).uri(target);
        let headers = req.headers_mut().expect("a fresh builder");
        headers.insert(HOST, self.host.clone());
        headers.insert(USER_AGENT, HeaderValue::from_static(concat!("camjobd/", env!("CARGO_PKG_VERSION"))));
        if let Some(key) = &self.api_key {
            headers.insert("x-api-key", key.clone());
        }
        let bytes = match body {
            Some(v) => {
                headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                Bytes::from(serde_json::to_vec(v).expect("plain data"))
            }
            None => Bytes::new(),
        };
        let req = req.body(Full::new(bytes)).map_err(|e| format!("{what}: {e}"))?;
        let exchange = async {
            self.sender.ready().await.map_err(|e| format!("{what}: the connection closed ({e})"))?;
            let resp = self.sender.send_request(req).await.map_err(|e| {
                if e.is_parse() {
                    format!("{what}: the answer is not HTTP ({e}): is moonraker.url Moonraker's address?")
                } else {
                    format!("{what}: {e}")
                }
            })?;
            let status = resp.status();
            let close = resp.headers().get(CONNECTION).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
            self.closes = close || resp.version() == Version::HTTP_10;
            let body = Limited::new(resp.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| format!("{what}: reading the answer: {e}"))?
                .to_bytes();
            Ok::<_, String>((status, body))
        };
        let (status, body) = tokio::time::timeout(EXCHANGE, exchange)
            .await
            .map_err(|_| format!("{what}: Moonraker did not answer within {} s", EXCHANGE.as_secs()))??;
        answer(&what, status, &body)
    }
}

/// Moonraker's envelope: `{"result": ...}` on success, `{"error": {"message"}}` otherwise.
fn answer(what: &str, status: StatusCode, body: &[u8]) -> Result<Value, String> {
    let json: Option<Value> = serde_json::from_slice(body).ok();
    if status.is_success() {
        return json
            .and_then(|mut v| v.get_mut("result").map(Value::take))
            .ok_or_else(|| format!("{what}: Moonraker answered {status} without a JSON result"));
    }
    // Its message, without the Python traceback it adds.
    let mut message: String = json
        .as_ref()
        .and_then(|v| v["error"]["message"].as_str())
        .unwrap_or_else(|| status.canonical_reason().unwrap_or(""))
        .chars()
        .take(200)
        .collect();
    match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => message.push_str(
            ": set moonraker.api_key_file to a file holding Moonraker's API key, or add camjobd's address to trusted_clients in moonraker.conf's [authorization]",
        ),
        StatusCode::NOT_FOUND if what.contains("/list") => {
            message.push_str(": this Moonraker has no webcam API (update it), or moonraker.url is not Moonraker")
        }
        _ => {}
    }
    Err(format!("{what}: Moonraker answered {}: {message}", status.as_u16()))
}

/// A failed connect, with what to check.
fn connect_error(authority: &str, e: &std::io::Error) -> String {
    let hint = match e.kind() {
        std::io::ErrorKind::ConnectionRefused => ": is Moonraker running, and is moonraker.url its address?",
        _ => "",
    };
    format!("cannot connect to Moonraker at {authority}: {e}{hint}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_give_the_result_or_a_short_reason() {
        let ok = answer("GET /server/webcams/list", StatusCode::OK, br#"{"result":{"webcams":[]}}"#).unwrap();
        assert_eq!(ok, serde_json::json!({"webcams": []}));
        let e = answer(
            "POST /server/webcams/item",
            StatusCode::BAD_REQUEST,
            br#"{"error":{"code":400,"message":"Invalid value for 'rotation': 45","traceback":"Traceback ..."}}"#,
        )
        .unwrap_err();
        assert_eq!(e, "POST /server/webcams/item: Moonraker answered 400: Invalid value for 'rotation': 45");
        let e =
            answer("GET /server/webcams/list", StatusCode::UNAUTHORIZED, br#"{"error":{"message":"Unauthorized"}}"#)
                .unwrap_err();
        assert!(e.contains("401: Unauthorized: set moonraker.api_key_file"), "{e}");
        let e = answer("GET /server/webcams/list", StatusCode::NOT_FOUND, b"<html>").unwrap_err();
        assert!(e.contains("404: Not Found: this Moonraker has no webcam API"), "{e}");
        assert!(answer("GET /x", StatusCode::OK, b"{}").unwrap_err().contains("without a JSON result"));
    }
}
