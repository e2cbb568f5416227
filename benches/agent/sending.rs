//! Sending: time from submission to SMTP acceptance when idle, and texts per second through the agent, through one
//! pooled SMTP connection and through the pool, all into the sandbox's SMTP server. With `--postfix`, Postfix from
//! Debian's packages accepts the same emails and relays them to the same sandbox, as the reference.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use nhsmail_sandbox::{Sandbox, SandboxOptions};

use nhsmail_agent::proto::{self, MessageStatus};
use nhsmail_agent::secret::Secret;
use nhsmail_agent::transport::smtp::{DEFAULT_IDLE_TIMEOUT, Mechanism, OutboundEmail, SmtpClient, SmtpSettings};
use nhsmail_agent::transport::{Credentials, Endpoint, Security, TlsSettings};

use crate::Report;
use crate::harness::{Inputs, Sizes, millis, percentile, start_agent};
use crate::support::sandbox::{Control, agent_config};
use crate::support::{self, Clients};

/// Seconds allowed for a burst to drain before the benchmark gives up.
const DRAIN_LIMIT: Duration = Duration::from_secs(900);

/// Counts the emails the sandbox's SMTP server has accepted so far.
async fn accepted(control: &Control) -> u64 {
    control.counters().await["messages"]["accepted"].as_u64().unwrap_or(0)
}

/// Waits until the sandbox has accepted `target` emails in total and returns when it did.
async fn wait_for_accepted(control: &Control, target: u64) -> Instant {
    let started = Instant::now();
    while accepted(control).await < target {
        assert!(started.elapsed() < DRAIN_LIMIT, "the sandbox did not receive {target} emails in time");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Instant::now()
}

/// Milliseconds between the submission event and the `sent` event of a message, as the agent recorded them.
fn submitted_to_sent(message: &proto::Message) -> Option<Duration> {
    let at = |wanted: MessageStatus| {
        let event = message.events.iter().find(|event| event.to_status() == wanted)?;
        let at = event.at.as_ref()?;
        Some(at.seconds as f64 * 1000.0 + f64::from(at.nanos) / 1e6)
    };
    let millis = at(MessageStatus::Sent)? - at(MessageStatus::Queued)?;
    Some(Duration::from_secs_f64(millis.max(0.0) / 1000.0))
}

/// Submits one text at a time with the queue idle and returns the agent's submission-to-acceptance times.
async fn idle_latencies(clients: &mut Clients, count: usize) -> Vec<Duration> {
    let mut inputs = Inputs::without_receipts("idle");
    let mut latencies = Vec::new();
    for _ in 0..count {
        let response = clients.messages.submit_message(inputs.next()).await.expect("SubmitMessage succeeds");
        let id = response.into_inner().message.expect("a message").id;
        let started = Instant::now();
        let message = loop {
            let message = support::message(clients, &id).await;
            if message.status() == MessageStatus::Sent {
                break message;
            }
            assert!(started.elapsed() < DRAIN_LIMIT, "message {id} was not sent");
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        latencies.push(submitted_to_sent(&message).expect("the message has both events"));
        // Let the rate limiter's spacing pass, so every text finds the sender idle.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    latencies
}

/// Submits `count` texts at once and returns texts per second from the first submission to the last acceptance.
async fn agent_burst(clients: &mut Clients, control: &Control, count: usize) -> f64 {
    let before = accepted(control).await;
    let mut inputs = Inputs::without_receipts("burst");
    let started = Instant::now();
    let mut left = count;
    while left > 0 {
        let size = left.min(1000);
        let request = proto::SubmitMessagesRequest { messages: inputs.batch(size) };
        clients.messages.submit_messages(request).await.expect("SubmitMessages succeeds");
        left -= size;
    }
    let finished = wait_for_accepted(control, before + count as u64).await;
    count as f64 / (finished - started).as_secs_f64()
}

fn smtp_client(sandbox: &Sandbox, pool_size: usize) -> SmtpClient {
    let info = sandbox.info();
    let settings = SmtpSettings {
        endpoint: Endpoint { host: "127.0.0.1".into(), port: info.smtp_port, security: Security::StartTls },
        tls: TlsSettings { extra_ca_file: Some(info.ca_file.clone()) },
        hello_name: "localhost".into(),
        timeout: Duration::from_secs(30),
        pool_size,
        idle_timeout: DEFAULT_IDLE_TIMEOUT,
        mechanisms: vec![Mechanism::Plain, Mechanism::Login],
    };
    let credentials = Credentials::password(info.username.clone(), Secret::new(info.password.clone()));
    SmtpClient::new(settings, credentials).expect("the SMTP client is set up")
}

/// Sends `count` emails through the agent's SMTP transport with `tasks` senders sharing a pool of `tasks`
/// connections, with no database in the way. Returns emails per second.
async fn transport_rate(sandbox: &Sandbox, count: usize, tasks: usize) -> f64 {
    let client = Arc::new(smtp_client(sandbox, tasks));
    let username = sandbox.info().username.clone();
    let mut inputs = Inputs::without_receipts(&format!("transport{tasks}"));
    let emails: Vec<OutboundEmail> = (0..count)
        .map(|_| {
            let request = inputs.next();
            OutboundEmail {
                from: username.clone(),
                to: format!("{}@sms.nhs.net", request.to),
                subject: String::new(),
                body: request.text,
            }
        })
        .collect();
    let emails = Arc::new(emails);
    let started = Instant::now();
    let mut handles = Vec::new();
    for task in 0..tasks {
        let client = client.clone();
        let emails = emails.clone();
        handles.push(tokio::spawn(async move {
            for email in emails.iter().skip(task).step_by(tasks) {
                client.send(email, |_| async { Ok::<(), std::io::Error>(()) }).await.expect("the sandbox accepts it");
            }
        }));
    }
    for handle in handles {
        handle.await.expect("a sender finishes");
    }
    count as f64 / started.elapsed().as_secs_f64()
}

/// Starts Postfix with `scripts/bench-postfix.sh`, relaying to the sandbox, and returns the port it listens on.
fn start_postfix(state_dir: &Path, sandbox: &Sandbox) -> u16 {
    let info = sandbox.info();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/bench-postfix.sh");
    let status = std::process::Command::new(script)
        .arg("start")
        .arg(state_dir)
        .arg(port.to_string())
        .arg(info.smtp_port.to_string())
        .arg(&info.ca_file)
        .env("BENCH_RELAY_USERNAME", &info.username)
        .env("BENCH_RELAY_PASSWORD", &info.password)
        .status()
        .expect("bench-postfix.sh runs");
    assert!(status.success(), "bench-postfix.sh start failed");
    port
}

fn stop_postfix(state_dir: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/bench-postfix.sh");
    let _ = std::process::Command::new(script).arg("stop").arg(state_dir).status();
}

/// Sends `count` emails to Postfix over `connections` pooled SMTP connections and returns emails per second from
/// the first submission until the sandbox has accepted the last relayed one.
async fn postfix_rate(port: u16, control: &Control, username: &str, count: usize, connections: u32) -> f64 {
    let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(port)
        .timeout(Some(Duration::from_secs(30)))
        .pool_config(lettre::transport::smtp::PoolConfig::new().max_size(connections))
        .build();
    let transport = Arc::new(transport);
    let before = accepted(control).await;
    let mut inputs = Inputs::without_receipts(&format!("postfix{connections}"));
    let emails: Vec<lettre::Message> = (0..count)
        .map(|_| {
            let request = inputs.next();
            lettre::Message::builder()
                .from(username.parse().unwrap())
                .to(format!("{}@sms.nhs.net", request.to).parse().unwrap())
                .subject("")
                .body(request.text)
                .unwrap()
        })
        .collect();
    let emails = Arc::new(emails);
    let started = Instant::now();
    let mut handles = Vec::new();
    for task in 0..connections as usize {
        let transport = transport.clone();
        let emails = emails.clone();
        handles.push(tokio::spawn(async move {
            for email in emails.iter().skip(task).step_by(connections as usize) {
                transport.send(email.clone()).await.expect("Postfix accepts it");
            }
        }));
    }
    for handle in handles {
        handle.await.expect("a sender finishes");
    }
    let accepted_by_postfix = started.elapsed();
    let finished = wait_for_accepted(control, before + count as u64).await;
    println!(
        "  Postfix accepted {count} emails in {:.2} s; the sandbox had them all after {:.2} s",
        accepted_by_postfix.as_secs_f64(),
        (finished - started).as_secs_f64()
    );
    count as f64 / (finished - started).as_secs_f64()
}

pub async fn measure(sizes: Sizes, postfix: bool, report: &mut Report) {
    report.section(
        "Sending",
        "Into the sandbox's SMTP server (STARTTLS, AUTH PLAIN) on loopback, which has no rate limit; the agent's \
         rate_per_minute is 10000, the highest it accepts.",
    );
    let sandbox = Sandbox::start(SandboxOptions::default()).await.expect("the sandbox starts");
    let control = Control::new(&sandbox.info().control_url);
    let dir = tempfile::tempdir().unwrap();
    let config = agent_config(sandbox.info()).replace("rate_per_minute = 600", "rate_per_minute = 10000");
    let (agent, _) = start_agent(&dir.path().join("agent"), &config);
    let mut clients = agent.clients().await;
    support::set_password(&mut clients, &sandbox.info().password, false).await;

    let mut latencies = idle_latencies(&mut clients, sizes.idle_sends).await;
    let p50 = percentile(&mut latencies, 0.5);
    let max = percentile(&mut latencies, 1.0);
    report.row(
        "submission to SMTP acceptance, queue idle",
        &format!("p50 {}, max {} ({} texts)", millis(p50), millis(max), latencies.len()),
        "target under 50 ms",
    );
    report.figure("idle_send_p50_ms", p50.as_secs_f64() * 1000.0);

    let through_agent = agent_burst(&mut clients, &control, sizes.burst).await;
    report.row(
        &format!("through the agent, {} texts submitted at once", sizes.burst),
        &format!("{through_agent:.0} texts/s"),
        "the sender uses one connection at a time; rate_per_minute caps it at 166/s",
    );
    report.figure("agent_send_rate", through_agent);
    drop(agent);

    let one = transport_rate(&sandbox, sizes.burst, 1).await;
    let pool = transport_rate(&sandbox, sizes.burst, 2).await;
    report.row("SMTP transport alone, one pooled connection", &format!("{one:.0} emails/s"), "no database writes");
    report.row("SMTP transport alone, the pool (2 connections)", &format!("{pool:.0} emails/s"), "no database writes");
    report.figure("transport_one_rate", one);
    report.figure("transport_pool_rate", pool);

    if postfix {
        let state = tempfile::tempdir().unwrap();
        let port = start_postfix(state.path(), &sandbox);
        let username = sandbox.info().username.clone();
        let result = std::panic::AssertUnwindSafe(async {
            let single = postfix_rate(port, &control, &username, sizes.burst, 1).await;
            let pooled = postfix_rate(port, &control, &username, sizes.burst, 2).await;
            (single, pooled)
        });
        let (single, pooled) = futures::FutureExt::catch_unwind(result).await.unwrap_or((0.0, 0.0));
        stop_postfix(state.path());
        report.row(
            "Postfix reference, one client connection, relayed to the sandbox",
            &format!("{single:.0} emails/s"),
            &format!("agent {:.2}x of it", through_agent / single),
        );
        report.row(
            "Postfix reference, two client connections, relayed to the sandbox",
            &format!("{pooled:.0} emails/s"),
            &format!("agent {:.2}x of it", through_agent / pooled),
        );
        report.figure("postfix_one_rate", single);
        report.figure("postfix_two_rate", pooled);
    } else {
        report.row("Postfix reference", "not measured", "run with --postfix as root");
    }
    sandbox.shutdown().await;
}
