//! RTP for H.264 (RFC 3550, RFC 6184), written into buffers the caller owns: one packet per NAL
//! unit that fits, FU-A fragments for the rest, the marker bit on an access unit's last packet,
//! and RTCP sender reports. Nothing here allocates.

use super::nal;

/// The dynamic payload type camjobd announces for H.264.
pub const PAYLOAD_TYPE: u8 = 96;
/// Largest RTP payload: a 1500-byte Ethernet frame less IP, UDP and RTP headers, with room.
pub const MAX_PAYLOAD: usize = 1400;
/// RTP header bytes (no CSRC, no extension).
pub const HEADER: usize = 12;
/// The largest packet [`Packetizer`] writes.
pub const MAX_PACKET: usize = HEADER + MAX_PAYLOAD;

/// One RTP stream's numbering (per client: a client that skips to a keyframe sees no gap).
#[derive(Debug, Clone, Copy)]
pub struct Stream {
    /// Synchronisation source id.
    pub ssrc: u32,
    /// The next packet's sequence number.
    pub seq: u16,
    /// Packets and payload bytes sent (for sender reports).
    pub packets: u32,
    /// See `packets`.
    pub octets: u32,
}

/// Walks one access unit's NAL units and writes its packets, one at a time.
pub struct Packetizer<'a> {
    units: nal::Units<'a>,
    /// The unit being cut into FU-A fragments, and how much of it is sent.
    unit: &'a [u8],
    sent: usize,
    /// The unit after `unit`, looked at ahead to know which packet is the last.
    next: Option<&'a [u8]>,
    timestamp: u32,
}

impl<'a> Packetizer<'a> {
    /// The packets of an access unit (Annex B) at RTP `timestamp` (90 kHz).
    pub fn new(access_unit: &'a [u8], timestamp: u32) -> Packetizer<'a> {
        let mut units = nal::units(access_unit);
        let first = next_unit(&mut units);
        let next = next_unit(&mut units);
        Packetizer { units, unit: first.unwrap_or(&[]), sent: 0, next, timestamp }
    }

    /// Writes the next packet into `out` (at least [`MAX_PACKET`] long) and returns its
    /// length; `None` when the access unit is done.
    pub fn next_packet(&mut self, stream: &mut Stream, out: &mut [u8]) -> Option<usize> {
        if self.unit.is_empty() {
            return None;
        }
        let unit = self.unit;
        let (payload_len, unit_done) = if self.sent == 0 && unit.len() <= MAX_PAYLOAD {
            out[HEADER..HEADER + unit.len()].copy_from_slice(unit);
            (unit.len(), true)
        } else {
            // FU-A: indicator (NRI of the unit, type 28), header (start, end, the unit's type),
            // then the unit's bytes after its own header byte.
            let body = &unit[1..];
            let from = self.sent;
            let take = (body.len() - from).min(MAX_PAYLOAD - 2);
            let (start, end) = (from == 0, from + take == body.len());
            out[HEADER] = (unit[0] & 0xE0) | 28;
            out[HEADER + 1] = (u8::from(start) << 7) | (u8::from(end) << 6) | (unit[0] & 0x1F);
            out[HEADER + 2..HEADER + 2 + take].copy_from_slice(&body[from..from + take]);
            self.sent += take;
            (take + 2, end)
        };
        let last = unit_done && self.next.is_none();
        write_header(stream, self.timestamp, last, out);
        if unit_done {
            self.unit = self.next.take().unwrap_or(&[]);
            self.sent = 0;
            self.next = next_unit(&mut self.units);
        }
        stream.packets = stream.packets.wrapping_add(1);
        stream.octets = stream.octets.wrapping_add(payload_len as u32);
        Some(HEADER + payload_len)
    }
}

/// The next unit worth sending (access unit delimiters are dropped).
fn next_unit<'a>(units: &mut nal::Units<'a>) -> Option<&'a [u8]> {
    units.find(|u| nal::nal_type(u) != nal::AUD)
}

fn write_header(stream: &mut Stream, timestamp: u32, marker: bool, out: &mut [u8]) {
    out[0] = 0x80;
    out[1] = (u8::from(marker) << 7) | PAYLOAD_TYPE;
    out[2..4].copy_from_slice(&stream.seq.to_be_bytes());
    out[4..8].copy_from_slice(&timestamp.to_be_bytes());
    out[8..12].copy_from_slice(&stream.ssrc.to_be_bytes());
    stream.seq = stream.seq.wrapping_add(1);
}

/// A sender report (RFC 3550 6.4.1) with an SDES CNAME: the wall-clock time `unix_s` and the
/// RTP timestamp of the same instant, so a recorder can date the stream. Returns the length.
pub fn sender_report(stream: &Stream, unix_s: f64, rtp_time: u32, cname: &[u8], out: &mut [u8]) -> usize {
    // NTP time: seconds since 1900, and a 32-bit fraction.
    let ntp = unix_s + 2_208_988_800.0;
    let secs = ntp as u64 as u32;
    let frac = ((ntp - ntp.floor()) * 4_294_967_296.0) as u32;
    out[0] = 0x80;
    out[1] = 200;
    out[2..4].copy_from_slice(&6u16.to_be_bytes());
    out[4..8].copy_from_slice(&stream.ssrc.to_be_bytes());
    out[8..12].copy_from_slice(&secs.to_be_bytes());
    out[12..16].copy_from_slice(&frac.to_be_bytes());
    out[16..20].copy_from_slice(&rtp_time.to_be_bytes());
    out[20..24].copy_from_slice(&stream.packets.to_be_bytes());
    out[24..28].copy_from_slice(&stream.octets.to_be_bytes());
    // SDES: one chunk, CNAME item, padded to 32-bit words.
    let name = &cname[..cname.len().min(255)];
    let item = 2 + name.len() + 1; // type, length, text, end
    let words = (4 + item).div_ceil(4);
    let sdes = &mut out[28..28 + 4 + words * 4];
    sdes.fill(0);
    sdes[0] = 0x81;
    sdes[1] = 202;
    sdes[2..4].copy_from_slice(&(words as u16).to_be_bytes());
    sdes[4..8].copy_from_slice(&stream.ssrc.to_be_bytes());
    sdes[8] = 1;
    sdes[9] = name.len() as u8;
    sdes[10..10 + name.len()].copy_from_slice(name);
    28 + 4 + words * 4
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reassembles what the packets carry, as a depacketizer does: (units, marker of each packet).
    fn reassemble(packets: &[Vec<u8>]) -> (Vec<Vec<u8>>, Vec<bool>) {
        let (mut units, mut markers, mut fu) = (Vec::new(), Vec::new(), Vec::new());
        for p in packets {
            assert_eq!(p[0], 0x80);
            markers.push(p[1] & 0x80 != 0);
            assert_eq!(p[1] & 0x7F, PAYLOAD_TYPE);
            let payload = &p[HEADER..];
            if payload[0] & 0x1F == 28 {
                let (start, end) = (payload[1] & 0x80 != 0, payload[1] & 0x40 != 0);
                if start {
                    fu = vec![(payload[0] & 0xE0) | (payload[1] & 0x1F)];
                }
                fu.extend_from_slice(&payload[2..]);
                if end {
                    units.push(std::mem::take(&mut fu));
                }
            } else {
                units.push(payload.to_vec());
            }
        }
        (units, markers)
    }

    #[test]
    fn small_units_go_whole_large_ones_in_fu_a_and_only_the_last_packet_is_marked() {
        let sps = [0x67, 0x42, 0xC0, 0x1F];
        let pps = [0x68, 0xCE, 0x3C, 0x80];
        let idr: Vec<u8> = std::iter::once(0x65).chain((0..4000u32).map(|i| (i % 251) as u8 + 1)).collect();
        let mut au = vec![0, 0, 0, 1, 0x09, 0xF0];
        for u in [&sps[..], &pps, &idr] {
            au.extend_from_slice(&[0, 0, 0, 1]);
            au.extend_from_slice(u);
        }
        let mut stream = Stream { ssrc: 0xDEAD_BEEF, seq: 65_534, packets: 0, octets: 0 };
        let mut p = Packetizer::new(&au, 90_000);
        let mut packets = Vec::new();
        let mut buf = [0u8; MAX_PACKET];
        while let Some(n) = p.next_packet(&mut stream, &mut buf) {
            assert!(n <= MAX_PACKET);
            packets.push(buf[..n].to_vec());
        }
        let (units, markers) = reassemble(&packets);
        assert_eq!(units, vec![sps.to_vec(), pps.to_vec(), idr.clone()], "the AUD is dropped, the rest arrives whole");
        assert_eq!(markers.iter().filter(|&&m| m).count(), 1);
        assert!(markers.last().copied().unwrap());
        // 2 whole units + ceil(4000 / 1398) = 3 fragments; sequence numbers wrap.
        assert_eq!(packets.len(), 5);
        let seqs: Vec<u16> = packets.iter().map(|p| u16::from_be_bytes([p[2], p[3]])).collect();
        assert_eq!(seqs, vec![65_534, 65_535, 0, 1, 2]);
        assert!(packets.iter().all(|p| p[4..8] == 90_000u32.to_be_bytes() && p[8..12] == 0xDEAD_BEEFu32.to_be_bytes()));
        assert_eq!(stream.packets, 5);
        assert_eq!(stream.octets as usize, packets.iter().map(|p| p.len() - HEADER).sum::<usize>());
        assert!(Packetizer::new(&[], 0).next_packet(&mut stream, &mut buf).is_none());
    }

    #[test]
    fn a_sender_report_carries_the_counts_and_a_padded_cname() {
        let stream = Stream { ssrc: 7, seq: 0, packets: 10, octets: 12_000 };
        let mut out = [0u8; 128];
        let n = sender_report(&stream, 1_700_000_000.5, 1234, b"camjobd", &mut out);
        assert_eq!(n % 4, 0);
        assert_eq!(&out[..2], &[0x80, 200]);
        assert_eq!(u32::from_be_bytes(out[8..12].try_into().unwrap()), (1_700_000_000u64 + 2_208_988_800) as u32);
        assert_eq!(u32::from_be_bytes(out[12..16].try_into().unwrap()), 1 << 31, "half a second");
        assert_eq!(u32::from_be_bytes(out[20..24].try_into().unwrap()), 10);
        assert_eq!(&out[28..30], &[0x81, 202]);
        assert_eq!(&out[38..45], b"camjobd");
    }
}
