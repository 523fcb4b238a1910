//! WAL framing: `[len: u32 LE][crc32(payload): u32 LE][payload]`, appended back to back.
//!
//! Contract: [`decode_frames`] returns the longest prefix of well-formed frames and the byte
//! length of that prefix. It stops at the first frame that is short (torn), longer than
//! [`RECORD_BYTES_MAX`], or fails its CRC: everything after it is discarded, so recovery never
//! returns bytes that were not written as one whole frame (paired with [`encode_frame`]).

/// Largest payload a frame may carry. Bounds what a garbled length field can make recovery
/// allocate; AppendEntries batches are bounded far below this by `append_bytes_max`.
pub const RECORD_BYTES_MAX: usize = 256 << 20;

const HEADER_BYTES: usize = 8;

/// Appends one frame holding `payload` to `out`.
pub fn encode_frame(payload: &[u8], out: &mut Vec<u8>) {
    assert!(
        payload.len() <= RECORD_BYTES_MAX,
        "WAL record of {} bytes",
        payload.len()
    );
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// Splits `data` into frame payloads; returns them and the length of the valid prefix.
pub fn decode_frames(data: &[u8]) -> (Vec<&[u8]>, usize) {
    let mut frames = Vec::new();
    let mut pos = 0usize;
    while data.len() - pos >= HEADER_BYTES {
        let len =
            u32::from_le_bytes([data[pos], data[pos + 1], data[pos + 2], data[pos + 3]]) as usize;
        let crc = u32::from_le_bytes([data[pos + 4], data[pos + 5], data[pos + 6], data[pos + 7]]);
        if len > RECORD_BYTES_MAX || data.len() - pos - HEADER_BYTES < len {
            break;
        }
        let payload = &data[pos + HEADER_BYTES..pos + HEADER_BYTES + len];
        if crc32fast::hash(payload) != crc {
            break;
        }
        frames.push(payload);
        pos += HEADER_BYTES + len;
    }
    (frames, pos)
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

    #[test]
    fn round_trip_and_torn_tail() {
        let mut out = Vec::new();
        encode_frame(b"one", &mut out);
        encode_frame(b"", &mut out);
        encode_frame(b"three", &mut out);
        let full = out.len();
        let (frames, len) = decode_frames(&out);
        assert_eq!(frames, vec![&b"one"[..], &b""[..], &b"three"[..]]);
        assert_eq!(len, full);
        for cut in 0..full {
            let (frames, len) = decode_frames(&out[..cut]);
            assert!(len <= cut);
            assert!(frames.len() <= 3);
        }
        out[full - 1] ^= 1;
        let (frames, _) = decode_frames(&out);
        assert_eq!(frames.len(), 2);
    }
}
