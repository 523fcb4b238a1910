//! WAL framing. A file starts with [`MAGIC`], then frames back to back:
//! `[len: u32 LE][crc32(len): u32 LE][crc32(payload): u32 LE][payload]`. The length has a
//! checksum of its own, so a damaged length is recognised as damage instead of being followed
//! (a length flipped to point past the end of the file would otherwise look like a write cut
//! short). Files without the magic are read in the previous framing (`[len][crc32(payload)]`),
//! and rewritten in this one at the next open.
//!
//! Contract: [`decode_frames`] returns the longest prefix of well-formed frames, the byte length
//! of that prefix, and how the data ends: cleanly, with a torn last write (a frame cut short; a
//! bad frame or header with nothing after it; or zeros to the end, as a file system can leave
//! after a power loss), or with corruption before the end (a bad frame or header followed by
//! data). Only a torn tail may be dropped silently; recovery refuses corruption, so synced
//! records (a term, a vote) are never lost without the operator knowing (paired with
//! [`encode_frame`]).

/// Largest payload a frame may carry. Bounds what a garbled length field can make recovery
/// allocate; AppendEntries batches are bounded far below this by `append_bytes_max`.
pub const RECORD_BYTES_MAX: usize = 256 << 20;

/// The first bytes of every file written in this framing.
pub const MAGIC: &[u8; 8] = b"HYPWAL02";

const HEADER_BYTES: usize = 12;
const LEGACY_HEADER_BYTES: usize = 8;

/// Appends one frame holding `payload` to `out` (after [`MAGIC`] at the start of a file).
pub fn encode_frame(payload: &[u8], out: &mut Vec<u8>) {
    assert!(
        payload.len() <= RECORD_BYTES_MAX,
        "WAL record of {} bytes",
        payload.len()
    );
    let len = (payload.len() as u32).to_le_bytes();
    out.extend_from_slice(&len);
    out.extend_from_slice(&crc32fast::hash(&len).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// How a WAL's frames end (see [`decode_frames`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FramesEnd {
    /// Every byte belongs to a whole frame.
    Clean,
    /// The last write was cut short or garbled and nothing follows it: a write torn by a power
    /// loss. Dropping it loses only what was never synced.
    TornTail {
        /// Where the torn frame starts.
        offset: usize,
    },
    /// A frame or its header fails its checksum while more data follows: the media damaged
    /// something that was once written whole, possibly synced. Not repairable by truncation.
    Corrupt {
        /// Where the bad frame starts.
        offset: usize,
    },
}

fn u32_at(data: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]])
}

/// A bad frame at `pos` ending at `end`: torn if nothing but zeros follows it, else corrupt.
fn classify_bad_frame(data: &[u8], pos: usize, end: usize) -> FramesEnd {
    let after = &data[end.min(data.len())..];
    if after.iter().all(|&byte| byte == 0) {
        FramesEnd::TornTail { offset: pos }
    } else {
        FramesEnd::Corrupt { offset: pos }
    }
}

/// Where the first frame of `data` starts and how many header bytes each frame has (the magic
/// tells the framing apart).
pub fn framing(data: &[u8]) -> (usize, usize) {
    if data.starts_with(MAGIC) {
        (MAGIC.len(), HEADER_BYTES)
    } else {
        (0, LEGACY_HEADER_BYTES)
    }
}

/// Splits `data` (a whole file) into frame payloads; returns them, the length of the valid
/// prefix (magic included), and how the data ends after it.
pub fn decode_frames(data: &[u8]) -> (Vec<&[u8]>, usize, FramesEnd) {
    if !data.starts_with(MAGIC) {
        if damaged_magic(data) {
            return (Vec::new(), 0, FramesEnd::Corrupt { offset: 0 });
        }
        return decode_legacy_frames(data);
    }
    let mut frames = Vec::new();
    let mut pos = MAGIC.len();
    loop {
        let left = data.len() - pos;
        if left == 0 {
            return (frames, pos, FramesEnd::Clean);
        }
        if data[pos..].iter().all(|&byte| byte == 0) {
            return (frames, pos, FramesEnd::TornTail { offset: pos });
        }
        if left < HEADER_BYTES {
            return (frames, pos, FramesEnd::TornTail { offset: pos });
        }
        let len = u32_at(data, pos);
        if crc32fast::hash(&len.to_le_bytes()) != u32_at(data, pos + 4) {
            return (
                frames,
                pos,
                classify_bad_frame(data, pos, pos + HEADER_BYTES),
            );
        }
        let len = len as usize;
        let end = pos + HEADER_BYTES + len;
        if len > RECORD_BYTES_MAX {
            return (frames, pos, FramesEnd::Corrupt { offset: pos });
        }
        if end > data.len() {
            // A sound header whose payload was cut short: the last write, torn.
            return (frames, pos, FramesEnd::TornTail { offset: pos });
        }
        let payload = &data[pos + HEADER_BYTES..end];
        if crc32fast::hash(payload) != u32_at(data, pos + 8) {
            return (frames, pos, classify_bad_frame(data, pos, end));
        }
        frames.push(payload);
        pos = end;
    }
}

/// Whether `data` starts with [`MAGIC`] with a few bits flipped: a file of this framing whose
/// first bytes were damaged (a file of the previous framing starts with a small length and a
/// checksum, many bits away).
fn damaged_magic(data: &[u8]) -> bool {
    data.len() >= MAGIC.len()
        && data
            .iter()
            .zip(MAGIC.iter())
            .map(|(a, b)| (a ^ b).count_ones())
            .sum::<u32>()
            <= 8
}

/// The previous framing (`[len][crc32(payload)][payload]`, no magic), for files written before
/// the length had its own checksum. A damaged length cannot be told from a torn write there.
fn decode_legacy_frames(data: &[u8]) -> (Vec<&[u8]>, usize, FramesEnd) {
    let mut frames = Vec::new();
    let mut pos = 0usize;
    loop {
        let left = data.len() - pos;
        if left == 0 {
            return (frames, pos, FramesEnd::Clean);
        }
        if left < LEGACY_HEADER_BYTES {
            return (frames, pos, FramesEnd::TornTail { offset: pos });
        }
        let len = u32_at(data, pos) as usize;
        let end = pos + LEGACY_HEADER_BYTES + len;
        if len > RECORD_BYTES_MAX || end > data.len() {
            return (frames, pos, FramesEnd::TornTail { offset: pos });
        }
        let payload = &data[pos + LEGACY_HEADER_BYTES..end];
        if crc32fast::hash(payload) != u32_at(data, pos + 4) {
            return (frames, pos, classify_bad_frame(data, pos, end));
        }
        frames.push(payload);
        pos = end;
    }
}

/// Little-endian field writer for record payloads.
#[derive(Default)]
pub(crate) struct Writer {
    pub(crate) buf: Vec<u8>,
}

impl Writer {
    pub(crate) fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    pub(crate) fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn bytes(&mut self, v: &[u8]) {
        self.u64(v.len() as u64);
        self.buf.extend_from_slice(v);
    }
}

/// Little-endian field reader; `None` on any malformed input.
pub(crate) struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        Reader { data }
    }
    pub(crate) fn u8(&mut self) -> Option<u8> {
        let (first, rest) = self.data.split_first()?;
        self.data = rest;
        Some(*first)
    }
    pub(crate) fn u64(&mut self) -> Option<u64> {
        if self.data.len() < 8 {
            return None;
        }
        let (head, rest) = self.data.split_at(8);
        self.data = rest;
        let mut b = [0u8; 8];
        b.copy_from_slice(head);
        Some(u64::from_le_bytes(b))
    }
    pub(crate) fn bytes(&mut self) -> Option<Vec<u8>> {
        let len = usize::try_from(self.u64()?).ok()?;
        if self.data.len() < len {
            return None;
        }
        let (head, rest) = self.data.split_at(len);
        self.data = rest;
        Some(head.to_vec())
    }
    pub(crate) fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(payloads: &[&[u8]]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        for payload in payloads {
            encode_frame(payload, &mut out);
        }
        out
    }

    #[test]
    fn round_trip_and_torn_tail() {
        let out = file(&[b"one", b"", b"three"]);
        let full = out.len();
        let (frames, len, end) = decode_frames(&out);
        assert_eq!(frames, vec![&b"one"[..], &b""[..], &b"three"[..]]);
        assert_eq!((len, end), (full, FramesEnd::Clean));
        for cut in MAGIC.len()..full {
            let (frames, len, end) = decode_frames(&out[..cut]);
            assert!(len <= cut);
            assert!(frames.len() <= 3);
            assert!(
                matches!(end, FramesEnd::Clean | FramesEnd::TornTail { .. }),
                "a cut is a torn tail, never corruption: {end:?} at {cut}"
            );
        }
        let third = MAGIC.len() + (HEADER_BYTES + 3) + HEADER_BYTES;
        for garbled in third..full {
            let mut torn = out[..=garbled].to_vec();
            torn[garbled] ^= 0x5a;
            let (frames, _, end) = decode_frames(&torn);
            assert_eq!(frames.len(), 2);
            assert_eq!(end, FramesEnd::TornTail { offset: third }, "at {garbled}");
        }
        let mut zeroed = out.clone();
        zeroed.extend_from_slice(&[0; 40]);
        assert_eq!(
            decode_frames(&zeroed).2,
            FramesEnd::TornTail { offset: full }
        );
    }

    #[test]
    fn damage_before_the_end_is_corruption_not_a_torn_tail() {
        let out = file(&[b"one", b"two", b"three"]);
        for at in MAGIC.len()..MAGIC.len() + HEADER_BYTES + 3 {
            for bit in 0..8 {
                let mut damaged = out.clone();
                damaged[at] ^= 1 << bit;
                let (frames, len, end) = decode_frames(&damaged);
                assert!(frames.is_empty(), "byte {at} bit {bit}");
                assert_eq!(
                    (len, end),
                    (
                        MAGIC.len(),
                        FramesEnd::Corrupt {
                            offset: MAGIC.len()
                        }
                    ),
                    "byte {at} bit {bit}: a damaged first frame is corruption, header or payload"
                );
            }
        }
    }

    #[test]
    fn a_damaged_magic_is_corruption() {
        let mut out = file(&[b"one"]);
        out[3] ^= 0x10;
        assert_eq!(decode_frames(&out).2, FramesEnd::Corrupt { offset: 0 });
    }

    #[test]
    fn files_in_the_previous_framing_still_read() {
        let mut legacy = Vec::new();
        for payload in [&b"one"[..], b"two"] {
            legacy.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            legacy.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
            legacy.extend_from_slice(payload);
        }
        let (frames, len, end) = decode_frames(&legacy);
        assert_eq!(frames, vec![&b"one"[..], &b"two"[..]]);
        assert_eq!((len, end), (legacy.len(), FramesEnd::Clean));
    }
}
