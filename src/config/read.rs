//! Reading files a pull request may have written: desired-state files,
//! `reconcile.toml`, policy files, saved plans.
//!
//! Only regular files are read, and never more than a limit, counted while reading
//! (a file's size in its metadata says nothing about `/dev/zero` or a FIFO). A symlink
//! is followed only to a regular file inside the *scope*, the project directory (in
//! pull mode, the checkout); a file named outside the scope is scoped to its own
//! directory, so a symlink beside it cannot lead elsewhere either. Files of the
//! kernel's pseudo file systems (`/proc`, `/sys`, ...) are refused even though they
//! claim to be regular: `/proc/self/environ` holds this process's secrets.
//!
//! Errors name the path as given and never anything of what it points at.

use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

/// Why a file was not read. The messages name the path as the user wrote it, never
/// the target of a symlink or any of its contents.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The cause is part of the message (and not a `source`, so it is printed once).
    #[error("cannot read {path}: {error}")]
    Io { path: PathBuf, error: std::io::Error },
    #[error("{path}: is a {kind}, not a regular file; only regular files are read (a device, FIFO or socket may never end); replace it with the file itself")]
    NotRegular { path: PathBuf, kind: &'static str },
    #[error("{path}: leads into a kernel pseudo file system (/proc, /sys); refused, since such files can hold this process's environment; replace it with the file itself")]
    PseudoFile { path: PathBuf },
    #[error("{path}: is a symlink (or lies under one) that leads outside {scope}; symlinks are followed only to files inside the project directory; replace it with the file itself")]
    SymlinkOutside { path: PathBuf, scope: PathBuf },
    #[error("{path}: more than {max} bytes; files this large are refused")]
    TooLarge { path: PathBuf, max: u64 },
    #[error("{path}: lies outside the project directory {scope}; files named by reconcile.toml are read only inside it (else a change to reconcile.toml could make lint read any file on the host); move the file into the project")]
    Outside { path: PathBuf, scope: PathBuf },
}

impl ReadError {
    /// The path as it was named.
    pub fn path(&self) -> &Path {
        match self {
            Self::Io { path, .. }
            | Self::NotRegular { path, .. }
            | Self::PseudoFile { path }
            | Self::SymlinkOutside { path, .. }
            | Self::TooLarge { path, .. }
            | Self::Outside { path, .. } => path,
        }
    }
}

/// Reads `path` as bytes, if it is a regular file no larger than `max` and every
/// symlink on its way from `scope` (or, for a path outside `scope`, from its own
/// directory) leads to somewhere inside that directory.
pub fn read_bytes(path: &Path, scope: Option<&Path>, max: u64) -> Result<Vec<u8>, ReadError> {
    let io = |error| ReadError::Io { path: path.to_path_buf(), error };
    let lexical = normalize(&std::path::absolute(path).map_err(io)?);
    let scope_dir = scope
        .and_then(|s| std::path::absolute(s).ok())
        .map(|s| normalize(&s))
        .filter(|s| lexical.starts_with(s) && lexical != *s)
        .unwrap_or_else(|| lexical.parent().map_or_else(|| PathBuf::from("/"), Path::to_path_buf));
    // Any symlink between the scope and the file (the file itself included)?
    let mut through_link = false;
    let mut walked = scope_dir.clone();
    for part in lexical.strip_prefix(&scope_dir).unwrap_or(Path::new("")).components() {
        walked.push(part);
        match std::fs::symlink_metadata(&walked) {
            Ok(meta) if meta.file_type().is_symlink() => {
                through_link = true;
                break;
            }
            Ok(_) => {}
            Err(source) => return Err(io(source)),
        }
    }
    let resolved = std::fs::canonicalize(path).map_err(io)?;
    if through_link {
        let scope_real = std::fs::canonicalize(&scope_dir).map_err(io)?;
        if !resolved.starts_with(&scope_real) {
            return Err(ReadError::SymlinkOutside { path: path.to_path_buf(), scope: scope_dir });
        }
    }
    // O_NONBLOCK: opening a FIFO must not wait for a writer; O_NOCTTY: a terminal
    // device must not become ours. Both are checked away right after, on the handle.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(&resolved)
        .map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    let kind = meta.file_type();
    if !kind.is_file() {
        let kind = if kind.is_dir() {
            "directory"
        } else if kind.is_fifo() {
            "FIFO"
        } else if kind.is_char_device() {
            "character device"
        } else if kind.is_block_device() {
            "block device"
        } else if kind.is_socket() {
            "socket"
        } else {
            "special file"
        };
        return Err(ReadError::NotRegular { path: path.to_path_buf(), kind });
    }
    if on_pseudo_fs(&file) {
        return Err(ReadError::PseudoFile { path: path.to_path_buf() });
    }
    let mut bytes = Vec::new();
    file.take(max.saturating_add(1)).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > max {
        return Err(ReadError::TooLarge { path: path.to_path_buf(), max });
    }
    Ok(bytes)
}

/// Refuses a `path` that does not lie (lexically) inside `scope`: for the files
/// reconcile.toml names, which a pull request may change. Symlinks on the way are
/// [`read_bytes`]'s to check.
pub fn confined(path: &Path, scope: &Path) -> Result<(), ReadError> {
    let io = |error| ReadError::Io { path: path.to_path_buf(), error };
    let lexical = normalize(&std::path::absolute(path).map_err(io)?);
    let scope = normalize(&std::path::absolute(scope).map_err(io)?);
    if lexical.starts_with(&scope) && lexical != scope {
        Ok(())
    } else {
        Err(ReadError::Outside { path: path.to_path_buf(), scope })
    }
}

/// [`read_bytes`] as UTF-8 text (invalid sequences are an `InvalidData` error).
pub fn read_text(path: &Path, scope: Option<&Path>, max: u64) -> Result<String, ReadError> {
    let bytes = read_bytes(path, scope, max)?;
    String::from_utf8(bytes).map_err(|_| ReadError::Io {
        path: path.to_path_buf(),
        error: std::io::Error::new(std::io::ErrorKind::InvalidData, "the file is not UTF-8 text"),
    })
}

/// Whether an open file lives on procfs, sysfs or another kernel pseudo file system.
fn on_pseudo_fs(file: &std::fs::File) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: `statfs` is plain data; fstatfs fills it for a valid, open descriptor.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: the descriptor is open for the call's duration; `stat` is a valid pointer.
    if unsafe { libc::fstatfs(file.as_raw_fd(), &raw mut stat) } != 0 {
        return true;
    }
    // Magic numbers from linux/magic.h: proc, sysfs, debugfs, tracefs, securityfs,
    // cgroup, cgroup2, configfs, efivarfs, bpf.
    const PSEUDO: [i64; 10] =
        [0x9fa0, 0x6265_6572, 0x6462_6720, 0x7472_6163, 0x7363_6673, 0x0027_e0eb, 0x6367_7270, 0x6265_6570, 0xde5e_81e4, 0xcafe_4a11];
    #[allow(clippy::unnecessary_cast, clippy::cast_possible_wrap)]
    let kind = stat.f_type as i64;
    PSEUDO.contains(&kind)
}

/// `a/./b/../c` as `a/c`, without touching the file system.
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push(part);
                }
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn regular_files_inside_the_scope_are_read_through_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("real")).unwrap();
        std::fs::write(dir.path().join("real/eco.json"), "[]").unwrap();
        symlink("real/eco.json", dir.path().join("eco.json")).unwrap();
        let got = read_text(&dir.path().join("eco.json"), Some(dir.path()), 10).unwrap();
        assert_eq!(got, "[]");
    }

    #[test]
    fn the_limit_is_counted_while_reading() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("big.json"), "x".repeat(11)).unwrap();
        let err = read_bytes(&dir.path().join("big.json"), Some(dir.path()), 10).unwrap_err();
        assert!(matches!(err, ReadError::TooLarge { max: 10, .. }), "{err}");
    }

    #[test]
    fn a_symlink_out_of_the_scope_is_refused_without_naming_its_target() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret.json"), "[]").unwrap();
        let dir = tempfile::tempdir().unwrap();
        symlink(outside.path().join("secret.json"), dir.path().join("eco.json")).unwrap();
        let err = read_bytes(&dir.path().join("eco.json"), Some(dir.path()), 10).unwrap_err();
        assert!(matches!(err, ReadError::SymlinkOutside { .. }), "{err}");
        assert!(!err.to_string().contains("secret"), "{err}");
        // A symlinked directory on the way counts too.
        symlink(outside.path(), dir.path().join("sub")).unwrap();
        let err = read_bytes(&dir.path().join("sub/secret.json"), Some(dir.path()), 10).unwrap_err();
        assert!(matches!(err, ReadError::SymlinkOutside { .. }), "{err}");
    }

    #[test]
    fn devices_and_proc_files_are_refused() {
        let err = read_bytes(Path::new("/dev/zero"), None, 10).unwrap_err();
        assert!(matches!(err, ReadError::NotRegular { kind: "character device", .. }), "{err}");
        let err = read_bytes(Path::new("/proc/self/status"), None, 1 << 20).unwrap_err();
        assert!(matches!(err, ReadError::PseudoFile { .. }), "{err}");
    }

    #[test]
    fn normalize_is_lexical() {
        assert_eq!(normalize(Path::new("/a/./b/../c")), PathBuf::from("/a/c"));
    }

    /// What a symlink (or chain of them) may finally point at.
    #[derive(Debug, Clone, Copy)]
    enum Target {
        RegularInside,
        RegularOutside,
        FifoInside,
        DirInside,
        DevNull,
        DevZero,
        ProcEnviron,
        ProcStatus,
        Missing,
    }

    /// How the path handed to the reader reaches the target.
    #[derive(Debug, Clone, Copy)]
    enum Route {
        /// The target itself (for targets inside the project).
        Direct,
        /// A chain of `n` symlinks in the project, absolute or relative.
        Links { n: usize, relative: bool },
        /// A file inside a symlinked directory.
        UnderLinkedDir,
    }

    fn target() -> impl proptest::strategy::Strategy<Value = Target> {
        use proptest::prelude::*;
        prop_oneof![
            Just(Target::RegularInside),
            Just(Target::RegularOutside),
            Just(Target::FifoInside),
            Just(Target::DirInside),
            Just(Target::DevNull),
            Just(Target::DevZero),
            Just(Target::ProcEnviron),
            Just(Target::ProcStatus),
            Just(Target::Missing),
        ]
    }

    fn route() -> impl proptest::strategy::Strategy<Value = Route> {
        use proptest::prelude::*;
        prop_oneof![Just(Route::Direct), (1..4usize, any::<bool>()).prop_map(|(n, relative)| Route::Links { n, relative }), Just(Route::UnderLinkedDir)]
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config { cases: 96, failure_persistence: None, ..Default::default() })]

        /// Whatever the file kind and however symlinks lead to it, the reader returns
        /// the contents exactly when the end is a regular file inside the project, and
        /// its errors never name the target.
        #[test]
        fn only_regular_files_inside_the_project_are_read(target in target(), route in route()) {
            let project = tempfile::tempdir().unwrap();
            let outside = tempfile::tempdir().unwrap();
            let root = project.path();
            std::fs::create_dir(root.join("real")).unwrap();
            std::fs::write(outside.path().join("secret-target.json"), "[1]").unwrap();
            let (end, readable): (PathBuf, bool) = match target {
                Target::RegularInside => {
                    std::fs::write(root.join("real/eco.json"), "[1]").unwrap();
                    (root.join("real/eco.json"), true)
                }
                Target::RegularOutside => (outside.path().join("secret-target.json"), false),
                Target::FifoInside => {
                    let path = root.join("real/eco.json");
                    assert!(std::process::Command::new("mkfifo").arg(&path).status().unwrap().success());
                    (path, false)
                }
                Target::DirInside => {
                    std::fs::create_dir(root.join("real/eco.json")).unwrap();
                    (root.join("real/eco.json"), false)
                }
                Target::DevNull => (PathBuf::from("/dev/null"), false),
                Target::DevZero => (PathBuf::from("/dev/zero"), false),
                Target::ProcEnviron => (PathBuf::from("/proc/self/environ"), false),
                Target::ProcStatus => (PathBuf::from("/proc/self/status"), false),
                Target::Missing => (root.join("real/missing.json"), false),
            };
            let path = match route {
                Route::Direct if end.starts_with(root) => end.clone(),
                Route::Direct | Route::Links { .. } => {
                    let n = match route { Route::Links { n, .. } => n, _ => 1 };
                    let relative = matches!(route, Route::Links { relative: true, .. });
                    let mut next = end.clone();
                    for i in 0..n {
                        let link = root.join(format!("link{i}.json"));
                        let pointed = if relative && next.starts_with(root) {
                            next.strip_prefix(root).unwrap().to_path_buf()
                        } else {
                            next.clone()
                        };
                        symlink(&pointed, &link).unwrap();
                        next = link;
                    }
                    next
                }
                Route::UnderLinkedDir => {
                    let dir = end.parent().unwrap();
                    symlink(dir, root.join("linked")).unwrap();
                    root.join("linked").join(end.file_name().unwrap())
                }
            };
            let got = read_bytes(&path, Some(root), 1024);
            proptest::prop_assert_eq!(got.is_ok(), readable, "{:?} via {:?}: {:?}", target, route, got.as_ref().err());
            if let Ok(bytes) = got {
                proptest::prop_assert_eq!(bytes, b"[1]".to_vec());
            } else if let Err(err) = got {
                // The path as given is named (it is the user's own words); nothing beyond it.
                let text = err.to_string().replace(&path.display().to_string(), "PATH");
                proptest::prop_assert!(!text.contains("secret-target") && !text.contains("/proc/") && !text.contains("/dev/"), "{}", text);
            }
        }
    }
}
