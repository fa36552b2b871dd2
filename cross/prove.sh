#!/usr/bin/env bash
# Proves a cross-built vqprobe here, without docker: builds the static edge binary (profile dist) with zig,
# runs it under qemu-user and compares its events with the x86_64 binary's on the same inputs.
#
#   cross/prove.sh [TARGET]       # default aarch64-unknown-linux-musl (cross/prove-aarch64.sh)
#
# Steps (each fails loudly):
#  1. cross/install-tools.sh: zig (PyPI ziglang), cargo-zigbuild, cargo-deb, rustup targets,
#     qemu-user-static.
#  2. cross/build-static.sh for x86_64-unknown-linux-musl (the reference, also what the amd64
#     .deb ships) and for TARGET: dist profile (fat LTO), openh264 assembly present, static, stripped.
#  3. Size: stripped TARGET binary <= 6 MiB.
#  4. Under qemu: `vqprobe --version` names the crate version, this commit and TARGET.
#  5. `vqprobe demo --format json` and `vqprobe check --format json` on ground-truth clips
#     (tests/media/make_media.sh): events equal the x86_64 binary's (kind, state, order,
#     start_s/end_s within 0.1 s) and match truth.json (within 0.5 s, as tests/ground_truth.rs).
# A binary built earlier is reused only when build.ok names HEAD, the tree is clean and the
# checksum matches (or VQPROBE_REUSE_BUILD=1 is set, for iterating on this script).
# VQPROBE_REF_TARGET_DIR: where the x86_64 reference is built (default: the target dir).
set -euo pipefail
TARGET=${1:-aarch64-unknown-linux-musl}
REF=x86_64-unknown-linux-musl
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
TD=${CARGO_TARGET_DIR:-$ROOT/target}
export CARGO_TARGET_DIR=$TD
REF_TD=${VQPROBE_REF_TARGET_DIR:-$TD}
PROOF=$TD/cross-proof
MEDIA=${VQPROBE_TEST_MEDIA:-$REF_TD/test-media}
MAX_BYTES=$((6 * 1024 * 1024))
CLIPS=(multi_main_360p.ts corrupt_baseline_1080p.ts freeze_main_720p.ts black_high_360p.ts silence_high_720p.ts)
started=$(date +%s)
fail() { echo "prove[$TARGET]: FAIL: $*" >&2; exit 1; }
log() { echo "prove[$TARGET]: $* ($(($(date +%s) - started)) s)"; }

case $TARGET in
  aarch64-*) QEMU=(qemu-aarch64-static) ;;
  armv7-*-gnueabihf)
    # glibc target: the armhf loader and libc from Debian's libc6-armhf-cross
    QEMU=(qemu-arm-static -L /usr/arm-linux-gnueabihf)
    [[ -e /usr/arm-linux-gnueabihf/lib/ld-linux-armhf.so.3 ]] || fail "install libc6-armhf-cross (Debian) first"
    ;;
  armv7-*|arm-*) QEMU=(qemu-arm-static) ;;
  *) fail "unsupported target $TARGET" ;;
esac

bash cross/install-tools.sh
log "tools ready"

reusable() { # reusable TARGET TARGET_DIR: build.ok names HEAD of a clean tree (or VQPROBE_REUSE_BUILD=1)
  local ok=$2/cross-proof/$1/build.ok bin=$2/$1/dist/vqprobe
  [[ -f $ok && -x $bin ]] || return 1
  [[ $(sed -n 's/^sha256 //p' "$ok") == "$(sha256sum "$bin" | cut -d' ' -f1)" ]] || return 1
  [[ ${VQPROBE_REUSE_BUILD:-0} == 1 ]] && return 0
  [[ $(sed -n 's/^commit //p' "$ok") == "$(git rev-parse HEAD)" && -z $(git status --porcelain --untracked-files=no) ]]
}
for t_td in "$REF:$REF_TD" "$TARGET:$TD"; do
  t=${t_td%%:*} td=${t_td#*:}
  if reusable "$t" "$td"; then
    log "reusing $td/$t/dist/vqprobe ($(tr "\n" " " <"$td/cross-proof/$t/build.ok"))"
  else
    CARGO_TARGET_DIR=$td bash cross/build-static.sh "$t"
    log "built $t"
  fi
done
BIN=$TD/$TARGET/dist/vqprobe
REFBIN=$REF_TD/$REF/dist/vqprobe
OUT=$PROOF/$TARGET/run
rm -rf "$OUT" && mkdir -p "$OUT"

size=$(stat -c %s "$BIN")
((size <= MAX_BYTES)) || fail "stripped binary is $size bytes, over the 6 MiB budget ($MAX_BYTES)"
log "size $size bytes <= $MAX_BYTES"

# --version: crate version, git commit, target triple
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
commit=$(git rev-parse --short=12 HEAD)
if [[ ${VQPROBE_REUSE_BUILD:-0} == 1 ]]; then
  # reused binaries: the commit they were built from, which must be in our history
  commit=$("$REFBIN" --version | sed -n 's/.*(commit \([0-9a-f]\{12\}\), .*/\1/p')
  git cat-file -e "$commit^{commit}" 2>/dev/null || fail "reference binary names no known commit"
fi
got=$("${QEMU[@]}" "$BIN" --version)
echo "$got" | tee "$OUT/version.txt"
[[ $got == "vqprobe $version (commit "*", $TARGET)" ]] || fail "--version: '$got' lacks version $version or target $TARGET"
[[ $got == *"commit $commit"* ]] || fail "--version: '$got' does not name commit $commit (HEAD): stale build?"
refver=$("$REFBIN" --version)
[[ $refver == "vqprobe $version (commit $commit, $REF)" ]] || fail "x86_64 --version: '$refver'"

# demo: the built-in synthetic stream with scripted defects
"$REFBIN" demo --format json >"$OUT/demo.$REF.jsonl"
"${QEMU[@]}" "$BIN" demo --format json >"$OUT/demo.$TARGET.jsonl"
python3 cross/compare_events.py "$OUT/demo.$REF.jsonl" "$OUT/demo.$TARGET.jsonl" --clip demo --min-events 2
log "demo matches"

bash tests/media/make_media.sh "$MEDIA"
for clip in "${CLIPS[@]}"; do
  [[ -f $MEDIA/$clip ]] || fail "missing clip $MEDIA/$clip"
  args=(check "$MEDIA/$clip" --format json --probe-id prove --stream-id "$clip")
  "$REFBIN" "${args[@]}" >"$OUT/$clip.$REF.jsonl"
  t0=$(date +%s.%N)
  "${QEMU[@]}" "$BIN" "${args[@]}" >"$OUT/$clip.$TARGET.jsonl"
  secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')
  python3 cross/compare_events.py "$OUT/$clip.$REF.jsonl" "$OUT/$clip.$TARGET.jsonl" \
    --truth "$MEDIA/truth.json" --clip "$clip"
  echo "  ($TARGET under qemu: $secs s)"
done
log "PASS: $TARGET binary ($size bytes) under ${QEMU[0]} gives the x86_64 events on demo and ${#CLIPS[@]} clips"
