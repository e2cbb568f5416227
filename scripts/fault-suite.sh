#!/usr/bin/env bash
# Runs the fault suite (tests/fault_suite.rs) at full size against a release
# build: 10,000 texts through the SIGKILL loop with a kill every 1 to 5
# seconds, and 50 gRPC clients for 60 seconds. `cargo test` and .ci/run run
# the same tests at smaller sizes. The disk-full test needs root (it mounts a
# tmpfs); set NHSMAIL_REAL_SERVERS to any value to make it fail rather than
# skip without root.
#
# usage: scripts/fault-suite.sh [extra arguments for the test binary]
# The sizes can be changed through the same variables the tests read:
# NHSMAIL_FAULT_TEXTS, NHSMAIL_FAULT_MIN_KILLS, NHSMAIL_FAULT_KILL_MS,
# NHSMAIL_FAULT_LOAD_CLIENTS and NHSMAIL_FAULT_LOAD_SECONDS.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
export NHSMAIL_FAULT_TEXTS=${NHSMAIL_FAULT_TEXTS:-10000}
export NHSMAIL_FAULT_MIN_KILLS=${NHSMAIL_FAULT_MIN_KILLS:-20}
export NHSMAIL_FAULT_KILL_MS=${NHSMAIL_FAULT_KILL_MS:-1000-5000}
export NHSMAIL_FAULT_LOAD_CLIENTS=${NHSMAIL_FAULT_LOAD_CLIENTS:-50}
export NHSMAIL_FAULT_LOAD_SECONDS=${NHSMAIL_FAULT_LOAD_SECONDS:-60}

echo "fault suite: $NHSMAIL_FAULT_TEXTS texts, at least $NHSMAIL_FAULT_MIN_KILLS kills every" \
    "$NHSMAIL_FAULT_KILL_MS ms; $NHSMAIL_FAULT_LOAD_CLIENTS clients for $NHSMAIL_FAULT_LOAD_SECONDS s"
started=$SECONDS
# One test at a time, so the load test's memory figures and the SIGKILL loop's
# timing are not shared with the others.
cargo test --locked --release -j 2 --test fault_suite -- --nocapture --test-threads 1 "$@"
echo "fault suite passed in $((SECONDS - started)) s"
