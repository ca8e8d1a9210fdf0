//! H.264 byte streams (Annex B) as the encoders write them: NAL units separated by start codes
//! (`00 00 01` or `00 00 00 01`). Only what RTP and SDP need: splitting, types, and the
//! parameter sets' fields.

/// A sequence parameter set.
pub const SPS: u8 = 7;
/// A picture parameter set.
pub const PPS: u8 = 8;
/// A slice of an IDR picture: a frame a decoder can start from.
pub const IDR: u8 = 5;
/// An access unit delimiter (dropped on the way out: RTP marks access units itself).
pub const AUD: u8 = 9;

/// The NAL unit type (the low 5 bits of its first byte).
pub fn nal_type(nal: &[u8]) -> u8 {
    nal.first().map_or(0, |b| b & 0x1F)
}

/// The NAL units of an Annex B byte stream, without their start codes (and without the zero
/// bytes that may trail a unit before the next start code).
pub fn units(stream: &[u8]) -> Units<'_> {
    Units { rest: skip_start(stream) }
}

/// Iterator of [`units`].
pub struct Units<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Units<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.rest.is_empty() {
            return None;
        }
        let (unit, rest) = match find_start(self.rest) {
            Some(at) => (&self.rest[..at], skip_start(&self.rest[at..])),
            None => (self.rest, &[][..]),
        };
        self.rest = rest;
        // Trailing zeros belong to the next start code (`00 00 00 01`), not to this unit.
        let end = unit.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
        Some(&unit[..end]).filter(|u| !u.is_empty()).or_else(|| self.next())
    }
}

/// Where the next `00 00 01` begins.
fn find_start(s: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i + 2 < s.len() {
        match memchr::memchr(1, &s[i + 2..]) {
            None => return None,
            Some(j) => {
                let one = i + 2 + j;
                if s[one - 1] == 0 && s[one - 2] == 0 {
                    return Some(one - 2);
                }
                i = one - 1;
            }
        }
    }
    None
}

/// `s` after a leading start code (and any zeros before it).
fn skip_start(s: &[u8]) -> &[u8] {
    let zeros = s.iter().take_while(|&&b| b == 0).count();
    if zeros >= 2 && s.get(zeros) == Some(&1) {
        &s[zeros + 1..]
    } else {
        s
    }
}

/// `profile-level-id` for SDP (RFC 6184): the three bytes after an SPS's header, in hex.
pub fn profile_level_id(sps: &[u8]) -> Option<String> {
    (nal_type(sps) == SPS && sps.len() >= 4).then(|| format!("{:02x}{:02x}{:02x}", sps[1], sps[2], sps[3]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_are_split_at_both_start_codes() {
        let stream = [0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x68, 3, 0, 0, 0, 0, 1, 0x65, 0, 0, 3, 9, 9];
        let got: Vec<&[u8]> = units(&stream).collect();
        assert_eq!(got, vec![&[0x67, 1, 2][..], &[0x68, 3], &[0x65, 0, 0, 3, 9, 9]]);
        assert_eq!(got.iter().map(|u| nal_type(u)).collect::<Vec<_>>(), vec![SPS, PPS, IDR]);
        assert_eq!(units(&[]).count(), 0);
        assert_eq!(units(&[0, 0, 1]).count(), 0);
        // A stream without a start code is one unit.
        assert_eq!(units(&[0x41, 7]).collect::<Vec<_>>(), vec![&[0x41, 7][..]]);
    }

    #[test]
    fn profile_level_id_from_the_sps() {
        assert_eq!(profile_level_id(&[0x67, 0x42, 0xC0, 0x1F, 0x8C]).as_deref(), Some("42c01f"));
        assert_eq!(profile_level_id(&[0x68, 0x42, 0xC0, 0x1F]), None);
        assert_eq!(profile_level_id(&[0x67, 0x42]), None);
    }
}
