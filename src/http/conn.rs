//! Connections: how many, and how long each may take. Owns the listener wrapper that caps
//! concurrent connections ([`super::Limits::max_connections`]), the deadline for a request
//! head ([`super::Limits::head_timeout`], axum's server has none) and the idle deadline of a
//! connection. Never looks at what a request asks for: it only sees bytes go by (to find the
//! end of a head).
//!
//! At the cap, a new connection is let in by closing the connection that has been waiting
//! longest for a complete request head (a slow client, or an idle keep-alive), so thousands
//! of clients trickling header bytes cannot keep `/metrics` out; when every connection is busy
//! with a request, the accept waits for one to finish (the kernel's backlog holds the rest).
//! Open file descriptors stay bounded by the cap either way.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};

use super::Limits;

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// One connection as the limiter sees it.
#[derive(Default)]
struct Slot {
    /// Since when (Unix ms) it has been waiting for a complete request head; 0 while a
    /// request is being served.
    waiting_since_ms: AtomicI64,
    /// Closed to make room: its next poll fails.
    evicted: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl Slot {
    fn evict(&self) {
        self.evicted.store(true, Relaxed);
        if let Some(w) = self.waker.lock().unwrap_or_else(|p| p.into_inner()).take() {
            w.wake();
        }
    }
}

/// The open connections, shared by the listener and every connection.
struct Registry {
    open: AtomicUsize,
    closed: Notify,
    slots: Mutex<VecDeque<Weak<Slot>>>,
    /// Connections closed to make room (for the log's count).
    evictions: AtomicUsize,
}

impl Registry {
    /// Closes the connection waiting longest for its request head; false if none is.
    fn evict_oldest_waiting(&self) -> bool {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.retain(|w| w.strong_count() > 0);
        let oldest = slots
            .iter()
            .filter_map(Weak::upgrade)
            .filter(|s| !s.evicted.load(Relaxed) && s.waiting_since_ms.load(Relaxed) != 0)
            .min_by_key(|s| s.waiting_since_ms.load(Relaxed));
        match oldest {
            Some(slot) => {
                slot.evict();
                self.evictions.fetch_add(1, Relaxed);
                true
            }
            None => false,
        }
    }
}

/// Hands out [`LimitedIo`] connections, at most `max` at once.
pub(super) struct LimitedListener {
    inner: TcpListener,
    limits: Limits,
    registry: Arc<Registry>,
}

impl LimitedListener {
    pub(super) fn new(inner: TcpListener, limits: &Limits) -> LimitedListener {
        let registry = Arc::new(Registry {
            open: AtomicUsize::new(0),
            closed: Notify::new(),
            slots: Mutex::new(VecDeque::new()),
            evictions: AtomicUsize::new(0),
        });
        LimitedListener { inner, limits: *limits, registry }
    }

    /// Waits until a connection may be opened, making room if one is only waiting.
    async fn room(&self) {
        let max = self.limits.max_connections.max(1);
        loop {
            let closed = self.registry.closed.notified();
            if self.registry.open.load(Relaxed) < max {
                return;
            }
            if self.registry.evict_oldest_waiting() {
                let n = self.registry.evictions.load(Relaxed);
                if n.is_power_of_two() {
                    tracing::warn!(
                        max_connections = max,
                        evicted = n,
                        "HTTP connection limit reached: closing connections that send no complete request"
                    );
                }
            }
            closed.await;
        }
    }
}

impl axum::serve::Listener for LimitedListener {
    type Io = LimitedIo;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        self.room().await;
        let (io, addr) = axum::serve::Listener::accept(&mut self.inner).await;
        let slot = Arc::new(Slot::default());
        slot.waiting_since_ms.store(now_ms(), Relaxed);
        self.registry.open.fetch_add(1, Relaxed);
        self.registry.slots.lock().unwrap_or_else(|p| p.into_inner()).push_back(Arc::downgrade(&slot));
        let io = LimitedIo {
            inner: io,
            limits: self.limits,
            idle: Box::pin(tokio::time::sleep(self.limits.idle_timeout)),
            head: Box::pin(tokio::time::sleep(self.limits.head_timeout)),
            head_armed: true,
            head_end: HeadEnd::default(),
            slot,
            registry: self.registry.clone(),
        };
        (io, addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// Finds the blank line ending a request head across reads.
#[derive(Default)]
struct HeadEnd {
    /// Consecutive line-end bytes seen: `\r\n\r\n` or `\n\n` ends the head.
    newlines: u8,
}

impl HeadEnd {
    /// True once the bytes so far complete a head.
    fn feed(&mut self, bytes: &[u8]) -> bool {
        for &b in bytes {
            match b {
                b'\n' => {
                    self.newlines += 1;
                    if self.newlines == 2 {
                        self.newlines = 0;
                        return true;
                    }
                }
                b'\r' => {}
                _ => self.newlines = 0,
            }
        }
        false
    }
}

/// A TCP stream with the connection's deadlines: no progress for `idle_timeout`, or a request
/// head not complete `head_timeout` after its first byte (after the accept for the first
/// request), fails it with `TimedOut`; so does being evicted to make room.
pub(super) struct LimitedIo {
    inner: TcpStream,
    limits: Limits,
    idle: Pin<Box<Sleep>>,
    head: Pin<Box<Sleep>>,
    /// A request head is being read and `head` runs.
    head_armed: bool,
    head_end: HeadEnd,
    slot: Arc<Slot>,
    registry: Arc<Registry>,
}

impl Drop for LimitedIo {
    fn drop(&mut self) {
        self.registry.open.fetch_sub(1, Relaxed);
        self.registry.closed.notify_waiters();
    }
}

impl LimitedIo {
    fn progressed(&mut self) {
        self.idle.as_mut().reset(Instant::now() + self.limits.idle_timeout);
    }

    fn read_bytes(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if self.slot.waiting_since_ms.load(Relaxed) != 0 && !self.head_armed {
            // the first byte of the next request on a kept-alive connection
            self.head_armed = true;
            self.head.as_mut().reset(Instant::now() + self.limits.head_timeout);
        }
        if self.head_armed && self.head_end.feed(bytes) {
            self.head_armed = false;
            self.slot.waiting_since_ms.store(0, Relaxed);
        }
    }

    fn wrote(&mut self) {
        // a response went out: what comes next is a new request head (or nothing)
        if self.slot.waiting_since_ms.load(Relaxed) == 0 {
            self.slot.waiting_since_ms.store(now_ms(), Relaxed);
            self.head_end = HeadEnd::default();
        }
    }

    /// Called when the inner stream is pending: errors once a deadline has passed or the
    /// connection was evicted.
    fn check<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        *self.slot.waker.lock().unwrap_or_else(|p| p.into_inner()) = Some(cx.waker().clone());
        if self.slot.evicted.load(Relaxed) {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "closed to make room")));
        }
        if self.head_armed && self.head.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "request head not complete in time")));
        }
        match self.idle.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "connection idle"))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for LimitedIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.slot.evicted.load(Relaxed) {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "closed to make room")));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                this.progressed();
                let filled = buf.filled()[before..].to_vec();
                this.read_bytes(&filled);
                Poll::Ready(result)
            }
            Poll::Pending => this.check(cx),
        }
    }
}

impl AsyncWrite for LimitedIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Ready(result) => {
                this.progressed();
                this.wrote();
                Poll::Ready(result)
            }
            Poll::Pending => this.check(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write_vectored(cx, bufs) {
            Poll::Ready(result) => {
                this.progressed();
                this.wrote();
                Poll::Ready(result)
            }
            Poll::Pending => this.check(cx),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::HeadEnd;

    #[test]
    fn a_head_ends_at_the_first_blank_line_whatever_the_read_boundaries() {
        let mut h = HeadEnd::default();
        assert!(!h.feed(b"GET / HTTP/1.1\r\nHost: x\r"));
        assert!(!h.feed(b"\n"));
        assert!(h.feed(b"\r\n"));
        let mut h = HeadEnd::default();
        assert!(!h.feed(b"GET / HTTP/1.1\r\nA: b\r\n"));
        assert!(!h.feed(b"X"));
        assert!(h.feed(b"\n\n"));
    }
}
