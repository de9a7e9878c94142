//! Writes gathered per connection, so that the responses finished together
//! leave in one `writev` instead of one or two each.
//!
//! hyper serves HTTP/2 with one task per connection, which writes the
//! frames queued so far and flushes at the end of each of its polls, and
//! one task per request, which queues its response frames (headers, data,
//! trailers) and wakes the connection. When a batch of writes is applied,
//! its replies wake their request tasks together, and each of them used to
//! wake the connection into a flush of its own: a `writev` (loopback TCP
//! send, the receiver's wake-up) per response or more (measured: 1.7 per
//! serializable get under 64 clients, writev being 29% of the member's
//! CPU).
//!
//! [`Gathered`] holds what is written in a buffer and, at a flush, lets the
//! connection's task go once to the back of its worker's run queue before
//! writing: the request tasks already queued there run first and add their
//! frames, and everything leaves in one system call. It is a yield, not a
//! timer, and a connection whose yields gather nothing (a client with one
//! request at a time) stops yielding for a while, so a lone request pays
//! for no wait. Large writes (at least [`GATHER_LIMIT`]) go straight
//! through.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Buffered bytes at which a write goes out without waiting for a flush;
/// a write at least this large into an empty buffer is not copied.
pub const GATHER_LIMIT: usize = 64 * 1024;

/// Yields in a row that gather nothing before a connection stops yielding.
const IDLE_YIELDS: u32 = 2;
/// Flushes written at once after that, before the next try.
const SKIP_FLUSHES: u32 = 32;

/// A stream whose writes are gathered until a flush (see the module docs).
pub struct Gathered<S> {
    inner: S,
    buf: Vec<u8>,
    /// How much of `buf` the stream has taken.
    sent: usize,
    /// The flush in progress has already yielded once, with this much
    /// buffered.
    yielded: Option<usize>,
    /// Yields in a row that gathered nothing more.
    idle_yields: u32,
    /// Flushes to write at once before trying a yield again.
    skip: u32,
}

impl<S> Gathered<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            buf: Vec::new(),
            sent: 0,
            yielded: None,
            idle_yields: 0,
            skip: 0,
        }
    }

    /// After a yield: whether it gathered more. A connection whose yields
    /// gather nothing (one request at a time) writes at once for a while,
    /// then tries again.
    fn learn(&mut self, gathered: bool) {
        self.yielded = None;
        if gathered {
            self.idle_yields = 0;
            return;
        }
        self.idle_yields += 1;
        if self.idle_yields >= IDLE_YIELDS {
            self.idle_yields = 0;
            self.skip = SKIP_FLUSHES;
        }
    }
}

impl<S: AsyncWrite + Unpin> Gathered<S> {
    /// Write out everything buffered.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.buf.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.buf[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.buf.clear();
        self.sent = 0;
        // Do not keep a large buffer for an idle connection.
        if self.buf.capacity() > 4 * GATHER_LIMIT {
            self.buf = Vec::new();
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Gathered<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Gathered<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[io::IoSlice::new(data)])
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.buf.len() >= GATHER_LIMIT {
            ready!(this.poll_drain(cx))?;
        }
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if this.buf.is_empty() && total >= GATHER_LIMIT {
            return Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        }
        for b in bufs {
            this.buf.extend_from_slice(b);
        }
        Poll::Ready(Ok(total))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.sent < this.buf.len() && this.yielded.is_none() {
            if this.skip == 0 {
                // Once to the back of the run queue: the tasks already
                // queued there add their writes first.
                this.yielded = Some(this.buf.len());
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            this.skip -= 1;
        }
        if let Some(before) = this.yielded {
            this.learn(this.buf.len() > before);
        }
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn writes_leave_at_the_flush_in_order_and_large_ones_go_straight_through() {
        let (a, mut b) = tokio::io::duplex(4 * GATHER_LIMIT);
        let mut w = Gathered::new(a);
        w.write_all(b"one ").await.unwrap();
        w.write_all(b"two").await.unwrap();
        // Nothing has reached the other end before the flush.
        let mut probe = [0u8; 16];
        let early =
            tokio::time::timeout(std::time::Duration::from_millis(50), b.read(&mut probe)).await;
        assert!(early.is_err(), "bytes left before the flush: {early:?}");
        w.flush().await.unwrap();
        let mut got = [0u8; 7];
        b.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"one two");

        // A large write into an empty buffer is passed on as it comes.
        let big = vec![7u8; GATHER_LIMIT];
        w.write_all(&big).await.unwrap();
        let mut got = vec![0u8; GATHER_LIMIT];
        b.read_exact(&mut got).await.unwrap();
        assert_eq!(got, big);

        // Small writes past the limit go out without a flush, in order.
        for i in 0..(GATHER_LIMIT / 1000 + 2) {
            w.write_all(&[(i % 251) as u8; 1000]).await.unwrap();
        }
        let mut got = vec![0u8; GATHER_LIMIT];
        b.read_exact(&mut got).await.unwrap();
        assert!(got
            .chunks(1000)
            .enumerate()
            .all(|(i, c)| c.iter().all(|&x| x == (i % 251) as u8)));

        // Shutdown writes what is left first.
        w.write_all(b"tail").await.unwrap();
        w.shutdown().await.unwrap();
        let mut rest = Vec::new();
        b.read_to_end(&mut rest).await.unwrap();
        assert_eq!(
            rest.len(),
            (GATHER_LIMIT / 1000 + 2) * 1000 - GATHER_LIMIT + 4
        );
        assert!(rest.ends_with(b"tail"));
    }
}
