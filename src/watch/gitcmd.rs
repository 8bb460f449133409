//! The system `git`, bounded, for pull mode's network fetches (as Argo CD does).
//!
//! - every call has a timeout; on expiry the whole process group (git, its
//!   `git-remote-https` or `ssh`) is killed;
//! - credentials reach git only through the child's environment and an askpass
//!   script that prints them from it: never in arguments, URLs or files we write;
//!   `credential.helper` is reset so no helper stores them;
//! - TLS is always verified (`GIT_SSL_NO_VERIFY` is dropped), with an optional CA
//!   bundle; ssh runs in batch mode with `StrictHostKeyChecking=yes`;
//! - what git writes to stderr is scrubbed of the credentials and of any
//!   `user:password@` in URLs before it is shown.

use std::io::Read;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The environment variables an https username and password (or token) are read from.
pub const USERNAME_ENV: &str = "RECONCILE_GIT_USERNAME";
pub const PASSWORD_ENV: &str = "RECONCILE_GIT_PASSWORD";

/// A username and password (or token) for https remotes. `Debug` hides the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("username", &self.username).field("password", &"***").finish()
    }
}

/// Why the credentials could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("cannot read the git credentials file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the git credentials file {path} can be read by other users (mode {mode:o}); run `chmod 600 {path}`")]
    Open { path: PathBuf, mode: u32 },
    #[error("{path}:{line}: expected `username=NAME` or `password=TOKEN`")]
    Syntax { path: PathBuf, line: usize },
    #[error("{path} has no `password=` line; add one (the token)")]
    NoPassword { path: PathBuf },
}

impl Credentials {
    /// From `RECONCILE_GIT_USERNAME` and `RECONCILE_GIT_PASSWORD`, when the password
    /// is set (the username defaults to `git`, which token-based servers accept).
    pub fn from_env() -> Option<Self> {
        let password = std::env::var(PASSWORD_ENV).ok().filter(|p| !p.is_empty())?;
        let username = std::env::var(USERNAME_ENV).ok().filter(|u| !u.is_empty()).unwrap_or_else(|| "git".into());
        Some(Self { username, password })
    }

    /// From a file of `username=NAME` and `password=TOKEN` lines (git's credential
    /// format; `#` comments and blank lines allowed). It must not be readable by others.
    pub fn from_file(path: &Path) -> Result<Self, CredentialsError> {
        let read = |source| CredentialsError::Read { path: path.into(), source };
        let mode = std::fs::metadata(path).map_err(read)?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(CredentialsError::Open { path: path.into(), mode: mode & 0o777 });
        }
        let text = std::fs::read_to_string(path).map_err(read)?;
        let (mut username, mut password) = (None, None);
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match line.split_once('=') {
                Some(("username", v)) => username = Some(v.to_string()),
                Some(("password", v)) => password = Some(v.to_string()),
                _ => return Err(CredentialsError::Syntax { path: path.into(), line: n + 1 }),
            }
        }
        let password = password.filter(|p| !p.is_empty()).ok_or_else(|| CredentialsError::NoPassword { path: path.into() })?;
        Ok(Self { username: username.filter(|u| !u.is_empty()).unwrap_or_else(|| "git".into()), password })
    }
}

/// How the remote is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    /// https basic auth (a token as the password).
    pub credentials: Option<Credentials>,
    /// A CA bundle for https (`GIT_SSL_CAINFO`).
    pub ca_file: Option<PathBuf>,
    /// An ssh private key (`ssh -i`).
    pub ssh_key: Option<PathBuf>,
    /// The known_hosts file ssh checks the server's key against.
    pub known_hosts: Option<PathBuf>,
    /// The longest one git call may take.
    pub timeout: Duration,
}

impl Access {
    /// No credentials, system CAs and known_hosts, the given timeout.
    pub fn plain(timeout: Duration) -> Self {
        Self { credentials: None, ca_file: None, ssh_key: None, known_hosts: None, timeout }
    }
}

/// Why a git call failed. Messages are scrubbed of credentials.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot run `git` ({0}); pull mode needs git installed (apt-get install git)")]
    Spawn(String),
    #[error("git {what} did not finish within {secs} s and was stopped; check the network, or raise --git-timeout")]
    Timeout { what: String, secs: u64 },
    #[error("{stderr}")]
    Failed { stderr: String },
}

/// The askpass script: prints the username or the password from the environment
/// git passes on. It holds no secret itself.
const ASKPASS: &str = "#!/bin/sh\n# Written by reconcile: git's askpass for https; prints what the environment holds.\ncase \"$1\" in\n  [Uu]sername*) printf '%s\\n' \"$RECONCILE_GIT_USERNAME\" ;;\n  *) printf '%s\\n' \"$RECONCILE_GIT_PASSWORD\" ;;\nesac\n";

/// Writes the askpass script to `path` (mode 0700) unless it is there already.
pub fn write_askpass(path: &Path) -> std::io::Result<()> {
    if std::fs::read_to_string(path).is_ok_and(|t| t == ASKPASS) {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o700).open(&tmp)?;
    std::io::Write::write_all(&mut file, ASKPASS.as_bytes())?;
    drop(file);
    std::fs::rename(&tmp, path)
}

/// Runs `git ARGS` in `dir` with `access` (and the askpass script at `askpass` when
/// there are credentials). Returns stdout; an error carries git's scrubbed stderr.
pub fn run(dir: &Path, access: &Access, askpass: &Path, args: &[&str]) -> Result<String, RunError> {
    let mut cmd = Command::new("git");
    cmd.current_dir(dir)
        // No credential helper: none may store the token, and none from the host is asked.
        .args(["-c", "credential.helper=", "-c", "http.sslVerify=true"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    for var in ["GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_SSL_NO_VERIFY", "GIT_ASKPASS", "SSH_ASKPASS", USERNAME_ENV, PASSWORD_ENV] {
        cmd.env_remove(var);
    }
    cmd.env("GIT_TERMINAL_PROMPT", "0").env("LC_ALL", "C").env("GIT_SSH_COMMAND", ssh_command(access));
    if let Some(ca) = &access.ca_file {
        cmd.env("GIT_SSL_CAINFO", ca);
    }
    if let Some(c) = &access.credentials {
        cmd.env("GIT_ASKPASS", askpass).env(USERNAME_ENV, &c.username).env(PASSWORD_ENV, &c.password);
    }
    // The subcommand, for messages: the first argument that is not an option or a `-c` value.
    let what = args.iter().enumerate().find(|(i, a)| !a.starts_with('-') && (*i == 0 || args[i - 1] != "-c")).map_or("", |(_, a)| *a).to_string();
    let mut child = cmd.spawn().map_err(|e| RunError::Spawn(e.to_string()))?;
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut buf);
            }
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = drain(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let err = drain(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let deadline = Instant::now() + access.timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() >= deadline => break None,
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(RunError::Spawn(e.to_string())),
        }
    };
    let Some(status) = status else {
        if let Ok(pgid) = i32::try_from(child.id()) {
            // SAFETY: kill(2) on the process group this call created (process_group(0)).
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
        }
        let _ = child.wait();
        return Err(RunError::Timeout { what, secs: access.timeout.as_secs() });
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    if status.success() {
        return Ok(stdout);
    }
    let stderr = scrub(stderr.trim(), access.credentials.as_ref());
    Err(RunError::Failed { stderr: if stderr.is_empty() { format!("git {what} failed ({status})") } else { stderr } })
}

/// ssh for git: batch mode (no prompts), the host key checked against known_hosts
/// (never accepted blindly), the key file when given.
fn ssh_command(access: &Access) -> String {
    let mut cmd = format!(
        "ssh -o BatchMode=yes -o StrictHostKeyChecking=yes -o ConnectTimeout={}",
        access.timeout.as_secs().clamp(1, 60)
    );
    if let Some(key) = &access.ssh_key {
        cmd.push_str(&format!(" -o IdentitiesOnly=yes -i {}", shell_quote(key)));
    }
    if let Some(known) = &access.known_hosts {
        cmd.push_str(&format!(" -o UserKnownHostsFile={} -o GlobalKnownHostsFile=/dev/null", shell_quote(known)));
    }
    cmd
}

fn shell_quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

/// `text` with the credentials and any `user:password@` of a URL replaced by `***`.
pub fn scrub(text: &str, credentials: Option<&Credentials>) -> String {
    let mut out = scrub_userinfo(text);
    if let Some(c) = credentials {
        if !c.password.is_empty() {
            out = out.replace(&c.password, "***");
        }
        // A token is sometimes sent as the username; short names like `git` are not secrets.
        if c.username.len() >= 8 {
            out = out.replace(&c.username, "***");
        }
    }
    out
}

/// Replaces the userinfo of every `scheme://userinfo@host` in `text` by `***`.
pub fn scrub_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        let end = tail.find(|c: char| c == '/' || c.is_whitespace() || c == '\'' || c == '"').unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(i) => {
                out.push_str("***");
                out.push_str(&authority[i..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// Whether `remote` carries a password in its URL (`scheme://user:pass@host`).
pub fn has_password_in_url(remote: &str) -> bool {
    remote.split_once("://").is_some_and(|(_, tail)| {
        let authority = &tail[..tail.find('/').unwrap_or(tail.len())];
        authority.rfind('@').is_some_and(|i| authority[..i].contains(':'))
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn scrubbing_hides_passwords_tokens_and_url_userinfo() {
        let c = Credentials { username: "deployer".into(), password: "s3cr3t-token".into() };
        let text = "fatal: unable to access 'https://deployer:s3cr3t-token@git.example.com/r.git/': 401; token s3cr3t-token";
        let out = scrub(text, Some(&c));
        assert!(!out.contains("s3cr3t") && !out.contains("deployer"), "{out}");
        assert!(out.contains("https://***@git.example.com/r.git/"), "{out}");
        assert_eq!(scrub_userinfo("ssh://git@host:22/x and file:///a/b"), "ssh://***@host:22/x and file:///a/b");
        assert!(!format!("{c:?}").contains("s3cr3t"));
    }

    #[test]
    fn passwords_in_urls_are_recognised() {
        assert!(has_password_in_url("https://me:tok@host/r.git"));
        assert!(!has_password_in_url("https://me@host/r.git"));
        assert!(!has_password_in_url("ssh://git@host:2222/r.git"));
        assert!(!has_password_in_url("git@host:r.git"));
        assert!(!has_password_in_url("/srv/git/r.git"));
    }

    #[test]
    fn a_credentials_file_must_be_private_and_well_formed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("creds");
        std::fs::write(&path, "# deploy token\nusername=bot\npassword=tok=en\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(Credentials::from_file(&path), Err(CredentialsError::Open { .. })));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(Credentials::from_file(&path).unwrap(), Credentials { username: "bot".into(), password: "tok=en".into() });
        std::fs::write(&path, "user bot\n").unwrap();
        let err = Credentials::from_file(&path).unwrap_err().to_string();
        assert!(err.ends_with(":1: expected `username=NAME` or `password=TOKEN`"), "{err}");
    }

    #[test]
    fn credentials_reach_git_through_its_environment_and_askpass_never_its_arguments() {
        let dir = tempfile::tempdir().unwrap();
        let askpass = dir.path().join("askpass.sh");
        write_askpass(&askpass).unwrap();
        let access = Access {
            credentials: Some(Credentials { username: "deploy-bot".into(), password: "pw-in-env-only".into() }),
            ..Access::plain(Duration::from_secs(60))
        };
        // An alias runs a shell under git: it prints git's own command line, and what
        // the askpass script answers to git's two prompts.
        let alias = "alias.print-args=!cat /proc/$PPID/cmdline; echo; \"$GIT_ASKPASS\" 'Username for x'; \"$GIT_ASKPASS\" 'Password for x'";
        run(dir.path(), &access, &askpass, &["init", "-q"]).unwrap();
        let out = run(dir.path(), &access, &askpass, &["-c", alias, "print-args"]).unwrap();
        let (cmdline, answers) = out.split_once('\n').unwrap();
        assert!(cmdline.contains("credential.helper=") && !cmdline.contains("pw-in-env-only") && !cmdline.contains("deploy-bot"), "{cmdline}");
        assert_eq!(answers.trim(), "deploy-bot\npw-in-env-only");
        assert!(!std::fs::read_to_string(&askpass).unwrap().contains("pw-in-env-only"));
        assert_eq!(std::fs::metadata(&askpass).unwrap().permissions().mode() & 0o777, 0o700);
    }

    #[test]
    fn a_git_call_past_its_timeout_is_killed_with_its_children() {
        let dir = tempfile::tempdir().unwrap();
        // An alias runs a shell: git, sh and sleep are one process group, all killed.
        let access = Access::plain(Duration::from_millis(300));
        let start = Instant::now();
        let err = run(dir.path(), &access, Path::new("/nonexistent"), &["-c", "alias.hang=!sleep 30", "hang"]).unwrap_err();
        assert!(matches!(err, RunError::Timeout { .. }), "{err}");
        assert!(start.elapsed() < Duration::from_secs(20), "{:?}", start.elapsed());
    }
}
