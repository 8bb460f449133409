//! PM2's RPC over `rpc.sock`: axon REQ/REP framing, request ids, and one typed
//! constructor per method.
//!
//! # Why every method has its own constructor
//!
//! A malformed call (wrong argument count or shape) makes a PM2 7 method throw inside
//! the daemon's domain; the crash handler then runs `pm2 update`, which restarts every
//! app on the host (pm2-internals.md §0.1). So a [`Call`] can only be built by the
//! constructors below, each of which sends exactly the arguments PM2 expects; the
//! unit tests pin the encoded frames.
//!
//! # Deadlines
//!
//! The protocol has no timeouts and axon retries forever. Every connect and every call
//! here has a deadline; a connection whose call timed out is poisoned and never reused
//! (a late reply could otherwise be taken for the next call's).

use std::time::Duration;

use std::marker::PhantomData;
use std::path::PathBuf;

use serde::de::{DeserializeOwned, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::amp::{self, AmpError, Arg, FrameBuffer, RawFrame};
use super::error::LiveError;
use super::home::{Endpoint, Pm2Home, daemon_alive};

/// One RPC request, in exactly the shape the daemon expects.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    method: &'static str,
    args: Vec<Value>,
}

impl Call {
    /// `ping({})` → `{"msg":"pong"}`. `ping` with no argument crashes the daemon.
    pub fn ping() -> Self {
        Self { method: "ping", args: vec![json!({})] }
    }

    /// `getVersion({})` → `"7.0.4"`.
    pub fn get_version() -> Self {
        Self { method: "getVersion", args: vec![json!({})] }
    }

    /// `getReport({})` → `{pm2_version, env, started_at, ...}`.
    pub fn get_report() -> Self {
        Self { method: "getReport", args: vec![json!({})] }
    }

    /// `getMonitorData({})` → the process list (same as `pm2 jlist`).
    ///
    /// It is also most of a read's time: the daemon runs pidusage over every online
    /// pid before it answers (5.2 ms for 100 apps, measured over the socket). The other
    /// exposed methods were checked in `lib/Daemon.js`/`God/ActionMethods.js` (7.0.4)
    /// for a cheaper list: `getSystemData` holds host metrics and no processes;
    /// `getReport` only a count; `resetMetaProcessId` returns the list but zeroes the
    /// restart counters; `sendSignalToProcessId({process_id, signal: 0})` returns the
    /// list without sampling (2.3 ms), but needs a pm_id known before the list is read,
    /// calls `process.kill` on that app's pid, and on a missing id or pid logs an error
    /// into the user's pm2.log. So this stays the one list read.
    pub fn get_monitor_data() -> Self {
        Self { method: "getMonitorData", args: vec![json!({})] }
    }

    /// `prepare(app)`: registers and starts a resolved app.
    ///
    /// Refuses payloads PM2 would crash on: `env` must be an object and `pm_pid_path`
    /// a string (`God.js:111,205`); `name` must be a non-empty string.
    pub fn prepare(app: Value) -> Result<Self, LiveError> {
        let invalid = |reason: &str| LiveError::InvalidCall { method: "prepare", reason: reason.to_string() };
        let obj = app.as_object().ok_or_else(|| invalid("the app must be a JSON object"))?;
        if obj.get("name").and_then(Value::as_str).is_none_or(str::is_empty) {
            return Err(invalid("the app has no name"));
        }
        if !obj.get("env").is_some_and(Value::is_object) {
            return Err(invalid("the app's env must be an object"));
        }
        if !obj.get("pm_pid_path").is_some_and(Value::is_string) {
            return Err(invalid("the app has no pm_pid_path"));
        }
        if !obj.get("pm_exec_path").is_some_and(Value::is_string) {
            return Err(invalid("the app has no pm_exec_path"));
        }
        Ok(Self { method: "prepare", args: vec![app] })
    }

    /// `stopProcessId(id)`.
    pub fn stop_process_id(pm_id: u64) -> Self {
        Self { method: "stopProcessId", args: vec![json!(pm_id)] }
    }

    /// `restartProcessId({id, env})`. A bare id (not an object) is refused by the
    /// daemon; no argument at all crashes it.
    pub fn restart_process_id(pm_id: u64, env: Map<String, Value>) -> Self {
        Self { method: "restartProcessId", args: vec![json!({"id": pm_id, "env": env})] }
    }

    /// `reloadProcessId({id, env})`: a zero-downtime reload for online cluster apps,
    /// a restart otherwise.
    pub fn reload_process_id(pm_id: u64, env: Map<String, Value>) -> Self {
        Self { method: "reloadProcessId", args: vec![json!({"id": pm_id, "env": env})] }
    }

    /// `deleteProcessId(id)`: a plain id (`{id}` would stop but keep the entry).
    pub fn delete_process_id(pm_id: u64) -> Self {
        Self { method: "deleteProcessId", args: vec![json!(pm_id)] }
    }

    /// `deleteProcessId("_old_<id>")`: the old cluster worker a reload parks under
    /// `_old_<id>` (`lib/God/Reload.js`), deleted as the reload itself does once the
    /// new worker listens. For PM2 5/6 reloads that were never answered; an absent
    /// key gets "id unknown", not a crash (`God.stopProcessId` checks `id in
    /// clusters_db`).
    pub fn delete_old_worker(pm_id: u64) -> Self {
        Self { method: "deleteProcessId", args: vec![json!(format!("_old_{pm_id}"))] }
    }

    /// `duplicateProcessId(id)`: starts one more process cloned from `id`'s `pm2_env`
    /// (what `pm2 scale` does, lib/API.js `scale`). A plain id, like delete.
    pub fn duplicate_process_id(pm_id: u64) -> Self {
        Self { method: "duplicateProcessId", args: vec![json!(pm_id)] }
    }

    /// `stopWatch(method, id)`: two arguments. The CLI sends it before stop and delete
    /// so the file watcher does not bring the app back.
    pub fn stop_watch(for_method: WatchedAction, pm_id: u64) -> Self {
        Self { method: "stopWatch", args: vec![json!(for_method.as_str()), json!(pm_id)] }
    }

    /// `notifyByProcessId({id, action_name, manually: true})`: emits a `process:event`
    /// on the bus, as the CLI does after restart/stop/delete.
    pub fn notify_by_process_id(pm_id: u64, action: NotifyAction) -> Self {
        Self {
            method: "notifyByProcessId",
            args: vec![json!({"id": pm_id, "action_name": action.as_str(), "manually": true})],
        }
    }

    /// The method name.
    pub fn method(&self) -> &'static str {
        self.method
    }

    /// Encodes the request frame: `[j:{"type":"call","method","args"}, s:<id>]` — exactly
    /// two args; a third would be taken as the server's reply callback.
    pub fn frame(&self, request_id: &str) -> Result<Vec<u8>, amp::AmpError> {
        let body = json!({"type": "call", "method": self.method, "args": self.args});
        amp::encode(&[Arg::Json(body), Arg::Str(request_id.to_string())])
    }
}

/// Which action a `stopWatch` precedes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchedAction {
    Stop,
    Delete,
}

impl WatchedAction {
    fn as_str(self) -> &'static str {
        match self {
            WatchedAction::Stop => "stopProcessId",
            WatchedAction::Delete => "deleteProcessId",
        }
    }
}

/// The `action_name`s `notifyByProcessId` may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifyAction {
    Restart,
    Reload,
    Stop,
    Delete,
}

impl NotifyAction {
    fn as_str(self) -> &'static str {
        match self {
            NotifyAction::Restart => "restart",
            NotifyAction::Reload => "reload",
            NotifyAction::Stop => "stop",
            NotifyAction::Delete => "delete",
        }
    }
}

/// A byte stream to the daemon (Unix socket, or TCP when `PM2_DAEMON_RPC_PORT` says so).
pub(crate) trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Connects to an endpoint within `timeout`, diagnosing failures against `home`.
pub(crate) async fn connect_stream(
    home: &Pm2Home,
    endpoint: &Endpoint,
    timeout: Duration,
) -> Result<Box<dyn Stream>, LiveError> {
    let path = endpoint.to_string();
    if !home.dir.is_dir() {
        return Err(LiveError::HomeMissing { path: home.dir.clone() });
    }
    let attempt = async {
        match endpoint {
            Endpoint::Unix(p) => tokio::net::UnixStream::connect(p).await.map(|s| Box::new(s) as Box<dyn Stream>),
            Endpoint::Tcp { host, port } => {
                tokio::net::TcpStream::connect((host.as_str(), *port)).await.map(|s| Box::new(s) as Box<dyn Stream>)
            }
        }
    };
    match tokio::time::timeout(timeout, attempt).await {
        Err(_) => Err(LiveError::ConnectTimeout { path, after: timeout }),
        Ok(Err(err)) => Err(home.diagnose_connect(endpoint, err)),
        Ok(Ok(stream)) => Ok(stream),
    }
}

/// One REQ connection to `rpc.sock`. Calls run one at a time, each within the deadline.
pub struct RpcConnection {
    io: Box<dyn Stream>,
    buf: FrameBuffer,
    path: String,
    timeout: Duration,
    id_prefix: String,
    next_id: u64,
    poisoned: bool,
    /// `pm2.pid`, to tell a daemon that died mid-call from a dropped connection.
    pid_file: Option<PathBuf>,
}

impl std::fmt::Debug for RpcConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcConnection").field("path", &self.path).field("poisoned", &self.poisoned).finish()
    }
}

impl RpcConnection {
    /// Connects to the home's `rpc.sock` (no retries: a down daemon is an error).
    pub async fn connect(home: &Pm2Home, timeout: Duration) -> Result<Self, LiveError> {
        let io = connect_stream(home, &home.rpc, timeout).await?;
        Ok(Self {
            io,
            buf: FrameBuffer::default(),
            path: home.rpc.to_string(),
            timeout,
            id_prefix: format!("reconcile-{}", std::process::id()),
            next_id: 0,
            poisoned: false,
            pid_file: Some(home.pid_file()),
        })
    }

    /// The per-call deadline.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Whether the next call may use this connection: false after a call that did
    /// not complete (timed out, or failed mid-exchange), whose reply may still come.
    pub fn is_usable(&self) -> bool {
        !self.poisoned
    }

    /// Sends a call and waits for its reply, within the connection's deadline.
    /// Returns the reply's `args` (the callback arguments after `err`).
    pub async fn call(&mut self, call: &Call) -> Result<Vec<Value>, LiveError> {
        let deadline = self.timeout;
        self.call_within(call, deadline).await
    }

    /// [`RpcConnection::call`] with an explicit deadline (stops wait for `kill_timeout`).
    pub async fn call_within(&mut self, call: &Call, deadline: Duration) -> Result<Vec<Value>, LiveError> {
        let mut replies = self.pipeline(std::slice::from_ref(call), deadline).await?;
        match replies.pop() {
            Some(reply) => reply.args(),
            None => Err(LiveError::BadReply { method: call.method(), detail: "no reply".into() }),
        }
    }

    /// Sends several read calls in one write and waits for every reply (the daemon
    /// answers pipelined calls, possibly out of order; replies are matched by id).
    /// One deadline covers them all. Transport faults fail the whole batch; each
    /// reply is parsed (and its `{"error"}` reported) by its own [`Reply`].
    pub async fn pipeline(&mut self, calls: &[Call], deadline: Duration) -> Result<Vec<Reply>, LiveError> {
        let in_flight = self.send(calls, deadline).await?;
        self.receive(in_flight).await
    }

    /// The first half of [`RpcConnection::pipeline`]: writes the calls and returns at
    /// once, so the daemon works on them while the caller does something else.
    /// `deadline` runs from now and also bounds [`RpcConnection::receive`].
    pub async fn send(&mut self, calls: &[Call], deadline: Duration) -> Result<InFlight, LiveError> {
        let method = calls.first().map_or("none", Call::method);
        if self.poisoned {
            return Err(LiveError::Unusable { method, path: self.path.clone() });
        }
        let until = tokio::time::Instant::now() + deadline;
        let mut frames = Vec::new();
        let mut ids = Vec::with_capacity(calls.len());
        for call in calls {
            self.next_id += 1;
            let id = format!("{}:{}", self.id_prefix, self.next_id);
            let frame = call.frame(&id).map_err(|source| LiveError::Frame { path: self.path.clone(), source })?;
            tracing::debug!(method = call.method(), id, "rpc call");
            frames.extend_from_slice(&frame);
            ids.push(id);
        }
        // Poison first; only a complete exchange clears it.
        self.poisoned = true;
        let methods: Vec<&'static str> = calls.iter().map(Call::method).collect();
        let write = async {
            self.io.write_all(&frames).await?;
            self.io.flush().await
        };
        match tokio::time::timeout_at(until, write).await {
            Err(_) => Err(LiveError::Timeout { method, path: self.path.clone(), after: deadline }),
            Ok(Err(source)) => Err(self.diagnose_drop(LiveError::Io { method, path: self.path.clone(), source })),
            Ok(Ok(())) => Ok(InFlight { methods, ids, until, deadline }),
        }
    }

    /// The second half of [`RpcConnection::pipeline`]: waits for every reply of
    /// calls [`RpcConnection::send`] wrote, within their deadline.
    pub async fn receive(&mut self, in_flight: InFlight) -> Result<Vec<Reply>, LiveError> {
        let InFlight { methods, ids, until, deadline } = in_flight;
        let method = methods.first().copied().unwrap_or("none");
        let bodies = match tokio::time::timeout_at(until, self.exchange(&methods, &ids)).await {
            Err(_) => return Err(LiveError::Timeout { method, path: self.path.clone(), after: deadline }),
            Ok(Err(err)) => return Err(self.diagnose_drop(err)),
            Ok(Ok(bodies)) => bodies,
        };
        self.poisoned = false;
        tracing::debug!(method, "rpc reply");
        Ok(methods
            .iter()
            .zip(bodies)
            .map(|(method, frame)| Reply { method, path: self.path.clone(), frame })
            .collect())
    }

    /// A connection that drops mid-call while `pm2.pid` names a dead daemon: the
    /// daemon died under us (as when it is killed: its listening socket outlives the
    /// main thread for a few milliseconds, so a connect can still succeed and is
    /// then reset). Say that, rather than "connection reset".
    fn diagnose_drop(&self, err: LiveError) -> LiveError {
        let dropped = match &err {
            LiveError::Closed { .. } => true,
            LiveError::Io { source, .. } => {
                matches!(source.kind(), std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe)
            }
            _ => false,
        };
        let Some(pid_file) = self.pid_file.as_ref().filter(|_| dropped) else { return err };
        let pid = std::fs::read_to_string(pid_file).ok().and_then(|text| text.trim().parse::<i64>().ok());
        match pid {
            Some(pid) if !daemon_alive(pid) => LiveError::StalePid { pid, pid_file: pid_file.clone() },
            _ => err,
        }
    }

    async fn exchange(&mut self, methods: &[&'static str], ids: &[String]) -> Result<Vec<RawFrame>, LiveError> {
        let method = methods.first().copied().unwrap_or("none");
        let io_err = |path: &str, source| LiveError::Io { method, path: path.to_string(), source };
        let mut bodies: Vec<Option<RawFrame>> = vec![None; ids.len()];
        let mut missing = ids.len();
        loop {
            while let Some(frame) =
                self.buf.next_raw_frame().map_err(|source| LiveError::Frame { path: self.path.clone(), source })?
            {
                // REP echoes our id as the last arg, in the encoding we sent.
                let last = frame.arg_count().checked_sub(1).and_then(|i| frame.decode_arg(i)).transpose();
                let reply_id = match last.map_err(|source| LiveError::Frame { path: self.path.clone(), source })? {
                    Some(Arg::Str(s) | Arg::Json(Value::String(s))) => s,
                    other => {
                        tracing::debug!(?other, "skipping a reply without a string id");
                        continue;
                    }
                };
                let Some(slot) = ids.iter().position(|id| *id == reply_id) else {
                    tracing::debug!(reply_id, "skipping a reply for another request");
                    continue;
                };
                if frame.arg_count() < 2 || frame.json_arg(0).is_none() {
                    let method = methods[slot];
                    let first = frame.arg_count().checked_sub(1).filter(|&i| i > 0).map(|_| frame.decode_arg(0));
                    return Err(LiveError::BadReply { method, detail: format!("reply body is {first:?}") });
                }
                if bodies[slot].replace(frame).is_none() {
                    missing -= 1;
                }
                if missing == 0 {
                    return Ok(bodies.into_iter().flatten().collect());
                }
            }
            let n = self.io.read_buf(self.buf.room(64 * 1024)).await.map_err(|e| io_err(&self.path, e))?;
            if n == 0 {
                let method = bodies.iter().position(Option::is_none).map_or(method, |i| methods[i]);
                return Err(LiveError::Closed { method, path: self.path.clone() });
            }
        }
    }
}

/// Calls written by [`RpcConnection::send`], whose replies are still to be read.
#[derive(Debug)]
pub struct InFlight {
    methods: Vec<&'static str>,
    ids: Vec<String>,
    until: tokio::time::Instant,
    deadline: Duration,
}

/// One reply, its body not parsed yet: small replies become `Value`s
/// ([`Reply::args`]), the process list is read straight into its own types
/// ([`Reply::first_arg`]).
#[derive(Debug)]
pub struct Reply {
    method: &'static str,
    path: String,
    frame: RawFrame,
}

impl Reply {
    /// The method this answers.
    pub fn method(&self) -> &'static str {
        self.method
    }

    fn body(&self) -> &[u8] {
        // `exchange` only keeps frames whose first argument is JSON.
        self.frame.json_arg(0).unwrap_or(b"null")
    }

    fn json_error(&self, err: &serde_json::Error) -> LiveError {
        match err.classify() {
            serde_json::error::Category::Data => LiveError::BadReply { method: self.method, detail: err.to_string() },
            _ => LiveError::Frame { path: self.path.clone(), source: AmpError::BadJson { message: err.to_string() } },
        }
    }

    /// `{"args":[...]}` on success, `{"error": ...}` on failure: the callback
    /// arguments after `err`, or the daemon's error.
    pub fn args(self) -> Result<Vec<Value>, LiveError> {
        let body: Value = serde_json::from_slice(self.body()).map_err(|e| self.json_error(&e))?;
        parse_reply(self.method, body)
    }

    /// The first callback argument read straight into `T` (`None` when the daemon
    /// sent none), or the daemon's error.
    pub fn first_arg<T: DeserializeOwned>(self) -> Result<Option<T>, LiveError> {
        self.first_arg_seed(PhantomData::<T>)
    }

    /// The first callback argument as raw JSON text (not parsed beyond finding it),
    /// or the daemon's error; `None` when the daemon sent none.
    pub fn first_arg_text(&self) -> Result<Option<&str>, LiveError> {
        #[derive(serde::Deserialize)]
        struct Raw<'a> {
            #[serde(default)]
            error: Option<Value>,
            #[serde(borrow, default)]
            args: Option<Vec<&'a serde_json::value::RawValue>>,
        }
        let raw: Raw<'_> = serde_json::from_slice(self.body()).map_err(|e| self.json_error(&e))?;
        match raw {
            Raw { error: Some(err), .. } => Err(LiveError::Remote { method: self.method, message: error_message(&err) }),
            Raw { args: Some(args), .. } => Ok(args.first().map(|a| a.get())),
            Raw { args: None, .. } => Err(LiveError::BadReply { method: self.method, detail: "reply has neither args nor error".into() }),
        }
    }

    /// [`Reply::first_arg`] read with a `serde` seed (e.g. how much of the list to read).
    pub fn first_arg_seed<S, T>(self, seed: S) -> Result<Option<T>, LiveError>
    where
        S: for<'de> DeserializeSeed<'de, Value = T>,
    {
        let mut de = serde_json::Deserializer::from_slice(self.body());
        let envelope = EnvelopeSeed(seed).deserialize(&mut de).and_then(|e| de.end().map(|()| e));
        let envelope = envelope.map_err(|e| self.json_error(&e))?;
        match envelope {
            Envelope { error: Some(err), .. } => Err(LiveError::Remote { method: self.method, message: error_message(&err) }),
            Envelope { args: Some(first), .. } => Ok(first),
            Envelope { args: None, .. } => {
                Err(LiveError::BadReply { method: self.method, detail: "reply has neither args nor error".into() })
            }
        }
    }
}

/// `{"args":[first, ...]}` or `{"error": ...}`, keeping only the first argument.
struct Envelope<T> {
    error: Option<Value>,
    /// `Some(None)`: an empty `args`.
    args: Option<Option<T>>,
}

/// Reads an [`Envelope`] whose first argument is read by the seed `S`.
struct EnvelopeSeed<S>(S);

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for EnvelopeSeed<S> {
    type Value = Envelope<S::Value>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        struct EnvelopeVisitor<S>(S);
        impl<'de, S: DeserializeSeed<'de>> Visitor<'de> for EnvelopeVisitor<S> {
            type Value = Envelope<S::Value>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an RPC reply object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut envelope = Envelope { error: None, args: None };
                let mut seed = Some(self.0);
                while let Some(key) = map.next_key::<String>()? {
                    match (key.as_str(), seed.take()) {
                        ("error", unused) => {
                            seed = unused;
                            envelope.error = Some(map.next_value()?);
                        }
                        ("args", Some(first)) => envelope.args = Some(map.next_value_seed(FirstOfSeed(first))?),
                        (_, unused) => {
                            seed = unused;
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(envelope)
            }
        }
        d.deserialize_map(EnvelopeVisitor(self.0))
    }
}

/// The first element of an array, read by the seed `S`; the others skipped.
struct FirstOfSeed<S>(S);

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for FirstOfSeed<S> {
    type Value = Option<S::Value>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        struct FirstVisitor<S>(S);
        impl<'de, S: DeserializeSeed<'de>> Visitor<'de> for FirstVisitor<S> {
            type Value = Option<S::Value>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an array of callback arguments")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let first = seq.next_element_seed(self.0)?;
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(first)
            }
        }
        d.deserialize_seq(FirstVisitor(self.0))
    }
}

fn error_message(err: &Value) -> String {
    match err {
        Value::String(s) => s.clone(),
        Value::Object(o) => o.get("msg").or_else(|| o.get("message")).and_then(Value::as_str).map_or_else(|| err.to_string(), str::to_string),
        other => other.to_string(),
    }
}

/// `{"args":[...]}` on success, `{"error": ...}` on failure (`pm2-axon-rpc/lib/server.js`).
fn parse_reply(method: &'static str, reply: Value) -> Result<Vec<Value>, LiveError> {
    let Value::Object(mut obj) = reply else {
        return Err(LiveError::BadReply { method, detail: "reply is not an object".into() });
    };
    if let Some(err) = obj.get("error") {
        return Err(LiveError::Remote { method, message: error_message(err) });
    }
    match obj.remove("args") {
        Some(Value::Array(args)) => Ok(args),
        _ => Err(LiveError::BadReply { method, detail: "reply has neither args nor error".into() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes a request frame back into (call object, id) for the shape checks.
    fn sent(call: &Call) -> (Value, Arg) {
        let frame = call.frame("reconcile-1:1").unwrap();
        let (mut args, used) = amp::decode(&frame).unwrap().unwrap();
        assert_eq!(used, frame.len());
        assert_eq!(args.len(), 2, "exactly two args: the call and the id");
        let id = args.pop().unwrap();
        let Some(Arg::Json(body)) = args.pop() else { panic!("call object is not json") };
        (body, id)
    }

    #[track_caller]
    fn assert_sends(call: Call, expected_args: Value) {
        let (body, id) = sent(&call);
        assert_eq!(id, Arg::Str("reconcile-1:1".into()));
        assert_eq!(body["type"], "call");
        assert_eq!(body["method"], call.method());
        assert_eq!(body["args"], expected_args, "args of {}", call.method());
        assert_eq!(body.as_object().unwrap().len(), 3);
    }

    #[test]
    fn read_methods_send_one_empty_object() {
        // ping/getVersion/getReport with `args: []` throw in the daemon and crash it.
        assert_sends(Call::ping(), json!([{}]));
        assert_sends(Call::get_version(), json!([{}]));
        assert_sends(Call::get_report(), json!([{}]));
        assert_sends(Call::get_monitor_data(), json!([{}]));
    }

    #[test]
    fn ping_frame_is_byte_exact() {
        let frame = Call::ping().frame("rust:7").unwrap();
        let body = br#"j:{"type":"call","method":"ping","args":[{}]}"#;
        let mut expected = vec![0x12];
        expected.extend_from_slice(&(body.len() as u32).to_be_bytes());
        expected.extend_from_slice(body);
        expected.extend_from_slice(&8u32.to_be_bytes());
        expected.extend_from_slice(b"s:rust:7");
        assert_eq!(frame, expected);
    }

    #[test]
    fn id_methods_send_a_plain_number() {
        assert_sends(Call::stop_process_id(4), json!([4]));
        assert_sends(Call::delete_process_id(4), json!([4]));
        assert_sends(Call::delete_old_worker(4), json!(["_old_4"]));
    }

    #[test]
    fn restart_and_reload_send_id_and_env_object() {
        let mut env = Map::new();
        env.insert("FOO".into(), json!("bar"));
        assert_sends(Call::restart_process_id(2, env.clone()), json!([{"id": 2, "env": {"FOO": "bar"}}]));
        assert_sends(Call::reload_process_id(2, Map::new()), json!([{"id": 2, "env": {}}]));
    }

    #[test]
    fn duplicate_sends_a_plain_id() {
        assert_sends(Call::duplicate_process_id(4), json!([4]));
    }

    #[test]
    fn stop_watch_sends_two_args() {
        assert_sends(Call::stop_watch(WatchedAction::Stop, 5), json!(["stopProcessId", 5]));
        assert_sends(Call::stop_watch(WatchedAction::Delete, 5), json!(["deleteProcessId", 5]));
    }

    #[test]
    fn notify_sends_id_action_and_manually() {
        assert_sends(
            Call::notify_by_process_id(1, NotifyAction::Restart),
            json!([{"id": 1, "action_name": "restart", "manually": true}]),
        );
    }

    #[test]
    fn prepare_refuses_payloads_that_crash_the_daemon() {
        let ok = json!({"name": "a", "env": {}, "pm_pid_path": "/p", "pm_exec_path": "/bin/sleep"});
        assert_sends(Call::prepare(ok.clone()).unwrap(), json!([ok]));
        for bad in [
            json!([]),
            json!({"env": {}, "pm_pid_path": "/p", "pm_exec_path": "/x"}),
            json!({"name": "a", "pm_pid_path": "/p", "pm_exec_path": "/x"}),
            json!({"name": "a", "env": "x", "pm_pid_path": "/p", "pm_exec_path": "/x"}),
            json!({"name": "a", "env": {}, "pm_exec_path": "/x"}),
        ] {
            assert!(matches!(Call::prepare(bad), Err(LiveError::InvalidCall { .. })));
        }
    }

    #[test]
    fn replies_parse_success_and_errors() {
        assert_eq!(parse_reply("ping", json!({"args": [{"msg": "pong"}]})).unwrap(), vec![json!({"msg": "pong"})]);
        assert_eq!(parse_reply("x", json!({"args": []})).unwrap(), Vec::<Value>::new());
        let err = parse_reply("stopProcessId", json!({"error": "999 : id unknown", "stack": "..."})).unwrap_err();
        assert_eq!(err.to_string(), "pm2 `stopProcessId` failed: 999 : id unknown");
        assert!(matches!(parse_reply("x", json!([1])), Err(LiveError::BadReply { .. })));
        assert!(matches!(parse_reply("x", json!({})), Err(LiveError::BadReply { .. })));
    }
}
