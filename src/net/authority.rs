//! Requests whose `:authority` is not an authority, mended before h2 reads
//! them.
//!
//! etcdctl 3.4 runs `endpoint status`, `endpoint hashkv`, `snapshot save`
//! and `move-leader` on a connection of their own to each endpoint, dialed
//! as the gRPC target `passthrough:///http://HOST:PORT`; grpc-go then sends
//! `http://HOST:PORT` as every request's `:authority` (etcd's 3.5.0 client
//! sent `#initially=[...]`). etcd's Go server ignores the field. h2 refuses
//! such a request as malformed (`RST_STREAM` with `PROTOCOL_ERROR`) before
//! any service sees it, and will not relax that (hyperium/h2#525), so
//! `etcdctl --endpoints http://... endpoint status` failed here.
//!
//! [`Mended`] wraps a served connection's reads. It follows the HTTP/2
//! frames going by, and in a `HEADERS` frame whose header block has a
//! literal `:authority` that does not parse as one, it replaces the value
//! with one that does and has the same length: the scheme dropped and the
//! rest kept, behind a filler user name (`http://127.0.0.1:2379` becomes
//! `xxxxxx@127.0.0.1:2379`), or only `x`s. The same length keeps h2's
//! header table the same size as the client's, so the client's later
//! references to the entry (grpc-go indexes `:authority`) stay in step.
//! No service reads the authority.
//!
//! Everything else passes through unchanged, in place: frames are followed
//! by their 9-byte headers, and only a `HEADERS` frame cut by a read (or
//! one to mend) is held until it is whole. A connection that does not open
//! with the HTTP/2 preface (HTTP/1) is not looked at again. A header block
//! the scan cannot follow is passed on as it is, for h2 to judge.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What an HTTP/2 client sends first.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// A frame header's size.
const HEAD: usize = 9;
/// The `HEADERS` frame type.
const HEADERS: u8 = 0x1;
/// The flags of a `HEADERS` frame that add fields before the block.
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The largest frame payload a mended frame may have (HTTP/2's default
/// `SETTINGS_MAX_FRAME_SIZE`, which our server does not raise).
const MAX_PAYLOAD: usize = 16_384;

/// Where the scan is in the byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scan {
    /// Within the preface, this many bytes matched so far.
    Preface(usize),
    /// At a frame's first byte.
    Frame,
    /// Within a frame's payload that passes as it is: bytes left.
    Skip(usize),
    /// Not HTTP/2, or given up: everything passes.
    Off,
}

/// A connection whose incoming requests have their `:authority` mended (see
/// the module docs). Writes pass through.
pub struct Mended<S> {
    inner: S,
    scan: Scan,
    /// A frame's first bytes, held until the frame can be judged: a frame
    /// header cut by a read, or a whole `HEADERS` frame being collected.
    held: Vec<u8>,
    /// Bytes released from `held`, not yet handed out.
    out: Vec<u8>,
    out_at: usize,
}

impl<S> Mended<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            scan: Scan::Preface(0),
            held: Vec::new(),
            out: Vec::new(),
            out_at: 0,
        }
    }

    /// Follow `data` as it passes unchanged; returns how many of its bytes
    /// may pass now. Those from there on start a frame that must be held
    /// ([`Self::feed`]): a frame header or a `HEADERS` frame cut short, or
    /// a `HEADERS` frame to mend.
    fn pass(&mut self, data: &[u8]) -> usize {
        let mut at = 0;
        while at < data.len() {
            let rest = &data[at..];
            match self.scan {
                Scan::Off => return data.len(),
                Scan::Preface(seen) => {
                    let n = rest.len().min(PREFACE.len() - seen);
                    if rest[..n] != PREFACE[seen..seen + n] {
                        self.scan = Scan::Off;
                        return data.len();
                    }
                    at += n;
                    self.scan = if seen + n == PREFACE.len() {
                        Scan::Frame
                    } else {
                        Scan::Preface(seen + n)
                    };
                }
                Scan::Skip(left) => {
                    let n = rest.len().min(left);
                    at += n;
                    self.scan = if n == left {
                        Scan::Frame
                    } else {
                        Scan::Skip(left - n)
                    };
                }
                Scan::Frame => {
                    let Some(head) = rest.first_chunk::<HEAD>() else {
                        return at;
                    };
                    let (len, kind) = frame_head(head);
                    if kind != HEADERS {
                        at += HEAD;
                        self.scan = if len == 0 {
                            Scan::Frame
                        } else {
                            Scan::Skip(len)
                        };
                        continue;
                    }
                    match rest.get(..HEAD + len) {
                        Some(frame) if mend(frame).is_none() => at += HEAD + len,
                        _ => return at,
                    }
                }
            }
        }
        at
    }

    /// Take `data`, which starts at a frame boundary or continues what is
    /// held, through the held frame: released bytes go to `out`.
    fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.held.is_empty() {
                let n = self.pass(data);
                self.out.extend_from_slice(&data[..n]);
                data = &data[n..];
                if data.is_empty() {
                    break;
                }
            }
            // A frame is held: complete its header, then (HEADERS) its payload.
            if self.held.len() < HEAD {
                let n = data.len().min(HEAD - self.held.len());
                self.held.extend_from_slice(&data[..n]);
                data = &data[n..];
                if self.held.len() < HEAD {
                    break;
                }
            }
            let head = self
                .held
                .first_chunk::<HEAD>()
                .copied()
                .unwrap_or([0; HEAD]);
            let (len, kind) = frame_head(&head);
            if kind != HEADERS {
                self.out.append(&mut self.held);
                self.scan = if len == 0 {
                    Scan::Frame
                } else {
                    Scan::Skip(len)
                };
                continue;
            }
            let n = data.len().min(HEAD + len - self.held.len());
            self.held.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.held.len() < HEAD + len {
                break;
            }
            match mend(&self.held) {
                Some(frame) => {
                    tracing::debug!("mended a request's malformed :authority");
                    self.out.extend_from_slice(&frame);
                    self.held.clear();
                }
                None => self.out.append(&mut self.held),
            }
            self.scan = Scan::Frame;
            if self.held.capacity() > 4 * MAX_PAYLOAD {
                self.held = Vec::new();
            }
        }
    }
}

/// A frame header's payload length and type.
fn frame_head(head: &[u8; HEAD]) -> (usize, u8) {
    let len = (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
    (len, head[3])
}

/// The `HEADERS` frame `frame` (header and whole payload) with its
/// `:authority` mended, or `None` if it needs no mending or cannot be
/// followed.
fn mend(frame: &[u8]) -> Option<Vec<u8>> {
    let (head, payload) = frame.split_first_chunk::<HEAD>()?;
    let flags = head[4];
    let mut start = 0;
    let mut pad = 0;
    if flags & PADDED != 0 {
        pad = usize::from(*payload.first()?);
        start = 1;
    }
    if flags & PRIORITY != 0 {
        start += 5;
    }
    let end = payload.len().checked_sub(pad)?;
    let block = payload.get(start..end)?;
    let (value_at, value_end, value) = find_authority(block)?;
    if http::uri::Authority::try_from(value.as_slice()).is_ok() {
        return None;
    }
    let fixed = same_length_authority(&value);
    let mut new_block = Vec::with_capacity(block.len() + fixed.len() + 8);
    new_block.extend_from_slice(&block[..value_at]);
    put_string(&mut new_block, &fixed);
    new_block.extend_from_slice(&block[value_end..]);
    let new_len = start + new_block.len() + pad;
    if new_len > MAX_PAYLOAD {
        return None;
    }
    let mut out = Vec::with_capacity(HEAD + new_len);
    out.extend_from_slice(&[(new_len >> 16) as u8, (new_len >> 8) as u8, new_len as u8]);
    out.extend_from_slice(&head[3..]);
    out.extend_from_slice(&payload[..start]);
    out.extend_from_slice(&new_block);
    out.extend_from_slice(&payload[end..]);
    Some(out)
}

/// The first literal field of `block` named `:authority` by the static
/// table (index 1): where its value string starts and ends, and the value
/// decoded. `None` if there is none or the block cannot be followed.
fn find_authority(block: &[u8]) -> Option<(usize, usize, Vec<u8>)> {
    let mut at = 0;
    while at < block.len() {
        let b = block[at];
        if b & 0x80 != 0 {
            // Indexed field.
            integer(block, &mut at, 7)?;
            continue;
        }
        if b & 0xE0 == 0x20 {
            // Dynamic table size update.
            integer(block, &mut at, 5)?;
            continue;
        }
        // A literal: with incremental indexing (01), or without / never
        // indexed (0000 / 0001).
        let prefix = if b & 0xC0 == 0x40 { 6 } else { 4 };
        let name = integer(block, &mut at, prefix)?;
        if name == 0 {
            string(block, &mut at)?;
        }
        let value_at = at;
        let (huffman, raw) = string(block, &mut at)?;
        if name == 1 {
            let value = if huffman {
                fluke_hpack::huffman::HuffmanDecoder::new()
                    .decode(raw)
                    .ok()?
            } else {
                raw.to_vec()
            };
            return Some((value_at, at, value));
        }
    }
    None
}

/// An HPACK integer with an `n`-bit prefix at `block[*at]`; advances `at`.
fn integer(block: &[u8], at: &mut usize, n: u32) -> Option<usize> {
    let mask = (1usize << n) - 1;
    let mut value = usize::from(*block.get(*at)?) & mask;
    *at += 1;
    if value < mask {
        return Some(value);
    }
    let mut shift = 0;
    loop {
        let b = *block.get(*at)?;
        *at += 1;
        value = value.checked_add(usize::from(b & 0x7f).checked_shl(shift)?)?;
        if b & 0x80 == 0 {
            return Some(value);
        }
        shift += 7;
        if shift > 28 {
            return None;
        }
    }
}

/// An HPACK string at `block[*at]`: whether it is Huffman-coded, and its
/// bytes; advances `at`.
fn string<'a>(block: &'a [u8], at: &mut usize) -> Option<(bool, &'a [u8])> {
    let huffman = *block.get(*at)? & 0x80 != 0;
    let len = integer(block, at, 7)?;
    let bytes = block.get(*at..at.checked_add(len)?)?;
    *at += len;
    Some((huffman, bytes))
}

/// `value` as a plain (not Huffman-coded) HPACK string.
fn put_string(out: &mut Vec<u8>, value: &[u8]) {
    let len = value.len();
    if len < 0x7f {
        out.push(len as u8);
    } else {
        out.push(0x7f);
        let mut rest = len - 0x7f;
        while rest >= 0x80 {
            out.push((rest as u8 & 0x7f) | 0x80);
            rest >>= 7;
        }
        out.push(rest as u8);
    }
    out.extend_from_slice(value);
}

/// A valid authority as long as `value`: what follows a `scheme://`, behind
/// a filler user name, if that is valid; else `x`s.
fn same_length_authority(value: &[u8]) -> Vec<u8> {
    let rest = value
        .windows(3)
        .position(|w| w == b"://")
        .map(|i| &value[i + 3..]);
    if let Some(rest) = rest {
        let filler = value.len() - rest.len();
        let mut fixed = vec![b'x'; filler - 1];
        fixed.push(b'@');
        fixed.extend_from_slice(rest);
        if http::uri::Authority::try_from(fixed.as_slice()).is_ok() {
            return fixed;
        }
    }
    vec![b'x'; value.len()]
}

impl<S: AsyncRead + Unpin> AsyncRead for Mended<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.out_at < this.out.len() {
                let n = buf.remaining().min(this.out.len() - this.out_at);
                buf.put_slice(&this.out[this.out_at..this.out_at + n]);
                this.out_at += n;
                if this.out_at == this.out.len() {
                    this.out.clear();
                    this.out_at = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.scan == Scan::Off && this.held.is_empty() {
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            let start = buf.filled().len();
            ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
            let end = buf.filled().len();
            if end == start {
                // The end: whatever is held goes as it is.
                if this.held.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                this.out.append(&mut this.held);
                this.scan = Scan::Off;
                continue;
            }
            let passed = if this.held.is_empty() {
                this.pass(&buf.filled()[start..end])
            } else {
                0
            };
            if start + passed < end {
                // Held back: taken out of the caller's buffer as fed.
                this.feed(&buf.filled()[start + passed..end]);
                buf.set_filled(start + passed);
            }
            if passed > 0 {
                return Poll::Ready(Ok(()));
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Mended<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A frame: header and payload.
    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    /// A GET of `/` with `:authority` `authority` (a literal with
    /// incremental indexing of static name 1), ending the stream.
    fn get(stream: u32, authority: &[u8], flags: u8, pad: &[u8]) -> Vec<u8> {
        let mut block = vec![0x82, 0x86, 0x84, 0x41];
        put_string(&mut block, authority);
        let mut payload = Vec::new();
        if flags & PADDED != 0 {
            payload.push(pad.len() as u8);
        }
        payload.extend_from_slice(&block);
        payload.extend_from_slice(pad);
        frame(HEADERS, 0x5 | flags, stream, &payload)
    }

    /// Serve HTTP/2 through [`Mended`]; every request is answered 200 if
    /// its authority is `want`, else 500. Returns the client's end.
    fn server(want: &'static str) -> tokio::io::DuplexStream {
        let (client, server) = tokio::io::duplex(1 << 16);
        tokio::spawn(async move {
            let svc =
                hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let ok = req.uri().authority().map(|a| a.as_str()) == Some(want);
                    async move {
                        let mut resp = http::Response::new(String::new());
                        if !ok {
                            *resp.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
                        }
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
            let io = hyper_util::rt::TokioIo::new(Mended::new(server));
            let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                .serve_connection(io, svc)
                .await;
        });
        client
    }

    /// Read frames until the answer on `stream`: its `:status` byte (0x88
    /// is an indexed 200, 0x8e 500), or `None` for a reset.
    async fn answer(io: &mut tokio::io::DuplexStream, stream: u32) -> Option<u8> {
        loop {
            let mut head = [0u8; HEAD];
            io.read_exact(&mut head).await.unwrap();
            let (len, kind) = frame_head(&head);
            let mut payload = vec![0u8; len];
            io.read_exact(&mut payload).await.unwrap();
            let id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
            if id != stream {
                continue;
            }
            match kind {
                HEADERS => return Some(payload[0]),
                3 => return None,
                _ => {}
            }
        }
    }

    /// Write `bytes` a few at a time, so reads cut frames anywhere.
    async fn dribble(io: &mut tokio::io::DuplexStream, bytes: &[u8], step: usize) {
        for chunk in bytes.chunks(step) {
            io.write_all(chunk).await.unwrap();
            io.flush().await.unwrap();
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn a_scheme_in_the_authority_is_mended_and_the_header_table_stays_in_step() {
        for step in [1, 3, 7, 4096] {
            let mut c = server("xxxxxx@127.0.0.1:2379");
            let mut hello = PREFACE.to_vec();
            hello.extend(frame(4, 0, 0, &[]));
            hello.extend(frame(8, 0, 0, &[0, 0, 0, 1])); // a WINDOW_UPDATE
            hello.extend(get(1, b"http://127.0.0.1:2379", 0, &[]));
            dribble(&mut c, &hello, step).await;
            assert_eq!(answer(&mut c, 1).await, Some(0x88), "step {step}");
            // The next request names the authority by its table entry (62):
            // h2's table holds the mended value at the same place.
            let again = frame(HEADERS, 0x5, 3, &[0x82, 0x86, 0x84, 0xbe]);
            dribble(&mut c, &again, step).await;
            assert_eq!(answer(&mut c, 3).await, Some(0x88), "step {step}");
            // Padded, and an authority without a scheme: x's.
            let odd = get(5, b"#initially=[a]", PADDED, &[0; 6]);
            dribble(&mut c, &odd, step).await;
            // Served (500: the test server wants the first authority).
            assert_eq!(answer(&mut c, 5).await, Some(0x8e), "step {step}");
        }
    }

    #[tokio::test]
    async fn valid_authorities_and_http1_pass_untouched() {
        let mut c = server("127.0.0.1:2379");
        let mut hello = PREFACE.to_vec();
        hello.extend(frame(4, 0, 0, &[]));
        hello.extend(get(1, b"127.0.0.1:2379", 0, &[]));
        dribble(&mut c, &hello, 5).await;
        assert_eq!(answer(&mut c, 1).await, Some(0x88));

        // Not HTTP/2: the bytes are not followed.
        let (mut a, b) = tokio::io::duplex(1024);
        let mut m = Mended::new(b);
        a.write_all(b"GET / HTTP/1.1\r\n\r\n\x00\x00\x05\x01")
            .await
            .unwrap();
        drop(a);
        let mut got = Vec::new();
        m.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"GET / HTTP/1.1\r\n\r\n\x00\x00\x05\x01");
    }

    #[test]
    fn mending_keeps_the_length_and_gives_a_valid_authority() {
        for bad in [
            "http://127.0.0.1:2379",
            "https://a.example:2379",
            "unix://x",
            "#initially=[]",
        ] {
            let fixed = same_length_authority(bad.as_bytes());
            assert_eq!(fixed.len(), bad.len(), "{bad}");
            assert!(
                http::uri::Authority::try_from(fixed.as_slice()).is_ok(),
                "{bad}"
            );
        }
        assert_eq!(same_length_authority(b"http://h:1"), b"xxxxxx@h:1");
        // A Huffman-coded value is decoded (RFC 7541 C.4.1's
        // "www.example.com"), and a valid one needs no mending.
        let mut block = vec![0x41, 0x8c];
        block.extend_from_slice(&[
            0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab, 0x90, 0xf4, 0xff,
        ]);
        let (_, _, value) = find_authority(&block).unwrap();
        assert_eq!(value, b"www.example.com");
        assert!(mend(&frame(HEADERS, 0x4, 1, &block)).is_none());
        // A block that cannot be followed is left alone.
        assert!(mend(&frame(HEADERS, 0x4, 1, &[0x41, 0x90, 0x01])).is_none());
    }
}
