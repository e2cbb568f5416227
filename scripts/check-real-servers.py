#!/usr/bin/env python3
"""Check the real-server test stack that scripts/real-servers.sh started.

Usage: scripts/check-real-servers.py STATE_DIR

Reads STATE_DIR/servers.env and checks what the agent's real-server tests
rely on, with the standard library only:
- STARTTLS and implicit TLS on both protocols;
- SASL PLAIN and LOGIN, only after STARTTLS;
- submission only by the practice account and only to the two mail domains;
- delivery of gateway mail into the gateway mailbox;
- Postfix delivery status notifications for the bounce range in the practice
  INBOX;
- a password change through real-servers.sh set-password.
Prints one line per check and exits 1 if any check fails (2 on a usage
error).
"""

from __future__ import annotations

import base64
import email
import email.policy
import email.utils
import imaplib
import os
import shlex
import smtplib
import socket
import ssl
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from email.message import EmailMessage, Message
from pathlib import Path
from typing import Callable

NETWORK_TIMEOUT_SECONDS = 10
DELIVERY_TIMEOUT_SECONDS = 30
POLL_INTERVAL_SECONDS = 0.2
REAL_SERVERS_SCRIPT = Path(__file__).resolve().parent / "real-servers.sh"


class CheckFailed(Exception):
    """A check found the stack behaving other than expected."""


@dataclass
class Stack:
    """Addresses and accounts of the stack, as servers.env records them."""

    state_dir: Path
    host: str
    smtp_port: int
    smtp_tls_port: int
    imap_port: int
    imaps_port: int
    ca_file: str
    username: str
    password: str
    gateway_username: str
    gateway_password: str
    bounce_first: str
    bounce_last: str

    @classmethod
    def load(cls, state_dir: Path) -> Stack:
        values = read_servers_env(state_dir / "servers.env")
        return cls(
            state_dir=state_dir,
            host=values["NHSMAIL_TEST_SMTP_HOST"],
            smtp_port=int(values["NHSMAIL_TEST_SMTP_PORT"]),
            smtp_tls_port=int(values["NHSMAIL_TEST_SMTP_TLS_PORT"]),
            imap_port=int(values["NHSMAIL_TEST_IMAP_PORT"]),
            imaps_port=int(values["NHSMAIL_TEST_IMAPS_PORT"]),
            ca_file=values["NHSMAIL_TEST_CA_FILE"],
            username=values["NHSMAIL_TEST_USERNAME"],
            password=values["NHSMAIL_TEST_PASSWORD"],
            gateway_username=values["NHSMAIL_TEST_GATEWAY_USERNAME"],
            gateway_password=values["NHSMAIL_TEST_GATEWAY_PASSWORD"],
            bounce_first=values["NHSMAIL_TEST_BOUNCE_FIRST"],
            bounce_last=values["NHSMAIL_TEST_BOUNCE_LAST"],
        )

    def tls_context(self) -> ssl.SSLContext:
        # Verifies the chain against the stack's private CA and the host name
        # (127.0.0.1, an IP subjectAltName) like any strict client.
        return ssl.create_default_context(cafile=self.ca_file)


def read_servers_env(path: Path) -> dict[str, str]:
    """Parse the `export KEY=value` lines that real-servers.sh writes."""
    values = {}
    for line in path.read_text().splitlines():
        if not line.startswith("export "):
            continue
        key, _, raw_value = line[len("export ") :].partition("=")
        parsed = shlex.split(raw_value)
        values[key] = parsed[0] if parsed else ""
    return values


# --- SMTP -------------------------------------------------------------------


def smtp_starttls(stack: Stack) -> smtplib.SMTP:
    client = smtplib.SMTP(stack.host, stack.smtp_port, timeout=NETWORK_TIMEOUT_SECONDS)
    client.ehlo("client.example.org")
    client.starttls(context=stack.tls_context())
    client.ehlo("client.example.org")
    return client


def smtp_implicit_tls(stack: Stack) -> smtplib.SMTP_SSL:
    client = smtplib.SMTP_SSL(
        stack.host,
        stack.smtp_tls_port,
        timeout=NETWORK_TIMEOUT_SECONDS,
        context=stack.tls_context(),
    )
    client.ehlo("client.example.org")
    return client


def smtp_login(client: smtplib.SMTP, username: str, password: str, mechanism: str) -> None:
    client.user, client.password = username, password
    authobject = {"PLAIN": client.auth_plain, "LOGIN": client.auth_login}[mechanism]
    client.auth(mechanism, authobject, initial_response_ok=False)


def new_message(recipient: str, sender: str, body: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = recipient
    message["Date"] = email.utils.formatdate(localtime=True)
    message["Message-ID"] = email.utils.make_msgid(idstring="stack-check", domain="example.org")
    message["Subject"] = "nhsmail-agent stack check"
    message.set_content(body)
    return message


def send_as_practice(stack: Stack, recipient: str, body: str) -> EmailMessage:
    message = new_message(recipient, stack.username, body)
    with smtp_starttls(stack) as client:
        smtp_login(client, stack.username, stack.password, "PLAIN")
        rejected = client.send_message(message)
    if rejected:
        raise CheckFailed(f"recipients rejected: {rejected}")
    return message


def expect_smtp_error(action: Callable[[], object], codes: range, what: str) -> str:
    """Run ACTION and return the reply of the SMTP error it must raise."""
    try:
        action()
    except smtplib.SMTPResponseException as error:
        if error.smtp_code not in codes:
            raise CheckFailed(f"{what}: unexpected reply {error.smtp_code} {error.smtp_error!r}")
        return f"{error.smtp_code} {error.smtp_error.decode(errors='replace')}"
    except smtplib.SMTPRecipientsRefused as error:
        code, reply = next(iter(error.recipients.values()))
        if code not in codes:
            raise CheckFailed(f"{what}: unexpected reply {code} {reply!r}")
        return f"{code} {reply.decode(errors='replace')}"
    raise CheckFailed(f"{what}: the server accepted it")


# --- IMAP -------------------------------------------------------------------


def imap_starttls_login(stack: Stack, username: str, password: str) -> imaplib.IMAP4:
    client = imaplib.IMAP4(stack.host, stack.imap_port, timeout=NETWORK_TIMEOUT_SECONDS)
    client.starttls(ssl_context=stack.tls_context())
    client.login(username, password)
    return client


def wait_for_message(
    stack: Stack, username: str, password: str, search: tuple[str, ...]
) -> Message:
    """Poll INBOX until a message matches the IMAP SEARCH KEYS, and return it."""
    deadline = time.monotonic() + DELIVERY_TIMEOUT_SECONDS
    client = imap_starttls_login(stack, username, password)
    try:
        while True:
            client.select("INBOX", readonly=True)
            status, data = client.uid("SEARCH", *search)
            if status != "OK":
                raise CheckFailed(f"IMAP SEARCH {search} failed: {data!r}")
            uids = data[0].split()
            if uids:
                status, fetched = client.uid("FETCH", uids[-1], "(BODY.PEEK[])")
                if status != "OK" or not fetched or not isinstance(fetched[0], tuple):
                    raise CheckFailed(f"IMAP FETCH of UID {uids[-1]!r} failed: {fetched!r}")
                return email.message_from_bytes(fetched[0][1], policy=email.policy.default)
            if time.monotonic() >= deadline:
                raise CheckFailed(
                    f"no message matching {' '.join(search)} in {username}'s INBOX after "
                    f"{DELIVERY_TIMEOUT_SECONDS} s; see {stack.state_dir}/postfix.log"
                )
            time.sleep(POLL_INTERVAL_SECONDS)
    finally:
        client.logout()


# --- checks -----------------------------------------------------------------


def check_smtp_starttls_auth_plain(stack: Stack) -> str:
    with smtplib.SMTP(stack.host, stack.smtp_port, timeout=NETWORK_TIMEOUT_SECONDS) as client:
        client.ehlo("client.example.org")
        if not client.has_extn("starttls"):
            raise CheckFailed("STARTTLS not offered")
        if client.has_extn("auth"):
            raise CheckFailed("AUTH offered before STARTTLS")
        client.starttls(context=stack.tls_context())
        client.ehlo("client.example.org")
        mechanisms = client.esmtp_features.get("auth", "").split()
        if not {"PLAIN", "LOGIN"} <= set(mechanisms):
            raise CheckFailed(f"AUTH mechanisms after STARTTLS are {mechanisms}")
        smtp_login(client, stack.username, stack.password, "PLAIN")
        return f"{client.sock.version()}, AUTH {' '.join(mechanisms)}, PLAIN accepted"


def check_smtp_implicit_tls_auth_login(stack: Stack) -> str:
    with smtp_implicit_tls(stack) as client:
        smtp_login(client, stack.username, stack.password, "LOGIN")
        return f"{client.sock.version()} on port {stack.smtp_tls_port}, LOGIN accepted"


def check_smtp_auth_before_starttls_rejected(stack: Stack) -> str:
    credentials = f"\0{stack.username}\0{stack.password}".encode()
    with smtplib.SMTP(stack.host, stack.smtp_port, timeout=NETWORK_TIMEOUT_SECONDS) as client:
        client.ehlo("client.example.org")
        code, reply = client.docmd("AUTH", "PLAIN " + base64.b64encode(credentials).decode())
        if not 500 <= code < 600:
            raise CheckFailed(f"AUTH before STARTTLS got {code} {reply!r}")
        auth_reply = f"{code} {reply.decode(errors='replace')}"
        code, reply = client.docmd("MAIL", f"FROM:<{stack.username}>")
        if not 500 <= code < 600:
            raise CheckFailed(f"MAIL before STARTTLS got {code} {reply!r}")
    return f"AUTH: {auth_reply}; MAIL: {code} {reply.decode(errors='replace')}"


def check_smtp_wrong_password_rejected(stack: Stack) -> str:
    with smtp_starttls(stack) as client:
        return expect_smtp_error(
            lambda: smtp_login(client, stack.username, "Wrong-" + stack.password, "PLAIN"),
            range(535, 536),
            "AUTH with a wrong password",
        )


def check_smtp_unauthenticated_send_rejected(stack: Stack) -> str:
    message = new_message("07700900123@sms.nhs.net", stack.username, "unauthenticated")
    with smtp_starttls(stack) as client:
        return expect_smtp_error(
            lambda: client.send_message(message), range(500, 600), "sending without AUTH"
        )


def check_smtp_gateway_account_cannot_send(stack: Stack) -> str:
    message = new_message("07700900123@sms.nhs.net", stack.gateway_username, "from gateway")
    with smtp_starttls(stack) as client:
        smtp_login(client, stack.gateway_username, stack.gateway_password, "PLAIN")
        return expect_smtp_error(
            lambda: client.send_message(message), range(500, 600), "sending as the gateway"
        )


def check_smtp_other_domain_rejected(stack: Stack) -> str:
    message = new_message("someone@example.net", stack.username, "other domain")
    with smtp_starttls(stack) as client:
        smtp_login(client, stack.username, stack.password, "PLAIN")
        return expect_smtp_error(
            lambda: client.send_message(message), range(500, 600), "relaying to example.net"
        )


def check_gateway_delivery(stack: Stack, number: str) -> str:
    recipient = f"{number}@sms.nhs.net"
    body = f"Your appointment is confirmed. Check {uuid.uuid4()}"
    sent = send_as_practice(stack, recipient, body)
    received = wait_for_message(
        stack,
        stack.gateway_username,
        stack.gateway_password,
        ("HEADER", "Message-ID", sent["Message-ID"]),
    )
    if received["To"] != recipient:
        raise CheckFailed(f"To is {received['To']!r}, expected {recipient!r}")
    received_body = received.get_body(preferencelist=("plain",)).get_content()
    if received_body.strip() != body:
        raise CheckFailed(f"body is {received_body!r}, expected {body!r}")
    return f"{sent['Message-ID']} in {stack.gateway_username}'s INBOX, To {recipient}"


def check_bounce_report(stack: Stack, number: str) -> str:
    recipient = f"{number}@sms.nhs.net"
    sent = send_as_practice(stack, recipient, "This number bounces.")
    report = wait_for_message(
        stack, stack.username, stack.password, ("TEXT", sent["Message-ID"])
    )
    if report.get_content_type() != "multipart/report":
        raise CheckFailed(f"report is {report.get_content_type()}, expected multipart/report")
    if report.get_param("report-type") != "delivery-status":
        raise CheckFailed(f"report-type is {report.get_param('report-type')!r}")

    parts = {part.get_content_type(): part for part in report.walk()}
    status = parts.get("message/delivery-status")
    if status is None:
        raise CheckFailed(f"no message/delivery-status part among {sorted(parts)}")
    status_text = status.as_string()
    for expected in (f"Final-Recipient: rfc822; {recipient}", "Action: failed", "Status: 5.1.1"):
        if expected not in status_text:
            raise CheckFailed(f"delivery status lacks {expected!r}: {status_text!r}")

    original = parts.get("text/rfc822-headers") or parts.get("message/rfc822")
    if original is None:
        raise CheckFailed(f"no returned original headers among {sorted(parts)}")
    if f"Message-ID: {sent['Message-ID']}" not in original.as_string():
        raise CheckFailed(f"returned headers lack Message-ID {sent['Message-ID']}")
    diagnostic = next(
        (line for line in status_text.splitlines() if line.startswith("Diagnostic-Code:")), ""
    )
    return f"DSN for {recipient} with {sent['Message-ID']}: {diagnostic}"


def check_imap_login_before_starttls_rejected(stack: Stack) -> str:
    client = imaplib.IMAP4(stack.host, stack.imap_port, timeout=NETWORK_TIMEOUT_SECONDS)
    try:
        if "STARTTLS" not in client.capabilities:
            raise CheckFailed(f"STARTTLS not offered: {client.capabilities}")
        client.login(stack.username, stack.password)
    except imaplib.IMAP4.error as error:
        return f"rejected: {error}"
    finally:
        client.shutdown()
    raise CheckFailed("LOGIN before STARTTLS was accepted")


def check_imap_wrong_password_rejected(stack: Stack) -> str:
    try:
        client = imap_starttls_login(stack, stack.username, "Wrong-" + stack.password)
    except imaplib.IMAP4.error as error:
        return f"rejected: {error}"
    client.logout()
    raise CheckFailed("LOGIN with a wrong password was accepted")


def check_imaps_login(stack: Stack) -> str:
    with imaplib.IMAP4_SSL(
        stack.host,
        stack.imaps_port,
        ssl_context=stack.tls_context(),
        timeout=NETWORK_TIMEOUT_SECONDS,
    ) as client:
        client.login(stack.username, stack.password)
        status, data = client.select("INBOX", readonly=True)
        if status != "OK":
            raise CheckFailed(f"SELECT INBOX failed: {data!r}")
        idle = "IDLE" in client.capabilities
        if not idle:
            raise CheckFailed(f"IDLE not offered: {client.capabilities}")
        return f"{client.sock.version()} on port {stack.imaps_port}, INBOX has {data[0].decode()} messages, IDLE offered"


def check_imap_idle_notifies_delivery(stack: Stack) -> str:
    """Wait in IDLE on the gateway INBOX while a message is delivered to it."""
    client = imap_starttls_login(stack, stack.gateway_username, stack.gateway_password)
    try:
        client.select("INBOX", readonly=True)
        client.send(b"idle1 IDLE\r\n")
        continuation = client.readline()
        if not continuation.startswith(b"+"):
            raise CheckFailed(f"IDLE got {continuation!r}")

        sent = send_as_practice(stack, "07700900124@sms.nhs.net", "Delivered during IDLE.")
        client.sock.settimeout(DELIVERY_TIMEOUT_SECONDS)
        while not (exists := client.readline()).rstrip().endswith(b"EXISTS"):
            if not exists:
                raise CheckFailed("connection closed during IDLE")

        client.send(b"DONE\r\n")
        while not (line := client.readline()).startswith(b"idle1 "):
            if not line:
                raise CheckFailed("connection closed after DONE")
        if not line.startswith(b"idle1 OK"):
            raise CheckFailed(f"IDLE ended with {line!r}")
        return f"{exists.decode().strip()!r} after delivery of {sent['Message-ID']}"
    finally:
        client.logout()


def check_password_change(stack: Stack) -> str:
    """Change the practice password with set-password, check it, then restore it."""
    original = stack.password
    changed = f"Changed-{uuid.uuid4().hex[:16]}-Pw9"

    def set_password(password: str) -> None:
        subprocess.run(
            [str(REAL_SERVERS_SCRIPT), "set-password", str(stack.state_dir), password],
            check=True,
            stdout=subprocess.DEVNULL,
            timeout=60,
        )

    set_password(changed)
    try:
        if read_servers_env(stack.state_dir / "servers.env")["NHSMAIL_TEST_PASSWORD"] != changed:
            raise CheckFailed("servers.env does not hold the new password")
        try:
            imap_starttls_login(stack, stack.username, original).logout()
        except imaplib.IMAP4.error:
            pass
        else:
            raise CheckFailed("IMAP still accepts the old password")
        imap_starttls_login(stack, stack.username, changed).logout()
        with smtp_starttls(stack) as client:
            smtp_login(client, stack.username, changed, "PLAIN")
    finally:
        set_password(original)
    imap_starttls_login(stack, stack.username, original).logout()
    return "old password rejected and new one accepted over IMAP and SMTP; original restored"


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[1] in ("-h", "--help"):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    stack = Stack.load(Path(argv[1]).resolve())
    socket.setdefaulttimeout(NETWORK_TIMEOUT_SECONDS)

    first, last = int(stack.bounce_first), int(stack.bounce_last)
    checks: list[tuple[str, Callable[[], str]]] = [
        ("smtp starttls auth plain", lambda: check_smtp_starttls_auth_plain(stack)),
        ("smtp implicit tls auth login", lambda: check_smtp_implicit_tls_auth_login(stack)),
        ("smtp auth before starttls rejected", lambda: check_smtp_auth_before_starttls_rejected(stack)),
        ("smtp wrong password rejected", lambda: check_smtp_wrong_password_rejected(stack)),
        ("smtp send without auth rejected", lambda: check_smtp_unauthenticated_send_rejected(stack)),
        ("smtp gateway account cannot send", lambda: check_smtp_gateway_account_cannot_send(stack)),
        ("smtp other domain rejected", lambda: check_smtp_other_domain_rejected(stack)),
        ("imap login before starttls rejected", lambda: check_imap_login_before_starttls_rejected(stack)),
        ("imap wrong password rejected", lambda: check_imap_wrong_password_rejected(stack)),
        ("imaps login and idle", lambda: check_imaps_login(stack)),
        ("gateway delivery 07700900123", lambda: check_gateway_delivery(stack, "07700900123")),
        (
            f"gateway delivery 0{first - 1} below bounce range",
            lambda: check_gateway_delivery(stack, f"0{first - 1}"),
        ),
        (f"bounce report 0{first}", lambda: check_bounce_report(stack, f"0{first}")),
        (f"bounce report 44{last}", lambda: check_bounce_report(stack, f"44{last}")),
        ("imap idle notifies delivery", lambda: check_imap_idle_notifies_delivery(stack)),
        ("password change", lambda: check_password_change(stack)),
    ]

    failed = 0
    for name, check in checks:
        started = time.monotonic()
        try:
            detail = check()
        except (CheckFailed, OSError, smtplib.SMTPException, imaplib.IMAP4.error,
                subprocess.SubprocessError) as error:
            failed += 1
            print(f"FAIL {name}: {type(error).__name__}: {error}", flush=True)
            continue
        print(f"ok   {name} ({time.monotonic() - started:.1f} s): {detail}", flush=True)

    # Worded unlike a test runner's summary line, so that CI logs do not
    # count these checks as the project's tests.
    print(f"stack check: {len(checks) - failed} of {len(checks)} checks passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
