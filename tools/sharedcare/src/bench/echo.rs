//! The bench's own echo server: a bare tonic server (no auth, limits,
//! tracing or other layers) answering `grpc.health.v1.Health/Check`, on
//! `127.0.0.1:0`, plaintext or over the platform's own mutual TLS.
//!
//! Health/Check is the echo because every platform service serves it with
//! the same tonic and the same generated code path: one tiny protobuf
//! message each way and a map lookup, nothing else. A proto of our own
//! would measure the same thing and add an API to keep.
//!
//! It runs on a runtime of its own with two worker threads, in a thread of
//! its own, so that, like `sharedcare dev` in its own process, it competes
//! for the same cores as the load it answers rather than sharing the load's
//! runtime.

use std::net::SocketAddr;

use anyhow::{Context, anyhow};
use sharedcare_kit::tls::Tls;
use tokio::sync::oneshot;

pub struct EchoServer {
    pub url: String,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EchoServer {
    /// Starts serving; over TLS with `tls` (the URL is then https://).
    pub fn start(tls: Option<Tls>) -> anyhow::Result<EchoServer> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .context("binding the echo server to 127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr: SocketAddr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("bench-echo")
            .enable_all()
            .build()
            .context("starting the echo server's runtime")?;
        let (stop, stopped) = oneshot::channel::<()>();
        let (ready, started) = std::sync::mpsc::channel::<anyhow::Result<()>>();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let thread = std::thread::Builder::new()
            .name("bench-echo".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(listener) => listener,
                        Err(e) => {
                            let _ = ready.send(Err(e.into()));
                            return;
                        }
                    };
                    let _ = ready.send(Ok(()));
                    let (_reporter, health) = tonic_health::server::health_reporter();
                    let router = tonic::transport::Server::builder().add_service(health);
                    // Not graceful: the bench has its answers by the time it
                    // stops the echo.
                    let served = match tls {
                        Some(tls) => {
                            tokio::select! {
                                served = router.serve_with_incoming(tls.incoming(listener)) => served,
                                _ = stopped => Ok(()),
                            }
                        }
                        None => {
                            let incoming =
                                tokio_stream::wrappers::TcpListenerStream::new(listener);
                            tokio::select! {
                                served = router.serve_with_incoming(incoming) => served,
                                _ = stopped => Ok(()),
                            }
                        }
                    };
                    if let Err(e) = served {
                        eprintln!("bench: the echo server failed: {e}");
                    }
                });
            })
            .context("starting the echo server's thread")?;
        started
            .recv()
            .map_err(|_| anyhow!("the echo server's thread ended before it started"))??;
        Ok(EchoServer {
            url: format!("{scheme}://127.0.0.1:{}", addr.port()),
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
