//! Fuzzes the inbound mail classifier over raw bytes. libFuzzer reports a crash when `classify`
//! panics or when one of the checks below on what it returns fails.

#![no_main]

use std::collections::HashSet;

use libfuzzer_sys::fuzz_target;
use nhsmail_agent::mailbox::{InboundKind, classify};

fuzz_target!(|raw: &[u8]| {
    let classified = classify(raw, "sms.nhs.net");

    assert!(!classified.reason.is_empty(), "empty reason");
    assert!(!classified.reason.contains('\n'), "reason has a line break: {:?}", classified.reason);

    let is_report =
        matches!(classified.kind, InboundKind::FailureReport | InboundKind::DelayReport | InboundKind::DeliveryReceipt);
    assert_eq!(classified.report.is_some(), is_report, "report for kind {:?}", classified.kind);
    assert_eq!(
        classified.reply.is_some(),
        classified.kind == InboundKind::Reply,
        "reply for kind {:?}",
        classified.kind
    );

    let mut seen = HashSet::new();
    for id in &classified.original_message_ids {
        assert!(!id.is_empty(), "empty candidate");
        assert!(!id.contains(char::is_whitespace), "candidate with white space {id:?}");
        assert!(seen.insert(id), "repeated candidate {id:?}");
    }
});
