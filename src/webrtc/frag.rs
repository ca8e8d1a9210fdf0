//! Trickle ICE bodies (`application/trickle-ice-sdpfrag`, RFC 8840), as WHEP clients PATCH
//! them: the ICE credentials, media lines and their candidates. A candidate camjobd cannot use
//! (an mDNS `.local` name, TCP) is skipped and counted, not refused: Mainsail restarts the whole
//! session on any answer but 204.

use std::net::IpAddr;

use str0m::Candidate;

/// Candidates one body may carry.
pub const MAX_CANDIDATES: usize = 32;

/// A parsed body.
#[derive(Debug, Default)]
pub struct Frag {
    /// `a=ice-ufrag` (None: not given).
    pub ufrag: Option<String>,
    /// The candidates camjobd can use.
    pub candidates: Vec<Candidate>,
    /// Candidates skipped: names instead of addresses (mDNS), or not UDP.
    pub skipped: usize,
    /// `a=end-of-candidates` was given.
    pub end: bool,
}

/// Why a body was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FragError {
    /// Line `n` (from 1) is not `<letter>=<value>`.
    Syntax(usize),
    /// Line `n` is a candidate that cannot be read (why).
    Candidate(usize, String),
    /// More than [`MAX_CANDIDATES`] candidates.
    TooMany,
    /// Two different `a=ice-ufrag` values.
    TwoUfrags,
}

impl std::fmt::Display for FragError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FragError::Syntax(n) => write!(f, "line {n} of the sdpfrag is not <type>=<value> (RFC 8840)"),
            FragError::Candidate(n, why) => write!(f, "line {n}: not an ICE candidate: {why}"),
            FragError::TooMany => write!(f, "more than {MAX_CANDIDATES} candidates in one body"),
            FragError::TwoUfrags => f.write_str("two different a=ice-ufrag values"),
        }
    }
}

/// Parses a trickle body.
pub fn parse_frag(body: &str) -> Result<Frag, FragError> {
    let mut frag = Frag::default();
    for (i, line) in body.split('\n').enumerate() {
        let n = i + 1;
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        let b = line.as_bytes();
        if b.len() < 2 || !b[0].is_ascii_lowercase() || b[1] != b'=' || line.chars().any(char::is_control) {
            return Err(FragError::Syntax(n));
        }
        let Some(attr) = line.strip_prefix("a=") else { continue };
        if let Some(u) = attr.strip_prefix("ice-ufrag:") {
            if frag.ufrag.as_deref().is_some_and(|old| old != u) {
                return Err(FragError::TwoUfrags);
            }
            frag.ufrag = Some(u.to_string());
        } else if attr == "end-of-candidates" {
            frag.end = true;
        } else if attr.starts_with("candidate:") {
            if frag.candidates.len() + frag.skipped >= MAX_CANDIDATES {
                return Err(FragError::TooMany);
            }
            match candidate(attr) {
                Ok(Some(c)) => frag.candidates.push(c),
                Ok(None) => frag.skipped += 1,
                Err(why) => return Err(FragError::Candidate(n, why)),
            }
        }
    }
    Ok(frag)
}

/// One `candidate:` attribute: `Ok(None)` for one that is well formed but unusable here.
fn candidate(attr: &str) -> Result<Option<Candidate>, String> {
    // foundation component transport priority address port "typ" type ...
    let fields: Vec<&str> = attr.split_ascii_whitespace().collect();
    if fields.len() < 8 || fields[6] != "typ" {
        return Err(
            "expected `candidate:<foundation> <component> <transport> <priority> <address> <port> typ <type>`".into()
        );
    }
    if fields[4].parse::<IpAddr>().is_err() && fields[4].ends_with(".local") {
        return Ok(None);
    }
    if !fields[2].eq_ignore_ascii_case("udp") {
        return Ok(None);
    }
    Candidate::from_sdp_string(attr).map(Some).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_browser_body_gives_its_candidates_and_skips_mdns_and_tcp() {
        let body =
            "a=ice-ufrag:EsAw\r\na=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\n\
            a=candidate:1387637174 1 udp 2122260223 127.0.0.1 61764 typ host generation 0 ufrag EsAw\r\n\
            a=candidate:2 1 udp 2122260223 4f3c1b2a-1111-2222-3333-444455556666.local 5000 typ host\r\n\
            a=candidate:3 1 tcp 1518280447 127.0.0.1 9 typ host tcptype active\r\na=end-of-candidates\r\n";
        let f = parse_frag(body).unwrap();
        assert_eq!(f.ufrag.as_deref(), Some("EsAw"));
        assert_eq!(f.candidates.len(), 1);
        assert_eq!(f.candidates[0].addr(), "127.0.0.1:61764".parse().unwrap());
        assert_eq!((f.skipped, f.end), (2, true));
    }

    #[test]
    fn bad_bodies_are_refused_with_the_line() {
        assert_eq!(parse_frag("a=ice-ufrag:x\nhello").unwrap_err(), FragError::Syntax(2));
        assert_eq!(parse_frag("a=ice-ufrag:x\na=ice-ufrag:y").unwrap_err(), FragError::TwoUfrags);
        assert!(matches!(parse_frag("a=candidate:1 1 udp 5 1.2.3.4 x typ host"), Err(FragError::Candidate(1, _))));
        assert!(matches!(parse_frag("a=candidate:1 1 udp"), Err(FragError::Candidate(1, _))));
        let many: String =
            (0..33).map(|i| format!("a=candidate:{i} 1 udp 5 10.0.0.1 {} typ host\n", 1000 + i)).collect();
        assert_eq!(parse_frag(&many).unwrap_err(), FragError::TooMany);
        assert_eq!(parse_frag("a=x\u{7}y").unwrap_err(), FragError::Syntax(1));
        // Empty and unknown attributes are fine (Mainsail sends one candidate per body).
        assert_eq!(parse_frag("").unwrap().candidates.len(), 0);
        assert_eq!(parse_frag("a=mid:0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0").unwrap().candidates.len(), 0);
    }
}
