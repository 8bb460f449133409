//! `watch --metrics ADDR`: Prometheus metrics on a loopback address.
//!
//! Series (registered with `prometheus-client`):
//! - `reconcile_build_info{version}` — 1 (info);
//! - `reconcile_drift{kind}` — current drifts by kind (gauge; every kind, zeros too);
//! - `reconcile_app_drift{app,namespace,kind}` — 1 for each current drift of an app (gauge);
//! - `reconcile_app_processes{app,namespace,status}` — an owned app's processes by PM2
//!   status (gauge);
//! - `reconcile_app_restarts_total{app,namespace}` — PM2's restart count of each owned
//!   app, summed over its processes (counter: it follows PM2's `restart_time`, and starts
//!   again from PM2's value when PM2's count goes down, i.e. the app was recreated);
//! - `reconcile_last_successful_plan_timestamp_seconds` — when a plan was last made (gauge);
//! - `reconcile_heals_total{outcome}` — heal attempts by the watcher (`--heal`, pull
//!   mode), by outcome: `success`, `failed`, `refused`, `noop`, `deferred`, `error`
//!   (counter); `reconcile apply` runs are not counted here (they are not in this process);
//! - `reconcile_daemon_up` — 1 while the PM2 daemon answers (gauge).
//!
//! Both text formats are served, by content negotiation: OpenMetrics 1.0 (the default,
//! and what Prometheus asks for first), or the Prometheus text format 0.0.4 for
//! `Accept: text/plain` (promtool, older scrapers), converted from the former.
//!
//! The endpoint has no authentication, so it only ever binds to loopback. The server
//! is a few lines on tokio: it reads one request head (bounded in size, with one
//! deadline for the whole head, not per read), answers `GET /metrics` and closes;
//! anything else gets a 404, 405 or 400. At most [`MAX_CONNECTIONS`] are open at once;
//! when full, the oldest connection still sending its head is dropped for the new one,
//! so slow or idle clients cannot keep a scraper out.

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
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

/// The outcomes `reconcile_heals_total` counts (each shown from 0).
pub const APPLY_OUTCOMES: [&str; 6] = ["success", "failed", "refused", "noop", "deferred", "error"];

/// The watcher's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    drift: Family<Labels, Gauge>,
    app_drift: Family<Labels, Gauge>,
    processes: Family<Labels, Gauge>,
    restarts: Family<Labels, Counter>,
    /// PM2's last restart count per (app, namespace), to turn it into counter increments.
    restarts_seen: Mutex<BTreeMap<(String, String), u64>>,
    last_plan: Gauge,
    heals: Family<Labels, Counter>,
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
        let app_drift = Family::<Labels, Gauge>::default();
        let processes = Family::<Labels, Gauge>::default();
        let restarts = Family::<Labels, Counter>::default();
        let last_plan = Gauge::default();
        let heals = Family::<Labels, Counter>::default();
        let daemon_up = Gauge::default();
        registry.register("build", "reconcile's version", Info::new(vec![("version", env!("CARGO_PKG_VERSION").to_string())]));
        registry.register("drift", "Current drifts from the desired state, by kind", drift.clone());
        registry.register("app_drift", "1 for each current drift of an app, by kind", app_drift.clone());
        registry.register("app_processes", "Processes of each owned app, by PM2 status", processes.clone());
        registry.register(
            "app_restarts",
            "PM2 restarts of each owned app (restart_time, summed over its processes; starts again when the app is recreated)",
            restarts.clone(),
        );
        registry.register(
            "last_successful_plan_timestamp_seconds",
            "When the watcher last made a plan (desired state checked and daemon read), unix seconds",
            last_plan.clone(),
        );
        registry.register("heals", "Heal attempts by the watcher, by outcome", heals.clone());
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
            "Pull mode: failed syncs, by reason (fetch, no_branch, clone, unverified, rewind, escaping_symlinks)",
            source_failures.clone(),
        );
        for kind in DriftKind::ALL {
            drift.get_or_create(&vec![("kind", kind.as_str().to_string())]).set(0);
        }
        for outcome in APPLY_OUTCOMES {
            let _ = heals.get_or_create(&vec![("outcome", outcome.to_string())]).get();
        }
        Self { registry, drift, app_drift, processes, restarts, restarts_seen: Mutex::default(), last_plan, heals, daemon_up, source_info, source_last_sync, source_failures }
    }

    /// Sets the drift gauges (every kind; zero where none).
    pub fn set_drift(&self, counts: &BTreeMap<DriftKind, usize>) {
        for kind in DriftKind::ALL {
            let n = counts.get(&kind).copied().unwrap_or(0);
            self.drift.get_or_create(&vec![("kind", kind.as_str().to_string())]).set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// Sets the per-app drift series to exactly `drifts` (cleared ones disappear).
    pub fn set_app_drift<'a>(&self, drifts: impl IntoIterator<Item = &'a super::Drift>) {
        self.app_drift.clear();
        for d in drifts {
            let labels = vec![("app", d.app.clone()), ("namespace", d.namespace.clone()), ("kind", d.reason.as_str().to_string())];
            self.app_drift.get_or_create(&labels).set(1);
        }
    }

    /// Sets the per-app series from a read, for the owned apps (apps gone are dropped):
    /// processes by status, and the restart counters.
    pub fn set_restarts(&self, live: &LiveState, owned: &[String]) {
        let mut sums: BTreeMap<(String, String), u64> = BTreeMap::new();
        let mut statuses: BTreeMap<(String, String, String), i64> = BTreeMap::new();
        for p in live.processes.iter().filter(|p| owned.contains(&p.namespace)) {
            *sums.entry((p.name.clone(), p.namespace.clone())).or_default() += p.restarts;
            *statuses.entry((p.name.clone(), p.namespace.clone(), p.status.as_str().to_string())).or_default() += 1;
        }
        self.processes.clear();
        for ((app, namespace, status), n) in statuses {
            self.processes.get_or_create(&vec![("app", app), ("namespace", namespace), ("status", status)]).set(n);
        }
        let Ok(mut seen) = self.restarts_seen.lock() else { return };
        seen.retain(|key, _| {
            let keep = sums.contains_key(key);
            if !keep {
                self.restarts.remove(&vec![("app", key.0.clone()), ("namespace", key.1.clone())]);
            }
            keep
        });
        for (key, n) in sums {
            let labels = vec![("app", key.0.clone()), ("namespace", key.1.clone())];
            match seen.get(&key).copied() {
                Some(last) if n >= last => {
                    self.restarts.get_or_create(&labels).inc_by(n - last);
                }
                _ => {
                    // New, or PM2's count went down (the app was recreated): a counter
                    // reset, which Prometheus's rate() understands.
                    self.restarts.remove(&labels);
                    self.restarts.get_or_create(&labels).inc_by(n);
                }
            }
            seen.insert(key, n);
        }
    }

    /// A plan was made at `unix_s`.
    pub fn planned(&self, unix_s: i64) {
        self.last_plan.set(unix_s);
    }

    /// One heal attempt ended with `outcome`.
    pub fn applied(&self, outcome: &str) {
        self.heals.get_or_create(&vec![("outcome", outcome.to_string())]).inc();
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

    /// The OpenMetrics 1.0 text exposition.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        text
    }

    /// The Prometheus text format 0.0.4 (for `Accept: text/plain`).
    pub fn encode_prometheus(&self) -> String {
        openmetrics_to_prometheus(&self.encode())
    }
}

/// Rewrites an OpenMetrics exposition (as `prometheus-client` writes it) into the
/// Prometheus text format 0.0.4. The samples are the same lines; what differs is the
/// metadata: a counter's `# HELP`/`# TYPE` name its `_total` series, an info metric is
/// a gauge named `_info`, `# UNIT` and `# EOF` do not exist, and `_created` samples
/// are dropped.
pub fn openmetrics_to_prometheus(openmetrics: &str) -> String {
    let mut types: BTreeMap<&str, &str> = BTreeMap::new();
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ")
            && let Some((name, kind)) = rest.split_once(' ')
        {
            types.insert(name, kind);
        }
    }
    let renamed = |name: &str| -> (String, &'static str) {
        match types.get(name).copied() {
            Some("counter") => (format!("{name}_total"), "counter"),
            Some("info") => (format!("{name}_info"), "gauge"),
            Some("gauge") => (name.to_string(), "gauge"),
            Some("histogram") => (name.to_string(), "histogram"),
            Some("summary") => (name.to_string(), "summary"),
            _ => (name.to_string(), "untyped"),
        }
    };
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            // 0.0.4 escapes only backslash and newline in HELP; OpenMetrics also `"`.
            out.push_str(&format!("# HELP {} {}\n", renamed(name).0, help.replace("\\\"", "\"")));
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let name = rest.split_once(' ').map_or(rest, |(n, _)| n);
            let (name, kind) = renamed(name);
            out.push_str(&format!("# TYPE {name} {kind}\n"));
        } else if line.split(['{', ' ']).next().is_some_and(|n| n.ends_with("_created")) {
            continue;
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Binds the endpoint (before the watcher says it started, so a taken port is an error).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, MetricsError> {
    TcpListener::bind(addr).await.map_err(|source| MetricsError::Bind { addr, source })
}

/// At most this many connections are open at once; when full, the oldest one still
/// sending its request head is dropped to make room.
pub const MAX_CONNECTIONS: usize = 64;
/// A request head larger than this is refused.
const MAX_HEAD: usize = 8 * 1024;
/// A client gets this long, in all, to send its request head (not per read: a client
/// trickling a byte a second gets no longer).
const HEAD_DEADLINE: Duration = Duration::from_secs(2);
/// And this long to take the response.
const WRITE_DEADLINE: Duration = Duration::from_secs(5);

/// The connections still sending their head, oldest first, each with what evicts it.
#[derive(Default)]
struct Reading {
    queue: Mutex<std::collections::VecDeque<(u64, tokio::sync::oneshot::Sender<()>)>>,
}

impl Reading {
    fn push(&self, id: u64, evict: tokio::sync::oneshot::Sender<()>) {
        if let Ok(mut q) = self.queue.lock() {
            q.push_back((id, evict));
        }
    }

    fn done(&self, id: u64) {
        if let Ok(mut q) = self.queue.lock() {
            q.retain(|(i, _)| *i != id);
        }
    }

    /// Drops the oldest connection still reading; false when there is none.
    fn evict_oldest(&self) -> bool {
        let oldest = self.queue.lock().ok().and_then(|mut q| q.pop_front());
        oldest.is_some_and(|(_, evict)| evict.send(()).is_ok())
    }
}

/// Decrements the open-connection count however the task ends.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Serves `GET /metrics` forever (until the task is dropped).
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    let active = Arc::new(AtomicUsize::new(0));
    let reading = Arc::new(Reading::default());
    let next_id = AtomicU64::new(0);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of file descriptors or similar: wait a little rather than spin.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        if active.load(Ordering::SeqCst) >= MAX_CONNECTIONS && !reading.evict_oldest() {
            // Full of connections being answered (they end within WRITE_DEADLINE).
            drop(stream);
            continue;
        }
        active.fetch_add(1, Ordering::SeqCst);
        let slot = Slot(Arc::clone(&active));
        let id = next_id.fetch_add(1, Ordering::Relaxed);
        let (evict, evicted) = tokio::sync::oneshot::channel();
        reading.push(id, evict);
        let (metrics, reading) = (Arc::clone(&metrics), Arc::clone(&reading));
        tokio::spawn(async move {
            let _slot = slot;
            let read = tokio::time::timeout(HEAD_DEADLINE, read_head(stream));
            let outcome = tokio::select! {
                outcome = read => outcome.ok(),
                _ = evicted => None,
            };
            reading.done(id);
            // Past the deadline, or evicted: the connection is dropped unanswered.
            let Some((stream, head)) = outcome else { return };
            let _ = tokio::time::timeout(WRITE_DEADLINE, respond(stream, head.as_deref(), &metrics)).await;
        });
    }
}

/// Reads one request head; `None` when it is not complete (closed, too large, an error).
async fn read_head(mut stream: TcpStream) -> (TcpStream, Option<Vec<u8>>) {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    let complete = loop {
        let n = match stream.read(&mut chunk).await {
            Ok(n) => n,
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
    (stream, complete.then_some(head))
}

async fn respond(mut stream: TcpStream, head: Option<&[u8]>, metrics: &Metrics) -> std::io::Result<()> {
    let (status, body, content_type) = match head {
        Some(head) => route(head, metrics),
        None => (400, "bad request\n".to_string(), TEXT),
    };
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Bad Request",
    };
    let is_head = head.is_some_and(|h| h.starts_with(b"HEAD "));
    let mut response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nVary: Accept\r\nConnection: close\r\n",
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
const PROMETHEUS: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The two text formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exposition {
    OpenMetrics,
    Prometheus,
}

/// Content negotiation on the `Accept` header: the format with the higher `q`
/// (OpenMetrics on a tie, and when neither is named, as with no header or `*/*`).
fn negotiate(accept: Option<&str>) -> Exposition {
    let Some(accept) = accept else { return Exposition::OpenMetrics };
    let (mut openmetrics, mut text) = (-1.0_f32, -1.0_f32);
    for range in accept.split(',') {
        let mut params = range.split(';').map(str::trim);
        let media = params.next().unwrap_or_default().to_ascii_lowercase();
        let q = params
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
            .and_then(|(_, v)| v.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        match media.as_str() {
            "application/openmetrics-text" => openmetrics = openmetrics.max(q),
            "text/plain" => text = text.max(q),
            _ => {}
        }
    }
    if text > 0.0 && text > openmetrics { Exposition::Prometheus } else { Exposition::OpenMetrics }
}

/// The value of one header in a request head.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

/// Status, body and content type for a request head.
fn route(head: &[u8], metrics: &Metrics) -> (u16, String, &'static str) {
    let text = String::from_utf8_lossy(head);
    let line = text.lines().next().unwrap_or_default();
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next()) else {
        return (400, "bad request\n".into(), TEXT);
    };
    if !version.starts_with("HTTP/") {
        return (400, "bad request\n".into(), TEXT);
    }
    let path = target.split('?').next().unwrap_or_default();
    match (method, path) {
        ("GET" | "HEAD", "/metrics") => match negotiate(header(&text, "accept")) {
            Exposition::OpenMetrics => (200, metrics.encode(), OPENMETRICS),
            Exposition::Prometheus => (200, metrics.encode_prometheus(), PROMETHEUS),
        },
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
            "reconcile_heals_total{outcome=\"success\"} 1",
            "reconcile_heals_total{outcome=\"refused\"} 0",
            "reconcile_build_info{version=\"",
            "reconcile_daemon_up 1",
            "# EOF",
        ] {
            assert!(text.contains(line), "{line} missing in:\n{text}");
        }
    }

    #[test]
    fn negotiation_serves_the_format_asked_for() {
        assert_eq!(negotiate(None), Exposition::OpenMetrics);
        assert_eq!(negotiate(Some("*/*")), Exposition::OpenMetrics);
        assert_eq!(negotiate(Some("text/plain;version=0.0.4")), Exposition::Prometheus);
        assert_eq!(negotiate(Some("text/plain; version=0.0.4; charset=utf-8")), Exposition::Prometheus);
        // What Prometheus sends: OpenMetrics first.
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(negotiate(Some(prometheus)), Exposition::OpenMetrics);
        assert_eq!(negotiate(Some("application/openmetrics-text;q=0.2, text/plain;q=0.9")), Exposition::Prometheus);
        assert_eq!(negotiate(Some("text/plain;q=0")), Exposition::OpenMetrics);
        let m = Metrics::new();
        let (_, body, kind) = route(b"GET /metrics HTTP/1.1\r\nAccept: text/plain;version=0.0.4\r\n\r\n", &m);
        assert_eq!(kind, PROMETHEUS);
        assert!(!body.contains("# EOF") && body.contains("# TYPE reconcile_heals_total counter"), "{body}");
        let (_, body, kind) = route(b"GET /metrics HTTP/1.1\r\nACCEPT: application/openmetrics-text\r\n\r\n", &m);
        assert_eq!(kind, OPENMETRICS);
        assert!(body.ends_with("# EOF\n") && body.contains("# TYPE reconcile_heals counter"), "{body}");
    }

    #[test]
    fn per_app_series_follow_the_live_processes() {
        use crate::testing::{desired, live, live_of};
        let apps = desired(serde_json::json!([{"name": "api", "namespace": "web", "script": "a.js"}, {"name": "job", "namespace": "web", "script": "b.js"}]));
        let mut processes: Vec<_> = apps.iter().enumerate().map(|(i, d)| live_of(d, i as u64)).collect();
        processes[0].restarts = 5;
        let m = Metrics::new();
        m.set_restarts(&live(processes.clone()), &["web".into()]);
        processes[0].restarts = 7;
        m.set_restarts(&live(processes.clone()), &["web".into()]);
        let text = m.encode();
        assert!(text.contains("reconcile_app_restarts_total{app=\"api\",namespace=\"web\"} 7"), "{text}");
        assert!(text.contains("reconcile_app_processes{app=\"job\",namespace=\"web\",status=\"online\"} 1"), "{text}");
        // Recreated: PM2's count starts again, and so does the counter.
        processes[0].restarts = 1;
        m.set_restarts(&live(processes), &["web".into()]);
        assert!(m.encode().contains("reconcile_app_restarts_total{app=\"api\",namespace=\"web\"} 1"));
        let drift = crate::watch::Drift {
            app: "api".into(),
            namespace: "web".into(),
            reason: DriftKind::Stopped,
            detail: String::new(),
            pm_ids: vec![0],
            attributes: Vec::new(),
            action: None,
        };
        m.set_app_drift([&drift]);
        assert!(m.encode().contains("reconcile_app_drift{app=\"api\",namespace=\"web\",kind=\"stopped\"} 1"));
        m.set_app_drift([]);
        assert!(!m.encode().contains("reconcile_app_drift{"));
    }

    /// 80 clients that connect and trickle a byte now and then (reconnecting when
    /// dropped) hold more than every slot; scrapes are still answered.
    #[tokio::test(flavor = "current_thread")]
    async fn scrapes_are_served_while_slow_clients_trickle() {
        use std::io::{Read as _, Write as _};
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve(listener, Arc::new(Metrics::new())));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let connected = Arc::new(AtomicUsize::new(0));
        let trickler = {
            let (stop, connected) = (Arc::clone(&stop), Arc::clone(&connected));
            std::thread::spawn(move || {
                let connect = || std::net::TcpStream::connect(addr).ok();
                let mut clients: Vec<Option<std::net::TcpStream>> = (0..80).map(|_| connect()).collect();
                connected.store(clients.iter().flatten().count(), Ordering::SeqCst);
                while !stop.load(Ordering::SeqCst) {
                    for client in &mut clients {
                        let alive = client.as_mut().is_some_and(|c| c.write_all(b"G").is_ok());
                        if !alive {
                            *client = connect();
                        }
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        };
        while connected.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for _ in 0..5 {
            let body = tokio::task::spawn_blocking(move || {
                let mut s = std::net::TcpStream::connect(addr).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
                let mut body = String::new();
                let _ = s.read_to_string(&mut body);
                body
            })
            .await
            .unwrap();
            assert!(body.starts_with("HTTP/1.1 200 OK") && body.contains("reconcile_daemon_up"), "scrape not served: {body:?}");
        }
        stop.store(true, Ordering::SeqCst);
        trickler.join().unwrap();
        server.abort();
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
