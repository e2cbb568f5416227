//! Inbound: one upload cycle reads a sandbox mailbox of mixed emails (every kind in `tests/corpus`, each given its own
//! Message-ID), fetching, classifying and storing each. Classification alone is also timed, in process.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use nhsmail_sandbox::{Sandbox, SandboxOptions};
use serde_json::json;

use nhsmail_agent::proto;

use crate::Report;
use crate::harness::{Sizes, start_agent};
use crate::support::{self, sandbox::agent_config};

/// Returns the corpus emails, sorted by file name so every run uses the same order.
fn corpus() -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/corpus is readable")
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "eml"))
        .collect();
    files.sort();
    files.iter().map(|path| std::fs::read(path).unwrap()).collect()
}

/// Gives `raw` the Message-ID `<bench-N@example.org>`, replacing its own, because the agent records an email once
/// per Message-ID.
fn with_message_id(raw: &[u8], number: usize) -> Vec<u8> {
    let header = format!("Message-ID: <bench-{number}@example.org>\r\n");
    let mut out = header.into_bytes();
    let mut in_header = true;
    for line in raw.split_inclusive(|byte| *byte == b'\n') {
        if in_header && (line == b"\n" || line == b"\r\n") {
            in_header = false;
        }
        if in_header && line.len() > 11 && line[..11].eq_ignore_ascii_case(b"message-id:") {
            continue;
        }
        out.extend_from_slice(line);
    }
    out
}

/// Writes a sandbox state folder whose INBOX contains `emails`, in the sandbox's own index format, so that the
/// sandbox loads them at start instead of rewriting its index once per appended email.
fn write_mailbox(state_dir: &Path, emails: &[Vec<u8>]) {
    let messages_dir = state_dir.join("messages");
    std::fs::create_dir_all(&messages_dir).unwrap();
    let now = chrono::Utc::now();
    let mut entries = Vec::with_capacity(emails.len());
    for (index, raw) in emails.iter().enumerate() {
        let file = format!("{}.eml", index + 1);
        std::fs::write(messages_dir.join(&file), raw).unwrap();
        entries.push(json!({
            "uid": index + 1,
            "flags": [],
            "internal_date": now,
            "size": raw.len(),
            "file": file,
            "recent": true,
        }));
    }
    let folders: BTreeMap<&str, serde_json::Value> =
        [("INBOX", json!({ "uidvalidity": 1_700_000_000u32, "uidnext": emails.len() + 1, "messages": entries }))]
            .into_iter()
            .collect();
    let index = json!({ "folders": folders, "next_file": emails.len() + 1 });
    std::fs::write(state_dir.join("mailbox.json"), serde_json::to_vec(&index).unwrap()).unwrap();
}

pub async fn measure(sizes: Sizes, report: &mut Report) {
    report.section(
        "Inbound",
        "One upload cycle over IMAP (implicit TLS) from the sandbox: fetch, classify and store each email in its own \
         transaction. The mailbox mixes every kind in tests/corpus: reports, receipts, replies, auto-replies, other.",
    );
    let corpus = corpus();
    let emails: Vec<Vec<u8>> =
        (0..sizes.inbound).map(|number| with_message_id(&corpus[number % corpus.len()], number)).collect();

    let started = Instant::now();
    for raw in &emails {
        std::hint::black_box(nhsmail_agent::mailbox::classify(raw, "sms.nhs.net"));
    }
    let classify_rate = emails.len() as f64 / started.elapsed().as_secs_f64();

    let state = tempfile::tempdir().unwrap();
    write_mailbox(state.path(), &emails);
    let options = SandboxOptions { state_dir: Some(state.path().to_path_buf()), ..SandboxOptions::default() };
    let sandbox = Sandbox::start(options).await.expect("the sandbox starts with the prepared mailbox");
    let dir = tempfile::tempdir().unwrap();
    let (agent, _) = start_agent(&dir.path().join("agent"), &agent_config(sandbox.info()));
    let mut clients = agent.clients().await;
    support::set_password(&mut clients, &sandbox.info().password, false).await;

    let mut request = tonic::Request::new(proto::TriggerUploadRequest {});
    request.set_timeout(Duration::from_secs(1800));
    let started = Instant::now();
    let upload = clients.agent.trigger_upload(request).await.expect("TriggerUpload succeeds").into_inner();
    let elapsed = started.elapsed();
    let rate = f64::from(upload.mail_collected) / elapsed.as_secs_f64();
    report.row(
        &format!("upload cycle, {} emails in the mailbox", emails.len()),
        &format!("{rate:.0} emails/s ({} collected in {:.1} s)", upload.mail_collected, elapsed.as_secs_f64()),
        "target at least 2,000/s",
    );
    report.row("classification alone, in process", &format!("{classify_rate:.0} emails/s"), "no IMAP, no database");
    if !upload.errors.is_empty() {
        println!("  upload errors: {:?}", upload.errors);
    }
    report.figure("inbound_rate", rate);
    report.figure("classify_rate", classify_rate);
    drop(agent);
    sandbox.shutdown().await;
}
