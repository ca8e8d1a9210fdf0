//! The fuzz target's entry (`fuzz/fuzz_targets/http_request.rs`, feature `fuzzing`): raw
//! bytes parsed as one request head (httparse, as hyper parses it), then [`layers::respond`],
//! what the server runs for every request.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use http::HeaderMap;

use super::{layers, Handler, Limits, Stats};
use crate::config::HttpConfig;

/// `None` when the bytes are not a complete request head (hyper would wait for more, or
/// answer 400 itself). The answer is the response's status and head as hyper would write
/// them, without a body.
pub fn answer(input: &[u8], handler: Arc<dyn Handler>, config: &HttpConfig) -> Option<(u16, HeaderMap)> {
    let limits = Limits::from(config);
    let mut headers = vec![httparse::EMPTY_HEADER; limits.max_headers];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(input) {
        Ok(httparse::Status::Complete(n)) => n,
        _ => return None,
    };
    let mut builder = http::Request::builder().method(req.method?).uri(req.path?);
    for h in req.headers.iter() {
        builder = builder.header(h.name, h.value);
    }
    let body = http_body_util::Full::new(Bytes::copy_from_slice(&input[head_len..]));
    let request = builder.body(body).ok()?;
    let stats = Stats::default();
    // One runtime for every input of the fuzzing process.
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    let rt = RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread().enable_time().build().expect("a current-thread runtime")
    });
    let resp = rt.block_on(layers::respond(&*handler, &limits, &stats, None, request));
    Some((resp.status().as_u16(), resp.headers().clone()))
}
