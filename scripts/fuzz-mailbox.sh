#!/usr/bin/env bash
# Fuzzes the inbound mail classifier (fuzz/fuzz_targets/classify.rs) with cargo-fuzz for a
# bounded time, seeded with the emails in tests/corpus, then prints how long it ran, how many
# inputs it tried and whether it found a crash.
#
# Usage: scripts/fuzz-mailbox.sh [SECONDS]    (default 60)
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`) and a C++ compiler for libFuzzer.
# Exit status: 0 when nothing was found, 1 when libFuzzer saved a crash, leak, timeout or
# out-of-memory input under fuzz/artifacts/classify/, 2 for a usage or setup error.
#
# cargo-fuzz builds with -Zsanitizer=address, which only a nightly compiler accepts. When
# rustup has a nightly toolchain the script uses it. Machines of this project come with one
# stable toolchain and cannot download another, so without nightly the script runs the
# stable compiler with RUSTC_BOOTSTRAP=1, which makes it accept nightly-only flags. That
# setting is for this local test tool only, never for the agent's own build.
set -euo pipefail

seconds="${1:-60}"
if ! [[ "$seconds" =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: $0 [SECONDS]; SECONDS must be a whole number above 0, got \"$seconds\"" >&2
    exit 2
fi

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "cargo-fuzz is not installed; install it with: cargo install cargo-fuzz --locked" >&2
    exit 2
fi

toolchain=()
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    toolchain=(+nightly)
    compiler="nightly"
else
    export RUSTC_BOOTSTRAP=1
    compiler="stable with RUSTC_BOOTSTRAP=1"
fi

# libFuzzer adds the inputs it finds to the first folder only, so tests/corpus stays untouched.
work_corpus="$root/fuzz/corpus/classify"
artifacts="$root/fuzz/artifacts/classify"
mkdir -p "$work_corpus" "$artifacts"
log="$root/fuzz/artifacts/classify-last-run.log"

cd "$root/fuzz"
echo "building the classify fuzz target ($compiler)"
# -O: the profile in fuzz/Cargo.toml sets which crates get debug assertions.
cargo "${toolchain[@]}" fuzz build -O classify

artifacts_before="$(find "$artifacts" -type f | wc -l)"
echo "fuzzing for ${seconds} s; libFuzzer output goes to $log"
started="$(date +%s)"
set +e
cargo "${toolchain[@]}" fuzz run -O classify "$work_corpus" "$root/tests/corpus" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1
fuzz_status=$?
set -e
finished="$(date +%s)"

executions="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)"
peak_rss="$(sed -n 's/^stat::peak_rss_mb: *//p' "$log" | tail -n 1)"
new_artifacts=$(("$(find "$artifacts" -type f | wc -l)" - artifacts_before))

fuzz_seconds="$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -n 1)"
echo "fuzzed for ${fuzz_seconds:-unknown} s (limit ${seconds} s, $compiler); $((finished - started)) s of wall time with start-up"
echo "executions: ${executions:-unknown}; peak memory: ${peak_rss:-unknown} MB"
echo "corpus: $(find "$work_corpus" -type f | wc -l) inputs in $work_corpus"

if [ "$fuzz_status" -ne 0 ] || [ "$new_artifacts" -gt 0 ]; then
    echo "FOUND: libFuzzer exited with status $fuzz_status and saved $new_artifacts new input(s):"
    find "$artifacts" -type f -newermt "@$started" -print
    grep -E '^(==[0-9]+==ERROR|thread .* panicked|SUMMARY)' "$log" | head -n 5 || true
    echo "reproduce one with: (cd fuzz && cargo ${toolchain[*]} fuzz run -O classify <input>)"
    exit 1
fi
echo "no findings"
