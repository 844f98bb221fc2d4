//! The accept loop both HTTP listeners (subscriber pages, admin) share: HTTP/1 through
//! hyper with a deadline for each request's headers and one for each request, a cap on
//! open connections and a smaller one per client, and graceful shutdown.
//!
//! Slow clients are the threat: a connection that sends a byte now and then would
//! otherwise be held open forever, and enough of them use up the process's file
//! descriptors, which feed polls and the database need too. With the caps, one listener
//! holds at most `max_connections` sockets; a client past its own cap is closed at once;
//! a client that stops reading its answers is closed once a write has waited for the
//! request timeout;
//! when the listener is full it stops accepting (new connections wait in the kernel's
//! backlog, using no descriptor here) until the header deadline frees a slot.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context, Result};
use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;
use tracing::{debug, info, warn};

use crate::config::ListenLimits;

/// How long to wait before accepting again after an accept error (such as "too many
/// open files"), so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Binds `addr` and serves `router` there within `limits` until `stop` is cancelled;
/// handlers can read the peer address as `ConnectInfo<SocketAddr>`. `name` names the
/// listener in logs, `setting` the config key that sets its address. Returns the
/// address actually bound (useful with port 0).
pub async fn serve(
    name: &'static str,
    setting: &'static str,
    addr: SocketAddr,
    router: Router,
    limits: ListenLimits,
    stop: CancellationToken,
) -> Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await.with_context(|| {
        format!("{name} listener on {addr} (set {setting}, or \"\" to turn it off)")
    })?;
    let bound = listener.local_addr()?;
    let router = router.layer(tower_http::timeout::TimeoutLayer::with_status_code(
        StatusCode::REQUEST_TIMEOUT,
        limits.request_timeout,
    ));
    tokio::spawn(accept_loop(name, listener, router, limits, stop));
    Ok(bound)
}

async fn accept_loop(
    name: &'static str,
    listener: TcpListener,
    router: Router,
    limits: ListenLimits,
    stop: CancellationToken,
) {
    let open = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let clients = Arc::new(Clients::new(limits.max_connections_per_client));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    loop {
        // Full: leave new connections in the backlog until one of ours closes.
        let permit = tokio::select! {
            () = stop.cancelled() => break,
            permit = open.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    warn!(listener = name, error = %e, "accept error");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
        };
        let Some(slot) = clients.admit(peer.ip()) else {
            debug!(listener = name, client = %peer.ip(), "connection refused: too many from this client");
            continue; // dropping the stream closes it
        };
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            router.clone().oneshot(request)
        });
        // A client that stops reading its answers holds the connection only as long as
        // one write may wait: the request timeout.
        let mut stream = tokio_io_timeout::TimeoutStream::new(stream);
        stream.set_write_timeout(Some(limits.request_timeout));
        let stream = TokioIo::new(Box::pin(stream));
        let connection = graceful.watch(http.serve_connection(stream, service));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                debug!(listener = name, client = %peer, error = %e, "connection ended");
            }
            drop((slot, permit));
        });
    }
    drop(listener);
    graceful.shutdown().await;
    info!(listener = name, "listener stopped");
}

/// Open connections per client, where a client is an IPv4 address or an IPv6 /64
/// (one household or host gets a whole /64).
struct Clients {
    max: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One open connection of a client; closing it (dropping this) frees its place.
struct Slot {
    clients: Arc<Clients>,
    key: IpAddr,
}

impl Clients {
    fn new(max: usize) -> Clients {
        Clients {
            max: max.max(1),
            open: Mutex::new(HashMap::new()),
        }
    }

    /// A place for one more connection from `ip`, unless it already has `max`.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        let key = client_key(ip);
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(key).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(Slot {
            clients: self.clone(),
            key,
        })
    }

    #[cfg(test)]
    fn open(&self, ip: IpAddr) -> usize {
        let open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.get(&client_key(ip)).copied().unwrap_or(0)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self
            .clients
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// The address a client's connections are counted under.
pub(crate) fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(prefix.into())
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_client_has_its_own_cap_and_closing_frees_a_place() {
        let clients = Arc::new(Clients::new(2));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let first = clients.admit(a).unwrap();
        let _second = clients.admit(a).unwrap();
        assert!(clients.admit(a).is_none(), "third from one client");
        assert!(clients.admit(b).is_some(), "another client");
        drop(first);
        assert_eq!(clients.open(a), 1);
        assert!(clients.admit(a).is_some(), "a place was freed");
        assert_eq!(
            clients.open(a),
            1,
            "the slot just taken was dropped at once"
        );
    }

    #[test]
    fn clients_are_counted_by_ipv4_address_or_ipv6_slash_64() {
        for (case, a, b, same) in [
            ("same IPv4", "192.0.2.1", "192.0.2.1", true),
            ("IPv4 neighbours", "192.0.2.1", "192.0.2.2", false),
            ("one /64", "2001:db8:1:2::1", "2001:db8:1:2:ffff::9", true),
            ("two /64s", "2001:db8:1:2::1", "2001:db8:1:3::1", false),
            ("mapped IPv4", "::ffff:192.0.2.1", "192.0.2.1", true),
        ] {
            let (a, b): (IpAddr, IpAddr) = (a.parse().unwrap(), b.parse().unwrap());
            assert_eq!(client_key(a) == client_key(b), same, "{case}");
        }
    }
}
