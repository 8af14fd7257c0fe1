//! Serving a router: one place for what every domicile listener needs — TLS (decision 0007),
//! `TCP_NODELAY`, who the peer is, and a graceful stop.
//!
//! Every request carries `ConnectInfo<Peer>`: its remote address, and whether the connection
//! presented a certificate the cluster CA verified ([`require_cluster_member`] guards routes
//! only cluster members may call).

use crate::ApiError;
use axum::Router;
use axum::extract::Request;
use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::serve::{IncomingStream, Listener};
use domicile_tls::ServerTransport;
use domicile_tls::rustls::ServerConfig;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// A connection that has not finished its TLS handshake by then is closed.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The other end of a connection.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    pub addr: SocketAddr,
    /// It presented a certificate from the cluster CA (always true over explicit plaintext,
    /// where nobody can be told apart).
    pub cluster_member: bool,
}

/// Serves `router` on `listener` with `transport` until `shutdown` completes, then lets
/// in-flight requests finish. Sockets get `TCP_NODELAY`: small responses on a multiplexed
/// connection otherwise wait for the peer's delayed ACK (40 ms on Linux), which showed as a
/// 42 ms p99 through the gateway.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    transport: &ServerTransport,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router.into_make_service_with_connect_info::<Peer>();
    match transport {
        ServerTransport::Tls(config) => {
            axum::serve(TlsListener::start(listener, config.clone())?, app)
                .with_graceful_shutdown(shutdown)
                .await
        }
        ServerTransport::InsecurePlaintext => {
            axum::serve(PlainListener(listener), app)
                .with_graceful_shutdown(shutdown)
                .await
        }
    }
}

/// Refuses (403 `forbidden`) a request whose connection presented no certificate from the
/// cluster CA: `Router::route_layer(axum::middleware::from_fn(require_cluster_member))`.
pub async fn require_cluster_member(request: Request, next: Next) -> Response {
    let member = request
        .extensions()
        .get::<ConnectInfo<Peer>>()
        .is_some_and(|ConnectInfo(peer)| peer.cluster_member);
    if member {
        next.run(request).await
    } else {
        ApiError::Forbidden("this API answers only cluster members (mutual TLS)".into())
            .into_response()
    }
}

fn no_delay(tcp: &TcpStream) {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::warn!(error = %e, "could not set TCP_NODELAY");
    }
}

/// Accepts again after an error; one that is not about a single connection (out of file
/// descriptors) waits a moment first, as axum's own listener does.
async fn accept_error(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accept failed");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

struct PlainListener(TcpListener);

impl Listener for PlainListener {
    type Io = TcpStream;
    type Addr = Peer;

    async fn accept(&mut self) -> (TcpStream, Peer) {
        loop {
            match self.0.accept().await {
                Ok((tcp, addr)) => {
                    no_delay(&tcp);
                    let peer = Peer {
                        addr,
                        cluster_member: true,
                    };
                    return (tcp, peer);
                }
                Err(e) => accept_error(e).await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Peer> {
        Ok(Peer {
            addr: self.0.local_addr()?,
            cluster_member: true,
        })
    }
}

impl Connected<IncomingStream<'_, PlainListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, PlainListener>) -> Self {
        *stream.remote_addr()
    }
}

/// Hands over connections whose TLS handshake has completed. Handshakes run in their own tasks,
/// so a slow or silent peer delays nobody else; a failed one is logged and dropped.
struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, Peer)>,
    local: SocketAddr,
    acceptor: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    fn start(listener: TcpListener, config: Arc<ServerConfig>) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        let tls = TlsAcceptor::from(config);
        let acceptor = tokio::spawn(async move {
            loop {
                let (tcp, addr) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        accept_error(e).await;
                        continue;
                    }
                };
                no_delay(&tcp);
                let (tls, tx) = (tls.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let cluster_member = stream
                                .get_ref()
                                .1
                                .peer_certificates()
                                .is_some_and(|chain| !chain.is_empty());
                            let peer = Peer {
                                addr,
                                cluster_member,
                            };
                            // The server has stopped if nobody receives: the connection closes.
                            let _ = tx.send((stream, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%addr, error = %e, "TLS handshake refused"),
                        Err(_) => tracing::debug!(%addr, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(Self {
            ready,
            local,
            acceptor,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        // Stops accepting (and closes the socket) once the server stops.
        self.acceptor.abort();
    }
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = Peer;

    async fn accept(&mut self) -> (Self::Io, Peer) {
        match self.ready.recv().await {
            Some(accepted) => accepted,
            // The acceptor holds a sender for as long as it runs, and runs until dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Peer> {
        Ok(Peer {
            addr: self.local,
            cluster_member: false,
        })
    }
}

impl Connected<IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        *stream.remote_addr()
    }
}
