//! The `nhsmail-sandbox` binary: its first line of JSON, its stop on SIGTERM, and the
//! state it keeps in `--state-dir` across a restart.

mod common;

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Starts the binary on `state_dir` and returns it with its first line of stdout.
async fn start_binary(state_dir: &std::path::Path) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_nhsmail-sandbox"))
        .arg("--state-dir")
        .arg(state_dir)
        .arg("--receipt-delay-ms")
        .arg("100")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("nhsmail-sandbox starts");
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut line = String::new();
    tokio::time::timeout(START_TIMEOUT, BufReader::new(stdout).read_line(&mut line))
        .await
        .expect("the info line arrives in time")
        .expect("stdout is readable");
    (child, line)
}

/// Sends SIGTERM to the child and returns whether it exited successfully.
async fn terminate(mut child: Child) -> bool {
    let pid = child.id().expect("child is running").to_string();
    let sent = Command::new("kill").args(["-TERM", &pid]).status().await.expect("kill runs");
    assert!(sent.success(), "kill -TERM {pid} failed");
    let status = tokio::time::timeout(START_TIMEOUT, child.wait())
        .await
        .expect("the sandbox stops in time")
        .expect("wait succeeds");
    status.success()
}

#[tokio::test]
async fn info_line_has_required_keys() {
    let dir = tempfile::tempdir().unwrap();
    let (child, line) = start_binary(dir.path()).await;
    let info: serde_json::Value = serde_json::from_str(&line).expect("the first line is JSON");
    for key in [
        "username",
        "password",
        "smtp_port",
        "imap_port",
        "imap_security",
        "ca_file",
        "token_url",
        "graph_url",
        "control_url",
    ] {
        assert!(info.get(key).is_some(), "{key} missing from {line}");
    }
    assert_eq!(info["imap_security"], "tls");
    assert!(terminate(child).await, "the sandbox exited with an error on SIGTERM");
}

#[tokio::test]
async fn graph_url_ends_with_version() {
    let dir = tempfile::tempdir().unwrap();
    let (child, line) = start_binary(dir.path()).await;
    let info: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert!(info["graph_url"].as_str().unwrap().ends_with("/v1.0"), "{line}");
    terminate(child).await;
}

#[tokio::test]
async fn state_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().join("uidvalidity.txt");
    let state_dir = dir.path().join("state");

    let (child, line) = start_binary(&state_dir).await;
    common::run_python_case("restart_prepare", line.trim(), &[&saved]).await;
    assert!(terminate(child).await, "the first run did not stop cleanly");

    let (child, line) = start_binary(&state_dir).await;
    common::run_python_case("restart_check", line.trim(), &[&saved]).await;
    terminate(child).await;
}
