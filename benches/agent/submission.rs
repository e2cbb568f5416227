//! Submission: SubmitMessage with 1, 8 and 64 concurrent clients and SubmitMessages with batches of 100 and 1,000,
//! against raw SQLite inserts of the same rows into the agent's own schema with the same journal and sync settings.

use std::path::Path;
use std::time::{Duration, Instant};

use chrono::Utc;
use rusqlite::{Connection, TransactionBehavior, params};

use nhsmail_agent::store::Store;

use crate::Report;
use crate::harness::{Inputs, Sizes, millis, offline_config, percentile, start_agent};
use crate::support::Clients;

/// One measured configuration: how many messages were stored and each call's latency.
struct Run {
    messages: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Run {
    fn rate(&self) -> f64 {
        self.messages as f64 / self.elapsed.as_secs_f64()
    }
}

/// Runs `clients` concurrent callers, each on its own connection, sending batches of `batch` (SubmitMessage when
/// 1) for `time`.
async fn run_clients(connections: &[Clients], batch: usize, time: Duration, tag: &str) -> Run {
    let started = Instant::now();
    let until = started + time;
    let mut tasks = Vec::new();
    for (number, clients) in connections.iter().enumerate() {
        let mut clients = clients.clone();
        let mut inputs = Inputs::new(&format!("{tag}-{number}"));
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut stored = 0;
            while Instant::now() < until {
                let call = Instant::now();
                if batch == 1 {
                    clients.messages.submit_message(inputs.next()).await.expect("SubmitMessage succeeds");
                } else {
                    let request = nhsmail_agent::proto::SubmitMessagesRequest { messages: inputs.batch(batch) };
                    clients.messages.submit_messages(request).await.expect("SubmitMessages succeeds");
                }
                latencies.push(call.elapsed());
                stored += batch;
            }
            (stored, latencies)
        }));
    }
    let mut run = Run { messages: 0, elapsed: Duration::ZERO, latencies: Vec::new() };
    for task in tasks {
        let (stored, latencies) = task.await.expect("a client finishes");
        run.messages += stored;
        run.latencies.extend(latencies);
    }
    run.elapsed = started.elapsed();
    run
}

/// Inserts generated messages and their first event into a fresh database with the agent's schema, `batch` rows
/// per transaction, with WAL and `synchronous = FULL` as the agent sets them, until `rows` are stored or `time` has
/// passed. Returns rows per second.
fn raw_sqlite_rate(dir: &Path, rows: usize, batch: usize, time: Duration) -> f64 {
    let path = dir.join(format!("raw-{batch}.db"));
    drop(Store::open(&path).expect("the agent creates its schema"));
    let mut connection = Connection::open(&path).unwrap();
    connection.pragma_update(None, "journal_mode", "WAL").unwrap();
    connection.pragma_update(None, "synchronous", "FULL").unwrap();
    connection.pragma_update(None, "foreign_keys", "ON").unwrap();

    let mut inputs = Inputs::new(&format!("raw-{batch}"));
    let requests: Vec<_> = (0..rows).map(|_| inputs.next()).collect();
    let now = Utc::now().timestamp_millis();
    let expires = now + 72 * 3_600_000;

    let started = Instant::now();
    let mut stored = 0;
    for chunk in requests.chunks(batch) {
        if started.elapsed() > time {
            break;
        }
        stored += chunk.len();
        let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate).unwrap();
        for request in chunk {
            let id = uuid::Uuid::now_v7().to_string();
            let e164 = format!("+44{}", &request.to[1..]);
            transaction
                .prepare_cached(
                    "INSERT INTO messages (id, status, to_e164, gateway_address, text, priority, encoding, parts, \
                     length, created_at, send_after, expires_at, updated_at, caller, idempotency_key, \
                     client_reference, status_reason) \
                     VALUES (?1, 'queued', ?2, ?3, ?4, 'normal', 'gsm7', 1, ?5, ?6, ?6, ?7, ?6, 'admin', ?8, ?9, \
                     'submitted')",
                )
                .unwrap()
                .execute(params![
                    id,
                    e164,
                    format!("{}@sms.nhs.net", request.to),
                    request.text,
                    request.text.len() as i64,
                    now,
                    expires,
                    request.idempotency_key,
                    request.client_reference,
                ])
                .unwrap();
            transaction
                .prepare_cached(
                    "INSERT INTO message_events (message_id, at, from_status, to_status, reason) \
                     VALUES (?1, ?2, NULL, 'queued', 'submitted')",
                )
                .unwrap()
                .execute(params![id, now])
                .unwrap();
        }
        transaction.commit().unwrap();
    }
    stored as f64 / started.elapsed().as_secs_f64()
}

pub async fn measure(sizes: Sizes, report: &mut Report) {
    let dir = tempfile::tempdir().unwrap();
    report.section("Submission", "An agent with no mailbox password, so nothing is sent; every call stores durably.");

    // The reference first, on the same disk, for single-row and batched transactions.
    let raw = tokio::task::block_in_place(|| {
        [1usize, 100, 1000]
            .map(|batch| (batch, raw_sqlite_rate(dir.path(), sizes.raw_rows, batch, sizes.submission_time)))
    });
    for (batch, rate) in raw {
        report.row(&format!("raw SQLite, {batch} rows per transaction"), &format!("{rate:.0} rows/s"), "reference");
    }
    let raw_batch = raw[2].1;
    let raw_single = raw[0].1;

    let (agent, _) = start_agent(&dir.path().join("agent"), &offline_config());
    let mut connections = Vec::new();
    for _ in 0..64 {
        connections.push(agent.clients().await);
    }

    for clients in [1usize, 8, 64] {
        let mut run = run_clients(&connections[..clients], 1, sizes.submission_time, &format!("unary{clients}")).await;
        let rate = run.rate();
        let p50 = percentile(&mut run.latencies, 0.50);
        let p99 = percentile(&mut run.latencies, 0.99);
        report.row(
            &format!("SubmitMessage, {clients} concurrent clients"),
            &format!("{rate:.0} msg/s, p50 {}, p99 {}", millis(p50), millis(p99)),
            &format!("{:.2} of raw single-row commits", rate / raw_single),
        );
        report.figure(&format!("unary_{clients}_rate"), rate);
        report.figure(&format!("unary_{clients}_p99_ms"), p99.as_secs_f64() * 1000.0);
    }
    for batch in [100usize, 1000] {
        for clients in [1usize, 4] {
            let tag = format!("batch{batch}x{clients}");
            let mut run = run_clients(&connections[..clients], batch, sizes.submission_time, &tag).await;
            let rate = run.rate();
            let p50 = percentile(&mut run.latencies, 0.50);
            let p99 = percentile(&mut run.latencies, 0.99);
            report.row(
                &format!("SubmitMessages, batches of {batch}, {clients} clients"),
                &format!("{rate:.0} msg/s, p50 {} per call, p99 {}", millis(p50), millis(p99)),
                &format!("{:.2} of raw batched inserts", rate / raw_batch),
            );
            report.figure(&format!("batch_{batch}x{clients}_rate"), rate);
        }
    }
    report.figure("raw_batch_rate", raw_batch);
    report.figure("raw_single_rate", raw_single);
}
