#!/usr/bin/env bash
# Installs Postfix, Dovecot (IMAP and LMTP), OpenSSL and swaks from Debian's
# packages for the real-server tests. The system-wide mail services are
# neither configured nor started, because scripts/real-servers.sh runs private
# instances on loopback high ports instead. Needs root on Debian 12
# (bookworm). Safe to run again: packages already installed are left as they
# are. Extra package names on the command line (.ci/run passes the build's)
# are installed in the same apt-get run.
set -euo pipefail

readonly STACK_PACKAGES=(postfix dovecot-core dovecot-imapd dovecot-lmtpd openssl swaks procps)
readonly POLICY_RC=/usr/sbin/policy-rc.d
readonly MAIL_USER=vmail

if [[ ${1:-} == -h || ${1:-} == --help ]]; then
    echo "usage: $0 [EXTRA_PACKAGE...]"
    echo "Installs ${STACK_PACKAGES[*]} and any EXTRA_PACKAGE without starting the system services."
    exit 0
fi
readonly PACKAGES=("${STACK_PACKAGES[@]}" "$@")

if [[ $(id -u) -ne 0 ]]; then
    echo "error: $0 must run as root (it calls apt-get)" >&2
    exit 1
fi

missing_packages() {
    local package
    for package in "${PACKAGES[@]}"; do
        if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed'; then
            echo "$package"
        fi
    done
}

# Stops a system-wide daemon that a maintainer script or an earlier boot
# started. The pid file is the system instance's own, so the private test
# instances, whose pid files live under their STATE_DIR, are left alone.
stop_system_daemon() {
    local name=$1 pid_file=$2 pid
    [[ -s $pid_file ]] || return 0
    pid=$(tr -dc '0-9' <"$pid_file")
    if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
        echo "stopping the system-wide $name (pid $pid)"
        kill "$pid"
    fi
}

mapfile -t missing < <(missing_packages)
if ((${#missing[@]} > 0)); then
    echo "installing: ${missing[*]}"

    # A policy-rc.d that exits 101 forbids invoke-rc.d to start any service,
    # so the packages' postinst scripts leave postfix and dovecot stopped. An
    # existing policy (Debian's container images ship one) is kept as it is.
    policy_created=false
    if [[ ! -e $POLICY_RC ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$POLICY_RC"
        chmod 0755 "$POLICY_RC"
        policy_created=true
        trap 'rm -f "$POLICY_RC"' EXIT
    fi

    # "No configuration" leaves /etc/postfix/main.cf unwritten, so a stray
    # system postfix could not start with a default listener on port 25.
    echo 'postfix postfix/main_mailer_type select No configuration' | debconf-set-selections
    echo 'postfix postfix/mailname string localhost' | debconf-set-selections

    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"

    if $policy_created; then
        rm -f "$POLICY_RC"
        trap - EXIT
    fi
else
    echo "already installed: ${PACKAGES[*]}"
fi

# Dovecot writes mail as this user, which the private Dovecot instance names
# in mail_uid and mail_gid.
if ! getent passwd "$MAIL_USER" >/dev/null; then
    echo "creating system user $MAIL_USER"
    useradd --system --user-group --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin "$MAIL_USER"
fi

stop_system_daemon postfix /var/spool/postfix/pid/master.pid
stop_system_daemon dovecot /run/dovecot/master.pid

echo "postfix $(postconf -d -h mail_version 2>/dev/null), $(dovecot --version 2>/dev/null | sed 's/^/dovecot /')"
