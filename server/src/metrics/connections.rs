//! Counts open gRPC connections and streams for the metrics endpoint.
//!
//! Counts live in atomics and are copied into gauges at scrape time (see
//! the parent module): a gauge updated only when a connection opens or
//! closes would expire while a long-lived connection sits idle.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

use super::names;

/// Which kind of gRPC stream is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    /// `Publisher.PublishStream`.
    Publish,
    /// `Subscriber.Subscribe`.
    Subscribe,
    /// `Subscriber.Read`.
    Read,
}

impl StreamKind {
    const ALL: [StreamKind; 3] = [StreamKind::Publish, StreamKind::Subscribe, StreamKind::Read];

    fn label(self) -> &'static str {
        match self {
            StreamKind::Publish => "publish",
            StreamKind::Subscribe => "subscribe",
            StreamKind::Read => "read",
        }
    }
}

/// Open connections and streams of one server; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct OpenCounts {
    /// Accepted TCP connections not yet closed.
    connections: Arc<AtomicI64>,
    /// Open streams, indexed like [`StreamKind::ALL`].
    streams: Arc<[AtomicI64; 3]>,
}

impl OpenCounts {
    /// Counts `socket` as open until the returned wrapper is dropped.
    pub fn connection(&self, socket: TcpStream) -> CountedConnection {
        self.connections.fetch_add(1, Ordering::Relaxed);
        CountedConnection {
            inner: socket,
            open: self.connections.clone(),
        }
    }

    /// Counts a stream of `kind` as open until the guard is dropped (keep it
    /// in the stream's task or response stream).
    pub fn stream(&self, kind: StreamKind) -> StreamGuard {
        self.streams[kind as usize].fetch_add(1, Ordering::Relaxed);
        StreamGuard {
            counts: self.clone(),
            kind,
        }
    }

    /// Copies the counts into their gauges.
    pub fn record(&self) {
        metrics::gauge!(names::CONNECTIONS_OPEN)
            .set(self.connections.load(Ordering::Relaxed) as f64);
        for kind in StreamKind::ALL {
            metrics::gauge!(names::STREAMS_OPEN, "stream" => kind.label())
                .set(self.streams[kind as usize].load(Ordering::Relaxed) as f64);
        }
    }

    /// Open streams of `kind` (for tests).
    pub fn streams_open(&self, kind: StreamKind) -> i64 {
        self.streams[kind as usize].load(Ordering::Relaxed)
    }
}

/// Decrements its stream count when dropped.
#[derive(Debug)]
pub struct StreamGuard {
    counts: OpenCounts,
    kind: StreamKind,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.counts.streams[self.kind as usize].fetch_sub(1, Ordering::Relaxed);
    }
}

/// A TCP connection counted as open until dropped (when hyper is done
/// with it); otherwise exactly the `TcpStream`.
#[derive(Debug)]
pub struct CountedConnection {
    inner: TcpStream,
    open: Arc<AtomicI64>,
}

impl Drop for CountedConnection {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Connected for CountedConnection {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.inner.connect_info()
    }
}

impl AsyncRead for CountedConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for CountedConnection {
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

    #[test]
    fn stream_guards_count_while_alive() {
        let counts = OpenCounts::default();
        let a = counts.stream(StreamKind::Subscribe);
        let b = counts.stream(StreamKind::Subscribe);
        let _p = counts.stream(StreamKind::Publish);
        assert_eq!(counts.streams_open(StreamKind::Subscribe), 2);
        drop(a);
        drop(b);
        assert_eq!(counts.streams_open(StreamKind::Subscribe), 0);
        assert_eq!(counts.streams_open(StreamKind::Publish), 1);
    }
}
