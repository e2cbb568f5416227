//! The sandbox's protocol behaviour, checked by an independent client: each test starts a
//! sandbox in-process and runs one case of `tests/python/cases.py` (smtplib, imaplib and
//! urllib from Python's standard library) against it.

mod common;

use std::time::Duration;

use nhsmail_sandbox::{Sandbox, SandboxOptions};

fn options() -> SandboxOptions {
    SandboxOptions { receipt_delay: Duration::from_millis(100), ..SandboxOptions::default() }
}

async fn run_case_with(case: &str, options: SandboxOptions) {
    let sandbox = Sandbox::start(options).await.expect("sandbox starts");
    let info = serde_json::to_string(sandbox.info()).expect("SandboxInfo serialises");
    common::run_python_case(case, &info, &[]).await;
    sandbox.shutdown().await;
}

macro_rules! python_cases {
    ($($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                run_case_with(stringify!($name), options()).await;
            }
        )*
    };
}

python_cases! {
    smtp_auth_plain_after_starttls,
    smtp_auth_plain_continuation,
    smtp_auth_login_after_starttls,
    smtp_auth_refused_before_starttls,
    smtp_mail_refused_before_auth,
    smtp_wrong_password_refused,
    smtp_wrong_sender_refused,
    smtp_non_gateway_recipient_refused,
    smtp_invalid_number_refused,
    smtp_international_number_accepted,
    smtp_data_is_dot_unstuffed,
    smtp_long_line_refused,
    smtp_declared_size_refused,
    smtp_xoauth2_with_token,
    smtp_xoauth2_bad_token_challenge,
    gateway_receipt_arrives,
    gateway_failure_report_has_message_id,
    gateway_temporary_failure_then_receipt,
    gateway_patient_reply_follows_receipt,
    gateway_stop_reply,
    gateway_counts_duplicate_message_ids,
    imap_login_disabled_before_starttls,
    imap_starttls_then_login,
    imap_select_reports_folder_state,
    imap_search_and_fetch,
    imap_uid_star_range_includes_highest,
    imap_search_by_date,
    imap_body_fetch_sets_seen,
    imap_store_flags,
    imap_move_reports_copyuid,
    imap_copy_keeps_source,
    imap_copy_to_missing_folder_refused,
    imap_list_shows_created_folder,
    imap_expunge_removes_deleted,
    imap_uid_expunge_limits_to_set,
    imap_idle_sees_new_mail,
    imap_xoauth2_with_token,
    imap_xoauth2_bad_token_refused,
    imap_wrong_password_refused,
    token_password_grant_shape,
    token_refresh_grant,
    token_wrong_password_invalid_grant,
    token_unknown_grant_type,
    token_missing_username_invalid_request,
    token_expires_with_clock,
    lockout_after_five_failures,
    lockout_ends_with_clock,
    expired_password_refused_everywhere,
    clock_offset_expires_password,
    graph_change_password_policy,
    graph_change_password_succeeds,
    control_append_inbound,
    control_set_password_rejects_old,
    control_uidvalidity_change,
    fault_smtp_4xx_at_rcpt,
    fault_smtp_5xx_at_mail,
    fault_smtp_drop_at_data,
    fault_smtp_drop_before_dot,
    fault_smtp_drop_after_dot,
    fault_imap_drop_mid_fetch,
    fault_slow_delays_answer,
    counters_count_sign_ins,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_oversized_message_refused() {
    let options = SandboxOptions { max_message_size: 2000, ..options() };
    run_case_with("smtp_oversized_message_refused", options).await;
}
