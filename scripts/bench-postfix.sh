#!/usr/bin/env bash
# Runs a private Postfix on 127.0.0.1 for the sending benchmark's reference.
# It accepts mail from loopback without authentication. It relays all of it
# to one SMTP server on loopback (the NHSmail sandbox) with STARTTLS and AUTH
# PLAIN, as the agent does. Everything lives under STATE_DIR. Needs root
# and Debian's postfix and libsasl2-modules (scripts/install-real-servers.sh
# installs postfix).
#
# usage: bench-postfix.sh start STATE_DIR LISTEN_PORT RELAY_PORT CA_FILE
#        bench-postfix.sh stop STATE_DIR
# start reads the relay account from BENCH_RELAY_USERNAME and
# BENCH_RELAY_PASSWORD, so the password never appears in a process list.
set -euo pipefail

die() {
    echo "${0##*/}: error: $*" >&2
    exit 1
}

cmd_start() {
    local state_dir=$1 listen_port=$2 relay_port=$3 ca_file=$4
    [[ $(id -u) -eq 0 ]] || die "must run as root (Postfix starts as root and drops privileges)"
    command -v postfix >/dev/null || die "postfix not found; run scripts/install-real-servers.sh first"
    [[ -n ${BENCH_RELAY_USERNAME:-} && -n ${BENCH_RELAY_PASSWORD:-} ]] ||
        die "set BENCH_RELAY_USERNAME and BENCH_RELAY_PASSWORD"

    local config_dir=$state_dir/postfix queue_dir=$state_dir/postfix-queue data_dir=$state_dir/postfix-data
    mkdir -p "$config_dir" "$queue_dir" "$data_dir"
    chown postfix:postfix "$data_dir"

    # A password map file rather than main.cf, because main.cf expands $ in values.
    printf '[127.0.0.1]:%s %s:%s\n' "$relay_port" "$BENCH_RELAY_USERNAME" "$BENCH_RELAY_PASSWORD" \
        >"$config_dir/sasl_passwd"
    chmod 0600 "$config_dir/sasl_passwd"

    cat >"$config_dir/main.cf" <<EOF
# Written by scripts/bench-postfix.sh: the sending benchmark's reference.
compatibility_level = 3.6
queue_directory = $queue_dir
data_directory = $data_dir
maillog_file = $state_dir/postfix.log
maillog_file_prefixes = $state_dir
myhostname = localhost
mydomain = example.org
myorigin = example.org
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.1/32
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
biff = no
smtpd_peername_lookup = no
smtpd_relay_restrictions = permit_mynetworks, reject
smtpd_recipient_restrictions = permit_mynetworks, reject

# Everything goes to the sandbox on loopback, signed in like the agent.
relayhost = [127.0.0.1]:$relay_port
default_transport = smtp
relay_transport = smtp
smtp_tls_security_level = encrypt
smtp_tls_CAfile = $ca_file
smtp_sasl_auth_enable = yes
smtp_sasl_password_maps = texthash:$config_dir/sasl_passwd
smtp_sasl_security_options = noanonymous
smtp_sasl_tls_security_options = noanonymous
smtp_sasl_mechanism_filter = plain, login
EOF

    cat >"$config_dir/master.cf" <<EOF
# Written by scripts/bench-postfix.sh.
127.0.0.1:$listen_port inet n - n - - smtpd
pickup    unix  n - n 60    1 pickup
cleanup   unix  n - n -     0 cleanup
qmgr      unix  n - n 300   1 qmgr
tlsmgr    unix  - - n 1000? 1 tlsmgr
rewrite   unix  - - n -     - trivial-rewrite
bounce    unix  - - n -     0 bounce
defer     unix  - - n -     0 bounce
trace     unix  - - n -     0 bounce
verify    unix  - - n -     1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n -     - proxymap
smtp      unix  - - n -     - smtp
relay     unix  - - n -     - smtp
showq     unix  n - n -     - showq
error     unix  - - n -     - error
retry     unix  - - n -     - error
discard   unix  - - n -     - discard
anvil     unix  - - n -     1 anvil
scache    unix  - - n -     1 scache
postlog   unix-dgram n - n - 1 postlogd
EOF
    chmod 0644 "$config_dir/main.cf" "$config_dir/master.cf"

    postfix -c "$config_dir" check </dev/null || die "postfix check failed"
    postfix -c "$config_dir" start </dev/null || die "postfix did not start; see $state_dir/postfix.log"
    local waited=0
    until (exec 3<>"/dev/tcp/127.0.0.1/$listen_port") 2>/dev/null; do
        ((waited++ < 100)) || die "postfix is not listening on 127.0.0.1:$listen_port after 10 s"
        sleep 0.1
    done
}

cmd_stop() {
    local state_dir=$1
    [[ -f $state_dir/postfix/main.cf ]] || return 0
    postfix -c "$state_dir/postfix" stop </dev/null || true
}

case ${1:-} in
    start) [[ $# -eq 5 ]] || die "usage: ${0##*/} start STATE_DIR LISTEN_PORT RELAY_PORT CA_FILE"; cmd_start "${@:2}" ;;
    stop) [[ $# -eq 2 ]] || die "usage: ${0##*/} stop STATE_DIR"; cmd_stop "$2" ;;
    *) die "usage: ${0##*/} start STATE_DIR LISTEN_PORT RELAY_PORT CA_FILE | stop STATE_DIR" ;;
esac
