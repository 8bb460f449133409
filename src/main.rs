//! Thin binary: parse the command line, run it, turn the outcome into an exit code.
//!
//! Exit codes are a contract scripts rely on (0 success, 1 any error, 2 `plan` found
//! changes), so nothing else may produce 0 or 2 by accident: a usage error (a typo'd
//! command or option) exits 1, not clap's 2, and a panic exits 1, not Rust's 101,
//! after saying that it is a bug.

use std::process::ExitCode;

use clap::error::ErrorKind;

fn main() -> ExitCode {
    install_panic_hook();
    let cli = match reconcile::cli::parse() {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            return match err.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => ExitCode::SUCCESS,
                // Everything else, `reconcile` with no command included, is a usage error.
                _ => reconcile::ExitStatus::Error.into(),
            };
        }
    };
    let run = std::panic::AssertUnwindSafe(move || {
        // Lets the tests prove the panic path on the real binary; debug builds only.
        #[cfg(debug_assertions)]
        if std::env::var_os("RECONCILE_DEBUG_PANIC").is_some() {
            std::panic::panic_any("RECONCILE_DEBUG_PANIC is set");
        }
        reconcile::run(cli)
    });
    match std::panic::catch_unwind(run) {
        Ok(status) => status.into(),
        Err(_) => reconcile::ExitStatus::Error.into(),
    }
}

/// A panic is a bug: say so once, with where, and let `main` exit 1.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".into());
        let at = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
        eprintln!(
            "error: internal error (a bug in reconcile {}): {message}{at}\nNothing more was done. Please report it with the command you ran; RUST_BACKTRACE=1 shows where.",
            env!("CARGO_PKG_VERSION")
        );
        if std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0") {
            eprintln!("{}", std::backtrace::Backtrace::force_capture());
        }
    }));
}
