//! Commands that arrive on `<prefix>/<camera>/command`: `start`, `stop`, or JSON
//! `{"action": "start", "max_frames": N, "max_duration_s": N}`. Who may send them is the
//! broker's business (its ACL); camjobd only refuses what it cannot understand, saying why on
//! `<camera>/command/result`.

use serde::Deserialize;

use crate::status::JobLimits;

/// A command, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Start a job with these limits.
    Start(JobLimits),
    /// Stop the running job.
    Stop,
}

impl Action {
    /// The name as the result message writes it.
    pub fn name(self) -> &'static str {
        match self {
            Action::Start(_) => "start",
            Action::Stop => "stop",
        }
    }
}

/// Largest command payload read; anything longer is refused unread.
pub const MAX_COMMAND_BYTES: usize = 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    action: String,
    max_frames: Option<u64>,
    max_duration_s: Option<u64>,
}

/// Parses a command payload; the error is a sentence for the result topic.
pub fn parse(payload: &[u8]) -> Result<Action, String> {
    const EXPECTED: &str = "expected start, stop or {\"action\": \"start\", \"max_frames\": N, \"max_duration_s\": N}";
    if payload.len() > MAX_COMMAND_BYTES {
        return Err(format!("a command is at most {MAX_COMMAND_BYTES} bytes; {EXPECTED}"));
    }
    let text = std::str::from_utf8(payload).map_err(|_| format!("not UTF-8; {EXPECTED}"))?.trim();
    // Home Assistant buttons send their payload as is: plain words, any case.
    if text.eq_ignore_ascii_case("start") {
        return Ok(Action::Start(JobLimits::default()));
    }
    if text.eq_ignore_ascii_case("stop") {
        return Ok(Action::Stop);
    }
    if !text.starts_with('{') {
        return Err(format!("unknown command {:?}; {EXPECTED}", truncate(text)));
    }
    let b: Body = serde_json::from_str(text).map_err(|e| format!("{e}; {EXPECTED}"))?;
    match b.action.as_str() {
        "start" => Ok(Action::Start(JobLimits::checked(b.max_frames, b.max_duration_s)?)),
        "stop" if b.max_frames.is_none() && b.max_duration_s.is_none() => Ok(Action::Stop),
        "stop" => Err("stop takes no limits".into()),
        other => Err(format!("unknown action {:?}; {EXPECTED}", truncate(other))),
    }
}

fn truncate(s: &str) -> &str {
    let mut end = s.len().min(40);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_and_json_commands() {
        assert_eq!(parse(b"start"), Ok(Action::Start(JobLimits::default())));
        assert_eq!(parse(b" STOP\n"), Ok(Action::Stop));
        assert_eq!(
            parse(br#"{"action": "start", "max_frames": 5}"#),
            Ok(Action::Start(JobLimits { max_frames: Some(5), max_duration_s: None }))
        );
        assert_eq!(parse(br#"{"action":"stop"}"#), Ok(Action::Stop));
    }

    #[test]
    fn refusals_say_what_was_wrong() {
        for (bad, says) in [
            (&b"restart"[..], "unknown command \"restart\""),
            (br#"{"action": "start", "max_frames": 0}"#, "max_frames must be >= 1"),
            (br#"{"action": "start", "fps": 3}"#, "unknown field `fps`"),
            (br#"{"action": "dance"}"#, "unknown action \"dance\""),
            (br#"{"action": "stop", "max_frames": 2}"#, "stop takes no limits"),
            (b"\xff\xfe", "not UTF-8"),
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains(says), "{e}");
        }
        assert!(parse(&vec![b' '; 2000]).unwrap_err().contains("at most 1024 bytes"));
    }
}
