#!/usr/bin/env bash
# Builds the release binaries and runs the benchmark driver (benches/agent/)
# on loopback: submission against raw SQLite on the same disk, sending
# against Postfix relaying to the same sandbox, inbound mail, and resources.
# Writes a Markdown report with the machine, the command and the date to
# target/bench/report-DATE.md and prints it.
#
# usage: scripts/bench.sh [--quick] [--only submission,sending,inbound,resources]
#   --quick  small sizes (about 2 minutes) instead of the full ones (about 15
#            minutes, including a million queued messages)
# The Postfix reference runs when this runs as root with postfix installed
# (scripts/install-real-servers.sh); set BENCH_NO_POSTFIX=1 to leave it out.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
mkdir -p target/bench
stamp=$(date -u +%Y%m%dT%H%M%SZ)
results=target/bench/results-$stamp.md
report=target/bench/report-$stamp.md

args=("$@")
if [[ $(id -u) -eq 0 && -z ${BENCH_NO_POSTFIX:-} ]] && command -v postfix >/dev/null; then
    args+=(--postfix)
else
    echo "bench.sh: Postfix reference left out (needs root and postfix; BENCH_NO_POSTFIX unset)"
fi

cargo build --release --locked -j 2
cargo bench --locked -j 2 --bench agent -- "${args[@]}" --out "$results"

{
    echo "Date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "Commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo "Command: scripts/bench.sh ${*:-}"
    echo
    cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')
    echo "Machine: $(nproc) CPUs, $cpu, $(free -g | awk '/^Mem:/ {print $2}') GiB memory"
    echo "Disk of the data directories (${TMPDIR:-/tmp}): $(df -h --output=source,fstype,size "${TMPDIR:-/tmp}" | tail -n 1 | tr -s ' ')"
    echo "Kernel: $(uname -r); $(rustc --version)"
    echo
    cat "$results"
} >"$report"
cat "$report"
echo "bench.sh: report written to $report"
