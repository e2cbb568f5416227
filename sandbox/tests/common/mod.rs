//! Runs the Python protocol checks in `tests/python/cases.py` against a sandbox.

use std::path::Path;
use std::time::Duration;

/// How long one Python case may run; the slowest waits a few receipt delays.
const CASE_TIMEOUT: Duration = Duration::from_secs(60);

pub const CASES_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/cases.py");

/// Runs `case` with the sandbox's info as JSON and panics with its output if it fails.
pub async fn run_python_case(case: &str, info_json: &str, extra_args: &[&Path]) {
    let mut command = tokio::process::Command::new("python3");
    command.arg(CASES_SCRIPT).arg(case).args(extra_args).env("SANDBOX_INFO", info_json).kill_on_drop(true);
    let output = tokio::time::timeout(CASE_TIMEOUT, command.output())
        .await
        .unwrap_or_else(|_| panic!("python case {case} ran longer than {CASE_TIMEOUT:?}"))
        .expect("python3 must be installed to run the sandbox's protocol tests");
    assert!(
        output.status.success(),
        "python case {case} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
}
