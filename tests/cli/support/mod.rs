//! Helpers for every integration test: a private PM2 daemon in a temporary
//! `PM2_HOME`, fixture apps, and a builder for the `reconcile` binary.
//!
//! Safety: nothing here ever uses `~/.pm2`. Every `pm2` command runs with `PM2_HOME`
//! set to a directory this helper created. On drop (also when a test panics) a
//! [`Pm2Home`] kills only processes whose environment says `PM2_HOME=<its dir>` (the
//! daemon from its `pm2.pid`, the apps from `pids/`, and any orphans), then removes
//! the directory.

#![allow(dead_code)]

pub mod process;
pub mod tools;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The PM2 major the tests run against: `RECONCILE_TEST_PM2` (`5`, `6` or `7`;
/// default 7). It picks both the daemon [`Pm2Home::start`] launches and the package
/// `reconcile` is given as `RECONCILE_PM2`, so a run talks to one version throughout.
pub fn pm2_major() -> u32 {
    match std::env::var("RECONCILE_TEST_PM2").ok().as_deref().map(str::trim) {
        None | Some("" | "7") => 7,
        Some("6") => 6,
        Some("5") => 5,
        Some(other) => panic!("RECONCILE_TEST_PM2={other:?}: expected 5, 6 or 7"),
    }
}

/// The repository's pm2 package of [`pm2_major`] (installed by `npm ci`: package.json
/// names `pm2` (7.x), `pm2-6` and `pm2-5`, npm aliases of pm2).
pub fn pm2_package() -> PathBuf {
    let name = match pm2_major() {
        7 => "pm2",
        6 => "pm2-6",
        _ => "pm2-5",
    };
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("node_modules").join(name);
    assert!(
        dir.join("bin/pm2").exists(),
        "{} is missing: run `npm ci` in the repository root (package.json pins the pm2 versions the tests use)",
        dir.display()
    );
    dir
}

/// The `pm2` CLI of [`pm2_package`].
pub fn pm2_bin() -> PathBuf {
    pm2_package().join("bin/pm2")
}

/// The exact version of [`pm2_package`] (its package.json), e.g. `"5.4.3"`.
pub fn pm2_version() -> String {
    let text = std::fs::read_to_string(pm2_package().join("package.json")).expect("pm2's package.json");
    let doc: Value = serde_json::from_str(&text).expect("pm2's package.json is JSON");
    doc["version"].as_str().expect("a version in pm2's package.json").to_string()
}

/// A short temporary directory (Unix socket paths must stay under ~100 bytes).
pub fn short_tempdir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("r2-").tempdir_in("/tmp").expect("creating a temp dir in /tmp")
}

/// `reconcile` with a clean environment: no `PM2_HOME`, `HOME` pointing at an empty
/// directory (so the `~/.pm2` fallback can never be the real one).
pub fn reconcile(cwd: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_reconcile"));
    cmd.current_dir(cwd)
        .env_remove("PM2_HOME")
        .env_remove("PM2_DAEMON_RPC_PORT")
        .env_remove("PM2_DAEMON_PUB_PORT")
        .env_remove("RUST_LOG")
        .env("HOME", cwd)
        .env("NO_COLOR", "1")
        // The repo's PM2, for `apply`'s resolver (never the CLI: it is not run).
        .env("RECONCILE_PM2", pm2_package());
    cmd
}

/// Runs a command to completion within `limit`, killing it (by its own pid) if it
/// takes longer.
pub fn run_with_timeout(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    let mut out_pipe = child.stdout.take().expect("stdout");
    let mut err_pipe = child.stderr.take().expect("stderr");
    let out_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out_pipe.read_to_end(&mut v);
        v
    });
    let err_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err_pipe.read_to_end(&mut v);
        v
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} took longer than {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    Output { status, stdout: out_t.join().unwrap_or_default(), stderr: err_t.join().unwrap_or_default() }
}

/// A private PM2 home with its own daemon.
pub struct Pm2Home {
    dir: tempfile::TempDir,
}

impl Pm2Home {
    /// An empty home (no daemon).
    pub fn empty() -> Self {
        Self { dir: short_tempdir() }
    }

    /// A home with a running daemon (started by `pm2 ping`, which launches one).
    pub fn start() -> Self {
        let home = Self::empty();
        let out = home.pm2(&["ping"]);
        assert!(out.status.success(), "pm2 ping failed: {}", String::from_utf8_lossy(&out.stderr));
        home.wait_for(|| home.path().join("rpc.sock").exists(), "rpc.sock");
        home
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The daemon's pid from `pm2.pid`.
    pub fn daemon_pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.path().join("pm2.pid")).ok()?.trim().parse().ok()
    }

    /// Runs the repo's `pm2` with `PM2_HOME` set to this home. `_` is removed, so a
    /// daemon crash can never run `pm2 update` against anything.
    pub fn pm2(&self, args: &[&str]) -> Output {
        run_with_timeout(&mut self.pm2_command(args), Duration::from_secs(60))
    }

    /// The `pm2` command [`Pm2Home::pm2`] runs, for callers that run it themselves.
    pub fn pm2_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(pm2_bin());
        cmd.args(args)
            .current_dir(self.path())
            .env("PM2_HOME", self.path())
            .env_remove("_")
            .env_remove("PM2_DAEMON_RPC_PORT")
            .env_remove("PM2_DAEMON_PUB_PORT");
        cmd
    }

    /// Runs `pm2` and panics with its output if it fails.
    pub fn pm2_ok(&self, args: &[&str]) -> Output {
        let out = self.pm2(args);
        assert!(
            out.status.success(),
            "pm2 {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// `pm2 jlist`, parsed. Only call it while the daemon is up (otherwise the CLI
    /// starts a new one).
    pub fn jlist(&self) -> Value {
        let out = self.pm2_ok(&["jlist"]);
        serde_json::from_slice(&out.stdout).expect("jlist is JSON")
    }

    /// A `sleep 3600` app (`interpreter: none`, fork).
    pub fn start_sleep(&self, name: &str, namespace: &str) {
        self.pm2_ok(&["start", "/bin/sleep", "--name", name, "--namespace", namespace, "--interpreter", "none", "--", "3600"]);
    }

    /// Writes `app.js`, a Node app that idles (for cluster mode), and returns its path.
    pub fn node_app(&self) -> PathBuf {
        let path = self.path().join("app.js");
        std::fs::write(&path, "setInterval(() => {}, 1 << 30);\n").expect("writing app.js");
        path
    }

    /// Starts the apps of an ecosystem (`{"apps": [...]}`) with `pm2 start FILE`.
    pub fn start_ecosystem(&self, file_name: &str, ecosystem: &Value) -> PathBuf {
        let path = self.path().join(file_name);
        std::fs::write(&path, serde_json::to_vec_pretty(ecosystem).expect("json")).expect("writing ecosystem");
        self.pm2_ok(&["start", path.to_str().expect("utf-8 path")]);
        path
    }

    /// Writes a reconcile.toml in this home owning `namespaces`, returns its directory.
    pub fn project(&self, namespaces: &[&str], timeout_ms: u64) -> PathBuf {
        let dir = self.path().join("project");
        std::fs::create_dir_all(&dir).expect("project dir");
        let ns: Vec<String> = namespaces.iter().map(|n| format!("{n:?}")).collect();
        let text = format!(
            "[project]\nname = \"t\"\nnamespaces = [{}]\n\n[pm2]\nhome = {:?}\ntimeout_ms = {timeout_ms}\n",
            ns.join(", "),
            self.path().display().to_string()
        );
        std::fs::write(dir.join("reconcile.toml"), text).expect("reconcile.toml");
        dir
    }

    /// `reconcile` in this home's project dir (if any), with `PM2_HOME` set.
    pub fn reconcile(&self) -> Command {
        let dir = self.path().join("project");
        let cwd = if dir.is_dir() { dir } else { self.path().to_path_buf() };
        let mut cmd = reconcile(&cwd);
        cmd.env("PM2_HOME", self.path());
        cmd
    }

    /// The library's view of this home.
    pub fn live_home(&self) -> reconcile::live::Pm2Home {
        reconcile::live::Pm2Home::at(self.path())
    }

    /// (name, namespace, pid, restarts, status) of every process outside `owned`,
    /// read with `pm2 jlist` (not with reconcile's own client), sorted: what a
    /// test compares before and after to prove a bystander was not touched.
    pub fn bystanders(&self, owned: &str) -> Vec<(String, String, Value, Value, Value)> {
        let mut out: Vec<_> = self
            .jlist()
            .as_array()
            .expect("jlist array")
            .iter()
            .filter(|p| p["pm2_env"]["namespace"] != owned)
            .map(|p| {
                (
                    p["name"].as_str().unwrap_or_default().to_string(),
                    p["pm2_env"]["namespace"].as_str().unwrap_or_default().to_string(),
                    p["pid"].clone(),
                    p["pm2_env"]["restart_time"].clone(),
                    p["pm2_env"]["status"].clone(),
                )
            })
            .collect();
        out.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        out
    }

    /// Waits until `cond` holds (10 s at most).
    pub fn wait_for(&self, mut cond: impl FnMut() -> bool, what: &str) {
        let start = Instant::now();
        while !cond() {
            assert!(start.elapsed() < Duration::from_secs(10), "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until `jlist` shows `name` with `status`.
    pub fn wait_status(&self, name: &str, status: &str) {
        self.wait_for(
            || {
                self.jlist().as_array().into_iter().flatten().any(|p| {
                    p["name"] == name && p["pm2_env"]["status"] == status
                })
            },
            &format!("{name} to be {status}"),
        );
    }

    /// Kills the daemon with SIGKILL (its apps keep running as orphans), leaving
    /// `pm2.pid` and the socket files behind: a dead daemon, as after a crash.
    ///
    /// Returns once every thread of the daemon has exited, not just its main one:
    /// Node's main thread becomes a zombie first while its worker threads are still
    /// being torn down, and until the last of them exits the process's descriptors,
    /// the listening `rpc.sock` among them, stay open, so a connect still succeeds and
    /// is then reset (observed: 3 ms idle, longer on a loaded host).
    pub fn kill_daemon_hard(&self) {
        let pid = self.daemon_pid().expect("pm2.pid");
        assert!(self.is_ours(pid), "pm2.pid names a process that is not this home's daemon");
        kill(pid, libc::SIGKILL);
        self.wait_for(|| !any_thread_alive(pid), "every thread of the daemon to exit");
    }

    /// Whether `pid` runs with `PM2_HOME=<this home>` (so it is ours to kill).
    pub fn is_ours(&self, pid: i32) -> bool {
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else { return false };
        let needle = format!("PM2_HOME={}", self.path().display());
        environ.split(|b| *b == 0).any(|kv| kv == needle.as_bytes())
    }

    /// Every process that belongs to this home.
    fn our_pids(&self) -> Vec<i32> {
        let mut pids: Vec<i32> = Vec::new();
        pids.extend(self.daemon_pid());
        if let Ok(entries) = std::fs::read_dir(self.path().join("pids")) {
            for e in entries.flatten() {
                if let Ok(text) = std::fs::read_to_string(e.path()) {
                    pids.extend(text.trim().parse::<i32>().ok());
                }
            }
        }
        // Orphans whose pid files are gone (e.g. after a daemon crash).
        if let Ok(entries) = std::fs::read_dir("/proc") {
            for e in entries.flatten() {
                if let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) {
                    pids.push(pid);
                }
            }
        }
        let me = std::process::id() as i32;
        pids.sort_unstable();
        pids.dedup();
        pids.into_iter().filter(|&p| p > 1 && p != me && self.is_ours(p)).collect()
    }
}

impl Drop for Pm2Home {
    fn drop(&mut self) {
        // Daemon first (so it does not restart the apps), then everything else ours.
        if let Some(pid) = self.daemon_pid().filter(|&p| self.is_ours(p)) {
            kill(pid, libc::SIGKILL);
        }
        for _ in 0..3 {
            let pids = self.our_pids();
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                kill(pid, libc::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

pub fn kill(pid: i32, signal: i32) {
    // SAFETY: plain kill(2) on a pid this module verified is ours.
    unsafe {
        libc::kill(pid, signal);
    }
}

pub fn alive(pid: i32) -> bool {
    // A zombie still "exists"; look at /proc state as well.
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    running_state(&stat)
}

/// Whether any thread of process `pid` still runs (is neither a zombie nor dead).
pub fn any_thread_alive(pid: i32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return false };
    tasks.flatten().any(|task| std::fs::read_to_string(task.path().join("stat")).is_ok_and(|stat| running_state(&stat)))
}

/// `/proc/.../stat` says neither zombie (`Z`) nor dead (`X`, `x`).
fn running_state(stat: &str) -> bool {
    stat.rsplit_once(')').and_then(|(_, rest)| rest.trim_start().chars().next()).is_some_and(|state| !matches!(state, 'Z' | 'X' | 'x'))
}

/// A process this test spawned itself; killed on drop.
pub struct Spawned(pub Child);

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `reconcile` and returns (exit code, stdout, stderr, elapsed).
pub fn run(cmd: &mut Command) -> (i32, String, String, Duration) {
    let start = Instant::now();
    let out = run_with_timeout(cmd, Duration::from_secs(60));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        start.elapsed(),
    )
}

/// A fork `sleep 3600` app in namespace `mine`, clean under the built-in policies
/// (with `min-uptime` and `restart-delay` relaxed by the test's reconcile.toml), with a
/// short min_uptime; `extra` keys are set on top.
pub fn sleep_app(name: &str, extra: Value) -> Value {
    let mut app = serde_json::json!({"name": name, "namespace": "mine", "script": "/bin/sleep", "args": "3600",
        "interpreter": "none", "exec_mode": "fork", "min_uptime": 500, "max_restarts": 3,
        "restart_delay": 0, "kill_timeout": 500, "autorestart": true,
        "out_file": "/dev/null", "error_file": "/dev/null", "log_date_format": "YYYY-MM-DD HH:mm:ss"});
    for (k, v) in extra.as_object().expect("extra is an object") {
        app[k] = v.clone();
    }
    app
}

// HTTP on loopback, for rollouts under load (deploy tests and the benchmark).

/// One GET on a new connection; the body, or `None` on any failure.
pub fn get(port: u16) -> Option<String> {
    let mut stream = std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(5)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    std::io::Write::write_all(&mut stream, b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut text = String::new();
    std::io::Read::read_to_string(&mut stream, &mut text).ok()?;
    if !text.starts_with("HTTP/1.1 200") {
        return None;
    }
    text.split("\r\n\r\n").nth(1).map(str::to_string)
}

/// Steady load on `port` from two clients while `during` runs: (ok, failed).
pub fn under_load<T>(port: u16, during: impl FnOnce() -> T) -> (usize, usize, T) {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ok = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let failed = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let clients: Vec<_> = (0..2)
        .map(|_| {
            let (stop, ok, failed) = (std::sync::Arc::clone(&stop), std::sync::Arc::clone(&ok), std::sync::Arc::clone(&failed));
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    match get(port) {
                        Some(_) => ok.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                        None => failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                    };
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        })
        .collect();
    let result = during();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for client in clients {
        client.join().expect("a load client panicked");
    }
    (ok.load(std::sync::atomic::Ordering::Relaxed), failed.load(std::sync::atomic::Ordering::Relaxed), result)
}

/// A port free on loopback now (the OS picks it; the listener is closed again).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a free port on loopback");
    listener.local_addr().expect("the bound address").port()
}

