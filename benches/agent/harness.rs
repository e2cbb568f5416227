//! Parts every benchmark shares: the sizes of a quick or a full run, fixed inputs from a seeded generator, agents
//! started on loopback with the shipped logging, memory read from `/proc`, and percentiles.

use std::path::Path;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use nhsmail_agent::proto;

use crate::support::AgentProcess;

/// Seed of every generated input, so two runs submit the same texts to the same numbers.
pub const SEED: u64 = 20261204;

/// Sizes of one run. The full sizes are the ones the targets are stated for.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    /// How long each submission measurement runs.
    pub submission_time: Duration,
    /// Rows per raw SQLite reference run.
    pub raw_rows: usize,
    /// Idle sends timed one at a time.
    pub idle_sends: usize,
    /// Texts per sending throughput measurement.
    pub burst: usize,
    /// Emails in the inbound mailbox.
    pub inbound: usize,
    /// Messages queued for the memory and database-size measurement.
    pub queued: usize,
    /// How long the mixed load runs while memory is sampled.
    pub load_time: Duration,
    /// Concurrent clients of the mixed load.
    pub load_clients: usize,
}

impl Sizes {
    pub fn quick() -> Sizes {
        Sizes {
            submission_time: Duration::from_secs(3),
            raw_rows: 20_000,
            idle_sends: 10,
            burst: 300,
            inbound: 2_000,
            queued: 100_000,
            load_time: Duration::from_secs(10),
            load_clients: 16,
        }
    }

    pub fn full() -> Sizes {
        Sizes {
            submission_time: Duration::from_secs(10),
            raw_rows: 200_000,
            idle_sends: 30,
            burst: 2_000,
            inbound: 10_000,
            queued: 1_000_000,
            load_time: Duration::from_secs(60),
            load_clients: 50,
        }
    }
}

/// Words of the generated texts: the vocabulary of appointment reminders.
const WORDS: &[&str] = &[
    "your",
    "appointment",
    "at",
    "the",
    "surgery",
    "is",
    "on",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "09:30",
    "14:10",
    "with",
    "Dr",
    "Patel",
    "nurse",
    "please",
    "arrive",
    "early",
    "reply",
    "to",
    "cancel",
    "flu",
    "clinic",
    "blood",
    "test",
    "results",
    "are",
    "ready",
    "call",
    "us",
    "on",
    "01632",
    "960123",
    "thank",
    "you",
];

/// Generates the submissions of a run from [`SEED`]: numbers across the drama range, texts of 40 to 300 characters,
/// and an idempotency key each, as a clinical system sends them.
pub struct Inputs {
    random: StdRng,
    next: u64,
    tag: String,
    /// Last three digits of the numbers used: 980 to 999 get no receipt from the sandbox.
    numbers: std::ops::RangeInclusive<u16>,
}

impl Inputs {
    pub fn new(tag: &str) -> Inputs {
        Inputs { random: StdRng::seed_from_u64(SEED), next: 0, tag: tag.to_string(), numbers: 0..=899 }
    }

    /// Inputs addressed only to numbers the sandbox sends no receipt for, so its mailbox stays empty.
    pub fn without_receipts(tag: &str) -> Inputs {
        Inputs { numbers: 980..=999, ..Inputs::new(tag) }
    }

    pub fn next(&mut self) -> proto::SubmitMessageRequest {
        self.next += 1;
        let length = self.random.random_range(40..=300);
        let mut text = String::with_capacity(length + 16);
        while text.len() < length {
            text.push_str(WORDS[self.random.random_range(0..WORDS.len())]);
            text.push(' ');
        }
        let number = self.random.random_range(self.numbers.clone());
        proto::SubmitMessageRequest {
            to: format!("07700900{number:03}"),
            text: format!("{}[{}]", text.trim_end(), self.next),
            idempotency_key: format!("{}-{}", self.tag, self.next),
            client_reference: self.tag.clone(),
            ..Default::default()
        }
    }

    pub fn batch(&mut self, size: usize) -> Vec<proto::SubmitMessageRequest> {
        (0..size).map(|_| self.next()).collect()
    }
}

/// Builds an agent config with no mailbox password, so the sender never starts: submissions are measured alone.
pub fn offline_config() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    format!(
        "[nhsmail]\nusername = \"practice.sms@example.org\"\nsmtp_host = \"127.0.0.1\"\nsmtp_port = {port}\n\
         smtp_security = \"plain\"\nimap_host = \"127.0.0.1\"\nimap_port = {port}\nimap_security = \"plain\"\n\
         network_timeout_seconds = 2\n"
    )
}

/// Starts the built agent with the logging it ships with (`info`), and returns it with how long it took from
/// spawning the process to printing `listening on`.
pub fn start_agent(data_dir: &Path, config: &str) -> (AgentProcess, Duration) {
    let started = Instant::now();
    let agent = AgentProcess::start_with_env(data_dir, config, &[("RUST_LOG", "info")]);
    (agent, started.elapsed())
}

/// Reads the resident set size of process `pid` in MiB.
pub fn resident_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc is readable");
    let line = status.lines().find(|line| line.starts_with("VmRSS:")).expect("status has VmRSS");
    let kib: f64 = line.split_whitespace().nth(1).and_then(|kib| kib.parse().ok()).expect("VmRSS is a number");
    kib / 1024.0
}

/// Returns the `fraction` percentile of `samples` (sorted here), nearest-rank.
pub fn percentile(samples: &mut [Duration], fraction: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    samples.sort_unstable();
    let rank = ((samples.len() as f64 * fraction).ceil() as usize).clamp(1, samples.len());
    samples[rank - 1]
}

pub fn millis(duration: Duration) -> String {
    format!("{:.2} ms", duration.as_secs_f64() * 1000.0)
}

/// Returns the total size of `agent.db` and its WAL and shared-memory files in `data_dir`, in bytes.
pub fn database_bytes(data_dir: &Path) -> u64 {
    ["agent.db", "agent.db-wal", "agent.db-shm"]
        .iter()
        .filter_map(|name| std::fs::metadata(data_dir.join(name)).ok())
        .map(|meta| meta.len())
        .sum()
}
