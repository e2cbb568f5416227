"""Helpers for checking nhsmail-sandbox with Python's standard library only.

The sandbox's JSON info arrives in the SANDBOX_INFO environment variable. Every
network call has a timeout, and every address is on 127.0.0.1.
"""

import base64
import email
import email.policy
import imaplib
import json
import os
import smtplib
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request

TIMEOUT = 10
INFO = json.loads(os.environ["SANDBOX_INFO"])
USERNAME = INFO["username"]


def tls_context():
    """Return a TLS context that trusts only the sandbox's CA."""
    return ssl.create_default_context(cafile=INFO["ca_file"])


def http(method, url, body=None, headers=None, form=None):
    """Send an HTTP request and return (status, parsed JSON or None)."""
    data = None
    headers = dict(headers or {})
    if form is not None:
        data = urllib.parse.urlencode(form).encode()
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    elif body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as error:
        raw = error.read()
        return error.code, json.loads(raw) if raw else None


def control(method, path, body=None):
    return http(method, INFO["control_url"] + path, body=body)


def current_password():
    status, account = control("GET", "/account")
    assert status == 200, f"GET /account returned {status}"
    return account["password"]


def token_grant(**form):
    form.setdefault("client_id", "sandbox-tests")
    return http("POST", INFO["token_url"], form=form)


def password_grant(password=None):
    status, body = token_grant(
        grant_type="password",
        username=USERNAME,
        password=password if password is not None else current_password(),
        scope="https://outlook.office365.com/.default offline_access",
    )
    assert status == 200, f"password grant returned {status}: {body}"
    return body


def xoauth2_string(token, user=USERNAME):
    return f"user={user}\x01auth=Bearer {token}\x01\x01"


def smtp_plain():
    """Connect to SMTP and send EHLO, without TLS."""
    client = smtplib.SMTP("127.0.0.1", INFO["smtp_port"], timeout=TIMEOUT)
    client.ehlo("tests.example.org")
    return client


def smtp_tls():
    """Connect to SMTP and upgrade with STARTTLS, without signing in."""
    client = smtp_plain()
    client.starttls(context=tls_context())
    client.ehlo("tests.example.org")
    return client


def smtp_signed_in():
    client = smtp_tls()
    client.login(USERNAME, current_password())
    return client


def text_message(number, text, message_id, subject="Appointment"):
    return (
        f"From: {USERNAME}\r\n"
        f"To: {number}@sms.nhs.net\r\n"
        f"Subject: {subject}\r\n"
        f"Message-ID: {message_id}\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "\r\n"
        f"{text}\r\n"
    )


def send_text(number, text="Your appointment is on Monday at 10:00", message_id=None):
    """Send one text through SMTP and return its Message-ID."""
    message_id = message_id or f"<{time.time_ns()}.{number}@example.org>"
    client = smtp_signed_in()
    try:
        client.sendmail(USERNAME, [f"{number}@sms.nhs.net"], text_message(number, text, message_id))
    finally:
        client.quit()
    return message_id


def imap_signed_in(password=None):
    client = imaplib.IMAP4_SSL("127.0.0.1", INFO["imap_port"], ssl_context=tls_context(), timeout=TIMEOUT)
    client.login(USERNAME, password if password is not None else current_password())
    return client


def wait_for(imap, criteria, count=1, seconds=8):
    """Poll INBOX until UID SEARCH finds at least `count` messages; return their UIDs."""
    deadline = time.monotonic() + seconds
    while True:
        imap.select("INBOX")
        typ, data = imap.uid("SEARCH", None, *criteria)
        assert typ == "OK", f"UID SEARCH {criteria} returned {typ}"
        uids = data[0].split()
        if len(uids) >= count:
            return uids
        if time.monotonic() > deadline:
            raise AssertionError(f"no {count} messages for {criteria} within {seconds} s; found {uids}")
        time.sleep(0.1)


def fetch_message(imap, uid):
    """Fetch one message with BODY.PEEK[] and return it parsed."""
    typ, data = imap.uid("FETCH", uid, "(BODY.PEEK[])")
    assert typ == "OK", f"UID FETCH {uid} returned {typ}"
    return email.message_from_bytes(data[0][1], policy=email.policy.default)


def delivery_status(message):
    """Return the per-recipient fields of a DSN's message/delivery-status part."""
    assert message.get_content_type() == "multipart/report", message.get_content_type()
    assert message.get_param("report-type") == "delivery-status", message.get_param("report-type")
    for part in message.walk():
        if part.get_content_type() == "message/delivery-status":
            # The stdlib parses the part as a list of field blocks; the last is the recipient's.
            blocks = part.get_payload()
            return dict(blocks[-1].items())
    raise AssertionError("no message/delivery-status part")


def append_inbound(raw, folder="INBOX"):
    status, body = control("POST", "/inbox", {"raw": raw, "folder": folder})
    assert status == 200, f"POST /inbox returned {status}: {body}"
    return body["uid"]


def sample_email(subject="Hello", message_id=None, date="Mon, 02 Mar 2026 10:00:00 +0000"):
    message_id = message_id or f"<{time.time_ns()}@example.org>"
    return (
        "From: Someone <someone@example.org>\r\n"
        f"To: {USERNAME}\r\n"
        f"Subject: {subject}\r\n"
        f"Date: {date}\r\n"
        f"Message-ID: {message_id}\r\n"
        "\r\n"
        f"Body of {subject}\r\n"
    )


def b64(text):
    return base64.b64encode(text.encode()).decode()
