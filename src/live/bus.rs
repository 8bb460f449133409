//! PM2's event bus on `pub.sock`, as a typed stream.
//!
//! The daemon writes every message to every subscriber (`[s:<topic>, j:<data>]`);
//! there is no subscription message, no heartbeat and no replay, and daemon death
//! shows as EOF. A subscriber must keep reading: PM2 buffers without limit for a slow
//! one. So [`EventStream::next`] always drains, and drops topics nobody asked for.
//!
//! Note (pm2-internals.md §1.4): the daemon never emits `delete` by itself, and
//! `restart`/`stop` only come from clients that call `notifyByProcessId` (the CLI
//! does; [`super::client::Pm2Client`] does too). An auto-restart is `exit` then `online`.

use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use tokio::io::AsyncReadExt;

use super::amp::{Arg, FrameBuffer};
use super::error::LiveError;
use super::home::Pm2Home;
use super::model::{ProcessStatus, as_u64};
use super::rpc::{Stream, connect_stream};

/// What happened to a process (`process:event`'s `event`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcessEventKind {
    Start,
    Online,
    Exit,
    Restart,
    Stop,
    Delete,
    Reload,
    RestartOverlimit,
    /// Any other event name.
    Other(String),
}

impl ProcessEventKind {
    fn parse(value: &str) -> Self {
        match value {
            "start" => Self::Start,
            "online" => Self::Online,
            "exit" => Self::Exit,
            "restart" => Self::Restart,
            "stop" => Self::Stop,
            "delete" => Self::Delete,
            "reload" | "graceful reload" => Self::Reload,
            "restart overlimit" => Self::RestartOverlimit,
            other => Self::Other(other.to_string()),
        }
    }
}

/// One `process:event`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProcessEvent {
    pub kind: ProcessEventKind,
    pub pm_id: Option<u64>,
    pub name: Option<String>,
    pub namespace: Option<String>,
    /// The status in the payload (an `online` event still says `launching`).
    pub status: Option<ProcessStatus>,
    pub restarts: Option<u64>,
    pub unstable_restarts: Option<u64>,
    pub exit_code: Option<i64>,
    /// Sent by a client (`notifyByProcessId`) rather than by the daemon.
    pub manually: bool,
    /// ms since the epoch.
    pub at_ms: Option<i64>,
}

/// A message from the bus.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "topic", rename_all = "snake_case")]
pub enum BusEvent {
    /// `process:event`.
    Process(ProcessEvent),
    /// `pm2:kill`: the daemon is shutting down.
    Killed { message: Option<String> },
    /// `process:msg` of `ready`: a `wait_ready` app signalled ready (`process.send('ready')`).
    Ready { pm_id: Option<u64>, name: Option<String>, at_ms: Option<i64> },
    /// Any other topic (logs, other `process:msg`, ...), with its name only.
    Other { name: String },
}

impl BusEvent {
    /// Interprets one `[topic, data]` frame.
    pub fn from_frame(args: &[Arg]) -> Option<Self> {
        let topic = match args.first()? {
            Arg::Str(s) => s.as_str(),
            Arg::Json(Value::String(s)) => s.as_str(),
            _ => return None,
        };
        let data = match args.get(1) {
            Some(Arg::Json(v)) => v.clone(),
            _ => Value::Null,
        };
        Some(match topic {
            "process:event" => BusEvent::Process(process_event(&data)),
            "process:msg" if data.get("raw").and_then(Value::as_str) == Some("ready") => {
                let proc = data.get("process").unwrap_or(&Value::Null);
                BusEvent::Ready {
                    pm_id: proc.get("pm_id").and_then(as_u64),
                    name: proc.get("name").and_then(Value::as_str).map(str::to_string),
                    at_ms: data.get("at").and_then(Value::as_i64),
                }
            }
            "pm2:kill" => BusEvent::Killed { message: data.get("msg").and_then(Value::as_str).map(str::to_string) },
            other => BusEvent::Other { name: other.to_string() },
        })
    }
}

fn process_event(data: &Value) -> ProcessEvent {
    let proc = data.get("process").unwrap_or(&Value::Null);
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    ProcessEvent {
        kind: ProcessEventKind::parse(data.get("event").and_then(Value::as_str).unwrap_or("")),
        pm_id: proc.get("pm_id").and_then(as_u64),
        name: s(proc, "name"),
        namespace: s(proc, "namespace"),
        status: proc.get("status").and_then(Value::as_str).map(ProcessStatus::parse),
        restarts: proc.get("restart_time").and_then(as_u64),
        unstable_restarts: proc.get("unstable_restarts").and_then(as_u64),
        exit_code: proc.get("exit_code").and_then(Value::as_i64),
        manually: data.get("manually").and_then(Value::as_bool).unwrap_or(false),
        at_ms: data.get("at").and_then(Value::as_i64),
    }
}

/// A subscription to `pub.sock`.
pub struct EventStream {
    io: Box<dyn Stream>,
    buf: FrameBuffer,
    path: String,
    /// Return only `process:event` and `pm2:kill`; other topics are read and dropped.
    process_only: bool,
    chunk: Vec<u8>,
}

impl std::fmt::Debug for EventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStream").field("path", &self.path).finish()
    }
}

impl EventStream {
    /// Subscribes to the home's `pub.sock` (connect bounded by `timeout`).
    /// With `process_only`, log lines and other topics are drained and dropped.
    pub async fn subscribe(home: &Pm2Home, timeout: Duration, process_only: bool) -> Result<Self, LiveError> {
        let io = connect_stream(home, &home.bus, timeout).await?;
        Ok(Self { io, buf: FrameBuffer::default(), path: home.bus.to_string(), process_only, chunk: vec![0; 64 * 1024] })
    }

    /// The next event; `Ok(None)` when the daemon closed the bus (it died or was killed).
    /// Waits as long as it takes: wrap it in `tokio::time::timeout` to bound it.
    pub async fn next(&mut self) -> Result<Option<BusEvent>, LiveError> {
        loop {
            while let Some(frame) =
                self.buf.next_frame().map_err(|source| LiveError::Frame { path: self.path.clone(), source })?
            {
                match BusEvent::from_frame(&frame) {
                    Some(BusEvent::Other { .. }) if self.process_only => continue,
                    Some(event) => return Ok(Some(event)),
                    None => continue,
                }
            }
            let n = match self.io.read(&mut self.chunk).await {
                Ok(n) => n,
                // A daemon killed hard resets the connection: that is its end too.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => 0,
                Err(source) => return Err(LiveError::Io { method: "subscribe", path: self.path.clone(), source }),
            };
            if n == 0 {
                return Ok(None);
            }
            let (chunk, buf) = (&self.chunk, &mut self.buf);
            buf.extend(&chunk[..n]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn process_events_are_typed() {
        let frame = [
            Arg::Str("process:event".into()),
            Arg::Json(json!({"event": "restart overlimit", "manually": false, "at": 5,
                "process": {"pm_id": 4, "name": "bogus", "namespace": "ns1", "status": "errored", "restart_time": 3, "exit_code": 3}})),
        ];
        let Some(BusEvent::Process(ev)) = BusEvent::from_frame(&frame) else { panic!() };
        assert_eq!(ev.kind, ProcessEventKind::RestartOverlimit);
        assert_eq!((ev.pm_id, ev.name.as_deref(), ev.status), (Some(4), Some("bogus"), Some(ProcessStatus::Errored)));
        assert_eq!(ev.exit_code, Some(3));
    }

    #[test]
    fn other_topics_and_garbage_do_not_panic() {
        assert_eq!(
            BusEvent::from_frame(&[Arg::Str("log:out".into()), Arg::Json(json!({}))]),
            Some(BusEvent::Other { name: "log:out".into() })
        );
        assert_eq!(BusEvent::from_frame(&[Arg::Blob(vec![1])]), None);
        let ready = json!({"at": 1700, "raw": "ready", "process": {"pm_id": 4, "name": "api", "namespace": "web"}});
        assert_eq!(
            BusEvent::from_frame(&[Arg::Str("process:msg".into()), Arg::Json(ready)]),
            Some(BusEvent::Ready { pm_id: Some(4), name: Some("api".into()), at_ms: Some(1700) })
        );
        assert_eq!(BusEvent::from_frame(&[]), None);
        let Some(BusEvent::Process(ev)) = BusEvent::from_frame(&[Arg::Str("process:event".into())]) else { panic!() };
        assert_eq!(ev.kind, ProcessEventKind::Other(String::new()));
    }
}
