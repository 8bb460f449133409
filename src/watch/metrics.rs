//! `watch --metrics ADDR`: Prometheus metrics on a loopback address.
//!
//! Series (OpenMetrics text, from `prometheus-client`):
//! - `reconcile_drift{kind}` — current drifts by kind (gauge; every kind, zeros too);
//! - `reconcile_restarts{app,namespace}` — PM2's restart count of each owned app,
//!   summed over its processes (gauge, from `restart_time`);
//! - `reconcile_last_successful_plan_timestamp_seconds` — when a plan was last made (gauge);
//! - `reconcile_apply_total{outcome}` — heals by outcome: `success`, `failed`,
//!   `refused`, `noop`, `deferred`, `error` (counter);
//! - `reconcile_daemon_up` — 1 while the PM2 daemon answers (gauge).
//!
//! The endpoint has no authentication, so it only ever binds to loopback. The server
//! is a few lines on tokio: it reads one request head (bounded in size and time),
//! answers `GET /metrics` and closes; anything else gets a 404, 405 or 400.

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::drift::DriftKind;
use crate::live::LiveState;

type Labels = Vec<(&'static str, String)>;

/// Why the metrics endpoint cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("--metrics {given}: not an address; give a loopback address and port, e.g. 127.0.0.1:9464")]
    BadAddress { given: String },
    #[error(
        "--metrics {given}: {ip} is not a loopback address; the metrics endpoint has no authentication, so it only binds to 127.0.0.1 or [::1] (put a proxy in front to expose it)"
    )]
    NotLoopback { given: String, ip: std::net::IpAddr },
    #[error("--metrics {addr}: cannot listen there (is the port in use?)")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Parses `--metrics` and refuses anything but loopback (`localhost` resolves to it).
pub fn loopback_address(given: &str) -> Result<SocketAddr, MetricsError> {
    let bad = || MetricsError::BadAddress { given: given.to_string() };
    let addr = match given.parse::<SocketAddr>() {
        Ok(addr) => addr,
        Err(_) => {
            let (host, _) = given.rsplit_once(':').ok_or_else(bad)?;
            if host != "localhost" {
                return Err(bad());
            }
            given.to_socket_addrs().map_err(|_| bad())?.find(|a| a.ip().is_loopback()).ok_or_else(bad)?
        }
    };
    if !addr.ip().is_loopback() {
        return Err(MetricsError::NotLoopback { given: given.to_string(), ip: addr.ip() });
    }
    Ok(addr)
}

/// The outcomes `reconcile_apply_total` counts (each shown from 0).
pub const APPLY_OUTCOMES: [&str; 6] = ["success", "failed", "refused", "noop", "deferred", "error"];

/// The watcher's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    drift: Family<Labels, Gauge>,
    restarts: Family<Labels, Gauge>,
    last_plan: Gauge,
    applies: Family<Labels, Counter>,
    daemon_up: Gauge,
    source_info: Family<Labels, Gauge>,
    source_last_sync: Gauge,
    source_failures: Family<Labels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("reconcile");
        let drift = Family::<Labels, Gauge>::default();
        let restarts = Family::<Labels, Gauge>::default();
        let last_plan = Gauge::default();
        let applies = Family::<Labels, Counter>::default();
        let daemon_up = Gauge::default();
        registry.register("drift", "Current drifts from the desired state, by kind", drift.clone());
        registry.register("restarts", "PM2 restart count of each owned app (restart_time, summed over its processes)", restarts.clone());
        registry.register(
            "last_successful_plan_timestamp_seconds",
            "When the watcher last made a plan (desired state checked and daemon read), unix seconds",
            last_plan.clone(),
        );
        registry.register("apply", "Heals run by the watcher, by outcome", applies.clone());
        registry.register("daemon_up", "1 while the PM2 daemon answers, else 0", daemon_up.clone());
        let source_info = Family::<Labels, Gauge>::default();
        let source_last_sync = Gauge::default();
        let source_failures = Family::<Labels, Counter>::default();
        registry.register("source_info", "Pull mode: the followed branch and the commit checked out (value 1)", source_info.clone());
        registry.register(
            "source_last_sync_timestamp_seconds",
            "Pull mode: when the branch was last fetched and checked successfully, unix seconds",
            source_last_sync.clone(),
        );
        registry.register(
            "source_failures",
            "Pull mode: failed syncs, by reason (fetch, no_branch, clone, unverified, rewind)",
            source_failures.clone(),
        );
        for kind in DriftKind::ALL {
            drift.get_or_create(&vec![("kind", kind.as_str().to_string())]).set(0);
        }
        for outcome in APPLY_OUTCOMES {
            let _ = applies.get_or_create(&vec![("outcome", outcome.to_string())]).get();
        }
        Self { registry, drift, restarts, last_plan, applies, daemon_up, source_info, source_last_sync, source_failures }
    }

    /// Sets the drift gauges (every kind; zero where none).
    pub fn set_drift(&self, counts: &BTreeMap<DriftKind, usize>) {
        for kind in DriftKind::ALL {
            let n = counts.get(&kind).copied().unwrap_or(0);
            self.drift.get_or_create(&vec![("kind", kind.as_str().to_string())]).set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// Sets the restart gauges from a read, for the owned apps (apps gone are dropped).
    pub fn set_restarts(&self, live: &LiveState, owned: &[String]) {
        let mut sums: BTreeMap<(&str, &str), u64> = BTreeMap::new();
        for p in live.processes.iter().filter(|p| owned.contains(&p.namespace)) {
            *sums.entry((p.name.as_str(), p.namespace.as_str())).or_default() += p.restarts;
        }
        self.restarts.clear();
        for ((app, namespace), n) in sums {
            let labels = vec![("app", app.to_string()), ("namespace", namespace.to_string())];
            self.restarts.get_or_create(&labels).set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// A plan was made at `unix_s`.
    pub fn planned(&self, unix_s: i64) {
        self.last_plan.set(unix_s);
    }

    /// One heal ended with `outcome`.
    pub fn applied(&self, outcome: &str) {
        self.applies.get_or_create(&vec![("outcome", outcome.to_string())]).inc();
    }

    /// Whether the daemon answers.
    pub fn daemon(&self, up: bool) {
        self.daemon_up.set(i64::from(up));
    }

    /// Pull mode: a sync succeeded at `unix_s`; the clone is at `commit` of `branch`.
    pub fn source_synced(&self, branch: &str, commit: &str, unix_s: i64) {
        self.source_info.clear();
        self.source_info.get_or_create(&vec![("branch", branch.to_string()), ("commit", commit.to_string())]).set(1);
        self.source_last_sync.set(unix_s);
    }

    /// Pull mode: a sync failed for `reason`.
    pub fn source_failed(&self, reason: &str) {
        self.source_failures.get_or_create(&vec![("reason", reason.to_string())]).inc();
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        text
    }
}

/// Binds the endpoint (before the watcher says it started, so a taken port is an error).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, MetricsError> {
    TcpListener::bind(addr).await.map_err(|source| MetricsError::Bind { addr, source })
}

/// At most this many requests are answered at once; more are closed at once.
const MAX_CONNECTIONS: usize = 16;
/// A request head larger than this is refused.
const MAX_HEAD: usize = 8 * 1024;
/// A client gets this long to send its request head.
const READ_TIMEOUT: Duration = Duration::from_secs(2);

/// Serves `GET /metrics` forever (until the task is dropped).
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    let active = Arc::new(AtomicUsize::new(0));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of file descriptors or similar: wait a little rather than spin.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        if active.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            active.fetch_sub(1, Ordering::SeqCst);
            drop(stream);
            continue;
        }
        let (metrics, active) = (Arc::clone(&metrics), Arc::clone(&active));
        tokio::spawn(async move {
            let _ = tokio::time::timeout(READ_TIMEOUT * 2, answer(stream, &metrics)).await;
            active.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

async fn answer(mut stream: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    let complete = loop {
        let n = match tokio::time::timeout(READ_TIMEOUT, stream.read(&mut chunk)).await {
            Ok(Ok(n)) => n,
            Ok(Err(e)) => return Err(e),
            Err(_) => break false,
        };
        if n == 0 {
            break false;
        }
        head.extend_from_slice(&chunk[..n]);
        if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
            break true;
        }
        if head.len() > MAX_HEAD {
            break false;
        }
    };
    let (status, body, content_type) = if complete { route(&head, metrics) } else { (400, "bad request\n".to_string(), TEXT) };
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Bad Request",
    };
    let is_head = head.starts_with(b"HEAD ");
    let mut response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if status == 405 {
        response.push_str("Allow: GET, HEAD\r\n");
    }
    response.push_str("\r\n");
    if !is_head {
        response.push_str(&body);
    }
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

const TEXT: &str = "text/plain; charset=utf-8";
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Status, body and content type for a request head.
fn route(head: &[u8], metrics: &Metrics) -> (u16, String, &'static str) {
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next()) else {
        return (400, "bad request\n".into(), TEXT);
    };
    if !version.starts_with("HTTP/") {
        return (400, "bad request\n".into(), TEXT);
    }
    let path = target.split('?').next().unwrap_or_default();
    match (method, path) {
        ("GET" | "HEAD", "/metrics") => (200, metrics.encode(), OPENMETRICS),
        ("GET" | "HEAD", _) => (404, "not found: the metrics are at /metrics\n".into(), TEXT),
        _ => (405, "method not allowed\n".into(), TEXT),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_addresses_are_accepted() {
        assert_eq!(loopback_address("127.0.0.1:9464").unwrap().port(), 9464);
        assert!(loopback_address("[::1]:0").is_ok());
        assert!(loopback_address("localhost:9464").unwrap().ip().is_loopback());
        let err = loopback_address("0.0.0.0:9464").unwrap_err().to_string();
        assert!(err.contains("0.0.0.0 is not a loopback address"), "{err}");
        assert!(matches!(loopback_address("10.1.2.3:80"), Err(MetricsError::NotLoopback { .. })));
        assert!(matches!(loopback_address("example.com:80"), Err(MetricsError::BadAddress { .. })));
        assert!(matches!(loopback_address("9464"), Err(MetricsError::BadAddress { .. })));
    }

    #[test]
    fn the_exposition_has_every_series() {
        let m = Metrics::new();
        m.set_drift(&[(DriftKind::Stopped, 2)].into());
        m.planned(1_700_000_000);
        m.applied("success");
        m.daemon(true);
        let text = m.encode();
        for line in [
            "reconcile_drift{kind=\"stopped\"} 2",
            "reconcile_drift{kind=\"crash_loop\"} 0",
            "reconcile_last_successful_plan_timestamp_seconds 1700000000",
            "reconcile_apply_total{outcome=\"success\"} 1",
            "reconcile_apply_total{outcome=\"refused\"} 0",
            "reconcile_daemon_up 1",
            "# EOF",
        ] {
            assert!(text.contains(line), "{line} missing in:\n{text}");
        }
    }

    #[test]
    fn garbage_requests_get_an_error_status_not_a_panic() {
        let m = Metrics::new();
        assert_eq!(route(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", &m).0, 200);
        assert_eq!(route(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n", &m).0, 200);
        assert_eq!(route(b"GET / HTTP/1.1\r\n\r\n", &m).0, 404);
        assert_eq!(route(b"POST /metrics HTTP/1.1\r\n\r\n", &m).0, 405);
        assert_eq!(route(b"\xff\xfe\x00garbage\r\n\r\n", &m).0, 400);
        assert_eq!(route(b"\r\n\r\n", &m).0, 400);
        assert_eq!(route(b"GET /metrics SPDY\r\n\r\n", &m).0, 400);
    }
}
