//! End-to-end scenarios against real Postfix (SMTP submission with STARTTLS and SASL) and Dovecot (IMAP) from
//! Debian's packages, started by `scripts/real-servers.sh`. Skipped with a message unless `NHSMAIL_REAL_SERVERS`
//! names the stack's `servers.env`; `.ci/run` sets it, so there they must pass.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use nhsmail_agent::proto::{self, MessageStatus, PasswordState};
use support::{
    AgentProcess, REAL_SERVER_LOCK, RealServers, SEND_LIMIT, message, set_password, submit, unique_tag,
    upload_until_status, wait_for, wait_for_status,
};

fn gateway_copies(servers: &RealServers, tag: &str) -> Vec<serde_json::Value> {
    servers
        .gateway_messages()
        .into_iter()
        .filter(|email| {
            email["body"].as_str().unwrap_or_default().contains(tag)
                || email["subject"].as_str().unwrap_or_default().contains(tag)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn text_reaches_gateway_mailbox() {
    let Some(servers) = RealServers::from_env("text_reaches_gateway_mailbox") else { return };
    let _lock = REAL_SERVER_LOCK.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let agent = AgentProcess::start(dir.path(), &servers.agent_config(""));
    let mut clients = agent.clients().await;
    assert!(set_password(&mut clients, servers.password(), false).await.verified);

    let tag = unique_tag();
    let text = format!("Your appointment is on Monday at 09:30. Reply YES to confirm. £0 charge. Ref {tag}");
    let submitted = clients.messages.submit_message(submit("07700 900123", &text)).await.unwrap().into_inner();
    let queued = submitted.message.unwrap();
    assert_eq!(queued.to, "+447700900123");
    assert_eq!(queued.gateway_address, "07700900123@sms.nhs.net");

    let sent = wait_for_status(&mut clients, &queued.id, MessageStatus::Sent).await;
    let copies = wait_for(SEND_LIMIT, "the text in the gateway mailbox", || {
        let copies = gateway_copies(&servers, &tag);
        async move { (!copies.is_empty()).then_some(copies) }
    })
    .await;

    assert_eq!(copies.len(), 1, "the gateway received the text once");
    let email = &copies[0];
    assert_eq!(email["to"].as_str().unwrap(), "07700900123@sms.nhs.net");
    assert_eq!(email["body"].as_str().unwrap().trim_end(), text);
    assert_eq!(email["content_type"].as_str().unwrap(), "text/plain");
    assert_eq!(email["charset"].as_str().unwrap(), "utf-8");
    assert_eq!(email["message_id"].as_str().unwrap(), sent.smtp_message_id);
}

#[tokio::test(flavor = "multi_thread")]
async fn bounced_number_ends_failed() {
    let Some(servers) = RealServers::from_env("bounced_number_ends_failed") else { return };
    let _lock = REAL_SERVER_LOCK.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let agent = AgentProcess::start(dir.path(), &servers.agent_config(""));
    let mut clients = agent.clients().await;
    set_password(&mut clients, servers.password(), false).await;

    let text = format!("Please call the surgery. Ref {}", unique_tag());
    let bounce_number = servers.var("NHSMAIL_TEST_BOUNCE_FIRST").to_string();
    let submitted = clients.messages.submit_message(submit(&bounce_number, &text)).await.unwrap().into_inner();
    let id = submitted.message.unwrap().id;
    wait_for_status(&mut clients, &id, MessageStatus::Sent).await;

    let failed = upload_until_status(&mut clients, &id, MessageStatus::Failed).await;
    assert!(failed.status_reason.contains("5.1.1"), "reason names the DSN status: {}", failed.status_reason);
    let last_event = failed.events.last().unwrap();
    assert_eq!(last_event.to_status(), MessageStatus::Failed);
}

#[tokio::test(flavor = "multi_thread")]
async fn patient_reply_attaches_to_message() {
    let Some(servers) = RealServers::from_env("patient_reply_attaches_to_message") else { return };
    let _lock = REAL_SERVER_LOCK.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let agent = AgentProcess::start(dir.path(), &servers.agent_config(""));
    let mut clients = agent.clients().await;
    set_password(&mut clients, servers.password(), false).await;

    let submitted = clients
        .messages
        .submit_message(submit("+447700900124", "Flu clinic on Saturday. Can you come?"))
        .await
        .unwrap();
    let id = submitted.into_inner().message.unwrap().id;
    let sent = wait_for_status(&mut clients, &id, MessageStatus::Sent).await;

    let tag = unique_tag();
    let reply = format!(
        "From: 07700900124@sms.nhs.net\r\nTo: {to}\r\nSubject: Re: SMS\r\nMessage-ID: <reply-{tag}@sms.nhs.net>\r\n\
         In-Reply-To: <{original}>\r\nDate: Fri, 04 Dec 2026 10:00:00 +0000\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\
         Yes I can come {tag}\r\n",
        to = servers.username(),
        original = sent.smtp_message_id,
    );
    servers.append_to_practice_inbox(&reply);
    let report = clients.agent.trigger_upload(proto::TriggerUploadRequest {}).await.unwrap().into_inner();
    assert!(report.replies >= 1, "the cycle counted the reply: {report:?}");

    let request = proto::ListRepliesRequest { message_id: id.clone(), ..Default::default() };
    let replies = clients.messages.list_replies(request).await.unwrap().into_inner().replies;
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].from, "+447700900124");
    assert_eq!(replies[0].text, format!("Yes I can come {tag}"));
    assert_eq!(replies[0].message_id, id);
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_password_pauses_until_corrected() {
    let Some(servers) = RealServers::from_env("wrong_password_pauses_until_corrected") else { return };
    let _lock = REAL_SERVER_LOCK.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let agent = AgentProcess::start(dir.path(), &servers.agent_config(""));
    let mut clients = agent.clients().await;
    let failures_before = servers.failed_sign_ins(servers.username());

    set_password(&mut clients, "Invented-Wrong-Password-1", true).await;
    let tag = unique_tag();
    let mut ids = Vec::new();
    for number in ["07700900131", "07700900132", "07700900133"] {
        let submitted = clients.messages.submit_message(submit(number, &format!("Reminder {tag}"))).await.unwrap();
        ids.push(submitted.into_inner().message.unwrap().id);
    }

    let connectivity = wait_for(SEND_LIMIT, "the password to be rejected", || {
        let mut client = clients.connectivity.clone();
        async move {
            let connectivity = client.get_connectivity(proto::GetConnectivityRequest {}).await.unwrap().into_inner();
            (connectivity.password_state() == PasswordState::Rejected).then_some(connectivity)
        }
    })
    .await;
    assert!(connectivity.sending_paused);
    assert!(connectivity.warnings.iter().any(|warning| warning.code == "password_rejected"));

    // A cycle and some idle time must not cause a second attempt with the rejected password.
    clients.agent.trigger_upload(proto::TriggerUploadRequest {}).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(servers.failed_sign_ins(servers.username()) - failures_before, 1, "exactly one failed sign-in");
    for id in &ids {
        assert_eq!(message(&mut clients, id).await.status(), MessageStatus::Queued, "message {id} waits");
    }

    let mut ctl = std::process::Command::new(env!("CARGO_BIN_EXE_nhsmail-ctl"))
        .args(["--agent", &agent.url(), "--token-file"])
        .arg(agent.data_dir.join("admin.token"))
        .args(["password", "set", "--password-stdin"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    writeln!(ctl.stdin.take().unwrap(), "{}", servers.password()).unwrap();
    let output = ctl.wait_with_output().unwrap();
    assert!(output.status.success(), "password set failed: {}", String::from_utf8_lossy(&output.stderr));

    for id in &ids {
        wait_for_status(&mut clients, id, MessageStatus::Sent).await;
    }
    assert_eq!(gateway_copies(&servers, &tag).len(), 3, "each waiting text went out once");
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_agent_loses_and_repeats_nothing() {
    let Some(servers) = RealServers::from_env("killed_agent_loses_and_repeats_nothing") else { return };
    let _lock = REAL_SERVER_LOCK.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let config = servers.agent_config("");
    let mut agent = AgentProcess::start(dir.path(), &config);
    let mut clients = agent.clients().await;
    set_password(&mut clients, servers.password(), false).await;

    let tag = unique_tag();
    let count = 40;
    let batch = proto::SubmitMessagesRequest {
        messages: (0..count)
            .map(|index| submit(&format!("07700900{:03}", 200 + index), &format!("Recall {tag} #{index:02}")))
            .collect(),
    };
    let ids: Vec<String> = clients
        .messages
        .submit_messages(batch)
        .await
        .unwrap()
        .into_inner()
        .results
        .into_iter()
        .map(|result| result.message.unwrap().id)
        .collect();
    assert_eq!(ids.len(), count);

    // 600 a minute is one every 100 ms, so after a second some are sent and most still wait.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let before_kill = clients.agent.get_status(proto::GetStatusRequest {}).await.unwrap().into_inner().queue_counts;
    eprintln!("queue when the agent was killed: {before_kill:?}");
    agent.kill();
    let agent = AgentProcess::start(dir.path(), &config);
    let clients = agent.clients().await;

    let statuses = wait_for(SEND_LIMIT, "every message to leave the queue", || {
        let mut clients = clients.clone();
        let ids = ids.clone();
        async move {
            let mut statuses = HashMap::new();
            for id in &ids {
                let status = message(&mut clients, id).await.status();
                if matches!(status, MessageStatus::Queued | MessageStatus::Sending) {
                    return None;
                }
                statuses.insert(id.clone(), status);
            }
            Some(statuses)
        }
    })
    .await;

    let copies = gateway_copies(&servers, &tag);
    for index in 0..count {
        let marker = format!("Recall {tag} #{index:02}");
        let received =
            copies.iter().filter(|email| email["body"].as_str().unwrap_or_default().trim_end() == marker).count();
        let status = statuses[&ids[index]];
        match status {
            MessageStatus::Sent => assert_eq!(received, 1, "{marker} was sent once"),
            MessageStatus::Uncertain => {
                assert!(received <= 1, "{marker} is uncertain and reached the gateway {received} times")
            }
            other => panic!("{marker} ended {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn stop_reply_blocks_next_text() {
    let Some(servers) = RealServers::from_env("stop_reply_blocks_next_text") else { return };
    let _lock = REAL_SERVER_LOCK.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let agent = AgentProcess::start(dir.path(), &servers.agent_config(""));
    let mut clients = agent.clients().await;
    set_password(&mut clients, servers.password(), false).await;

    let submitted = clients.messages.submit_message(submit("07700900125", "Your flu jab is due.")).await.unwrap();
    let id = submitted.into_inner().message.unwrap().id;
    let sent = wait_for_status(&mut clients, &id, MessageStatus::Sent).await;

    let reply = format!(
        "From: 447700900125@sms.nhs.net\r\nTo: {to}\r\nSubject: Re: SMS\r\nMessage-ID: <stop-{tag}@sms.nhs.net>\r\n\
         In-Reply-To: <{original}>\r\nDate: Fri, 04 Dec 2026 10:00:00 +0000\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\
         Stop.\r\n",
        to = servers.username(),
        tag = unique_tag(),
        original = sent.smtp_message_id,
    );
    servers.append_to_practice_inbox(&reply);
    clients.agent.trigger_upload(proto::TriggerUploadRequest {}).await.unwrap();

    let refused = clients.messages.submit_message(submit("+44 7700 900125", "Clinic closed on Friday.")).await;
    let status = refused.unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert!(status.message().contains("+447700900125 opted out"), "{}", status.message());
}

#[tokio::test(flavor = "multi_thread")]
async fn unclassified_mail_waits_for_review() {
    let Some(servers) = RealServers::from_env("unclassified_mail_waits_for_review") else { return };
    let _lock = REAL_SERVER_LOCK.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let agent = AgentProcess::start(dir.path(), &servers.agent_config(""));
    let mut clients = agent.clients().await;
    set_password(&mut clients, servers.password(), false).await;

    let tag = unique_tag();
    let email = format!(
        "From: Practice Manager <manager@example.org>\r\nTo: {to}\r\nSubject: Rota for next week {tag}\r\n\
         Message-ID: <rota-{tag}@example.org>\r\nDate: Fri, 04 Dec 2026 10:00:00 +0000\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\r\nPlease see the attached rota.\r\n",
        to = servers.username(),
    );
    servers.append_to_practice_inbox(&email);
    clients.agent.trigger_upload(proto::TriggerUploadRequest {}).await.unwrap();

    let listed = agent.ctl(&["--output", "json", "inbox", "review"]);
    assert!(listed.status.success(), "{}", String::from_utf8_lossy(&listed.stderr));
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let emails = listed["emails"].as_array().unwrap();
    let found =
        emails.iter().find(|email| email["subject"].as_str().unwrap().contains(&tag)).expect("the email is listed");
    assert_eq!(found["kind"], "other");
    let id = found["id"].as_u64().unwrap().to_string();

    let shown = agent.ctl(&["inbox", "show", &id]);
    assert!(String::from_utf8_lossy(&shown.stdout).contains("Please see the attached rota."));

    let marked = agent.ctl(&["inbox", "mark-reviewed", &id]);
    assert!(marked.status.success(), "{}", String::from_utf8_lossy(&marked.stderr));
    let again = agent.ctl(&["--output", "json", "inbox", "review"]);
    let again: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    let still_listed =
        again["emails"].as_array().unwrap().iter().any(|email| email["id"].as_u64() == found["id"].as_u64());
    assert!(!still_listed, "a reviewed email leaves the list");
}

/// Makes Dovecot assign the practice INBOX a new UIDVALIDITY by removing its UID list and indexes.
fn reset_practice_uidvalidity(servers: &RealServers) {
    let state_dir = std::path::Path::new(servers.var("NHSMAIL_TEST_STATE_DIR"));
    let maildir = state_dir.join("mail/example.org/practice.sms/Maildir");
    for entry in std::fs::read_dir(&maildir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name == "dovecot-uidlist" || name.starts_with("dovecot.index") {
            std::fs::remove_file(&path).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn same_username_keeps_password_rejected() {
    let Some(servers) = RealServers::from_env("same_username_keeps_password_rejected") else { return };
    let _lock = REAL_SERVER_LOCK.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let agent = AgentProcess::start(dir.path(), &servers.agent_config(""));
    let mut clients = agent.clients().await;
    let failures_before = servers.failed_sign_ins(servers.username());

    set_password(&mut clients, "Invented-Wrong-Password-7", true).await;
    clients.agent.trigger_upload(proto::TriggerUploadRequest {}).await.unwrap();
    for _ in 0..3 {
        let update =
            proto::UpdateConnectivityRequest { username: Some(servers.username().into()), ..Default::default() };
        clients.connectivity.update_connectivity(update).await.unwrap();
        clients.agent.trigger_upload(proto::TriggerUploadRequest {}).await.unwrap();
    }

    assert_eq!(servers.failed_sign_ins(servers.username()) - failures_before, 1, "one failed sign-in per password");
}

#[tokio::test(flavor = "multi_thread")]
async fn new_uidvalidity_keeps_one_reply() {
    let Some(servers) = RealServers::from_env("new_uidvalidity_keeps_one_reply") else { return };
    let _lock = REAL_SERVER_LOCK.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let agent = AgentProcess::start(dir.path(), &servers.agent_config(""));
    let mut clients = agent.clients().await;
    set_password(&mut clients, servers.password(), false).await;

    let tag = unique_tag();
    let reply = format!(
        "From: 07700900414@sms.nhs.net\r\nTo: {to}\r\nSubject: Re: SMS\r\nDate: Fri, 04 Dec 2026 10:00:00 +0000\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\r\nYes {tag}\r\n",
        to = servers.username(),
    );
    servers.append_to_practice_inbox(&reply);
    clients.agent.trigger_upload(proto::TriggerUploadRequest {}).await.unwrap();

    reset_practice_uidvalidity(&servers);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let report = clients.agent.trigger_upload(proto::TriggerUploadRequest {}).await.unwrap().into_inner();

    let request = proto::ListRepliesRequest { from: "07700900414".into(), page_size: 1000, ..Default::default() };
    let replies = clients.messages.list_replies(request).await.unwrap().into_inner().replies;
    let copies = replies.iter().filter(|reply| reply.text.contains(&tag)).count();
    assert_eq!(copies, 1, "the reply without a Message-ID is recorded once");
    assert_eq!(report.mail_collected, 0, "mail read again is not counted as collected: {report:?}");
}
