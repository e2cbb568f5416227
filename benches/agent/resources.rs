//! Resources: resident memory idle, with a large queue and under mixed load; start-up time empty and with that
//! queue; database size per million messages.

use std::time::{Duration, Instant};

use nhsmail_agent::proto;

use crate::Report;
use crate::harness::{Inputs, Sizes, database_bytes, millis, offline_config, percentile, resident_mib, start_agent};
use crate::support::Clients;

/// Starts the agent `times` times on `data_dir` and returns the median time to `listening on`, with the last
/// agent still running.
fn median_start(data_dir: &std::path::Path, config: &str, times: usize) -> (crate::support::AgentProcess, Duration) {
    let mut durations = Vec::new();
    let mut last = None;
    for _ in 0..times {
        if let Some(mut agent) = last.take() {
            crate::support::AgentProcess::stop(&mut agent);
        }
        let (agent, took) = start_agent(data_dir, config);
        durations.push(took);
        last = Some(agent);
    }
    (last.expect("started at least once"), percentile(&mut durations, 0.5))
}

/// Queues `count` messages through 4 clients in batches of 1,000.
async fn fill(agent: &crate::support::AgentProcess, count: usize) -> Duration {
    let started = Instant::now();
    let clients_count = 4;
    let mut tasks = Vec::new();
    for number in 0..clients_count {
        let mut clients: Clients = agent.clients().await;
        let share = count / clients_count;
        tasks.push(tokio::spawn(async move {
            let mut inputs = Inputs::new(&format!("fill{number}"));
            let mut left = share;
            while left > 0 {
                let size = left.min(1000);
                let request = proto::SubmitMessagesRequest { messages: inputs.batch(size) };
                clients.messages.submit_messages(request).await.expect("SubmitMessages succeeds");
                left -= size;
            }
        }));
    }
    for task in tasks {
        task.await.expect("a filler finishes");
    }
    started.elapsed()
}

/// Runs `clients` callers mixing submissions, reads, lists and status for `time`, and samples memory every 250 ms.
async fn mixed_load(agent: &crate::support::AgentProcess, clients: usize, time: Duration) -> (Vec<f64>, u64) {
    let until = Instant::now() + time;
    let mut tasks = Vec::new();
    for number in 0..clients {
        let mut clients: Clients = agent.clients().await;
        tasks.push(tokio::spawn(async move {
            let mut inputs = Inputs::new(&format!("load{number}"));
            let mut calls = 0u64;
            while Instant::now() < until {
                let stored = clients.messages.submit_message(inputs.next()).await.expect("SubmitMessage succeeds");
                let id = stored.into_inner().message.expect("a message").id;
                let request = proto::SubmitMessagesRequest { messages: inputs.batch(20) };
                clients.messages.submit_messages(request).await.expect("SubmitMessages succeeds");
                clients.messages.get_message(proto::GetMessageRequest { id }).await.expect("GetMessage succeeds");
                let list = proto::ListMessagesRequest { status: 0, page_size: 100, page_token: String::new() };
                clients.messages.list_messages(list).await.expect("ListMessages succeeds");
                clients.agent.get_status(proto::GetStatusRequest {}).await.expect("GetStatus succeeds");
                calls += 5;
            }
            calls
        }));
    }
    let pid = agent.pid();
    let mut samples = Vec::new();
    while Instant::now() < until {
        samples.push(resident_mib(pid));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let mut calls = 0;
    for task in tasks {
        calls += task.await.expect("a load client finishes");
    }
    (samples, calls)
}

pub async fn measure(sizes: Sizes, report: &mut Report) {
    report.section("Resources", "Resident set size from /proc/PID/status; start-up is spawn to `listening on`.");
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("agent");
    let config = offline_config();

    let (agent, empty_start) = median_start(&data_dir, &config, 5);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = resident_mib(agent.pid());
    report.row("start-up, empty database (median of 5)", &millis(empty_start), "target under 200 ms");
    report.row("resident memory, idle", &format!("{idle:.1} MiB"), "target under 40 MiB");
    report.figure("startup_empty_ms", empty_start.as_secs_f64() * 1000.0);
    report.figure("idle_mib", idle);

    let (samples, calls) = mixed_load(&agent, sizes.load_clients, sizes.load_time).await;
    let first = samples.first().copied().unwrap_or(0.0);
    let last = samples.last().copied().unwrap_or(0.0);
    let peak = samples.iter().copied().fold(0.0, f64::max);
    report.row(
        &format!("resident memory, {} clients of mixed load for {} s", sizes.load_clients, sizes.load_time.as_secs()),
        &format!("{first:.1} MiB at 0.25 s, {peak:.1} MiB peak, {last:.1} MiB at the end ({calls} calls)"),
        "flat means the end is close to the peak",
    );
    report.figure("load_peak_mib", peak);
    drop(agent);

    let queue_dir = dir.path().join("queue");
    let (agent, _) = start_agent(&queue_dir, &config);
    let took = fill(&agent, sizes.queued).await;
    let with_queue = resident_mib(agent.pid());
    report.row(
        &format!("queueing {} messages (4 clients, batches of 1,000)", sizes.queued),
        &format!("{:.1} s, {:.0} msg/s", took.as_secs_f64(), sizes.queued as f64 / took.as_secs_f64()),
        "",
    );
    report.row(&format!("resident memory, {} queued, right after", sizes.queued), &format!("{with_queue:.1} MiB"), "");
    let mut agent = agent;
    agent.stop();
    let bytes = database_bytes(&queue_dir);
    let per_million = bytes as f64 / sizes.queued as f64 * 1_000_000.0 / (1024.0 * 1024.0);
    report.row(
        "database size per million messages",
        &format!("{per_million:.0} MiB ({:.0} MiB for {})", bytes as f64 / 1048576.0, sizes.queued),
        "after a clean stop",
    );
    report.figure("db_mib_per_million", per_million);

    let (agent, queued_start) = median_start(&queue_dir, &config, 3);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_queued = resident_mib(agent.pid());
    report.row(&format!("start-up, {} queued (median of 3)", sizes.queued), &millis(queued_start), "");
    report.row(&format!("resident memory, idle with {} queued", sizes.queued), &format!("{idle_queued:.1} MiB"), "");
    report.figure("startup_queued_ms", queued_start.as_secs_f64() * 1000.0);
    report.figure("idle_queued_mib", idle_queued);
}
