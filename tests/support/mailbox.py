#!/usr/bin/env python3
"""An IMAP client independent of the agent's, for end-to-end tests: reads what the SMS gateway mailbox received
and appends emails to the practice mailbox. Standard library only.

Connection settings come from the variables that scripts/real-servers.sh writes to servers.env:
NHSMAIL_TEST_SMTP_HOST, NHSMAIL_TEST_IMAPS_PORT, NHSMAIL_TEST_CA_FILE, and the account variables below.

Usage:
  mailbox.py gateway-messages          prints a JSON list of {to, subject, body, message_id} in the gateway mailbox
  mailbox.py append-practice FILE      appends the raw email in FILE to the practice INBOX
"""

import email
import email.policy
import imaplib
import json
import os
import ssl
import sys
import time


def connect(username_var: str, password_var: str) -> imaplib.IMAP4_SSL:
    context = ssl.create_default_context(cafile=os.environ["NHSMAIL_TEST_CA_FILE"])
    client = imaplib.IMAP4_SSL(
        os.environ.get("NHSMAIL_TEST_SMTP_HOST", "127.0.0.1"),
        int(os.environ["NHSMAIL_TEST_IMAPS_PORT"]),
        ssl_context=context,
        timeout=30,
    )
    client.login(os.environ[username_var], os.environ[password_var])
    return client


def gateway_messages() -> None:
    client = connect("NHSMAIL_TEST_GATEWAY_USERNAME", "NHSMAIL_TEST_GATEWAY_PASSWORD")
    client.select("INBOX", readonly=True)
    _, data = client.uid("SEARCH", None, "ALL")
    found = []
    for uid in data[0].split():
        _, parts = client.uid("FETCH", uid, "(BODY.PEEK[])")
        raw = parts[0][1]
        message = email.message_from_bytes(raw, policy=email.policy.default)
        body = message.get_body(preferencelist=("plain",))
        found.append({
            "to": str(message.get("To", "")),
            "delivered_to": str(message.get("Delivered-To", "")),
            "subject": str(message.get("Subject", "")),
            "body": body.get_content() if body is not None else "",
            "message_id": str(message.get("Message-ID", "")).strip().strip("<>"),
            "content_type": message.get_content_type(),
            "charset": message.get_content_charset() or "",
        })
    client.logout()
    json.dump(found, sys.stdout)


def append_practice(path: str) -> None:
    with open(path, "rb") as file:
        raw = file.read()
    client = connect("NHSMAIL_TEST_USERNAME", "NHSMAIL_TEST_PASSWORD")
    status, detail = client.append("INBOX", None, imaplib.Time2Internaldate(time.time()), raw)
    client.logout()
    if status != "OK":
        sys.exit(f"APPEND failed: {detail}")


def main() -> None:
    if len(sys.argv) >= 2 and sys.argv[1] == "gateway-messages":
        gateway_messages()
    elif len(sys.argv) == 3 and sys.argv[1] == "append-practice":
        append_practice(sys.argv[2])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
