#!/usr/bin/env bash
# needs: build-essential nasm ca-certificates
#   build-essential: cc/c++ for libFuzzer (libfuzzer-sys compiles it from source with the
#                    system C++ compiler), openh264's C++ and linking;
#   nasm:            openh264's x86 assembly, so the fuzzed decoder is the production one;
#   ca-certificates: cargo fetching crates.
#   Not needed: clang, libclang-rt-*-dev. rustc links its own AddressSanitizer runtime
#   (librustc-stable_rt.asan.a, shipped with the stable toolchain's rust-std).
#
# Runs every fuzz target for SECONDS (default 30) each and fails if any finds a crash,
# a failed invariant, a timeout or an out-of-memory. CI calls it from .ci/run.
#
#   fuzz/run.sh [SECONDS]
#
# Environment:
#   FUZZ_TARGETS   space-separated subset of targets (default: all, in fuzz/fuzz_targets/)
#   FUZZ_WORK      scratch dir for the growing corpora and logs (default: fuzz/work);
#                  the committed seeds in fuzz/corpus/ are only read
#   CARGO_TARGET_DIR is honoured (default: fuzz/target)
#
# Works on the stable toolchain: cargo-fuzz passes -Zsanitizer=address, which stable
# rustc accepts with RUSTC_BOOTSTRAP=1. Installs cargo-fuzz (pinned) and the Debian
# packages above when missing (as root; otherwise it says what to install).
set -euo pipefail

SECS=${1:-30}
[[ $SECS =~ ^[0-9]+$ && $SECS -gt 0 ]] || { echo "usage: fuzz/run.sh [SECONDS]" >&2; exit 2; }
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$HERE/.."
CARGO_FUZZ_VERSION=0.13.2
NEEDS=(build-essential nasm ca-certificates)
export RUSTC_BOOTSTRAP=1
export CARGO_TERM_COLOR=never

# Per-target libFuzzer options: the largest input generated (bigger inputs are slower and
# rarely find more) on top of the common ones.
declare -A MAX_LEN=([ts_demux]=32768 [analyzer]=16384 [h264]=32768 [adts]=16384 [spool]=4096 [redact]=512
    [mp4]=32768 [hls]=4096 [g711]=4096 [config]=8192 [report]=8192 [fleet]=4096)
COMMON=(-timeout=30 -rss_limit_mb=2560 -print_final_stats=1)

# ---------------------------------------------------------------- prerequisites
missing=()
for p in "${NEEDS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
        echo "fuzz/run.sh: installing ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q
        apt-get install -y -q --no-install-recommends "${missing[@]}"
    else
        echo "fuzz/run.sh: missing Debian packages: ${missing[*]} (install them as root)" >&2
        exit 1
    fi
fi
command -v cargo >/dev/null || { echo "fuzz/run.sh: cargo not found (install Rust with rustup)" >&2; exit 1; }
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz/run.sh: installing cargo-fuzz $CARGO_FUZZ_VERSION"
    cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi
cargo fuzz --version

# ---------------------------------------------------------------- build
if [[ -n ${FUZZ_TARGETS:-} ]]; then
    read -r -a TARGETS <<<"$FUZZ_TARGETS"
else
    TARGETS=()
    for f in fuzz/fuzz_targets/*.rs; do TARGETS+=("$(basename "$f" .rs)"); done
fi
WORK=${FUZZ_WORK:-fuzz/work}
mkdir -p "$WORK/logs"
started=$(date +%s)
echo "==> cargo fuzz build -a (all targets; debug assertions = overflow checks on)"
cargo fuzz build -a
echo "    built in $(($(date +%s) - started)) s"

# ---------------------------------------------------------------- run
passed=0
failed=0
failures=()
for t in "${TARGETS[@]}"; do
    [[ -f fuzz/fuzz_targets/$t.rs ]] || { echo "fuzz/run.sh: no target $t" >&2; exit 2; }
    mkdir -p "$WORK/$t" "fuzz/corpus/$t"
    log=$WORK/logs/$t.log
    echo "==> $t: ${SECS} s (log: $log)"
    # First corpus dir receives new inputs; fuzz/corpus/$t (the committed seeds) is
    # replayed first, so a committed reproducer fails the run until its bug is fixed.
    # A libFuzzer dictionary (fuzz/dict/$t.dict: keywords, tags, edge values) when there is one.
    dict=()
    [[ -f fuzz/dict/$t.dict ]] && dict=(-dict="fuzz/dict/$t.dict")
    if cargo fuzz run -a "$t" "$WORK/$t" "fuzz/corpus/$t" -- \
        -max_total_time="$SECS" -max_len="${MAX_LEN[$t]:-16384}" "${COMMON[@]}" "${dict[@]}" >"$log" 2>&1; then
        passed=$((passed + 1))
        grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1 || true
        grep -E '^stat::(number_of_executed_units|average_exec_per_sec)' "$log" || true
    else
        failed=$((failed + 1))
        failures+=("$t")
        echo "!!! $t FAILED; the report (full log: $log):"
        # The panic or sanitizer report and the artifact, without cargo-fuzz's Debug dump
        # of the input bytes.
        grep -E -A40 -m1 "panicked at|ERROR: AddressSanitizer|ERROR: libFuzzer|SUMMARY: libFuzzer|==ERROR" "$log" | head -60 || true
        grep -E "Test unit written to|Reproduce with|cargo fuzz (run|tmin)" "$log" | head -4 || true
    fi
done

echo
echo "fuzz: ${passed} passed, ${failed} failed"
if ((failed)); then
    echo "fuzz/run.sh: failing targets: ${failures[*]}; crash inputs are in fuzz/artifacts/<target>/" >&2
    exit 1
fi
