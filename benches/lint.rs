//! `cargo bench --bench lint`: wall time of `reconcile lint` on a generated 1,000-app
//! JSON ecosystem (goal: under 100 ms). Runs the release binary as an operator would.

use std::process::Command;
use std::time::{Duration, Instant};

const APPS: usize = 1000;
const RUNS: usize = 15;

fn main() {
    let dir = std::env::temp_dir().join(format!("reconcile-bench-lint-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let apps: Vec<serde_json::Value> = (0..APPS)
        .map(|i| {
            serde_json::json!({
                "name": format!("app-{i:04}"), "namespace": "bench", "script": "server.js", "cwd": "/srv/app",
                "exec_mode": "fork", "instances": 1, "min_uptime": 5000, "max_restarts": 10, "restart_delay": 2000,
                "kill_timeout": 5000, "out_file": format!("logs/app-{i}-out.log"), "error_file": format!("logs/app-{i}-err.log"),
                "log_date_format": "YYYY-MM-DD HH:mm:ss", "args": ["--queue", format!("q{i}")],
                "env": { "PORT": 10_000 + i, "NODE_ENV": "development" }, "env_production": { "NODE_ENV": "production" }
            })
        })
        .collect();
    let file = dir.join("ecosystem.json");
    std::fs::write(&file, serde_json::to_string_pretty(&serde_json::json!({ "apps": apps })).expect("json")).expect("write");
    std::fs::write(dir.join("reconcile.toml"), "[project]\necosystem = [\"ecosystem.json\"]\nnamespaces = [\"bench\"]\nenv = \"production\"\n")
        .expect("write");
    let mut times = Vec::new();
    for _ in 0..RUNS {
        let start = Instant::now();
        let output = Command::new(env!("CARGO_BIN_EXE_reconcile"))
            .current_dir(&dir)
            .args(["lint", "--format", "json"])
            .output()
            .expect("run reconcile");
        times.push(start.elapsed());
        assert!(output.status.success(), "lint failed: {}", String::from_utf8_lossy(&output.stdout));
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
    println!(
        "lint {APPS} apps ({} KB JSON): median {:.1} ms, min {:.1} ms, max {:.1} ms over {RUNS} runs (goal < 100 ms)",
        size / 1024,
        ms(times[RUNS / 2]),
        ms(times[0]),
        ms(times[RUNS - 1])
    );
    let _ = std::fs::remove_dir_all(&dir);
}
