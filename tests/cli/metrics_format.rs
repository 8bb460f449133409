//! `watch --metrics`: both text expositions read by the official Prometheus Python
//! client's parsers (its OpenMetrics parser is strict: it refuses a missing `# EOF`,
//! a counter sample without `_total`, an unknown type...).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::process::{Command, Stdio};

use reconcile::watch::DriftKind;
use reconcile::watch::metrics::Metrics;

use crate::support::tools::test_tools;

/// Parses `text` with prometheus_client's parser for `format`; one line a sample:
/// `family type sample {labels} value`.
fn parse(format: &str, text: &str) -> Result<String, String> {
    let python = test_tools().join("venv/bin/python");
    let script = r#"
import sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics
from prometheus_client.parser import text_string_to_metric_families as prometheus
parse = openmetrics if sys.argv[1] == "openmetrics" else prometheus
for family in parse(sys.stdin.read()):
    for s in family.samples:
        print(family.name, family.type, s.name, dict(sorted(s.labels.items())), '%g' % s.value)
"#;
    let mut child = Command::new(python)
        .args(["-c", script, format])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    if out.status.success() { Ok(String::from_utf8(out.stdout).unwrap()) } else { Err(String::from_utf8_lossy(&out.stderr).into_owned()) }
}

fn metrics() -> Metrics {
    let m = Metrics::new();
    m.set_drift(&[(DriftKind::Stopped, 1)].into());
    m.planned(1_700_000_000);
    m.applied("success");
    m.applied("success");
    m.daemon(true);
    m
}

#[test]
fn openmetrics_parses_strictly_with_the_right_types() {
    let text = metrics().encode();
    let samples = parse("openmetrics", &text).unwrap_or_else(|e| panic!("the OpenMetrics parser refused it: {e}\n{text}"));
    for line in [
        "reconcile_heals counter reconcile_heals_total {'outcome': 'success'} 2",
        "reconcile_build info reconcile_build_info {'version': '",
        "reconcile_drift gauge reconcile_drift {'kind': 'stopped'} 1",
        "reconcile_daemon_up gauge reconcile_daemon_up {} 1",
        "reconcile_last_successful_plan_timestamp_seconds gauge",
    ] {
        assert!(samples.contains(line), "{line:?} missing from:\n{samples}");
    }
    // The parser does bite: without `# EOF` it refuses.
    assert!(parse("openmetrics", text.trim_end_matches("# EOF\n")).is_err());
}

#[test]
fn prometheus_text_format_parses_with_the_right_types() {
    let text = metrics().encode_prometheus();
    let samples = parse("prometheus", &text).unwrap_or_else(|e| panic!("the Prometheus text parser refused it: {e}\n{text}"));
    for line in [
        "reconcile_heals counter reconcile_heals_total {'outcome': 'success'} 2",
        "reconcile_build_info gauge reconcile_build_info {'version': '",
        "reconcile_drift gauge reconcile_drift {'kind': 'stopped'} 1",
    ] {
        assert!(samples.contains(line), "{line:?} missing from:\n{samples}");
    }
    assert!(!text.contains("# EOF") && !text.contains("# UNIT"), "{text}");
    // And the OpenMetrics parser refuses it (no `# EOF`): the formats really differ.
    assert!(parse("openmetrics", &text).is_err());
}
