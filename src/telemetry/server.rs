//! The `/metrics` HTTP endpoint: axum on a small tokio runtime of its own thread, so the
//! packet path never waits on a scrape.

use std::net::SocketAddr;
use std::sync::Arc;

use super::metrics::Hub;

/// A running endpoint; dropped or [`MetricsServer::stop`]ped, it shuts down.
pub struct MetricsServer {
    pub addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MetricsServer {
    /// Binds `addr` (port 0 picks one) and serves `GET /metrics` from `hub`.
    pub fn start(addr: SocketAddr, hub: Arc<Hub>) -> std::io::Result<MetricsServer> {
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("shieldtap-metrics".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!(error = %e, "metrics endpoint: no runtime");
                        return;
                    }
                };
                rt.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => l,
                        Err(e) => {
                            tracing::error!(error = %e, "metrics endpoint: cannot listen");
                            return;
                        }
                    };
                    let app = axum::Router::new().route(
                        "/metrics",
                        axum::routing::get(move || {
                            let hub = hub.clone();
                            async move {
                                (
                                    [(
                                        axum::http::header::CONTENT_TYPE,
                                        "text/plain; version=0.0.4; charset=utf-8",
                                    )],
                                    hub.render(),
                                )
                            }
                        }),
                    );
                    let served = axum::serve(listener, app)
                        .with_graceful_shutdown(async {
                            let _ = rx.await;
                        })
                        .await;
                    if let Err(e) = served {
                        tracing::error!(error = %e, "metrics endpoint stopped");
                    }
                });
            })?;
        tracing::info!(%addr, "metrics endpoint listening");
        Ok(MetricsServer {
            addr,
            shutdown: Some(tx),
            thread: Some(thread),
        })
    }

    pub fn stop(mut self) {
        self.shut();
    }

    fn shut(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.shut();
    }
}
