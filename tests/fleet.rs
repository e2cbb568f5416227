//! Runs `nhsmail-ctl fleet ...` and `--target` against a fleet of real agents started by the test, all signed in to
//! one in-process NHSmail sandbox: one agent killed, one frozen with SIGSTOP so that it accepts connections but never
//! responds, and one whose password is inside the expiry warning window.

mod support;

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;
use support::{AgentProcess, AuthMode, TestSandbox, set_password};

const CTL: &str = env!("CARGO_BIN_EXE_nhsmail-ctl");
/// Agents in the fleet.
const FLEET_SIZE: usize = 20;
/// Per-agent deadline passed to `fleet status`, in seconds.
const DEADLINE_SECONDS: &str = "5";
/// The agent with a short maximum password age: 7 days is inside the 18-day warning window, so the password is
/// `expiring` from the moment it is stored.
const EXPIRING: &str = "practice-07";
const KILLED: &str = "practice-12";
const FROZEN: &str = "practice-16";

struct Fleet {
    agents: Vec<(String, AgentProcess)>,
    inventory: PathBuf,
    _sandbox: TestSandbox,
    _dir: tempfile::TempDir,
}

impl Fleet {
    /// Starts the sandbox and the agents, stores the sandbox's password in each, then stops two of them.
    async fn start() -> Fleet {
        let sandbox = TestSandbox::start().await;
        let dir = tempfile::tempdir().unwrap();
        let names: Vec<String> = (1..=FLEET_SIZE).map(|number| format!("practice-{number:02}")).collect();

        let configs: Vec<(String, PathBuf, String)> = names
            .iter()
            .map(|name| {
                let extra = if name == EXPIRING { "[password]\nmax_age_days = 7\n" } else { "" };
                (name.clone(), dir.path().join(name), sandbox.agent_config(AuthMode::Password, extra))
            })
            .collect();
        // Started from threads, because each start waits for the agent to print its address.
        let agents: Vec<(String, AgentProcess)> = std::thread::scope(|scope| {
            let handles: Vec<_> = configs
                .iter()
                .map(|(name, data_dir, config)| {
                    scope.spawn(move || (name.clone(), AgentProcess::start(data_dir, config)))
                })
                .collect();
            handles.into_iter().map(|handle| handle.join().expect("an agent starts")).collect()
        });

        for (_, agent) in &agents {
            let mut clients = agent.clients().await;
            let response = set_password(&mut clients, &sandbox.info().password, false).await;
            assert!(response.verified, "the sandbox accepted its own password");
        }

        let inventory = dir.path().join("fleet.toml");
        std::fs::write(&inventory, inventory_text(&agents)).unwrap();
        let mut fleet = Fleet { agents, inventory, _sandbox: sandbox, _dir: dir };
        fleet.agent_mut(KILLED).kill();
        freeze(fleet.agent(FROZEN));
        fleet
    }

    fn agent(&self, name: &str) -> &AgentProcess {
        &self.agents.iter().find(|(candidate, _)| candidate == name).expect("the agent is in the fleet").1
    }

    fn agent_mut(&mut self, name: &str) -> &mut AgentProcess {
        &mut self.agents.iter_mut().find(|(candidate, _)| candidate == name).expect("the agent is in the fleet").1
    }

    fn ctl(&self, args: &[&str]) -> Output {
        Command::new(CTL).arg("--inventory").arg(&self.inventory).args(args).output().expect("nhsmail-ctl runs")
    }
}

fn inventory_text(agents: &[(String, AgentProcess)]) -> String {
    agents
        .iter()
        .map(|(name, agent)| {
            let token_file = agent.data_dir.join("admin.token");
            format!(
                "[[agent]]\nname = \"{name}\"\nurl = \"{}\"\ntoken_file = \"{}\"\n\n",
                agent.url(),
                token_file.display()
            )
        })
        .collect()
}

/// Stops the process with SIGSTOP: the kernel still accepts TCP connections for it, but nothing responds.
fn freeze(agent: &AgentProcess) {
    let status = Command::new("kill").arg("-STOP").arg(agent.pid().to_string()).status().unwrap();
    assert!(status.success(), "kill -STOP succeeds");
}

fn stdout_json(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
        panic!("stdout is not JSON ({error}); stderr: {}", String::from_utf8_lossy(&output.stderr))
    })
}

fn names(rows: &[Value]) -> Vec<&str> {
    rows.iter().map(|row| row["name"].as_str().unwrap()).collect()
}

// One fleet serves every check, because twenty agents per test would crowd a small CI machine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_of_twenty_sorted_worst_first() {
    let fleet = Fleet::start().await;

    // `fleet status` as JSON: every agent, worst first.
    let output = fleet.ctl(&["fleet", "status", "--output", "json", "--timeout", DEADLINE_SECONDS]);
    assert_eq!(output.status.code(), Some(5), "stderr: {}", String::from_utf8_lossy(&output.stderr));
    let value = stdout_json(&output);
    let rows = value["agents"].as_array().unwrap();
    assert_eq!(rows.len(), FLEET_SIZE);
    assert_eq!(value["needing_attention"], 3);

    let mut unreachable = names(&rows[..2]);
    unreachable.sort_unstable();
    assert_eq!(unreachable, [KILLED, FROZEN]);
    for row in &rows[..2] {
        assert_eq!(row["health"], "critical", "{row}");
        assert_eq!(row["reachable"], false, "{row}");
    }
    assert_eq!(rows[2]["name"], EXPIRING);
    assert_eq!(rows[2]["health"], "warning");
    for row in &rows[3..] {
        assert_eq!(row["health"], "ok", "{row}");
        assert_eq!(row["status"]["password_state"], "ok", "{row}");
    }

    // Each row gives the reason.
    let row = |name: &str| rows.iter().find(|row| row["name"] == name).unwrap().clone();
    let killed = row(KILLED);
    assert!(killed["error"].as_str().unwrap().contains("connection refused"), "{killed}");
    let frozen = row(FROZEN);
    let frozen_error = frozen["error"].as_str().unwrap();
    assert!(frozen_error.contains(&format!("timed out after {DEADLINE_SECONDS} seconds")), "{frozen}");
    let expiring = row(EXPIRING);
    assert_eq!(expiring["status"]["password_state"], "expiring");
    let days = expiring["status"]["password_days_until_expiry"].as_i64().unwrap();
    assert!((6..=7).contains(&days), "{expiring}");
    assert_eq!(expiring["problems"][0], "password_expiring");
    let healthy = row("practice-01");
    assert_eq!(healthy["status"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(healthy["status"]["update_available"], false);
    assert_eq!(healthy["queued"], 0);

    // The table has the same order.
    let table = fleet.ctl(&["fleet", "status", "--timeout", DEADLINE_SECONDS]);
    let text = String::from_utf8(table.stdout).unwrap();
    println!("{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("AGENT"), "{text}");
    assert_eq!(lines.len(), FLEET_SIZE + 1, "{text}");
    assert!(lines[3].starts_with(EXPIRING), "{text}");
    assert!(lines[3].contains("expiring ("), "{text}");
    assert!(lines[4].contains(" ok "), "{text}");

    // `fleet warnings` lists the two stopped agents and the expiring password.
    let warnings = fleet.ctl(&["fleet", "warnings", "--output", "json", "--timeout", DEADLINE_SECONDS]);
    assert_eq!(warnings.status.code(), Some(5));
    let value = stdout_json(&warnings);
    let listed: Vec<(&str, &str)> = value["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|warning| (warning["agent"].as_str().unwrap(), warning["code"].as_str().unwrap()))
        .collect();
    assert_eq!(listed.len(), 3, "{value}");
    assert!(listed.contains(&(KILLED, "unreachable")), "{value}");
    assert!(listed.contains(&(FROZEN, "unreachable")), "{value}");
    assert!(listed.contains(&(EXPIRING, "password_expiring")), "{value}");

    // `fleet upload trigger` runs a cycle on every agent that responds.
    let upload = fleet.ctl(&["fleet", "upload", "trigger", "--output", "json", "--timeout", DEADLINE_SECONDS]);
    assert_eq!(upload.status.code(), Some(5), "two agents cannot run a cycle");
    let value = stdout_json(&upload);
    let reports = value["agents"].as_array().unwrap().iter().filter(|agent| agent["report"].is_object()).count();
    assert_eq!(reports, FLEET_SIZE - 2, "{value}");

    // `--target` runs a single-agent command on one inventory entry.
    let target = fleet.ctl(&["--target", "practice-03", "status", "--output", "json"]);
    assert!(target.status.success(), "stderr: {}", String::from_utf8_lossy(&target.stderr));
    let status = stdout_json(&target);
    assert_eq!(status["password_state"], "ok");
    assert!(status["last_upload_at"].is_string(), "the fleet upload ran on practice-03: {status}");

    let unknown = fleet.ctl(&["--target", "practice-99", "status"]);
    assert_eq!(unknown.status.code(), Some(2));
    let message = String::from_utf8_lossy(&unknown.stderr);
    assert!(message.contains("\"practice-99\" is not listed"), "{message}");
}

#[test]
fn fleet_without_inventory_is_usage_error() {
    let output = Command::new(CTL).args(["fleet", "status"]).env_remove("NHSMAIL_INVENTORY").output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--inventory FILE"));
}

#[test]
fn missing_token_file_named_in_row() {
    let dir = tempfile::tempdir().unwrap();
    let inventory = dir.path().join("fleet.toml");
    let text = "[[agent]]\nname = \"north\"\nurl = \"http://127.0.0.1:9\"\ntoken_file = \"north.token\"\n";
    std::fs::write(&inventory, text).unwrap();

    let output = Command::new(CTL).arg("--inventory").arg(&inventory).args(["fleet", "warnings"]).output().unwrap();

    let table = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(5), "{table}");
    let token_file = dir.path().join("north.token").display().to_string();
    assert!(table.contains(&format!("cannot read the token file {token_file}: no such file")), "{table}");
}
