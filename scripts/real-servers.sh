#!/usr/bin/env bash
# Runs a private Postfix and a private Dovecot on 127.0.0.1 high ports for the
# real-server tests: an NHSmail-like mailbox for the practice and an SMS
# gateway stand-in behind sms.nhs.net. Everything (config, queue, mail,
# sockets, certificates, logs) lives under STATE_DIR, and nothing listens on
# any other address. Install the packages first with
# scripts/install-real-servers.sh. Needs root.
set -euo pipefail

readonly SCRIPT_NAME=${0##*/}
readonly MAIL_USER=vmail
readonly PRACTICE_USER=practice.sms@example.org
readonly GATEWAY_USER=gateway@sms.nhs.net

# Gateway numbers that bounce: 07700900990@sms.nhs.net to
# 07700900999@sms.nhs.net, and the same numbers in the international form
# 447700900990 to 447700900999 (a leading + is accepted too). Postfix accepts
# them at RCPT and then bounces them through its error transport with status
# 5.1.1, so the practice mailbox receives a real RFC 3464 delivery status
# notification.
readonly BOUNCE_FIRST=07700900990
readonly BOUNCE_LAST=07700900999
readonly BOUNCE_PATTERN='\+?(0|44)770090099[0-9]@sms\.nhs\.net'
readonly BOUNCE_REASON='mobile number not recognised'

# start takes the ports from the environment; the other commands take the
# ones that start recorded in servers.env (see use_recorded_ports).
SMTP_PORT=${NHSMAIL_TEST_SMTP_PORT:-25870}
SMTP_TLS_PORT=${NHSMAIL_TEST_SMTP_TLS_PORT:-24650}
IMAP_PORT=${NHSMAIL_TEST_IMAP_PORT:-21430}
IMAPS_PORT=${NHSMAIL_TEST_IMAPS_PORT:-29930}
readonly START_TIMEOUT_SECONDS=${NHSMAIL_TEST_START_TIMEOUT:-30}
readonly STOP_TIMEOUT_SECONDS=20

usage() {
    cat <<EOF
usage: $SCRIPT_NAME start STATE_DIR
       $SCRIPT_NAME stop STATE_DIR
       $SCRIPT_NAME status STATE_DIR
       $SCRIPT_NAME set-password STATE_DIR NEW_PASSWORD

Runs a private Postfix (SMTP submission) and Dovecot (IMAP, LMTP) on
127.0.0.1 with all state in STATE_DIR, for the nhsmail-agent real-server
tests. Install the packages first with scripts/install-real-servers.sh.

Commands:
  start         write the configuration, create the CA, certificate and
                accounts on first use, start both servers, wait until they
                accept connections and write STATE_DIR/servers.env; does
                nothing to a stack that is already running
  stop          stop both servers and wait until their ports are closed
  status        print which servers are running (exit 0 when both are,
                3 when neither is, 1 otherwise)
  set-password  replace the practice account's password (as if it were
                changed behind the agent's back) and update servers.env

Ports (environment, read by start):
  NHSMAIL_TEST_SMTP_PORT       submission, STARTTLS required before AUTH
                               (default 25870)
  NHSMAIL_TEST_SMTP_TLS_PORT   submission over implicit TLS (default 24650)
  NHSMAIL_TEST_IMAP_PORT       IMAP, STARTTLS required before LOGIN
                               (default 21430)
  NHSMAIL_TEST_IMAPS_PORT      IMAP over implicit TLS (default 29930)
  NHSMAIL_TEST_START_TIMEOUT   seconds start waits for the ports (default 30)

Accounts (invented passwords, generated on first start, see servers.env):
  $PRACTICE_USER   the practice mailbox; the only account that
                               may send, and only to example.org or
                               sms.nhs.net
  $GATEWAY_USER        every other *@sms.nhs.net recipient is
                               delivered into this one mailbox

Bounces: mail to $BOUNCE_FIRST@sms.nhs.net to $BOUNCE_LAST@sms.nhs.net (or
447700900990 to 447700900999) is bounced by Postfix with status 5.1.1
"$BOUNCE_REASON"; the delivery status notification lands in the
practice INBOX.

Logs: STATE_DIR/postfix.log and STATE_DIR/dovecot.log.
EOF
}

die() {
    echo "$SCRIPT_NAME: error: $*" >&2
    exit 1
}

log() {
    echo "$SCRIPT_NAME: $*"
}

require_root() {
    [[ $(id -u) -eq 0 ]] || die "must run as root (Postfix and Dovecot start as root and drop privileges)"
}

require_installed() {
    local command
    for command in postfix postconf dovecot doveadm openssl; do
        command -v "$command" >/dev/null ||
            die "$command not found; run scripts/install-real-servers.sh first"
    done
    getent passwd "$MAIL_USER" >/dev/null ||
        die "user $MAIL_USER not found; run scripts/install-real-servers.sh first"
}

# Sets the paths of every file the stack uses under STATE_DIR.
set_paths() {
    STATE_DIR=$1
    POSTFIX_DIR=$STATE_DIR/postfix
    POSTFIX_QUEUE=$STATE_DIR/postfix-queue
    POSTFIX_DATA=$STATE_DIR/postfix-data
    DOVECOT_CONF=$STATE_DIR/dovecot.conf
    DOVECOT_RUN=$STATE_DIR/dovecot-run
    DOVECOT_STATE=$STATE_DIR/dovecot-state
    USERS_FILE=$STATE_DIR/dovecot-users
    PASSDB_DIR=$STATE_DIR/dovecot-passdb
    MAIL_DIR=$STATE_DIR/mail
    TLS_DIR=$STATE_DIR/tls
    CA_FILE=$TLS_DIR/ca.pem
    SERVERS_ENV=$STATE_DIR/servers.env
    POSTFIX_LOG=$STATE_DIR/postfix.log
    DOVECOT_LOG=$STATE_DIR/dovecot.log
}

# Resolves the STATE_DIR argument to an absolute path, creating the directory
# when CREATE is true, and sets the paths under it.
enter_state_dir() {
    local dir=$1 create=$2
    [[ -n $dir ]] || die "STATE_DIR is missing"$'\n'"$(usage)"
    if $create; then
        mkdir -p "$dir"
    elif [[ ! -d $dir ]]; then
        die "state directory $dir not found"
    fi
    set_paths "$(realpath "$dir")"
}

# --- state in STATE_DIR ----------------------------------------------------

# Prints the value of one `export KEY=value` line of servers.env.
read_env_value() {
    local key=$1
    [[ -f $SERVERS_ENV ]] || return 0
    sed -n "s/^export $key=//p" "$SERVERS_ENV" | tail -n 1 | sed "s/^'\(.*\)'\$/\1/"
}

use_recorded_ports() {
    [[ -f $SERVERS_ENV ]] || return 0
    SMTP_PORT=$(read_env_value NHSMAIL_TEST_SMTP_PORT)
    SMTP_TLS_PORT=$(read_env_value NHSMAIL_TEST_SMTP_TLS_PORT)
    IMAP_PORT=$(read_env_value NHSMAIL_TEST_IMAP_PORT)
    IMAPS_PORT=$(read_env_value NHSMAIL_TEST_IMAPS_PORT)
}

# Invents a password that meets NHSmail's rule for application accounts: at
# least 20 characters with upper case, lower case and a digit or symbol.
invent_password() {
    echo "Test-$(openssl rand -hex 12)-Pw"
}

hash_password() {
    local password=$1
    printf '%s\n' "$password" | openssl passwd -6 -stdin
}

# Writes the Dovecot passwd-file with both accounts. Dovecot 2.3 rereads the
# file when its mtime (in whole seconds) or size changes. The hashes have a
# fixed length, so a rewrite in the same second as the last one moves the
# mtime on by a second.
write_users_file() {
    local practice_password=$1 gateway_password=$2 old_mtime="" temporary
    [[ -f $USERS_FILE ]] && old_mtime=$(stat -c %Y "$USERS_FILE")

    temporary=$(mktemp "$STATE_DIR/.dovecot-users.XXXXXX")
    {
        echo "$PRACTICE_USER:{SHA512-CRYPT}$(hash_password "$practice_password")::::::"
        echo "$GATEWAY_USER:{SHA512-CRYPT}$(hash_password "$gateway_password")::::::"
    } >"$temporary"
    chown root:dovecot "$temporary"
    chmod 0640 "$temporary"
    mv -f "$temporary" "$USERS_FILE"

    if [[ -n $old_mtime && $(stat -c %Y "$USERS_FILE") -le $old_mtime ]]; then
        touch -d "@$((old_mtime + 1))" "$USERS_FILE"
    fi
}

write_servers_env() {
    local practice_password=$1 gateway_password=$2 temporary
    temporary=$(mktemp "$STATE_DIR/.servers.env.XXXXXX")
    cat >"$temporary" <<EOF
# Written by scripts/real-servers.sh start; source it to reach the test stack.
# The passwords are invented for this stack and protect nothing else.
export NHSMAIL_TEST_STATE_DIR='$STATE_DIR'
export NHSMAIL_TEST_SMTP_HOST=127.0.0.1
export NHSMAIL_TEST_SMTP_PORT=$SMTP_PORT
export NHSMAIL_TEST_SMTP_TLS_PORT=$SMTP_TLS_PORT
export NHSMAIL_TEST_IMAP_HOST=127.0.0.1
export NHSMAIL_TEST_IMAP_PORT=$IMAP_PORT
export NHSMAIL_TEST_IMAPS_PORT=$IMAPS_PORT
export NHSMAIL_TEST_TLS_SERVER_NAME=localhost
export NHSMAIL_TEST_CA_FILE='$CA_FILE'
export NHSMAIL_TEST_USERNAME=$PRACTICE_USER
export NHSMAIL_TEST_PASSWORD='$practice_password'
export NHSMAIL_TEST_GATEWAY_USERNAME=$GATEWAY_USER
export NHSMAIL_TEST_GATEWAY_PASSWORD='$gateway_password'
export NHSMAIL_TEST_GATEWAY_DOMAIN=sms.nhs.net
export NHSMAIL_TEST_BOUNCE_FIRST=$BOUNCE_FIRST
export NHSMAIL_TEST_BOUNCE_LAST=$BOUNCE_LAST
export NHSMAIL_TEST_POSTFIX_LOG='$POSTFIX_LOG'
export NHSMAIL_TEST_DOVECOT_LOG='$DOVECOT_LOG'
EOF
    chmod 0600 "$temporary"
    mv -f "$temporary" "$SERVERS_ENV"
}

# Creates a private CA and a certificate for localhost and 127.0.0.1 signed
# by it, unless both exist and stay valid for another day. The extensions are
# the ones strict verifiers (rustls and webpki among them) require: a CA with
# basicConstraints, and a leaf with subjectAltName and serverAuth.
write_certificates() {
    if [[ -f $CA_FILE && -f $TLS_DIR/server.pem ]] &&
        openssl x509 -checkend 86400 -noout -in "$CA_FILE" >/dev/null &&
        openssl x509 -checkend 86400 -noout -in "$TLS_DIR/server.pem" >/dev/null; then
        return 0
    fi
    log "creating a private CA and a server certificate in $TLS_DIR"
    mkdir -p "$TLS_DIR"
    chmod 0755 "$TLS_DIR"

    openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$TLS_DIR/ca.key" -out "$CA_FILE" -days 365 -sha256 \
        -subj "/O=nhsmail-agent tests/CN=nhsmail-agent test CA" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -addext "subjectKeyIdentifier=hash" 2>/dev/null

    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$TLS_DIR/server.key" -out "$TLS_DIR/server.csr" \
        -subj "/O=nhsmail-agent tests/CN=localhost" 2>/dev/null
    cat >"$TLS_DIR/server.ext" <<'EOF'
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF
    openssl x509 -req -in "$TLS_DIR/server.csr" -CA "$CA_FILE" -CAkey "$TLS_DIR/ca.key" \
        -CAcreateserial -out "$TLS_DIR/server.pem" -days 365 -sha256 \
        -extfile "$TLS_DIR/server.ext" 2>/dev/null
    rm -f "$TLS_DIR/server.csr"
    chmod 0600 "$TLS_DIR/ca.key" "$TLS_DIR/server.key"
    chmod 0644 "$CA_FILE" "$TLS_DIR/server.pem"
}

# --- Dovecot ----------------------------------------------------------------

write_dovecot_config() {
    local mail_uid
    mail_uid=$(id -u "$MAIL_USER")

    mkdir -p "$MAIL_DIR" "$DOVECOT_STATE" "$PASSDB_DIR"
    chown "$MAIL_USER:$MAIL_USER" "$MAIL_DIR"
    chmod 0700 "$MAIL_DIR"

    # Dovecot 2.3 treats a connection whose remote address equals its local
    # address as secured, so on loopback it would accept LOGIN before
    # STARTTLS. The passdb path below names the service and %{secured}, which
    # is "TLS" only on a TLS connection (and "secured" for Postfix, which
    # authenticates only after STARTTLS), so only these two links reach the
    # passwd-file and a cleartext IMAP login finds no user.
    ln -sfn ../dovecot-users "$PASSDB_DIR/imap-TLS"
    ln -sfn ../dovecot-users "$PASSDB_DIR/smtp-secured"

    cat >"$DOVECOT_CONF" <<EOF
# Written by scripts/real-servers.sh for the nhsmail-agent real-server tests.
instance_name = nhsmail-test-dovecot
base_dir = $DOVECOT_RUN
state_dir = $DOVECOT_STATE
log_path = $DOVECOT_LOG
hostname = localhost
protocols = imap lmtp
listen = 127.0.0.1

ssl = required
ssl_cert = <$TLS_DIR/server.pem
ssl_key = <$TLS_DIR/server.key
ssl_min_protocol = TLSv1.2
disable_plaintext_auth = yes
auth_mechanisms = plain login
auth_verbose = yes

passdb {
  driver = passwd-file
  args = scheme=SHA512-CRYPT username_format=%Lu $PASSDB_DIR/%s-%{secured}
}
userdb {
  driver = passwd-file
  args = username_format=%Lu $USERS_FILE
  default_fields = home=$MAIL_DIR/%Ld/%Ln
}

first_valid_uid = $mail_uid
last_valid_uid = $mail_uid
mail_uid = $MAIL_USER
mail_gid = $MAIL_USER
mail_location = maildir:~/Maildir

service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = $IMAP_PORT
  }
  inet_listener imaps {
    address = 127.0.0.1
    port = $IMAPS_PORT
    ssl = yes
  }
}

# Postfix delivers every accepted message over LMTP and checks SMTP AUTH
# through the auth socket; both sockets live in base_dir.
service lmtp {
  unix_listener lmtp-postfix {
    user = postfix
    group = postfix
    mode = 0600
  }
}
service auth {
  unix_listener auth-postfix {
    user = postfix
    group = postfix
    mode = 0600
  }
}
protocol lmtp {
  postmaster_address = postmaster@example.org
}

# Every test client connects from 127.0.0.1, so the per-address auth penalty
# would let one test's failed logins delay the next test's logins. Each
# failure still waits auth_failure_delay (2 s by default).
service anvil {
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}
EOF
    chmod 0644 "$DOVECOT_CONF"
}

dovecot_pid() {
    local pid
    [[ -s $DOVECOT_RUN/master.pid ]] || return 1
    pid=$(tr -dc '0-9' <"$DOVECOT_RUN/master.pid")
    [[ -n $pid ]] && ! process_gone "$pid" || return 1
    echo "$pid"
}

start_dovecot() {
    if dovecot_pid >/dev/null; then
        return 0
    fi
    # The daemons must not inherit the caller's stdout or stderr: a caller
    # that reads them through a pipe would otherwise wait for EOF forever.
    dovecot -c "$DOVECOT_CONF" </dev/null >>"$DOVECOT_LOG" 2>&1 ||
        die "dovecot did not start; see $DOVECOT_LOG, which ends with:"$'\n'"$(tail -n 5 "$DOVECOT_LOG")"
}

stop_dovecot() {
    local pid
    pid=$(dovecot_pid) || return 0
    kill -TERM "$pid"
    wait_for "dovecot (pid $pid) to exit" "$STOP_TIMEOUT_SECONDS" "$DOVECOT_LOG" \
        process_gone "$pid"
}

# --- Postfix ----------------------------------------------------------------

write_postfix_config() {
    mkdir -p "$POSTFIX_DIR" "$POSTFIX_QUEUE" "$POSTFIX_DATA"
    chown postfix:postfix "$POSTFIX_DATA"

    cat >"$POSTFIX_DIR/main.cf" <<EOF
# Written by scripts/real-servers.sh for the nhsmail-agent real-server tests.
# A private instance: started with postfix -c $POSTFIX_DIR.
compatibility_level = 3.6
queue_directory = $POSTFIX_QUEUE
data_directory = $POSTFIX_DATA
maillog_file = $POSTFIX_LOG
maillog_file_prefixes = $STATE_DIR

myhostname = localhost
mydomain = example.org
myorigin = example.org
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.1/32
mydestination =
relay_domains =
local_recipient_maps =
alias_maps =
alias_database =
biff = no
append_dot_mydomain = no
smtpd_banner = \$myhostname ESMTP
smtpd_peername_lookup = no

# Nothing leaves this machine: the only destinations are the two virtual
# domains, and anything else would fail here instead of being relayed.
relayhost =
default_transport = error:5.7.1 no outbound mail from the test stack
relay_transport = error:5.7.1 no outbound mail from the test stack

# example.org contains the practice mailbox. virtual_alias_maps folds every
# address at sms.nhs.net into the gateway mailbox, except the bounce range,
# which transport_maps sends to the error transport.
virtual_mailbox_domains = example.org, sms.nhs.net
virtual_mailbox_maps = inline:{ $PRACTICE_USER=ok, $GATEWAY_USER=ok }
virtual_alias_maps = regexp:$POSTFIX_DIR/virtual_alias.regexp
transport_maps = regexp:$POSTFIX_DIR/transport.regexp
virtual_transport = lmtp:unix:$DOVECOT_RUN/lmtp-postfix

smtpd_tls_cert_file = $TLS_DIR/server.pem
smtpd_tls_key_file = $TLS_DIR/server.key
smtpd_tls_security_level = encrypt
smtpd_tls_auth_only = yes
smtpd_tls_mandatory_protocols = >=TLSv1.2
smtpd_tls_protocols = >=TLSv1.2
smtpd_tls_received_header = yes
smtpd_tls_loglevel = 1

smtpd_sasl_auth_enable = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = $DOVECOT_RUN/auth-postfix
smtpd_sasl_security_options = noanonymous
smtpd_sasl_tls_security_options = noanonymous
broken_sasl_auth_clients = no

# Only the practice account sends, only as itself, and only to the two
# virtual domains.
smtpd_sender_login_maps = inline:{ $PRACTICE_USER=$PRACTICE_USER }
smtpd_sender_restrictions = reject_sender_login_mismatch, permit_sasl_authenticated, reject
smtpd_relay_restrictions = reject_unauth_destination
smtpd_recipient_restrictions =
    reject_non_fqdn_recipient,
    reject_unlisted_recipient,
    check_sasl_access inline:{ $PRACTICE_USER=OK },
    reject
EOF

    cat >"$POSTFIX_DIR/virtual_alias.regexp" <<EOF
# The bounce range maps to itself so that transport_maps can match it.
/^($BOUNCE_PATTERN)\$/ \${1}
/^[^@]+@sms\.nhs\.net\$/ $GATEWAY_USER
EOF

    cat >"$POSTFIX_DIR/transport.regexp" <<EOF
# Bounce range $BOUNCE_FIRST to $BOUNCE_LAST, national and international form.
/^$BOUNCE_PATTERN\$/ error:5.1.1 $BOUNCE_REASON
EOF

    # No "smtp inet" line: the only listeners are the two on 127.0.0.1.
    # Nothing runs chrooted, so no files need copying into the queue.
    cat >"$POSTFIX_DIR/master.cf" <<EOF
# Written by scripts/real-servers.sh for the nhsmail-agent real-server tests.
127.0.0.1:$SMTP_PORT inet n - n - - smtpd
  -o syslog_name=postfix/submission
127.0.0.1:$SMTP_TLS_PORT inet n - n - - smtpd
  -o syslog_name=postfix/submissions
  -o smtpd_tls_wrappermode=yes
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
proxywrite unix - - n -     1 proxymap
smtp      unix  - - n -     - smtp
relay     unix  - - n -     - smtp
showq     unix  n - n -     - showq
error     unix  - - n -     - error
retry     unix  - - n -     - error
discard   unix  - - n -     - discard
local     unix  - n n -     - local
virtual   unix  - n n -     - virtual
lmtp      unix  - - n -     - lmtp
anvil     unix  - - n -     1 anvil
scache    unix  - - n -     1 scache
postlog   unix-dgram n - n - 1 postlogd
EOF
    chmod 0644 "$POSTFIX_DIR"/*
}

postfix_running() {
    postfix -c "$POSTFIX_DIR" status >/dev/null 2>&1
}

start_postfix() {
    if postfix_running; then
        return 0
    fi
    postfix -c "$POSTFIX_DIR" check </dev/null >>"$POSTFIX_LOG" 2>&1 ||
        die "postfix check failed; see $POSTFIX_LOG, which ends with:"$'\n'"$(tail -n 5 "$POSTFIX_LOG")"
    postfix -c "$POSTFIX_DIR" start </dev/null >>"$POSTFIX_LOG" 2>&1 ||
        die "postfix did not start; see $POSTFIX_LOG, which ends with:"$'\n'"$(tail -n 5 "$POSTFIX_LOG")"
}

stop_postfix() {
    local pid
    [[ -f $POSTFIX_DIR/main.cf ]] || return 0
    postfix_running || return 0
    pid=$(tr -dc '0-9' <"$POSTFIX_QUEUE/pid/master.pid")
    postfix -c "$POSTFIX_DIR" stop </dev/null >>"$POSTFIX_LOG" 2>&1 ||
        die "postfix stop failed; see $POSTFIX_LOG"
    wait_for "postfix (pid $pid) to exit" "$STOP_TIMEOUT_SECONDS" "$POSTFIX_LOG" \
        process_gone "$pid"
}

# --- waiting ----------------------------------------------------------------

port_open() {
    timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

# Succeeds when the server on PORT sends a greeting that starts with PREFIX
# (Dovecot greets only once its auth process is ready). FAREWELL is sent
# before closing so that the server logs a clean disconnect.
port_greets() {
    local port=$1 prefix=$2 farewell=$3
    # shellcheck disable=SC2016 # the inner script expands its own arguments
    timeout 3 bash -c '
        exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
        IFS= read -r -t 2 greeting <&3 || exit 1
        printf "%s\r\n" "$3" >&3
        [[ $greeting == "$2"* ]]' greeting "$port" "$prefix" "$farewell" 2>/dev/null
}

# Like port_greets for a port that starts with TLS. The handshake must verify
# against the stack's CA for the name localhost.
tls_port_greets() {
    local port=$1 prefix=$2 farewell=$3 greeting
    greeting=$(printf '%s\r\n' "$farewell" |
        timeout 3 openssl s_client -connect "127.0.0.1:$port" -servername localhost \
            -CAfile "$CA_FILE" -verify_return_error -verify_hostname localhost -quiet 2>/dev/null |
        head -n 1) || true
    [[ $greeting == "$prefix"* ]]
}

port_closed() {
    ! port_open "$1"
}

# A daemon that exited stays a zombie until init reaps it, which a minimal
# init may do seconds later, so a zombie counts as gone.
process_gone() {
    local state
    state=$(ps -o stat= -p "$1" 2>/dev/null) || return 0
    [[ $state == Z* ]]
}

socket_exists() {
    [[ -S $1 ]]
}

# Runs CHECK with its arguments every 0.2 s until it succeeds, for at most
# SECONDS seconds, and names the log file to read when it never does.
wait_for() {
    local what=$1 seconds=$2 log_file=$3
    shift 3
    local deadline=$((SECONDS + seconds))
    until "$@"; do
        if ((SECONDS >= deadline)); then
            die "timed out after ${seconds} s waiting for $what; see $log_file"
        fi
        sleep 0.2
    done
}

require_free_ports() {
    local name port seen=" "
    for name in SMTP_PORT SMTP_TLS_PORT IMAP_PORT IMAPS_PORT; do
        port=${!name}
        if [[ ! $port =~ ^[0-9]+$ ]] || ((port < 1 || port > 65535)); then
            die "invalid NHSMAIL_TEST_$name: $port (expected a TCP port number)"
        fi
        [[ $seen != *" $port "* ]] ||
            die "invalid NHSMAIL_TEST_$name: port $port is already taken by another of the four servers"
        seen+="$port "
        if port_open "$port"; then
            die "127.0.0.1:$port is already in use; stop the program listening there" \
                "(another stack: $SCRIPT_NAME stop ITS_STATE_DIR) or set NHSMAIL_TEST_$name"
        fi
    done
}

# --- commands ---------------------------------------------------------------

cmd_start() {
    local practice_password gateway_password started=$SECONDS
    require_root
    require_installed
    enter_state_dir "${1:-}" true

    # Postfix runs its daemons as postfix and Dovecot delivers as vmail, so
    # both must be able to traverse STATE_DIR (mktemp -d makes it 0700).
    chmod 0755 "$STATE_DIR"

    if postfix_running && dovecot_pid >/dev/null && [[ -f $SERVERS_ENV ]]; then
        use_recorded_ports
        log "already running in $STATE_DIR: SMTP 127.0.0.1:$SMTP_PORT and $SMTP_TLS_PORT," \
            "IMAP 127.0.0.1:$IMAP_PORT and $IMAPS_PORT"
        return 0
    fi

    # Half a stack (one server died) is stopped, so that both start afresh
    # from the configuration written below.
    stop_postfix
    stop_dovecot
    require_free_ports

    practice_password=$(read_env_value NHSMAIL_TEST_PASSWORD)
    gateway_password=$(read_env_value NHSMAIL_TEST_GATEWAY_PASSWORD)
    if [[ -z $practice_password || -z $gateway_password || ! -f $USERS_FILE ]]; then
        practice_password=$(invent_password)
        gateway_password=$(invent_password)
        write_users_file "$practice_password" "$gateway_password"
    fi

    write_certificates
    write_dovecot_config
    write_postfix_config

    start_dovecot
    start_postfix

    wait_for "dovecot auth socket" "$START_TIMEOUT_SECONDS" "$DOVECOT_LOG" \
        socket_exists "$DOVECOT_RUN/auth-postfix"
    wait_for "dovecot lmtp socket" "$START_TIMEOUT_SECONDS" "$DOVECOT_LOG" \
        socket_exists "$DOVECOT_RUN/lmtp-postfix"
    wait_for "IMAP greeting on 127.0.0.1:$IMAP_PORT" "$START_TIMEOUT_SECONDS" "$DOVECOT_LOG" \
        port_greets "$IMAP_PORT" "* OK" "a LOGOUT"
    wait_for "IMAP greeting over TLS on 127.0.0.1:$IMAPS_PORT" "$START_TIMEOUT_SECONDS" \
        "$DOVECOT_LOG" tls_port_greets "$IMAPS_PORT" "* OK" "a LOGOUT"
    wait_for "SMTP greeting on 127.0.0.1:$SMTP_PORT" "$START_TIMEOUT_SECONDS" "$POSTFIX_LOG" \
        port_greets "$SMTP_PORT" "220 " "QUIT"
    wait_for "SMTP greeting over TLS on 127.0.0.1:$SMTP_TLS_PORT" "$START_TIMEOUT_SECONDS" \
        "$POSTFIX_LOG" tls_port_greets "$SMTP_TLS_PORT" "220 " "QUIT"

    write_servers_env "$practice_password" "$gateway_password"
    log "started in $((SECONDS - started)) s: SMTP 127.0.0.1:$SMTP_PORT (STARTTLS)," \
        "$SMTP_TLS_PORT (TLS), IMAP 127.0.0.1:$IMAP_PORT (STARTTLS), $IMAPS_PORT (TLS)"
    log "environment: $SERVERS_ENV"
}

cmd_stop() {
    local port
    require_root
    enter_state_dir "${1:-}" false
    use_recorded_ports

    if ! { [[ -f $POSTFIX_DIR/main.cf ]] && postfix_running; } && ! dovecot_pid >/dev/null; then
        # The ports may belong to another stack, so they are not waited for.
        log "not running in $STATE_DIR"
        return 0
    fi

    stop_postfix
    stop_dovecot
    for port in "$SMTP_PORT" "$SMTP_TLS_PORT" "$IMAP_PORT" "$IMAPS_PORT"; do
        wait_for "127.0.0.1:$port to close" "$STOP_TIMEOUT_SECONDS" "$STATE_DIR/*.log" \
            port_closed "$port"
    done
    log "stopped in $STATE_DIR"
}

cmd_status() {
    local running=0 pid
    enter_state_dir "${1:-}" false
    use_recorded_ports

    if [[ -f $POSTFIX_DIR/main.cf ]] && postfix_running; then
        pid=$(tr -dc '0-9' <"$POSTFIX_QUEUE/pid/master.pid")
        log "postfix: running (pid $pid), SMTP 127.0.0.1:$SMTP_PORT and 127.0.0.1:$SMTP_TLS_PORT"
        running=$((running + 1))
    else
        log "postfix: stopped"
    fi
    if pid=$(dovecot_pid); then
        log "dovecot: running (pid $pid), IMAP 127.0.0.1:$IMAP_PORT and 127.0.0.1:$IMAPS_PORT"
        running=$((running + 1))
    else
        log "dovecot: stopped"
    fi

    case $running in
    2) return 0 ;;
    0) return 3 ;;
    *) return 1 ;;
    esac
}

cmd_set_password() {
    local new_password=${2:-} gateway_password
    require_root
    enter_state_dir "${1:-}" false
    [[ -n $new_password ]] || die "NEW_PASSWORD is missing"$'\n'"$(usage)"
    # servers.env quotes values in single quotes, and the hash is made from
    # one line of input.
    [[ $new_password != *[[:space:]\']* ]] ||
        die "invalid NEW_PASSWORD: it must not contain whitespace or single quotes"
    [[ -f $SERVERS_ENV ]] || die "$SERVERS_ENV not found; run start first"

    use_recorded_ports
    gateway_password=$(read_env_value NHSMAIL_TEST_GATEWAY_PASSWORD)
    write_users_file "$new_password" "$gateway_password"
    write_servers_env "$new_password" "$gateway_password"

    # Dovecot 2.3 stats the passwd-file at most once per second of its clock
    # (passwd_file_sync in src/auth/db-passwd-file.c), so a login in the same
    # second as the last lookup could still match the old password. From the
    # next second on, every lookup reads the new file.
    sleep 1.1
    log "password of $PRACTICE_USER changed; $SERVERS_ENV updated"
}

main() {
    local command=${1:-}
    shift || true
    case $command in
    start) cmd_start "$@" ;;
    stop) cmd_stop "$@" ;;
    status) cmd_status "$@" ;;
    set-password) cmd_set_password "$@" ;;
    -h | --help | help) usage ;;
    *)
        usage >&2
        exit 2
        ;;
    esac
}

main "$@"
