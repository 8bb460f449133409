//! AMP framing, the wire format under PM2's axon sockets (`amp/lib/encode.js`).
//!
//! ```text
//! byte 0   : (version << 4) | argc      version 1, 1 <= argc <= 15
//! per arg  : u32 big-endian length N, then N bytes
//! payload  : "s:" utf8 string | "j:" JSON text | anything else a raw blob
//! ```
//!
//! This module owns bytes only: it never touches a socket and never panics on input.
//! Limits are checked before anything is allocated, so an absurd length prefix is an
//! error, not an allocation.

use std::ops::Range;

use serde_json::Value;

/// The only protocol version PM2 7.x writes.
pub const VERSION: u8 = 1;
/// Most args one frame can carry (the count is a nibble).
pub const MAX_ARGS: usize = 15;
/// Largest frame accepted. The list for 101 apps is about 264 KB, about 5 KB per
/// Node app with pmx metrics; 64 MiB leaves room for thousands of apps while a
/// corrupt length prefix cannot make us buffer gigabytes.
pub const MAX_FRAME: usize = 64 * 1024 * 1024;

/// One decoded argument.
#[derive(Debug, Clone, PartialEq)]
pub enum Arg {
    /// `s:` prefix.
    Str(String),
    /// `j:` prefix.
    Json(Value),
    /// Neither prefix: a raw blob.
    Blob(Vec<u8>),
}

impl Arg {
    /// Packs an argument as `amp-message` does.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Arg::Str(s) => [b"s:".as_slice(), s.as_bytes()].concat(),
            Arg::Json(v) => {
                let text = serde_json::to_vec(v).unwrap_or_else(|_| b"null".to_vec());
                [b"j:".as_slice(), &text].concat()
            }
            Arg::Blob(b) => b.clone(),
        }
    }

    fn parse(bytes: &[u8]) -> Result<Self, AmpError> {
        if let Some(rest) = bytes.strip_prefix(b"s:") {
            let s = std::str::from_utf8(rest).map_err(|_| AmpError::BadUtf8)?;
            Ok(Arg::Str(s.to_string()))
        } else if let Some(rest) = bytes.strip_prefix(b"j:") {
            serde_json::from_slice(rest)
                .map(Arg::Json)
                .map_err(|err| AmpError::BadJson { message: err.to_string() })
        } else {
            Ok(Arg::Blob(bytes.to_vec()))
        }
    }
}

/// Why bytes are not a valid AMP frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmpError {
    /// The meta byte's version nibble is not 1.
    #[error("frame has protocol version {version}; expected 1")]
    BadVersion { version: u8 },
    /// A frame with no arguments (never sent by PM2).
    #[error("frame has no arguments")]
    NoArgs,
    /// More than 15 args cannot be encoded.
    #[error("frame would have {count} arguments; at most 15 fit")]
    TooManyArgs { count: usize },
    /// The frame (or one argument) is larger than [`MAX_FRAME`].
    #[error("frame of {len} bytes is larger than the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    /// An `s:` argument is not UTF-8.
    #[error("string argument is not utf-8")]
    BadUtf8,
    /// A `j:` argument is not JSON.
    #[error("json argument does not parse: {message}")]
    BadJson { message: String },
}

/// Encodes one frame from already-packed arguments.
pub fn encode(args: &[Arg]) -> Result<Vec<u8>, AmpError> {
    if args.is_empty() {
        return Err(AmpError::NoArgs);
    }
    if args.len() > MAX_ARGS {
        return Err(AmpError::TooManyArgs { count: args.len() });
    }
    let packed: Vec<Vec<u8>> = args.iter().map(Arg::to_bytes).collect();
    let len = 1 + packed.iter().map(|p| 4 + p.len()).sum::<usize>();
    if len > MAX_FRAME {
        return Err(AmpError::TooLarge { len, max: MAX_FRAME });
    }
    let mut out = Vec::with_capacity(len);
    // argc <= 15 was checked above, so the cast cannot truncate.
    out.push((VERSION << 4) | (args.len() as u8));
    for p in &packed {
        // p.len() <= MAX_FRAME < u32::MAX.
        out.extend_from_slice(&(p.len() as u32).to_be_bytes());
        out.extend_from_slice(p);
    }
    Ok(out)
}

/// Tries to take one complete frame from the front of `buf`.
///
/// Returns `Ok(None)` when more bytes are needed (nothing is consumed), or the frame
/// and the number of bytes it used. An error means the stream is corrupt and must be
/// dropped: AMP has no resynchronisation point.
pub fn decode(buf: &[u8]) -> Result<Option<(Vec<Arg>, usize)>, AmpError> {
    let Some((spans, used)) = decode_spans(buf)? else { return Ok(None) };
    let args = spans.into_iter().map(|span| Arg::parse(&buf[span])).collect::<Result<Vec<_>, _>>()?;
    Ok(Some((args, used)))
}

/// Where each argument of a frame lies in the buffer.
type Spans = Vec<Range<usize>>;

/// The header pass of [`decode`]: where each argument of the first complete frame
/// lies in `buf`, and the frame's length. Sizes are checked before anything is
/// allocated.
fn decode_spans(buf: &[u8]) -> Result<Option<(Spans, usize)>, AmpError> {
    let Some(&meta) = buf.first() else { return Ok(None) };
    let version = meta >> 4;
    if version != VERSION {
        return Err(AmpError::BadVersion { version });
    }
    let argc = usize::from(meta & 0x0f);
    if argc == 0 {
        return Err(AmpError::NoArgs);
    }
    let mut off = 1usize;
    let mut spans = Vec::with_capacity(argc);
    for _ in 0..argc {
        let Some(len_bytes) = buf.get(off..off + 4) else { return Ok(None) };
        let mut be = [0u8; 4];
        be.copy_from_slice(len_bytes);
        let len = u32::from_be_bytes(be) as usize;
        let total = off.saturating_add(4).saturating_add(len);
        if len > MAX_FRAME || total > MAX_FRAME {
            return Err(AmpError::TooLarge { len: total, max: MAX_FRAME });
        }
        off += 4;
        if buf.len() < off + len {
            return Ok(None);
        }
        spans.push(off..off + len);
        off += len;
    }
    Ok(Some((spans, off)))
}

/// A complete frame whose arguments are still bytes: a large reply can then be read
/// straight into typed values, without a `Value` tree in between.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFrame {
    bytes: Vec<u8>,
    spans: Vec<Range<usize>>,
}

impl RawFrame {
    /// How many arguments the frame has (at least one).
    pub fn arg_count(&self) -> usize {
        self.spans.len()
    }

    /// Argument `index` as packed (with its `s:`/`j:` prefix).
    pub fn arg(&self, index: usize) -> Option<&[u8]> {
        self.spans.get(index).and_then(|span| self.bytes.get(span.clone()))
    }

    /// Argument `index` decoded.
    pub fn decode_arg(&self, index: usize) -> Option<Result<Arg, AmpError>> {
        self.arg(index).map(Arg::parse)
    }

    /// The text of a `j:` argument, not parsed yet.
    pub fn json_arg(&self, index: usize) -> Option<&[u8]> {
        self.arg(index).and_then(|bytes| bytes.strip_prefix(b"j:"))
    }

    /// Every argument decoded, as [`decode`] returns them.
    pub fn into_args(self) -> Result<Vec<Arg>, AmpError> {
        self.spans.iter().map(|span| Arg::parse(&self.bytes[span.clone()])).collect()
    }
}

/// A growable read buffer that yields frames as they complete.
#[derive(Debug, Default)]
pub struct FrameBuffer {
    buf: Vec<u8>,
}

impl FrameBuffer {
    /// Appends bytes read from the socket.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Takes the next complete frame, if any.
    pub fn next_frame(&mut self) -> Result<Option<Vec<Arg>>, AmpError> {
        self.next_raw_frame()?.map(RawFrame::into_args).transpose()
    }

    /// Takes the next complete frame without parsing its arguments. The frame's bytes
    /// are moved out of the buffer, not copied (only what follows it is).
    pub fn next_raw_frame(&mut self) -> Result<Option<RawFrame>, AmpError> {
        let Some((spans, used)) = decode_spans(&self.buf)? else { return Ok(None) };
        let rest = self.buf.split_off(used);
        let bytes = std::mem::replace(&mut self.buf, rest);
        Ok(Some(RawFrame { bytes, spans }))
    }

    /// Bytes waiting for the rest of their frame.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// The buffer to read the socket into, with room for the rest of the frame being
    /// received once its length is known (else for `chunk` more bytes). Read with
    /// `read_buf`, a 700 KB process list lands in one allocation of its own size,
    /// instead of a chunk copied into a buffer that doubles its way there (which
    /// touched, and page-faulted, about three times the memory).
    pub fn room(&mut self, chunk: usize) -> &mut Vec<u8> {
        let end = frame_end(&self.buf).unwrap_or(0).max(self.buf.len() + chunk);
        self.buf.reserve_exact(end.saturating_sub(self.buf.len()));
        &mut self.buf
    }
}

/// Where the frame at the start of `buf` ends, as far as its header tells yet: the
/// end of the last argument whose length has arrived (plus room for a short one
/// after it). `None` without a valid header.
fn frame_end(buf: &[u8]) -> Option<usize> {
    let &meta = buf.first()?;
    if meta >> 4 != VERSION {
        return None;
    }
    let mut off = 1usize;
    for _ in 0..usize::from(meta & 0x0f) {
        let Some(len_bytes) = buf.get(off..off + 4) else { return Some(off + 64) };
        let mut be = [0u8; 4];
        be.copy_from_slice(len_bytes);
        let len = u32::from_be_bytes(be) as usize;
        if len > MAX_FRAME {
            return None;
        }
        off += 4 + len;
        if buf.len() < off {
            return Some(off + 64);
        }
    }
    Some(off)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn room_is_made_for_the_whole_frame_once_its_length_is_known() {
        let big = "x".repeat(300_000);
        let frame = encode(&[Arg::Json(json!(null)), Arg::Str(big), Arg::Str("id:1".into())]).unwrap();
        let mut fb = FrameBuffer::default();
        // Nothing known yet: room for a chunk.
        assert!(fb.room(1024).capacity() >= 1024);
        fb.extend(&frame[..20]);
        // The second argument's length has arrived: room for all of it at once.
        let capacity = fb.room(1024).capacity();
        assert!(capacity >= 1 + 4 + 4 + 4 + 300_000 && capacity < frame.len() + 1024 + 64, "{capacity}");
        fb.extend(&frame[20..]);
        assert_eq!(fb.next_raw_frame().unwrap().unwrap().arg_count(), 3);
        assert_eq!(frame_end(&[0xff]), None, "not an AMP header");
    }

    #[test]
    fn encodes_the_observed_ping_bytes() {
        // pm2-internals.md §1.3, observed on the wire (id "rust:7").
        let call = json!({"type": "call", "method": "ping", "args": [{}]});
        let frame = encode(&[Arg::Json(call), Arg::Str("rust:7".into())]).unwrap();
        assert_eq!(frame[0], 0x12);
        let (args, used) = decode(&frame).unwrap().unwrap();
        assert_eq!(used, frame.len());
        assert_eq!(args[1], Arg::Str("rust:7".into()));
    }

    #[test]
    fn decodes_a_reply_written_by_node() {
        // 12 | 00 00 00 1b | j:{"args":[{"msg":"pong"}]} | 00 00 00 08 | s:rust:7
        let body = br#"j:{"args":[{"msg":"pong"}]}"#;
        let mut frame = vec![0x12];
        frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
        frame.extend_from_slice(body);
        frame.extend_from_slice(&8u32.to_be_bytes());
        frame.extend_from_slice(b"s:rust:7");
        let (args, _) = decode(&frame).unwrap().unwrap();
        assert_eq!(args[0], Arg::Json(json!({"args": [{"msg": "pong"}]})));
    }

    #[test]
    fn truncated_frames_wait_for_more_bytes() {
        let frame = encode(&[Arg::Str("hello".into()), Arg::Json(json!([1, 2]))]).unwrap();
        for cut in 0..frame.len() {
            assert_eq!(decode(&frame[..cut]).unwrap(), None, "cut at {cut}");
        }
    }

    #[test]
    fn absurd_lengths_are_rejected_before_allocating() {
        let frame = [0x11, 0xff, 0xff, 0xff, 0xff, b's'];
        assert!(matches!(decode(&frame), Err(AmpError::TooLarge { .. })));
    }

    #[test]
    fn bad_arg_counts_and_versions_are_rejected() {
        assert_eq!(decode(&[0x10]), Err(AmpError::NoArgs));
        assert_eq!(decode(&[0x21, 0, 0, 0, 0]), Err(AmpError::BadVersion { version: 2 }));
        let too_many = vec![Arg::Str(String::new()); 16];
        assert_eq!(encode(&too_many), Err(AmpError::TooManyArgs { count: 16 }));
        assert_eq!(encode(&[]), Err(AmpError::NoArgs));
    }

    #[test]
    fn bad_payloads_are_errors() {
        let mut frame = vec![0x11, 0, 0, 0, 3];
        frame.extend_from_slice(b"j:{");
        assert!(matches!(decode(&frame), Err(AmpError::BadJson { .. })));
        let mut frame = vec![0x11, 0, 0, 0, 3];
        frame.extend_from_slice(b"s:\xff");
        assert_eq!(decode(&frame), Err(AmpError::BadUtf8));
    }

    #[test]
    fn frames_split_across_reads_reassemble() {
        let a = encode(&[Arg::Str("a".into())]).unwrap();
        let b = encode(&[Arg::Json(json!({"x": 1})), Arg::Blob(vec![1, 2, 3])]).unwrap();
        let stream = [a, b].concat();
        let mut fb = FrameBuffer::default();
        let mut got = Vec::new();
        for byte in &stream {
            fb.extend(std::slice::from_ref(byte));
            while let Some(frame) = fb.next_frame().unwrap() {
                got.push(frame);
            }
        }
        assert_eq!(got.len(), 2);
        assert_eq!(got[1][1], Arg::Blob(vec![1, 2, 3]));
        assert_eq!(fb.pending(), 0);
    }

    #[test]
    fn raw_frames_keep_arguments_as_bytes() {
        let frame = encode(&[Arg::Json(json!({"args": [1]})), Arg::Str("id:1".into())]).unwrap();
        let mut fb = FrameBuffer::default();
        fb.extend(&frame);
        fb.extend(&frame[..3]);
        let raw = fb.next_raw_frame().unwrap().unwrap();
        assert_eq!(raw.arg_count(), 2);
        assert_eq!(raw.json_arg(0), Some(br#"{"args":[1]}"#.as_slice()));
        assert_eq!(raw.json_arg(1), None, "an s: argument is not JSON");
        assert_eq!(raw.decode_arg(1), Some(Ok(Arg::Str("id:1".into()))));
        assert_eq!(raw.arg(2), None);
        assert_eq!(fb.pending(), 3, "the next frame's first bytes stay");
        assert_eq!(fb.next_raw_frame().unwrap(), None);
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn decode_never_panics_on_plausible_headers(
            argc in 0u8..16,
            lens in proptest::collection::vec(any::<u32>(), 0..16),
            tail in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut bytes = vec![0x10 | argc];
            for len in lens { bytes.extend_from_slice(&len.to_be_bytes()); }
            bytes.extend_from_slice(&tail);
            let _ = decode(&bytes);
        }

        #[test]
        fn encode_then_decode_round_trips(strings in proptest::collection::vec(".*", 1..15)) {
            let args: Vec<Arg> = strings.into_iter().map(Arg::Str).collect();
            let frame = encode(&args).unwrap();
            let (back, used) = decode(&frame).unwrap().unwrap();
            prop_assert_eq!(used, frame.len());
            prop_assert_eq!(back, args);
        }
    }
}
