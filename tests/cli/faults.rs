//! Daemon faults: each is one clear line and exit 1 within the timeout, never a hang,
//! never a panic, and never a new daemon started as a side effect.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::Duration;

use reconcile::live::amp::{self, Arg, FrameBuffer};
use serde_json::json;

use crate::support::{Pm2Home, reconcile, run, short_tempdir};

const TIMEOUT_MS: u64 = 400;

/// Runs `reconcile status` with `PM2_HOME=home` and a 400 ms timeout; checks the
/// fault contract and returns the error line.
fn status_fault(home: &Path) -> String {
    let project = short_tempdir();
    std::fs::write(
        project.path().join("reconcile.toml"),
        format!("[project]\nnamespaces = [\"x\"]\n[pm2]\ntimeout_ms = {TIMEOUT_MS}\n"),
    )
    .unwrap();
    let (code, stdout, stderr, elapsed) = run(reconcile(project.path()).env("PM2_HOME", home).arg("status"));
    assert_eq!(code, 1, "stdout: {stdout}\nstderr: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(elapsed < Duration::from_millis(TIMEOUT_MS * 2 + 1500), "took {elapsed:?}");
    stderr.trim().to_string()
}

/// A fake daemon on `dir/rpc.sock` that hands its first connection to `behave`.
fn fake_daemon(dir: &Path, behave: impl FnOnce(UnixStream) + Send + 'static) {
    let listener = UnixListener::bind(dir.join("rpc.sock")).unwrap();
    std::thread::spawn(move || {
        if let Ok((stream, _)) = listener.accept() {
            behave(stream);
        }
    });
}

/// Reads one request frame and returns its id. Pipelined requests may arrive in one
/// read, so the buffer lives as long as the thread.
fn read_request(stream: &mut UnixStream) -> String {
    thread_local! {
        static BUF: std::cell::RefCell<FrameBuffer> = std::cell::RefCell::new(FrameBuffer::default());
    }
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(args) = BUF.with(|fb| fb.borrow_mut().next_frame().unwrap()) {
            return match args.last() {
                Some(Arg::Str(id)) => id.clone(),
                other => panic!("request without id: {other:?}"),
            };
        }
        let n = stream.read(&mut chunk).unwrap();
        assert!(n > 0, "client closed");
        BUF.with(|fb| fb.borrow_mut().extend(&chunk[..n]));
    }
}

#[test]
fn missing_home_is_a_clear_error() {
    let dir = short_tempdir();
    let err = status_fault(&dir.path().join("nope"));
    assert!(err.contains("PM2 home") && err.contains("does not exist"), "{err}");
}

#[test]
fn no_daemon_is_a_clear_error_and_none_is_started() {
    let dir = short_tempdir();
    let err = status_fault(dir.path());
    assert_eq!(
        err,
        format!("error: no PM2 daemon answers at {}/rpc.sock: start it with pm2, or set [pm2] home", dir.path().display())
    );
    // reconcile never starts a daemon as a side effect.
    assert!(!dir.path().join("rpc.sock").exists());
    assert!(!dir.path().join("pm2.pid").exists());
}

#[test]
fn dead_daemon_with_stale_pid_is_reported_and_not_replaced() {
    let home = Pm2Home::start();
    home.start_sleep("orphan", "mine");
    let pid = home.daemon_pid().unwrap();
    home.kill_daemon_hard();
    let err = status_fault(home.path());
    assert!(err.contains(&format!("names pid {pid}, which is not running")), "{err}");
    assert!(err.contains("orphans"), "{err}");
    // Unlike any pm2 CLI command, reading did not start a new, empty daemon.
    assert_eq!(home.daemon_pid(), Some(pid));
    assert!(UnixStream::connect(home.path().join("rpc.sock")).is_err());
}

#[test]
fn stale_socket_without_pid_file_is_reported() {
    let dir = short_tempdir();
    drop(UnixListener::bind(dir.path().join("rpc.sock")).unwrap());
    let err = status_fault(dir.path());
    assert!(err.contains("the socket is stale"), "{err}");
}

#[test]
fn a_socket_that_never_answers_times_out() {
    let dir = short_tempdir();
    fake_daemon(dir.path(), |mut s| {
        let _ = read_request(&mut s);
        std::thread::sleep(Duration::from_secs(30));
    });
    let err = status_fault(dir.path());
    assert!(err.contains(&format!("did not answer `getVersion` within {TIMEOUT_MS} ms")), "{err}");
}

#[test]
fn a_truncated_reply_then_silence_times_out() {
    let dir = short_tempdir();
    fake_daemon(dir.path(), |mut s| {
        let id = read_request(&mut s);
        let frame = amp::encode(&[Arg::Json(json!({"args": ["7.0.4"]})), Arg::Str(id)]).unwrap();
        s.write_all(&frame[..frame.len() / 2]).unwrap();
        std::thread::sleep(Duration::from_secs(30));
    });
    let err = status_fault(dir.path());
    assert!(err.contains("did not answer `getVersion`"), "{err}");
}

#[test]
fn a_truncated_reply_then_close_is_reported() {
    let dir = short_tempdir();
    fake_daemon(dir.path(), |mut s| {
        let id = read_request(&mut s);
        let frame = amp::encode(&[Arg::Json(json!({"args": ["7.0.4"]})), Arg::Str(id)]).unwrap();
        s.write_all(&frame[..7]).unwrap();
    });
    let err = status_fault(dir.path());
    assert!(err.contains("closed the connection during `getVersion`"), "{err}");
}

#[test]
fn a_daemon_that_dies_mid_call_is_reported_dead() {
    // A daemon killed just as we connect: the connect succeeds, then the connection
    // drops, and pm2.pid names a process that is gone.
    let dir = short_tempdir();
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    let pid = gone.id();
    gone.wait().unwrap();
    std::fs::write(dir.path().join("pm2.pid"), pid.to_string()).unwrap();
    fake_daemon(dir.path(), |mut s| {
        let _ = read_request(&mut s);
        drop(s);
    });
    let err = status_fault(dir.path());
    assert!(err.contains(&format!("names pid {pid}, which is not running")), "{err}");
}

#[test]
fn an_oversized_frame_is_rejected() {
    let dir = short_tempdir();
    fake_daemon(dir.path(), |mut s| {
        let _ = read_request(&mut s);
        s.write_all(&[0x12, 0xff, 0xff, 0xff, 0xf0, b'j', b':']).unwrap();
        std::thread::sleep(Duration::from_secs(30));
    });
    let err = status_fault(dir.path());
    assert!(err.contains("sent a malformed frame"), "{err}");
}

#[test]
fn garbage_bytes_are_rejected() {
    let dir = short_tempdir();
    fake_daemon(dir.path(), |mut s| {
        let _ = read_request(&mut s);
        s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").unwrap();
        std::thread::sleep(Duration::from_secs(30));
    });
    let err = status_fault(dir.path());
    assert!(err.contains("sent a malformed frame"), "{err}");
}

#[test]
fn an_unsupported_daemon_version_is_refused() {
    let dir = short_tempdir();
    // Answers every request (reconcile pipelines its reads) with an old version.
    fake_daemon(dir.path(), |mut s| {
        for _ in 0..3 {
            let id = read_request(&mut s);
            let frame = amp::encode(&[Arg::Json(json!({"args": ["5.3.0"]})), Arg::Str(id)]).unwrap();
            s.write_all(&frame).unwrap();
        }
        std::thread::sleep(Duration::from_secs(30));
    });
    let err = status_fault(dir.path());
    assert!(err.contains("runs version 5.3.0; reconcile supports 5.x (5.4 or later), 6.x and 7.x"), "{err}");
}

#[test]
fn permission_denied_is_reported() {
    // Root can connect to anything; only meaningful for other users.
    if unsafe { libc::geteuid() } == 0 {
        return;
    }
    let dir = short_tempdir();
    let _listener = UnixListener::bind(dir.path().join("rpc.sock")).unwrap();
    std::fs::set_permissions(dir.path().join("rpc.sock"), std::os::unix::fs::PermissionsExt::from_mode(0o000)).unwrap();
    let err = status_fault(dir.path());
    assert!(err.contains("permission denied"), "{err}");
}
