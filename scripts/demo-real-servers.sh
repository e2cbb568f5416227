#!/usr/bin/env bash
# Runs nhsmail-agent against a private Postfix and Dovecot on 127.0.0.1, sends two texts with nhsmail-ctl (one
# delivered to the gateway mailbox, one bounced with a real DSN), shows them, then keeps the agent running until
# Ctrl-C. Needs root on Debian 12 for apt-get. Everything lives under ./demo (or DEMO_DIR).
#
# Usage: scripts/demo-real-servers.sh
set -euo pipefail

repo_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo_dir"
demo_dir=${DEMO_DIR:-$repo_dir/demo}
servers_dir=$demo_dir/servers
agent_dir=$demo_dir/agent
listen=${NHSMAIL_DEMO_LISTEN:-127.0.0.1:50051}
agent_pid=""

cleanup() {
    if [[ -n $agent_pid ]]; then
        kill -TERM "$agent_pid" 2>/dev/null || true
        wait "$agent_pid" 2>/dev/null || true
    fi
    scripts/real-servers.sh stop "$servers_dir" >/dev/null 2>&1 || true
    echo "demo: stopped the agent and the mail servers; files are in $demo_dir"
}
trap cleanup EXIT

echo "demo: installing Postfix and Dovecot (Debian packages) if missing"
scripts/install-real-servers.sh >/dev/null
mkdir -p "$demo_dir" "$agent_dir"
scripts/real-servers.sh start "$servers_dir" </dev/null >/dev/null 2>"$demo_dir/servers-start.log" || {
    cat "$demo_dir/servers-start.log" >&2
    exit 1
}
# shellcheck source=/dev/null
source "$servers_dir/servers.env"

echo "demo: building nhsmail-agent and nhsmail-ctl (release)"
cargo build --release --locked --quiet --bin nhsmail-agent --bin nhsmail-ctl
agent=target/release/nhsmail-agent
ctl=target/release/nhsmail-ctl

cat >"$demo_dir/agent.toml" <<EOF
[agent]
listen = "$listen"
data_dir = "$agent_dir"
upload_interval_minutes = 1

[nhsmail]
username = "$NHSMAIL_TEST_USERNAME"
smtp_host = "127.0.0.1"
smtp_port = $NHSMAIL_TEST_SMTP_PORT
smtp_security = "starttls"
imap_host = "127.0.0.1"
imap_port = $NHSMAIL_TEST_IMAPS_PORT
imap_security = "tls"
ca_file = "$NHSMAIL_TEST_CA_FILE"
EOF

"$agent" --config "$demo_dir/agent.toml" >"$demo_dir/agent.out" 2>"$demo_dir/agent.log" &
agent_pid=$!
for _ in $(seq 1 100); do
    grep -q '^listening on ' "$demo_dir/agent.out" 2>/dev/null && break
    kill -0 "$agent_pid" 2>/dev/null || { cat "$demo_dir/agent.log" >&2; exit 1; }
    sleep 0.1
done
export NHSMAIL_AGENT="http://$listen" NHSMAIL_TOKEN_FILE="$agent_dir/admin.token"

echo "demo: storing the mailbox password (checked with SMTP AUTH and IMAP LOGIN first)"
printf '%s\n' "$NHSMAIL_TEST_PASSWORD" | "$ctl" password set --password-stdin >/dev/null
echo "demo: sending one text to 07700 900123 and one to 07700 900990, a number the stack bounces"
"$ctl" send --to "07700 900123" --text "Your appointment is on Monday at 09:30. Reply YES to confirm."
"$ctl" send --to "07700 900990" --text "Please call the surgery about your results."
sleep 3
"$ctl" upload trigger >/dev/null
"$ctl" messages list

cat <<EOF

The agent is running on $listen against Postfix ($NHSMAIL_TEST_SMTP_PORT) and Dovecot ($NHSMAIL_TEST_IMAPS_PORT).
In another shell:
  export NHSMAIL_AGENT=http://$listen NHSMAIL_TOKEN_FILE=$agent_dir/admin.token
  $ctl status
  $ctl send --to 07700900124 --text "Flu clinic on Saturday"
Agent log: $demo_dir/agent.log. Press Ctrl-C to stop.
EOF
wait "$agent_pid"
