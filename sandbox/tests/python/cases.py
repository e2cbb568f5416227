"""Protocol checks of nhsmail-sandbox with an independent client: smtplib, imaplib and
urllib from Python's standard library. Run as `python3 cases.py CASE`; each case checks
one behaviour and exits non-zero with the failing assert's message.
"""

import imaplib
import smtplib
import socket
import sys
import time

from sandbox_client import (
    INFO,
    TIMEOUT,
    USERNAME,
    append_inbound,
    b64,
    control,
    current_password,
    delivery_status,
    fetch_message,
    http,
    imap_signed_in,
    password_grant,
    sample_email,
    send_text,
    smtp_plain,
    smtp_signed_in,
    smtp_tls,
    text_message,
    tls_context,
    token_grant,
    wait_for,
    xoauth2_string,
)

CASES = {}


def case(function):
    CASES[function.__name__] = function
    return function


def expect_smtp_error(action, code):
    """Run `action` and return the SMTP error it raises, which must carry `code`."""
    try:
        action()
    except (smtplib.SMTPResponseException, smtplib.SMTPRecipientsRefused, smtplib.SMTPSenderRefused) as error:
        if isinstance(error, smtplib.SMTPRecipientsRefused):
            (error_code, message), = error.recipients.values()
        else:
            error_code, message = error.smtp_code, error.smtp_error
        assert error_code == code, f"expected {code}, got {error_code} {message!r}"
        return message.decode() if isinstance(message, bytes) else message
    raise AssertionError(f"expected SMTP error {code}, but the command succeeded")


def auth_plain(client, password):
    """Send one AUTH PLAIN; smtplib's login() would try LOGIN after a failed PLAIN."""
    client.user, client.password = USERNAME, password
    return client.auth("PLAIN", client.auth_plain)


# SMTP


@case
def smtp_auth_plain_after_starttls():
    client = smtp_tls()
    code, _ = client.login(USERNAME, current_password())
    assert code == 235, f"AUTH PLAIN returned {code}"
    client.quit()


@case
def smtp_auth_plain_continuation():
    client = smtp_tls()
    client.user, client.password = USERNAME, current_password()
    code, _ = client.auth("PLAIN", client.auth_plain, initial_response_ok=False)
    assert code == 235, f"AUTH PLAIN without an initial response returned {code}"
    client.quit()


@case
def smtp_auth_login_after_starttls():
    client = smtp_tls()
    client.user, client.password = USERNAME, current_password()
    code, _ = client.auth("LOGIN", client.auth_login)
    assert code == 235, f"AUTH LOGIN returned {code}"
    client.quit()


@case
def smtp_auth_refused_before_starttls():
    client = smtp_plain()
    assert not client.has_extn("auth"), "AUTH advertised before STARTTLS"
    code, message = client.docmd("AUTH", "PLAIN " + b64(f"\0{USERNAME}\0{current_password()}"))
    assert code == 530, f"AUTH before STARTTLS returned {code} {message!r}"
    client.quit()


@case
def smtp_mail_refused_before_auth():
    client = smtp_tls()
    code, message = client.mail(USERNAME)
    assert code == 530, f"MAIL before AUTH returned {code} {message!r}"
    client.quit()


@case
def smtp_wrong_password_refused():
    client = smtp_tls()
    message = expect_smtp_error(lambda: auth_plain(client, "Not-the-password-123"), 535)
    assert "invalid" in message, message


@case
def smtp_wrong_sender_refused():
    client = smtp_signed_in()
    code, message = client.mail("someone.else@example.org")
    assert code == 550, f"MAIL FROM another address returned {code} {message!r}"
    client.quit()


@case
def smtp_non_gateway_recipient_refused():
    client = smtp_signed_in()
    client.mail(USERNAME)
    code, message = client.rcpt("patient@example.org")
    assert code == 550, f"RCPT to another domain returned {code} {message!r}"
    assert b"5.7.1" in message, f"RCPT to another domain returned {message!r}"
    client.quit()


@case
def smtp_invalid_number_refused():
    client = smtp_signed_in()
    client.mail(USERNAME)
    code, message = client.rcpt("0770090012@sms.nhs.net")
    assert code == 550, f"RCPT to a short number returned {code} {message!r}"
    assert b"5.1.1" in message, f"RCPT to a short number returned {message!r}"
    client.quit()


@case
def smtp_international_number_accepted():
    client = smtp_signed_in()
    client.mail(USERNAME)
    code, message = client.rcpt("447700900123@sms.nhs.net")
    assert code == 250, f"RCPT to 447700900123 returned {code} {message!r}"
    client.quit()


@case
def smtp_data_is_dot_unstuffed():
    client = smtp_signed_in()
    message = text_message("07700900111", "..leading dot", "<dots@example.org>")
    client.sendmail(USERNAME, ["07700900111@sms.nhs.net"], message)
    client.quit()
    _, sent = control("GET", "/sent")
    texts = [text["text"] for text in sent["texts"]]
    assert texts == ["..leading dot"], f"texts recorded: {texts}"


@case
def smtp_long_line_refused():
    client = smtp_signed_in()
    message = text_message("07700900112", "x" * 1200, "<long@example.org>")
    expect_smtp_error(lambda: client.sendmail(USERNAME, ["07700900112@sms.nhs.net"], message), 554)


@case
def smtp_declared_size_refused():
    client = smtp_signed_in()
    code, message = client.mail(USERNAME, ["SIZE=999999999"])
    assert code == 552, f"MAIL with a huge SIZE returned {code} {message!r}"
    client.quit()


@case
def smtp_oversized_message_refused():
    # The Rust test starts this sandbox with a 2000-octet limit.
    client = smtp_signed_in()
    message = text_message("07700900113", "\r\n".join(["y" * 500] * 8), "<big@example.org>")
    expect_smtp_error(lambda: client.sendmail(USERNAME, ["07700900113@sms.nhs.net"], message), 552)


@case
def smtp_xoauth2_with_token():
    token = password_grant()["access_token"]
    client = smtp_tls()
    code, message = client.docmd("AUTH", "XOAUTH2 " + b64(xoauth2_string(token)))
    assert code == 235, f"AUTH XOAUTH2 returned {code} {message!r}"
    client.sendmail(USERNAME, ["07700900114@sms.nhs.net"], text_message("07700900114", "hi", "<x@example.org>"))
    client.quit()


@case
def smtp_xoauth2_bad_token_challenge():
    client = smtp_tls()
    code, message = client.docmd("AUTH", "XOAUTH2 " + b64(xoauth2_string("not-a-token")))
    assert code == 334, f"AUTH XOAUTH2 with a bad token returned {code} {message!r}"
    code, message = client.docmd("")
    assert code == 535, f"the empty line after the challenge returned {code} {message!r}"
    client.quit()


# SMS gateway


@case
def gateway_receipt_arrives():
    message_id = send_text("07700900123")
    imap = imap_signed_in()
    (uid,) = wait_for(imap, ["HEADER", "X-Original-Message-ID", message_id])
    receipt = fetch_message(imap, uid)
    assert receipt["In-Reply-To"] == message_id, f"In-Reply-To: {receipt['In-Reply-To']}"
    fields = delivery_status(receipt)
    assert fields["Action"] == "delivered", f"Action: {fields['Action']}"
    imap.logout()


@case
def gateway_failure_report_has_message_id():
    message_id = send_text("07700900901")
    imap = imap_signed_in()
    (uid,) = wait_for(imap, ["HEADER", "X-Original-Message-ID", message_id])
    report = fetch_message(imap, uid)
    fields = delivery_status(report)
    assert fields["Action"] == "failed", f"Action: {fields['Action']}"
    assert fields["Status"] == "5.1.1", f"Status: {fields['Status']}"
    headers = [part for part in report.walk() if part.get_content_type() == "text/rfc822-headers"]
    assert len(headers) == 1, f"text/rfc822-headers parts: {len(headers)}"
    attached = headers[0].get_payload(decode=True).decode()
    assert f"Message-ID: {message_id}" in attached, attached


@case
def gateway_temporary_failure_then_receipt():
    message_id = send_text("07700900925")
    imap = imap_signed_in()
    first, second = wait_for(imap, ["HEADER", "X-Original-Message-ID", message_id], count=2)
    actions = [delivery_status(fetch_message(imap, uid))["Action"] for uid in (first, second)]
    assert actions == ["delayed", "delivered"], f"actions in order: {actions}"


@case
def gateway_patient_reply_follows_receipt():
    message_id = send_text("07700900945")
    imap = imap_signed_in()
    (uid,) = wait_for(imap, ["FROM", "07700900945@sms.nhs.net"])
    reply = fetch_message(imap, uid)
    assert reply["In-Reply-To"] == message_id, f"In-Reply-To: {reply['In-Reply-To']}"
    assert reply.get_content().strip() == "Yes, thank you", reply.get_content()


@case
def gateway_stop_reply():
    send_text("07700900965")
    imap = imap_signed_in()
    (uid,) = wait_for(imap, ["FROM", "07700900965@sms.nhs.net"])
    assert fetch_message(imap, uid).get_content().strip() == "STOP"


@case
def gateway_counts_duplicate_message_ids():
    send_text("07700900130", message_id="<same@example.org>")
    send_text("07700900130", message_id="<same@example.org>")
    _, sent = control("GET", "/sent")
    counts = [text["count"] for text in sent["texts"]]
    assert counts == [2, 2], f"counts: {counts}"


# IMAP


@case
def imap_login_disabled_before_starttls():
    client = imaplib.IMAP4("127.0.0.1", INFO["imap_starttls_port"], timeout=TIMEOUT)
    assert "LOGINDISABLED" in client.capabilities, client.capabilities
    assert "STARTTLS" in client.capabilities, client.capabilities
    typ, data = client._simple_command("LOGIN", USERNAME, client._quote(current_password()))
    assert typ == "NO", f"LOGIN before STARTTLS returned {typ} {data}"
    client.logout()


@case
def imap_starttls_then_login():
    client = imaplib.IMAP4("127.0.0.1", INFO["imap_starttls_port"], timeout=TIMEOUT)
    client.starttls(ssl_context=tls_context())
    assert "AUTH=XOAUTH2" in client.capabilities, client.capabilities
    typ, _ = client.login(USERNAME, current_password())
    assert typ == "OK", typ
    client.logout()


@case
def imap_select_reports_folder_state():
    append_inbound(sample_email("one"))
    imap = imap_signed_in()
    typ, data = imap.select("INBOX")
    assert (typ, data) == ("OK", [b"1"]), f"SELECT: {typ} {data}"
    for code in ("UIDVALIDITY", "UIDNEXT", "PERMANENTFLAGS", "FLAGS", "RECENT"):
        assert imap.response(code)[1] != [None], f"SELECT sent no {code}"
    imap.logout()


@case
def imap_search_and_fetch():
    for subject in ("first", "second", "third"):
        append_inbound(sample_email(subject))
    imap = imap_signed_in()
    imap.select("INBOX")
    typ, data = imap.uid("SEARCH", None, "ALL")
    assert data == [b"1 2 3"], f"UID SEARCH ALL: {data}"
    typ, data = imap.uid("SEARCH", None, "HEADER", "Subject", "second")
    assert data == [b"2"], f"UID SEARCH HEADER Subject second: {data}"
    typ, data = imap.uid("FETCH", "2", "(UID FLAGS RFC822.SIZE INTERNALDATE BODY.PEEK[])")
    meta = data[0][0].decode()
    for item in ("UID 2", "FLAGS ()", "RFC822.SIZE", "INTERNALDATE"):
        assert item in meta, f"{item} missing from {meta}"
    assert b"Body of second" in data[0][1], data[0][1]
    imap.logout()


@case
def imap_uid_star_range_includes_highest():
    append_inbound(sample_email("a"))
    append_inbound(sample_email("b"))
    imap = imap_signed_in()
    imap.select("INBOX")
    typ, data = imap.uid("SEARCH", None, "UID", "5:*")
    assert data == [b"2"], f"UID SEARCH UID 5:* with highest UID 2: {data}"
    imap.logout()


@case
def imap_search_by_date():
    append_inbound(sample_email("dated"))
    imap = imap_signed_in()
    imap.select("INBOX")
    _, before = imap.uid("SEARCH", None, "BEFORE", "1-Jan-2000")
    _, since = imap.uid("SEARCH", None, "SINCE", "1-Jan-2000")
    assert before == [b""], f"BEFORE 1-Jan-2000: {before}"
    assert since == [b"1"], f"SINCE 1-Jan-2000: {since}"
    imap.logout()


@case
def imap_body_fetch_sets_seen():
    append_inbound(sample_email("peek"))
    imap = imap_signed_in()
    imap.select("INBOX")
    imap.uid("FETCH", "1", "(BODY.PEEK[])")
    _, unseen = imap.uid("SEARCH", None, "UNSEEN")
    assert unseen == [b"1"], f"UNSEEN after BODY.PEEK[]: {unseen}"
    imap.uid("FETCH", "1", "(BODY[])")
    _, seen = imap.uid("SEARCH", None, "SEEN")
    assert seen == [b"1"], f"SEEN after BODY[]: {seen}"
    imap.logout()


@case
def imap_store_flags():
    append_inbound(sample_email("flags"))
    imap = imap_signed_in()
    imap.select("INBOX")
    typ, data = imap.uid("STORE", "1", "+FLAGS", "(\\Flagged \\Seen)")
    assert b"\\Flagged" in data[0], f"+FLAGS: {data}"
    assert b"\\Seen" in data[0], f"+FLAGS: {data}"
    typ, data = imap.uid("STORE", "1", "-FLAGS", "(\\Flagged)")
    assert b"\\Flagged" not in data[0], f"-FLAGS: {data}"
    typ, data = imap.uid("STORE", "1", "FLAGS.SILENT", "(\\Answered)")
    assert data == [None], f"FLAGS.SILENT answered with {data}"
    _, data = imap.uid("FETCH", "1", "(FLAGS)")
    assert b"FLAGS (\\Answered)" in data[0], f"FLAGS after replace: {data}"
    imap.logout()


@case
def imap_move_reports_copyuid():
    append_inbound(sample_email("to move"))
    imap = imap_signed_in()
    typ, _ = imap.create("Processed")
    assert typ == "OK", f"CREATE: {typ}"
    imap.select("INBOX")
    typ, data = imap.uid("MOVE", "1", "Processed")
    assert typ == "OK", f"UID MOVE: {typ} {data}"
    copyuid = imap.response("COPYUID")[1]
    assert copyuid[0] is not None, "UID MOVE sent no COPYUID"
    assert copyuid[0].split()[1:] == [b"1", b"1"], f"COPYUID: {copyuid}"
    _, data = imap.uid("SEARCH", None, "ALL")
    assert data == [b""], f"INBOX after MOVE: {data}"
    _, data = imap.select("Processed")
    assert data == [b"1"], f"Processed after MOVE: {data}"
    imap.logout()


@case
def imap_copy_keeps_source():
    append_inbound(sample_email("to copy"))
    imap = imap_signed_in()
    imap.create("Archive")
    imap.select("INBOX")
    # imaplib.uid() drops the tagged response's text, which carries COPYUID.
    typ, data = imap._simple_command("UID", "COPY", "1", "Archive")
    assert typ == "OK", f"UID COPY: {typ} {data}"
    assert b"COPYUID" in data[0], f"UID COPY: {data}"
    _, data = imap.uid("SEARCH", None, "ALL")
    assert data == [b"1"], f"INBOX after COPY: {data}"
    imap.logout()


@case
def imap_copy_to_missing_folder_refused():
    append_inbound(sample_email("nowhere"))
    imap = imap_signed_in()
    imap.select("INBOX")
    typ, data = imap.uid("COPY", "1", "Missing")
    assert typ == "NO", f"UID COPY to a missing folder: {typ} {data}"
    assert b"TRYCREATE" in data[0], f"UID COPY to a missing folder: {data}"
    imap.logout()


@case
def imap_list_shows_created_folder():
    imap = imap_signed_in()
    imap.create("Receipts")
    typ, data = imap.list('""', "*")
    names = sorted(line.decode().rsplit(" ", 1)[-1].strip('"') for line in data)
    assert names == ["INBOX", "Receipts"], f"LIST: {data}"
    imap.logout()


@case
def imap_expunge_removes_deleted():
    for subject in ("keep", "delete"):
        append_inbound(sample_email(subject))
    imap = imap_signed_in()
    imap.select("INBOX")
    imap.uid("STORE", "2", "+FLAGS.SILENT", "(\\Deleted)")
    typ, data = imap.expunge()
    assert (typ, data) == ("OK", [b"2"]), f"EXPUNGE: {typ} {data}"
    _, data = imap.uid("SEARCH", None, "ALL")
    assert data == [b"1"], f"after EXPUNGE: {data}"
    imap.logout()


@case
def imap_uid_expunge_limits_to_set():
    for subject in ("a", "b"):
        append_inbound(sample_email(subject))
    imap = imap_signed_in()
    imap.select("INBOX")
    imap.uid("STORE", "1:2", "+FLAGS.SILENT", "(\\Deleted)")
    typ, data = imap.uid("EXPUNGE", "2")
    assert typ == "OK", f"UID EXPUNGE: {typ} {data}"
    _, data = imap.uid("SEARCH", None, "ALL")
    assert data == [b"1"], f"after UID EXPUNGE 2: {data}"
    imap.logout()


@case
def imap_idle_sees_new_mail():
    imap = imap_signed_in()
    imap.select("INBOX")
    tag = imap._new_tag()
    imap.send(tag + b" IDLE\r\n")
    line = imap.readline()
    assert line.startswith(b"+"), f"IDLE continuation: {line}"
    append_inbound(sample_email("pushed"))
    line = imap.readline()
    assert line == b"* 1 EXISTS\r\n", f"first update during IDLE: {line}"
    imap.send(b"DONE\r\n")
    while True:
        line = imap.readline()
        if line.startswith(tag):
            break
    assert b"OK" in line, f"IDLE end: {line}"
    imap.logout()


@case
def imap_xoauth2_with_token():
    token = password_grant()["access_token"]
    imap = imaplib.IMAP4_SSL("127.0.0.1", INFO["imap_port"], ssl_context=tls_context(), timeout=TIMEOUT)
    typ, _ = imap.authenticate("XOAUTH2", lambda _: xoauth2_string(token).encode())
    assert typ == "OK", f"AUTHENTICATE XOAUTH2: {typ}"
    imap.logout()


@case
def imap_xoauth2_bad_token_refused():
    imap = imaplib.IMAP4_SSL("127.0.0.1", INFO["imap_port"], ssl_context=tls_context(), timeout=TIMEOUT)
    # imaplib replies to the error challenge with the same callback, and an empty reply ends it.
    answers = iter([xoauth2_string("not-a-token").encode(), b""])
    try:
        imap.authenticate("XOAUTH2", lambda _: next(answers))
    except imaplib.IMAP4.error as error:
        assert "AUTHENTICATIONFAILED" in str(error), str(error)
        return
    raise AssertionError("AUTHENTICATE XOAUTH2 with a bad token succeeded")


@case
def imap_wrong_password_refused():
    try:
        imap_signed_in(password="Not-the-password-123")
    except imaplib.IMAP4.error as error:
        assert "AUTHENTICATIONFAILED" in str(error), str(error)
        return
    raise AssertionError("LOGIN with a wrong password succeeded")


# Identity


@case
def token_password_grant_shape():
    body = password_grant()
    for key in ("access_token", "refresh_token", "expires_in", "scope"):
        assert key in body, f"{key} missing from {sorted(body)}"
    assert body["token_type"] == "Bearer", body["token_type"]
    assert body["expires_in"] == 3600, body["expires_in"]


@case
def token_refresh_grant():
    refresh_token = password_grant()["refresh_token"]
    status, body = token_grant(grant_type="refresh_token", refresh_token=refresh_token)
    assert status == 200, f"refresh grant: {status} {body}"
    assert "access_token" in body, f"refresh grant: {body}"


@case
def token_wrong_password_invalid_grant():
    status, body = token_grant(grant_type="password", username=USERNAME, password="Wrong-password-123")
    assert (status, body["error"]) == (400, "invalid_grant"), f"{status} {body}"


@case
def token_unknown_grant_type():
    status, body = token_grant(grant_type="client_credentials")
    assert (status, body["error"]) == (400, "unsupported_grant_type"), f"{status} {body}"


@case
def token_missing_username_invalid_request():
    status, body = token_grant(grant_type="password", password="x")
    assert (status, body["error"]) == (400, "invalid_request"), f"{status} {body}"


@case
def token_expires_with_clock():
    token = password_grant()["access_token"]
    control("POST", "/clock", {"offset_secs": 3601})
    imap = imaplib.IMAP4_SSL("127.0.0.1", INFO["imap_port"], ssl_context=tls_context(), timeout=TIMEOUT)
    answers = iter([xoauth2_string(token).encode(), b""])
    try:
        imap.authenticate("XOAUTH2", lambda _: next(answers))
    except imaplib.IMAP4.error:
        return
    raise AssertionError("an access token was accepted after its expiry")


@case
def lockout_after_five_failures():
    wrong = "Wrong-password-12345"
    for _ in range(2):
        client = smtp_tls()
        expect_smtp_error(lambda: auth_plain(client, wrong), 535)
        client.close()
    for _ in range(2):
        status, _ = token_grant(grant_type="password", username=USERNAME, password=wrong)
        assert status == 400, f"token grant with a wrong password returned {status}"
    try:
        imap_signed_in(password=wrong)
    except imaplib.IMAP4.error:
        pass
    try:
        imap_signed_in()
    except imaplib.IMAP4.error as error:
        assert "locked" in str(error), str(error)
    else:
        raise AssertionError("the right password was accepted while locked")
    client = smtp_tls()
    message = expect_smtp_error(lambda: auth_plain(client, current_password()), 535)
    assert "locked" in message, message
    _, counters = control("GET", "/counters")
    assert counters["lockouts"] == 1, f"lockouts: {counters['lockouts']}"


@case
def lockout_ends_with_clock():
    for _ in range(5):
        token_grant(grant_type="password", username=USERNAME, password="Wrong-password-12345")
    control("POST", "/clock", {"offset_secs": 31 * 60})
    imap = imap_signed_in()
    imap.logout()


@case
def expired_password_refused_everywhere():
    control("POST", "/account/expire-password")
    client = smtp_tls()
    message = expect_smtp_error(lambda: auth_plain(client, current_password()), 535)
    assert "expired" in message, f"SMTP: {message}"
    try:
        imap_signed_in()
    except imaplib.IMAP4.error as error:
        assert "EXPIRED" in str(error), f"IMAP: {error}"
    else:
        raise AssertionError("IMAP accepted an expired password")
    status, body = token_grant(grant_type="password", username=USERNAME, password=current_password())
    assert status == 400, f"token: {status} {body}"
    assert "expired" in body["error_description"], f"token: {body}"


@case
def clock_offset_expires_password():
    control("POST", "/clock", {"offset_secs": 366 * 86400})
    try:
        imap_signed_in()
    except imaplib.IMAP4.error as error:
        assert "EXPIRED" in str(error), str(error)
        return
    raise AssertionError("IMAP accepted a password older than its maximum age")


def change_password(token, current, new):
    return http(
        "POST",
        INFO["graph_url"] + "/me/changePassword",
        body={"currentPassword": current, "newPassword": new},
        headers={"Authorization": f"Bearer {token}"},
    )


@case
def graph_change_password_policy():
    grant = password_grant()
    token, current = grant["access_token"], current_password()
    rejected = {
        "Short-1": "shorter",
        "no-upper-case-letters-123": "upper",
        "NO-LOWER-CASE-LETTERS-123": "lower",
        "OnlyLettersInThisPassword": "digit",
        current: "repeats",
    }
    for new, reason in rejected.items():
        status, body = change_password(token, current, new)
        assert status == 400, f"{new!r}: status {status}"
        assert reason in body["error"]["message"], f"{new!r}: {body}"
    status, body = change_password(token, "Wrong-current-password-1", "A-fine-new-password-2026")
    assert status == 403, f"wrong current password: {status} {body}"
    status, body = change_password("not-a-token", current, "A-fine-new-password-2026")
    assert status == 401, f"bad token: {status} {body}"


@case
def graph_change_password_succeeds():
    grant = password_grant()
    current = current_password()
    new = "A-fine-new-password-2026"
    status, body = change_password(grant["access_token"], current, new)
    assert status == 204, f"change: {status} {body}"
    imap = imap_signed_in(password=new)
    imap.logout()
    status, body = token_grant(grant_type="refresh_token", refresh_token=grant["refresh_token"])
    assert (status, body["error"]) == (400, "invalid_grant"), f"old refresh token: {status} {body}"


# Control API


@case
def control_append_inbound():
    uid = append_inbound(sample_email("inbound", message_id="<inbound@example.org>"))
    imap = imap_signed_in()
    uids = wait_for(imap, ["HEADER", "Message-ID", "<inbound@example.org>"])
    assert uids == [str(uid).encode()], f"found {uids}, appended {uid}"


@case
def control_set_password_rejects_old():
    old = current_password()
    status, _ = control("POST", "/account/password", {"password": "Set-behind-your-back-2026"})
    assert status == 200, f"POST /account/password: {status}"
    try:
        imap_signed_in(password=old)
    except imaplib.IMAP4.error:
        return
    raise AssertionError("the old password still works")


@case
def control_uidvalidity_change():
    for subject in ("a", "b", "c"):
        append_inbound(sample_email(subject))
    imap = imap_signed_in()
    imap.select("INBOX")
    old = int(imap.response("UIDVALIDITY")[1][0])
    imap.uid("STORE", "1", "+FLAGS.SILENT", "(\\Deleted)")
    imap.expunge()
    status, body = control("POST", "/uidvalidity", {})
    assert status == 200, f"POST /uidvalidity: {status} {body}"
    try:
        imap.noop()
    except imaplib.IMAP4.abort:
        pass
    else:
        raise AssertionError("the session went on after UIDVALIDITY changed")
    imap = imap_signed_in()
    imap.select("INBOX")
    new = int(imap.response("UIDVALIDITY")[1][0])
    assert new != old, f"UIDVALIDITY still {old}"
    _, data = imap.uid("SEARCH", None, "ALL")
    assert data == [b"1 2"], f"UIDs after renumbering: {data}"


@case
def fault_smtp_4xx_at_rcpt():
    status, _ = control("POST", "/faults", {"kind": "smtp_4xx", "count": 1})
    assert status == 200, status
    client = smtp_signed_in()
    client.mail(USERNAME)
    code, _ = client.rcpt("07700900150@sms.nhs.net")
    assert code == 451, f"RCPT with a 4xx fault armed: {code}"
    code, _ = client.rcpt("07700900150@sms.nhs.net")
    assert code == 250, f"RCPT after the fault: {code}"
    client.quit()


@case
def fault_smtp_5xx_at_mail():
    control("POST", "/faults", {"kind": "smtp_5xx", "count": 1, "stage": "mail"})
    client = smtp_signed_in()
    code, _ = client.mail(USERNAME)
    assert code == 554, f"MAIL with a 5xx fault armed: {code}"
    client.quit()


@case
def fault_smtp_drop_before_dot():
    control("POST", "/faults", {"kind": "smtp_drop_before_dot", "count": 1})
    client = smtp_signed_in()
    message = text_message("07700900151", "dropped", "<drop-before@example.org>")
    try:
        client.sendmail(USERNAME, ["07700900151@sms.nhs.net"], message)
    except (smtplib.SMTPServerDisconnected, ConnectionError):
        pass
    else:
        raise AssertionError("sendmail succeeded with a drop fault armed")
    _, sent = control("GET", "/sent")
    assert sent["texts"] == [], f"texts after a drop before the dot: {sent['texts']}"


@case
def fault_smtp_drop_at_data():
    control("POST", "/faults", {"kind": "smtp_drop_at_data", "count": 1})
    client = smtp_signed_in()
    client.mail(USERNAME)
    client.rcpt("07700900153@sms.nhs.net")
    try:
        code, _ = client.docmd("DATA")
    except (smtplib.SMTPServerDisconnected, ConnectionError):
        code = None
    assert code is None, f"DATA answered {code} with a drop fault armed"
    _, sent = control("GET", "/sent")
    assert sent["texts"] == [], f"texts after a drop at DATA: {sent['texts']}"


@case
def fault_smtp_drop_after_dot():
    control("POST", "/faults", {"kind": "smtp_drop_after_dot", "count": 1})
    client = smtp_signed_in()
    message = text_message("07700900152", "stored", "<drop-after@example.org>")
    try:
        client.sendmail(USERNAME, ["07700900152@sms.nhs.net"], message)
    except (smtplib.SMTPServerDisconnected, ConnectionError):
        pass
    else:
        raise AssertionError("sendmail succeeded with a drop fault armed")
    _, sent = control("GET", "/sent")
    ids = [text["message_id"] for text in sent["texts"]]
    assert ids == ["<drop-after@example.org>"], f"texts after a drop after the dot: {ids}"


@case
def fault_imap_drop_mid_fetch():
    append_inbound(sample_email("partial"))
    control("POST", "/faults", {"kind": "imap_drop_mid_fetch", "count": 1})
    imap = imap_signed_in()
    imap.select("INBOX")
    try:
        imap.uid("FETCH", "1:*", "(BODY.PEEK[])")
    except (imaplib.IMAP4.abort, OSError):
        pass
    else:
        raise AssertionError("FETCH completed with a drop fault armed")
    imap = imap_signed_in()
    imap.select("INBOX")
    typ, data = imap.uid("FETCH", "1:*", "(BODY.PEEK[])")
    assert typ == "OK", f"FETCH after the fault: {typ}"
    assert b"Body of partial" in data[0][1], f"FETCH after the fault: {data}"


@case
def fault_slow_delays_answer():
    imap = imap_signed_in()
    control("POST", "/faults", {"kind": "slow", "count": 1, "delay_ms": 400})
    started = time.monotonic()
    imap.noop()
    elapsed = time.monotonic() - started
    assert elapsed >= 0.4, f"NOOP took {elapsed:.3f} s with a 400 ms slow fault"
    _, counters = control("GET", "/counters")
    assert counters["faults_fired"].get("slow") == 1, counters["faults_fired"]


@case
def counters_count_sign_ins():
    imap = imap_signed_in()
    imap.logout()
    try:
        imap_signed_in(password="Wrong-password-12345")
    except imaplib.IMAP4.error:
        pass
    _, counters = control("GET", "/counters")
    assert counters["sign_ins"]["imap"] == {"ok": 1, "failed": 1}, counters["sign_ins"]


# State across restarts: run `restart_prepare`, restart the sandbox, then `restart_check`.


@case
def restart_prepare():
    grant = password_grant()
    status, _ = change_password(grant["access_token"], current_password(), "Survives-a-restart-2026")
    assert status == 204, f"change: {status}"
    append_inbound(sample_email("kept", message_id="<kept@example.org>"))
    imap = imap_signed_in()
    imap.select("INBOX")
    imap.uid("STORE", "1", "+FLAGS.SILENT", "(\\Flagged)")
    with open(sys.argv[2], "w") as out:
        out.write(imap.response("UIDVALIDITY")[1][0].decode())
    imap.logout()


@case
def restart_check():
    assert INFO["password"] == "Survives-a-restart-2026", "the printed password is not the changed one"
    imap = imap_signed_in(password="Survives-a-restart-2026")
    imap.select("INBOX")
    uidvalidity = imap.response("UIDVALIDITY")[1][0].decode()
    with open(sys.argv[2]) as saved:
        assert uidvalidity == saved.read(), "UIDVALIDITY changed across the restart"
    _, data = imap.uid("FETCH", "1", "(FLAGS BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
    assert b"\\Flagged" in data[0][0], f"flags after restart: {data[0][0]}"
    assert b"<kept@example.org>" in data[0][1], f"message after restart: {data[0][1]}"


if __name__ == "__main__":
    socket.setdefaulttimeout(TIMEOUT)
    name = sys.argv[1]
    if name not in CASES:
        sys.exit(f"unknown case {name}; known: {', '.join(sorted(CASES))}")
    CASES[name]()
    print(f"{name}: ok")
