#!/usr/bin/env bash
# Builds the edge binary (profile dist) for one Linux target with zig (cargo-zigbuild), checks it, strips it.
#
#   cross/build-static.sh TARGET [--no-build]   # e.g. aarch64-unknown-linux-musl, x86_64-unknown-linux-musl
#
# --no-build: check and strip the unstripped binary an earlier build left (no cargo run).
#
# The dist profile (fat LTO, one codegen unit) is built with symbols kept
# (CARGO_PROFILE_DIST_STRIP=false) so that this script can prove from the linked binary
# that openh264 got its assembly (NEON on ARM, nasm on x86_64); then the binary is stripped
# with llvm-strip, exactly what `strip = true` would ship. Results:
#   target/TARGET/dist/vqprobe         stripped binary (what cargo-deb packages)
#   target/cross-proof/TARGET/symbols.txt the unstripped binary's symbols (llvm-nm)
#   target/cross-proof/TARGET/build.ok    commit + sha256 + size of the stripped binary
# Fails loudly: missing assembly, a dynamic section on a musl target, a second C crypto
# library in the dependency tree.
set -euo pipefail
TARGET=${1:?usage: build-static.sh TARGET [--no-build]}
NO_BUILD=${2:-}
[[ -z $NO_BUILD || $NO_BUILD == --no-build ]] || { echo "usage: build-static.sh TARGET [--no-build]" >&2; exit 2; }
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
TD=${CARGO_TARGET_DIR:-$ROOT/target}
OUT=$TD/cross-proof/$TARGET
mkdir -p "$OUT"
# zig's caches stay inside the build folder
export ZIG_GLOBAL_CACHE_DIR=$TD/zig-cache ZIG_LOCAL_CACHE_DIR=$TD/zig-cache
LLVM_BIN=$(rustc --print sysroot)/lib/rustlib/$(rustc -vV | sed -n 's/^host: //p')/bin
fail() { echo "build-static[$TARGET]: FAIL: $*" >&2; exit 1; }
log() { echo "build-static[$TARGET]: $*"; }

# One rustls crypto provider (ring), no aws-lc-sys (a second C crypto library, hard to cross-build).
tree=$(cargo tree --locked --target "$TARGET" -e normal --prefix none)
grep -q '^aws-lc' <<<"$tree" && fail "aws-lc-* is in the dependency tree: pick ring only"
grep -q '^ring v' <<<"$tree" || fail "ring is not in the dependency tree (rustls needs one provider)"
log "crypto provider: $(grep '^ring v' <<<"$tree" | head -n 1 | cut -d' ' -f1-2), no aws-lc"

case $TARGET in
  x86_64-*) command -v nasm >/dev/null || fail "nasm not found: openh264 would silently build without assembly" ;;
esac

BIN=$TD/$TARGET/dist/vqprobe
if [[ -n $NO_BUILD ]]; then
  if [[ ! -x $BIN ]] || ! file -b "$BIN" | grep -q 'not stripped'; then
    fail "--no-build: no unstripped binary at $BIN"
  fi
  log "--no-build: checking $BIN as built earlier"
else
  # A binary stripped by an earlier run of this script: make cargo link it again (cargo
  # would otherwise find it fresh and the symbol checks below would see nothing).
  if [[ -e $BIN ]] && ! file -b "$BIN" | grep -q 'not stripped'; then
    rm -f "$BIN"
  fi
  started=$(date +%s)
  log "cargo zigbuild --profile dist --target $TARGET (LTO, symbols kept for the checks below)"
  if ! CARGO_PROFILE_DIST_STRIP=false cargo zigbuild --profile dist --locked --target "$TARGET" \
    --bin vqprobe >"$OUT/build.log" 2>&1; then
    tail -n 40 "$OUT/build.log" >&2
    fail "build failed, see $OUT/build.log"
  fi
  [[ -x $BIN ]] || fail "no binary at $BIN"
  log "built in $(($(date +%s) - started)) s"
fi

# --- openh264's assembly, from the linked binary's own symbols
"$LLVM_BIN/llvm-nm" --defined-only "$BIN" >"$OUT/symbols.txt"
case $TARGET in
  aarch64-*) asm_re='_AArch64_neon$' ; kind="NEON (arm64/*.S)" ;;
  armv7-*|arm-*) asm_re='_neon$' ; kind="NEON (arm/*.S)" ;;
  x86_64-*) asm_re='_(sse2|ssse3|sse41|avx2)$' ; kind="nasm (x86/*.asm)" ;;
  *) fail "no assembly check for this target" ;;
esac
n_asm=$(grep -cE " [Tt] .*$asm_re" "$OUT/symbols.txt" || true)
((n_asm >= 50)) || fail "only $n_asm openh264 $kind functions linked (expected hundreds): assembly missing"
log "openh264 assembly linked: $n_asm $kind functions, e.g. $(grep -E " [Tt] .*$asm_re" "$OUT/symbols.txt" | awk '{print $3}' | grep -m 3 -i 'mc\|deblock\|idct\|pred' | paste -sd ' ')"

# --- static: no program interpreter, no shared libraries (libc++ and musl inside)
readelf --program-headers --dynamic --wide "$BIN" >"$OUT/readelf.txt"
case $TARGET in
  *-musl*)
    grep -q 'INTERP' "$OUT/readelf.txt" && fail "has a program interpreter (dynamically linked)"
    grep -q '(NEEDED)' "$OUT/readelf.txt" && fail "needs shared libraries: $(grep '(NEEDED)' "$OUT/readelf.txt")"
    file -b "$BIN" | grep -Eq 'statically linked|static-pie linked' || fail "file(1) does not say static: $(file -b "$BIN")"
    ;;
  *-gnu*)
    # glibc targets link libc dynamically (zig cannot link glibc statically); nothing else
    bad=$(grep '(NEEDED)' "$OUT/readelf.txt" | grep -Ev 'lib(c|m|dl|pthread|rt)\.so|ld-linux' || true)
    [[ -z $bad ]] || fail "needs shared libraries beyond glibc: $bad"
    ;;
esac

"$LLVM_BIN/llvm-strip" --strip-all "$BIN" -o "$BIN.stripped"
mv -f "$BIN.stripped" "$BIN"
size=$(stat -c %s "$BIN")
log "$(file -b "$BIN")"
log "stripped size: $size bytes ($(awk -v s="$size" 'BEGIN{printf "%.2f", s/1048576}') MiB)"
printf 'commit %s\nsha256 %s\nsize %s\n' "$(git rev-parse HEAD 2>/dev/null || echo unknown)" \
  "$(sha256sum "$BIN" | cut -d' ' -f1)" "$size" >"$OUT/build.ok"
