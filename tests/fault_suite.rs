//! The fault suite: the built agent killed with SIGKILL while texts flow, a full disk, a corrupt or foreign database
//! file, and gRPC load with deadlines. Sizes come from environment variables whose small defaults keep `cargo test`
//! quick; `scripts/fault-suite.sh` runs the full sizes:
//!
//! - `NHSMAIL_FAULT_TEXTS` (default 400): texts in the SIGKILL loop;
//! - `NHSMAIL_FAULT_MIN_KILLS` (default 5): kills at least, however fast the texts drain;
//! - `NHSMAIL_FAULT_KILL_MS` (default `300-1500`): range of the random wait before each kill, in milliseconds;
//! - `NHSMAIL_FAULT_LOAD_CLIENTS` (default 8) and `NHSMAIL_FAULT_LOAD_SECONDS` (default 5): the gRPC load.
//!
//! The disk-full test mounts a small tmpfs, so it needs root. Without root it is skipped with a message. When
//! `NHSMAIL_REAL_SERVERS` is set, as `.ci/run` sets it, the test is mandatory and fails instead.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nhsmail_agent::proto::{self, MessageStatus};
use nhsmail_sandbox::{Sandbox, SandboxOptions};
use rand::{Rng, SeedableRng};
use support::sandbox::Control;
use support::{AgentProcess, Clients};
use tonic::Code;

/// Seed of every random choice in the suite, so a failing run can be repeated.
const SEED: u64 = 20261204;
/// Texts per SubmitMessages call in the SIGKILL loop.
const SUBMIT_BATCH: usize = 50;
/// Time allowed for the queue to drain after the last kill, on top of one second per 50 texts.
const SETTLE_LIMIT: Duration = Duration::from_secs(120);

fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(value) => value.parse().unwrap_or_else(|_| panic!("{name}={value:?} is not a whole number")),
        Err(_) => default,
    }
}

/// Reads `NHSMAIL_FAULT_KILL_MS` as `LOW-HIGH` milliseconds.
fn kill_interval() -> (u64, u64) {
    let value = std::env::var("NHSMAIL_FAULT_KILL_MS").unwrap_or_else(|_| "300-1500".into());
    let parsed = value.split_once('-').and_then(|(low, high)| Some((low.parse().ok()?, high.parse().ok()?)));
    match parsed {
        Some((low, high)) if low <= high => (low, high),
        _ => panic!("NHSMAIL_FAULT_KILL_MS={value:?} is not LOW-HIGH in milliseconds"),
    }
}

/// Builds an agent config for the sandbox at `info`, sending as fast as the settings allow (10,000 texts a minute) and
/// retrying a transient failure after 1 s, with upload cycles only on request.
fn fast_config(info: &nhsmail_sandbox::SandboxInfo) -> String {
    support::sandbox::agent_config(info)
        .replace("rate_per_minute = 600", "rate_per_minute = 10000")
        .replace("network_timeout_seconds = 10", "network_timeout_seconds = 5")
}

/// Lists every message the agent stores, in pages of 1,000.
async fn all_messages(clients: &mut Clients) -> Vec<proto::Message> {
    try_all_messages(clients).await.expect("ListMessages succeeds")
}

async fn try_all_messages(clients: &mut Clients) -> Result<Vec<proto::Message>, tonic::Status> {
    let mut messages = Vec::new();
    let mut page_token = String::new();
    loop {
        let request = proto::ListMessagesRequest { status: 0, page_size: 1000, page_token: page_token.clone() };
        let page = clients.messages.list_messages(request).await?.into_inner();
        messages.extend(page.messages);
        if page.next_page_token.is_empty() {
            return Ok(messages);
        }
        page_token = page.next_page_token;
    }
}

/// Counts the messages in `queued` or `sending`.
async fn unsettled(clients: &mut Clients) -> u64 {
    let status = clients.agent.get_status(proto::GetStatusRequest {}).await.expect("GetStatus succeeds").into_inner();
    status
        .queue_counts
        .iter()
        .filter(|count| matches!(count.status(), MessageStatus::Queued | MessageStatus::Sending))
        .map(|count| count.count)
        .sum()
}

/// Returns the text of the `index`th message: unique, so the gateway's log can be matched to it.
fn loop_text(index: usize) -> String {
    format!("Your appointment reminder [k{index}]")
}

/// Reads the `[kN]` marker back out of a text the gateway received.
fn text_index(text: &str) -> Option<usize> {
    let start = text.find("[k")? + 2;
    let end = start + text[start..].find(']')?;
    text[start..end].parse().ok()
}

/// Submits `total` texts in batches, each batch retried with the same idempotency keys until it is accepted, through
/// whichever agent `clients` currently names.
async fn submit_all(total: usize, clients: tokio::sync::watch::Receiver<Clients>, submitted: Arc<AtomicU64>) {
    for start in (0..total).step_by(SUBMIT_BATCH) {
        let batch: Vec<proto::SubmitMessageRequest> = (start..(start + SUBMIT_BATCH).min(total))
            .map(|index| proto::SubmitMessageRequest {
                // Numbers 07700 900980 to 900999 get no receipt, so the sandbox's mailbox stays empty.
                to: format!("07700900{}", 980 + index % 20),
                text: loop_text(index),
                idempotency_key: format!("text-{index}"),
                client_reference: "sigkill-loop".into(),
                ..Default::default()
            })
            .collect();
        loop {
            let mut current = clients.borrow().clone();
            let mut request = tonic::Request::new(proto::SubmitMessagesRequest { messages: batch.clone() });
            request.set_timeout(Duration::from_secs(10));
            match current.messages.submit_messages(request).await {
                Ok(_) => break,
                // The agent was killed during the call, or is being restarted: try again with the same keys.
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        submitted.store((start + batch.len()) as u64, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_loop_loses_and_repeats_nothing() {
    let total = env_number("NHSMAIL_FAULT_TEXTS", 400) as usize;
    let min_kills = env_number("NHSMAIL_FAULT_MIN_KILLS", 5);
    let (kill_low, kill_high) = kill_interval();
    let mut random = rand::rngs::StdRng::seed_from_u64(SEED);

    let sandbox = Sandbox::start(SandboxOptions::default()).await.expect("the sandbox starts");
    let control = Control::new(&sandbox.info().control_url);
    let data_dir = tempfile::tempdir().unwrap();
    let config = fast_config(sandbox.info());
    let mut agent = AgentProcess::start(data_dir.path(), &config);
    let mut clients = agent.clients().await;
    support::set_password(&mut clients, &sandbox.info().password, false).await;

    let (current, receiver) = tokio::sync::watch::channel(clients.clone());
    let submitted = Arc::new(AtomicU64::new(0));
    let submitter = tokio::spawn(submit_all(total, receiver, submitted.clone()));

    // Kills go on while texts flow, and stop once the queue is empty and enough kills happened. After a bound of a
    // minute plus a second per 5 texts they stop anyway, and the wait below decides.
    let started = Instant::now();
    let kill_until = started + Duration::from_secs(60 + total as u64 / 5);
    let mut kills = 0u64;
    loop {
        let wait = Duration::from_millis(random.random_range(kill_low..=kill_high));
        tokio::time::sleep(wait).await;
        let all_submitted = submitted.load(Ordering::SeqCst) as usize == total;
        let drained_or_late = Instant::now() > kill_until || unsettled(&mut clients).await == 0;
        if kills >= min_kills && all_submitted && drained_or_late {
            break;
        }
        agent.kill();
        kills += 1;
        agent = tokio::task::block_in_place(|| AgentProcess::start(data_dir.path(), &config));
        clients = agent.clients().await;
        current.send_replace(clients.clone());
    }
    submitter.await.expect("the submitter finishes");
    let killing_took = started.elapsed();

    let settle_limit = SETTLE_LIMIT + Duration::from_secs(total as u64 / 50);
    support::wait_for(settle_limit, "every text to leave queued and sending", || {
        let mut clients = clients.clone();
        async move { (unsettled(&mut clients).await == 0).then_some(()) }
    })
    .await;

    // Every text exactly once in the agent, in a final state.
    let messages = all_messages(&mut clients).await;
    let mut by_index: BTreeMap<usize, Vec<&proto::Message>> = BTreeMap::new();
    for message in &messages {
        let index = text_index(&message.text).expect("every stored text carries its marker");
        by_index.entry(index).or_default().push(message);
    }
    let missing: Vec<usize> = (0..total).filter(|index| !by_index.contains_key(index)).collect();
    assert!(
        missing.is_empty(),
        "{} texts missing from the agent, for example {:?}",
        missing.len(),
        &missing[..5.min(missing.len())]
    );
    let stored_twice: Vec<usize> =
        by_index.iter().filter(|(_, found)| found.len() > 1).map(|(index, _)| *index).collect();
    assert!(stored_twice.is_empty(), "texts stored twice: {stored_twice:?}");

    let mut by_status: BTreeMap<String, usize> = BTreeMap::new();
    for message in &messages {
        *by_status.entry(format!("{:?}", message.status())).or_default() += 1;
    }
    let not_final: Vec<&proto::Message> = messages
        .iter()
        .filter(|message| {
            !matches!(
                message.status(),
                MessageStatus::Sent | MessageStatus::Delivered | MessageStatus::Failed | MessageStatus::Uncertain
            )
        })
        .collect();
    assert!(not_final.is_empty(), "texts not in a final state: {by_status:?}");

    // What the gateway received, by text.
    let mut received: HashMap<usize, usize> = HashMap::new();
    for text in control.sent_texts().await {
        let body = text["text"].as_str().unwrap_or_default();
        let index =
            text_index(body).unwrap_or_else(|| panic!("the gateway received a text without a marker: {body:?}"));
        *received.entry(index).or_default() += 1;
    }
    let mut received_twice_uncertain = 0;
    for (index, found) in &by_index {
        let message = found[0];
        let count = received.get(index).copied().unwrap_or(0);
        match message.status() {
            MessageStatus::Uncertain => {
                if count > 1 {
                    received_twice_uncertain += 1;
                }
            }
            MessageStatus::Sent | MessageStatus::Delivered => {
                assert_eq!(count, 1, "text {index} is {:?} and reached the gateway {count} times", message.status())
            }
            _ => assert!(count <= 1, "text {index} is {:?} and reached the gateway {count} times", message.status()),
        }
    }
    let uncertain_not_received = by_index
        .iter()
        .filter(|(index, found)| found[0].status() == MessageStatus::Uncertain && !received.contains_key(index))
        .count();

    println!(
        "SIGKILL loop: {total} texts, {kills} kills in {:.1} s; final states {by_status:?}; gateway received {} \
         texts; uncertain and never received: {uncertain_not_received}; uncertain and received twice: \
         {received_twice_uncertain}",
        killing_took.as_secs_f64(),
        received.values().sum::<usize>(),
    );
}

/// A tmpfs mounted for one test and unmounted when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    /// Mounts a tmpfs of `megabytes` MiB, or returns `None` after printing why the test is skipped. Panics when
    /// the test is mandatory and cannot run.
    fn mount(test: &str, megabytes: u32) -> Option<SmallDisk> {
        let mandatory = std::env::var_os(support::REAL_SERVERS_VAR).is_some();
        // SAFETY: geteuid has no preconditions and cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        if !root {
            assert!(
                !mandatory,
                "{test} must run ({} is set) but needs root to mount a tmpfs",
                support::REAL_SERVERS_VAR
            );
            eprintln!("skipped {test}: mounting a small tmpfs needs root; run the suite as root to include it");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m,mode=0700"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("mount runs");
        if !status.success() {
            assert!(!mandatory, "{test} must run but `mount -t tmpfs` failed with {status}");
            eprintln!("skipped {test}: `mount -t tmpfs` failed with {status}");
            return None;
        }
        Some(SmallDisk { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

/// Builds an agent config whose mail servers are a loopback port with nothing listening. No password is stored in these
/// tests, so the sender never tries them.
fn offline_config() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    format!(
        "[nhsmail]\nusername = \"practice.sms@example.org\"\nsmtp_host = \"127.0.0.1\"\nsmtp_port = {port}\n\
         smtp_security = \"plain\"\nimap_host = \"127.0.0.1\"\nimap_port = {port}\nimap_security = \"plain\"\n\
         network_timeout_seconds = 2\n"
    )
}

fn batch(tag: &str, size: usize) -> Vec<proto::SubmitMessageRequest> {
    // Long texts (5 parts) fill the disk in few calls.
    let filler = "Please bring a list of your current medicines to the appointment. ".repeat(11);
    (0..size)
        .map(|index| proto::SubmitMessageRequest {
            to: format!("07700900{:03}", index % 1000),
            text: format!("{filler}[{tag}-{index}]"),
            idempotency_key: format!("{tag}-{index}"),
            client_reference: tag.into(),
            ..Default::default()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn full_disk_rejects_then_recovers() {
    let Some(disk) = SmallDisk::mount("full_disk_rejects_then_recovers", 8) else { return };
    let data_dir = disk.path().join("agent");
    // Space held back, then freed to stand for an operator clearing the disk.
    let ballast = disk.path().join("ballast");
    std::fs::write(&ballast, vec![0u8; 2 * 1024 * 1024]).unwrap();

    let mut agent = AgentProcess::start(&data_dir, &offline_config());
    let mut clients = agent.clients().await;
    let mut accepted = 0usize;
    let mut refusal = None;
    for round in 0..400 {
        let request = proto::SubmitMessagesRequest { messages: batch(&format!("fill{round}"), 100) };
        match clients.messages.submit_messages(request).await {
            Ok(response) => accepted += response.into_inner().results.len(),
            Err(status) => {
                refusal = Some(status);
                break;
            }
        }
    }
    let refusal = refusal.expect("the 8 MiB disk fills up");
    assert_eq!(refusal.code(), Code::ResourceExhausted, "{}", refusal.message());
    assert!(refusal.message().contains("disk is full"), "the message says why: {}", refusal.message());
    assert!(refusal.message().contains("nothing was stored"), "the message says what happened: {}", refusal.message());
    assert!(accepted > 0, "some batches fit before the disk filled");

    // A single text is refused the same way while the disk is full.
    let single = clients.messages.submit_message(batch("single", 1).remove(0)).await;
    assert_eq!(single.map(|_| ()).map_err(|status| status.code()), Err(Code::ResourceExhausted));

    let stored = try_all_messages(&mut clients).await.unwrap_or_else(|status| {
        panic!("ListMessages failed while the disk is full: {status:?}; agent log:\n{}", agent.log())
    });
    assert_eq!(stored.len(), accepted, "every accepted text is still stored while the disk is full");

    std::fs::remove_file(&ballast).unwrap();
    let after = clients.messages.submit_messages(proto::SubmitMessagesRequest { messages: batch("after", 100) }).await;
    assert!(after.is_ok(), "submissions work once space returns: {:?}", after.err());

    agent.kill();
    let agent = AgentProcess::start(&data_dir, &offline_config());
    let mut clients = agent.clients().await;
    assert_eq!(all_messages(&mut clients).await.len(), accepted + 100, "every accepted text survives a SIGKILL");
}

/// Runs the agent on `data_dir` and returns its exit status and standard error. Panics if the agent still runs after
/// 30 s, because then it accepted the database.
fn run_agent_expecting_exit(data_dir: &Path) -> (std::process::ExitStatus, String) {
    let config_path = data_dir.join("agent.toml");
    std::fs::write(&config_path, offline_config()).unwrap();
    let stderr_path = data_dir.join("stderr.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_nhsmail-agent"))
        .arg("--config")
        .arg(&config_path)
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--listen")
        .arg("127.0.0.1:0")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .expect("the agent binary starts");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("the agent started on a database it should have rejected");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (status, std::fs::read_to_string(&stderr_path).unwrap())
}

/// Checks that the agent refuses `data_dir/agent.db`, names it, and leaves its bytes unchanged.
fn assert_refused_unchanged(data_dir: &Path, what: &str) {
    let database: PathBuf = data_dir.join("agent.db");
    let before = std::fs::read(&database).unwrap();
    let (status, stderr) = run_agent_expecting_exit(data_dir);
    assert_eq!(status.code(), Some(1), "{what}: exit status; stderr:\n{stderr}");
    assert!(stderr.contains(&database.display().to_string()), "{what}: the error names the file:\n{stderr}");
    assert_eq!(std::fs::read(&database).unwrap(), before, "{what}: the file is unchanged");
    let leftovers: Vec<String> = ["agent.db-wal", "agent.db-journal"]
        .into_iter()
        .filter(|name| data_dir.join(name).metadata().is_ok_and(|meta| meta.len() > 0))
        .map(String::from)
        .collect();
    assert!(leftovers.is_empty(), "{what}: nothing written beside the file: {leftovers:?}");
}

#[test]
fn random_bytes_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut random = rand::rngs::StdRng::seed_from_u64(SEED);
    let bytes: Vec<u8> = (0..16384).map(|_| random.random()).collect();
    std::fs::write(dir.path().join("agent.db"), bytes).unwrap();
    assert_refused_unchanged(dir.path(), "random bytes");
}

#[test]
fn foreign_sqlite_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let connection = rusqlite::Connection::open(dir.path().join("agent.db")).unwrap();
    connection
        .execute_batch(
            "CREATE TABLE appointments (id INTEGER PRIMARY KEY, patient TEXT, at TEXT);\n\
             INSERT INTO appointments (patient, at) VALUES ('example', '2026-12-07 09:30');",
        )
        .unwrap();
    drop(connection);
    assert_refused_unchanged(dir.path(), "another program's database");
}

#[tokio::test]
async fn corrupted_agent_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut agent = AgentProcess::start(dir.path(), &offline_config());
        let mut clients = agent.clients().await;
        clients
            .messages
            .submit_messages(proto::SubmitMessagesRequest { messages: batch("before", 200) })
            .await
            .unwrap();
        assert!(agent.stop().success(), "the agent stops cleanly, checkpointing its WAL");
    }
    // Overwrite everything after the first page, where the schema and the messages live.
    let database = dir.path().join("agent.db");
    let mut bytes = std::fs::read(&database).unwrap();
    let page_size = usize::from(u16::from_be_bytes([bytes[16], bytes[17]]));
    let mut random = rand::rngs::StdRng::seed_from_u64(SEED);
    for byte in &mut bytes[page_size..] {
        *byte = random.random();
    }
    // The sqlite_schema page's b-tree header, so the first read of the schema fails.
    for byte in &mut bytes[100..108] {
        *byte = 0xFF;
    }
    std::fs::write(&database, bytes).unwrap();
    for name in ["agent.db-wal", "agent.db-shm"] {
        let _ = std::fs::remove_file(dir.path().join(name));
    }
    assert_refused_unchanged(dir.path(), "a corrupted agent database");
}

/// Reads the resident set size of process `pid` in KiB.
fn resident_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc is readable");
    let line = status.lines().find(|line| line.starts_with("VmRSS:")).expect("status has VmRSS");
    line.split_whitespace().nth(1).and_then(|kib| kib.parse().ok()).expect("VmRSS is a number")
}

/// Gives a request a deadline of `limit`.
fn with_deadline<T>(message: T, limit: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(limit);
    request
}

/// Calls of one load client, by outcome.
#[derive(Debug, Default)]
struct LoadCounts {
    calls: u64,
    deadline_exceeded: u64,
    errors: Vec<String>,
}

/// Calls every rpc in turn until `until`, each with a 10 s deadline, as one load client.
async fn load_client(number: usize, mut clients: Clients, until: Instant) -> LoadCounts {
    let limit = Duration::from_secs(10);
    let mut counts = LoadCounts::default();
    let mut round = 0u64;
    let to = format!("07700900{:03}", 980 + number % 20);
    let opt_out_number = format!("07700900{:03}", 500 + number % 400);
    while Instant::now() < until {
        round += 1;
        let key = format!("load-{number}-{round}");
        let later = prost_types::Timestamp { seconds: chrono::Utc::now().timestamp() + 3600, nanos: 0 };
        let single = proto::SubmitMessageRequest {
            to: to.clone(),
            text: format!("Load test text {key}"),
            idempotency_key: key.clone(),
            ..Default::default()
        };
        // Sent an hour from now, so CancelMessage always finds it queued.
        let deferred = proto::SubmitMessageRequest {
            send_after: Some(later),
            idempotency_key: format!("{key}-deferred"),
            ..single.clone()
        };
        let mut results: Vec<Result<(), tonic::Status>> = Vec::new();

        let submitted = clients.messages.submit_message(with_deadline(single.clone(), limit)).await;
        let id = submitted.as_ref().ok().and_then(|response| response.get_ref().message.as_ref()).map(|m| m.id.clone());
        results.push(submitted.map(|_| ()));
        let batch = (0..10)
            .map(|index| proto::SubmitMessageRequest {
                idempotency_key: format!("{key}-batch-{index}"),
                ..single.clone()
            })
            .chain([deferred])
            .collect();
        let stored = clients
            .messages
            .submit_messages(with_deadline(proto::SubmitMessagesRequest { messages: batch }, limit))
            .await;
        let deferred_id = stored
            .as_ref()
            .ok()
            .and_then(|response| response.get_ref().results.last())
            .and_then(|r| r.message.as_ref())
            .map(|m| m.id.clone());
        results.push(stored.map(|_| ()));
        if let Some(id) = id {
            results.push(
                clients.messages.get_message(with_deadline(proto::GetMessageRequest { id }, limit)).await.map(|_| ()),
            );
        }
        if let Some(id) = deferred_id {
            results.push(
                clients
                    .messages
                    .cancel_message(with_deadline(proto::CancelMessageRequest { id }, limit))
                    .await
                    .map(|_| ()),
            );
        }
        let list = proto::ListMessagesRequest { status: 0, page_size: 50, page_token: String::new() };
        results.push(clients.messages.list_messages(with_deadline(list, limit)).await.map(|_| ()));
        results.push(
            clients.messages.list_replies(with_deadline(proto::ListRepliesRequest::default(), limit)).await.map(|_| ()),
        );
        results.push(clients.agent.get_status(with_deadline(proto::GetStatusRequest {}, limit)).await.map(|_| ()));
        results.push(
            clients
                .connectivity
                .get_connectivity(with_deadline(proto::GetConnectivityRequest {}, limit))
                .await
                .map(|_| ()),
        );
        let add = proto::AddOptOutRequest { number: opt_out_number.clone(), note: "load test".into() };
        results.push(clients.opt_outs.add_opt_out(with_deadline(add, limit)).await.map(|_| ()));
        let remove = proto::RemoveOptOutRequest { number: opt_out_number.clone(), note: "load test".into() };
        results.push(clients.opt_outs.remove_opt_out(with_deadline(remove, limit)).await.map(|_| ()));
        results.push(
            clients
                .opt_outs
                .list_opt_outs(with_deadline(proto::ListOptOutsRequest::default(), limit))
                .await
                .map(|_| ()),
        );
        let review = clients
            .inbox
            .list_inbound_for_review(with_deadline(proto::ListInboundForReviewRequest::default(), limit))
            .await;
        let inbound_id =
            review.as_ref().ok().and_then(|response| response.get_ref().emails.first()).map(|email| email.id);
        results.push(review.map(|_| ()));
        if let Some(id) = inbound_id {
            results.push(
                clients.inbox.get_inbound(with_deadline(proto::GetInboundRequest { id }, limit)).await.map(|_| ()),
            );
            results.push(
                clients.inbox.mark_reviewed(with_deadline(proto::MarkReviewedRequest { id }, limit)).await.map(|_| ()),
            );
        }
        if round.is_multiple_of(5) {
            results.push(
                clients.agent.trigger_upload(with_deadline(proto::TriggerUploadRequest {}, limit)).await.map(|_| ()),
            );
            let same = proto::UpdateConnectivityRequest { upload_interval_minutes: Some(1440), ..Default::default() };
            results.push(clients.connectivity.update_connectivity(with_deadline(same, limit)).await.map(|_| ()));
        }
        if round.is_multiple_of(3) {
            let watch = clients
                .messages
                .watch_events(with_deadline(proto::WatchEventsRequest { after_event_id: Some(0) }, limit))
                .await;
            match watch {
                Ok(response) => {
                    let mut stream = response.into_inner();
                    let first = tokio::time::timeout(limit, stream.message()).await;
                    results.push(match first {
                        Ok(Ok(_)) => Ok(()),
                        Ok(Err(status)) => Err(status),
                        Err(_) => Err(tonic::Status::deadline_exceeded("no event within the deadline")),
                    });
                }
                Err(status) => results.push(Err(status)),
            }
        }

        for result in results {
            counts.calls += 1;
            match result {
                Ok(()) => {}
                Err(status) if status.code() == Code::DeadlineExceeded => counts.deadline_exceeded += 1,
                Err(status) => counts.errors.push(format!("{:?}: {}", status.code(), status.message())),
            }
        }
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grpc_load_has_no_errors_and_flat_memory() {
    let clients_count = env_number("NHSMAIL_FAULT_LOAD_CLIENTS", 8) as usize;
    let seconds = env_number("NHSMAIL_FAULT_LOAD_SECONDS", 5);
    let harness = support::sandbox::SandboxAgent::start().await;
    let pid = harness.agent.pid();

    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for number in 0..clients_count {
        // Each client gets its own HTTP/2 connection, as separate programs would.
        let clients = harness.agent.clients().await;
        tasks.push(tokio::spawn(load_client(number, clients, until)));
    }
    let mut samples = Vec::new();
    while Instant::now() < until {
        samples.push(resident_kib(pid));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let mut total = LoadCounts::default();
    for task in tasks {
        let counts = task.await.expect("a load client finishes");
        total.calls += counts.calls;
        total.deadline_exceeded += counts.deadline_exceeded;
        total.errors.extend(counts.errors);
    }

    // Memory after the first third of the run, once caches are warm, against the last sample.
    let warm = samples[samples.len() / 3];
    let last = *samples.last().unwrap();
    let peak = samples.iter().max().copied().unwrap_or(0);
    println!(
        "gRPC load: {clients_count} clients for {seconds} s: {} calls, {} deadline exceeded, {} errors; resident \
         {warm} KiB after warm-up, {last} KiB at the end, {peak} KiB peak",
        total.calls,
        total.deadline_exceeded,
        total.errors.len()
    );
    assert!(
        total.errors.is_empty(),
        "{} errors, first: {:?}",
        total.errors.len(),
        &total.errors[..total.errors.len().min(5)]
    );
    assert!(last <= warm + 32 * 1024, "resident memory grew from {warm} KiB to {last} KiB during the load");
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_deadline_retry_stores_once() {
    let dir = tempfile::tempdir().unwrap();
    let agent = AgentProcess::start(dir.path(), &offline_config());
    let mut clients = agent.clients().await;

    // Shorter and shorter deadlines until one expires during the submission.
    let mut attempts = 0;
    let mut expired_tag = None;
    for limit_us in [5_000u64, 2_000, 1_000, 500, 200, 100, 50] {
        attempts += 1;
        let tag = format!("deadline{attempts}");
        let limit = Duration::from_micros(limit_us);
        let request = with_deadline(proto::SubmitMessagesRequest { messages: batch(&tag, 1000) }, limit);
        let outcome = tokio::time::timeout(limit, clients.messages.submit_messages(request)).await;
        let expired = match outcome {
            Err(_) => true,
            Ok(Err(status)) => {
                assert!(matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled), "{status:?}");
                true
            }
            Ok(Ok(_)) => false,
        };
        if expired {
            expired_tag = Some(tag);
            break;
        }
    }
    let tag = expired_tag.expect("a deadline expired during a submission");

    let retried = clients.messages.submit_messages(proto::SubmitMessagesRequest { messages: batch(&tag, 1000) }).await;
    let results = retried.expect("the retry without a deadline succeeds").into_inner().results;
    assert_eq!(results.len(), 1000);

    let messages = all_messages(&mut clients).await;
    let mut per_key: HashMap<&str, usize> = HashMap::new();
    for message in messages.iter().filter(|message| message.client_reference == tag) {
        *per_key.entry(message.idempotency_key.as_str()).or_default() += 1;
    }
    assert_eq!(per_key.len(), 1000, "every key of the batch is stored");
    let repeated = per_key.values().filter(|count| **count > 1).count();
    assert_eq!(repeated, 0, "keys stored more than once");
    let duplicates = results.iter().filter(|result| result.duplicate).count();
    println!("deadline then retry: {duplicates} of 1000 were already stored when the deadline expired");
}
