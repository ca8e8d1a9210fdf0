//! camjobd's response body, the `B` of every `http::Response<Body>` the routes answer: bytes
//! (JSON, the dashboard, a frame copy shared without a copy), a file read as the client takes
//! it (export downloads), or a body of unknown length (the MJPEG stream).
//!
//! Its own type rather than `http_body_util`'s: a file is read in chunks on the runtime thread
//! (no blocking pool), a HEAD answer states GET's length without holding the body, and the
//! body keeps its connection busy (not evictable, see [`super::conns`]) until it is finished
//! or dropped.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};

use super::conns::Busy;

/// A body of unknown length (the MJPEG stream): polled by hyper only when the socket can take
/// more.
pub type StreamBody = Pin<Box<dyn http_body::Body<Data = Bytes, Error = io::Error> + Send>>;

/// Chunk size of file downloads.
const FILE_CHUNK: usize = 64 * 1024;

/// A response body.
pub struct Body {
    kind: Kind,
    /// Keeps the connection busy (not evictable) until the body is finished or dropped.
    busy: Option<Busy>,
}

enum Kind {
    /// Bytes, sent at once (`None` once sent).
    Full(Option<Bytes>),
    /// A HEAD answer: says this length, sends nothing.
    Head(u64),
    /// A file of `left` more bytes, read in chunks as the client takes them; the transfer may
    /// take as long as the client keeps taking bytes. The reader is dropped when it ends.
    File { file: Box<dyn io::Read + Send>, left: u64 },
    /// Sent chunked as it is produced.
    Stream(StreamBody),
}

impl Body {
    fn new(kind: Kind) -> Body {
        Body { kind, busy: None }
    }

    /// No body (`Content-Length: 0`).
    pub fn empty() -> Body {
        Body::full(Bytes::new())
    }

    /// Bytes made for this response, or shared without a copy (`Bytes::from_owner`).
    pub fn full(bytes: impl Into<Bytes>) -> Body {
        Body::new(Kind::Full(Some(bytes.into())))
    }

    /// Bytes compiled into the binary (the dashboard, `/healthz`).
    pub fn from_static(bytes: &'static [u8]) -> Body {
        Body::full(Bytes::from_static(bytes))
    }

    /// Bytes someone else owns (a frame copy, see [`crate::live`]): written without a copy;
    /// the owner is dropped when the write has finished.
    pub fn shared(owner: impl AsRef<[u8]> + Send + 'static) -> Body {
        Body::full(Bytes::from_owner(owner))
    }

    /// `len` bytes of a file (an export download).
    pub fn file(file: impl io::Read + Send + 'static, len: u64) -> Body {
        Body::new(Kind::File { file: Box::new(file), left: len })
    }

    /// A body of unknown length, sent chunked.
    pub fn stream(body: impl http_body::Body<Data = Bytes, Error = io::Error> + Send + 'static) -> Body {
        Body::new(Kind::Stream(Box::pin(body)))
    }

    /// Length in bytes, when known.
    pub fn known_len(&self) -> Option<u64> {
        match &self.kind {
            Kind::Full(b) => Some(b.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Head(n) => Some(*n),
            Kind::File { left, .. } => Some(*left),
            Kind::Stream(_) => None,
        }
    }

    /// What a HEAD answer sends instead: the length of what GET would send, and nothing else
    /// held open.
    pub(super) fn for_head(&self) -> Body {
        match self.known_len() {
            Some(n) => Body::new(Kind::Head(n)),
            None => Body::empty(),
        }
    }

    /// Keeps the connection busy for as long as this body lives.
    pub(super) fn hold(&mut self, busy: Option<Busy>) {
        self.busy = busy;
    }

    fn poll_kind(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match &mut self.kind {
            Kind::Full(b) => Poll::Ready(b.take().filter(|b| !b.is_empty()).map(|b| Ok(Frame::data(b)))),
            Kind::Head(_) => Poll::Ready(None),
            Kind::File { file, left } => {
                if *left == 0 {
                    return Poll::Ready(None);
                }
                // A short blocking read of a local file (at most one chunk) on the runtime
                // thread: cheaper than a blocking pool that grows threads.
                let n = (*left).min(FILE_CHUNK as u64) as usize;
                let mut buf = vec![0u8; n];
                let got = io::Read::read_exact(file, &mut buf);
                Poll::Ready(Some(got.map(|()| {
                    *left -= n as u64;
                    Frame::data(Bytes::from(buf))
                })))
            }
            Kind::Stream(s) => s.as_mut().poll_frame(cx),
        }
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let polled = self.poll_kind(cx);
        if matches!(polled, Poll::Ready(None)) {
            // Finished: the connection is idle again (evictable) from now on.
            self.busy = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(b) => b.as_ref().is_none_or(Bytes::is_empty),
            Kind::Head(_) => true,
            Kind::File { left, .. } => *left == 0,
            Kind::Stream(s) => s.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Head(n) => SizeHint::with_exact(*n),
            Kind::File { left, .. } => SizeHint::with_exact(*left),
            Kind::Stream(s) => s.size_hint(),
        }
    }
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            Kind::Full(_) => "Full",
            Kind::Head(_) => "Head",
            Kind::File { .. } => "File",
            Kind::Stream(_) => "Stream",
        };
        write!(f, "{kind}({:?} bytes)", self.known_len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test(flavor = "current_thread")]
    async fn bodies_say_their_length_and_a_head_sends_nothing() {
        let body = Body::full(b"hello".to_vec());
        assert_eq!(body.known_len(), Some(5));
        let head = body.for_head();
        assert_eq!(head.known_len(), Some(5));
        assert!(head.collect().await.unwrap().to_bytes().is_empty());
        let file = Body::file(std::io::Cursor::new(vec![1u8; FILE_CHUNK + 3]), FILE_CHUNK as u64 + 3);
        assert_eq!(file.collect().await.unwrap().to_bytes().len(), FILE_CHUNK + 3);
        assert_eq!(Body::stream(http_body_util::Empty::new().map_err(|e| match e {})).known_len(), None);
    }
}
