#!/usr/bin/env bash
# Installs what the edge build and packaging need, if missing (idempotent; run as root):
#   Debian: qemu-user-static (qemu-aarch64-static, qemu-arm-static), file, binutils,
#           libc6-armhf-cross (the armhf glibc for running armv7-gnueabihf under qemu-arm-static)
#   PyPI:   ziglang (zig as cross C/C++ compiler and linker; musl and libc++ inside)
#   crates: cargo-zigbuild, cargo-deb (pinned, --locked)
#   rustup: the Rust std for the proof targets, llvm-tools (llvm-nm, llvm-strip)
# Used by .ci/install-edge-deps and by cross/prove-aarch64.sh.
set -euo pipefail

ZIGLANG_VERSION=0.17.1
CARGO_ZIGBUILD_VERSION=0.24.1
CARGO_DEB_VERSION=3.8.0
TARGETS=(aarch64-unknown-linux-musl x86_64-unknown-linux-musl armv7-unknown-linux-gnueabihf)

apt_pkgs=(qemu-user-static file binutils libc6-armhf-cross)
missing=()
for p in "${apt_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "install-tools: missing Debian packages ${missing[*]} (run as root or apt-get install them)" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if [[ "$(python3 -m ziglang version 2>/dev/null || true)" != "$ZIGLANG_VERSION" ]]; then
  python3 -m pip install --quiet --disable-pip-version-check "ziglang==$ZIGLANG_VERSION"
fi

cargo_tool() { # cargo_tool CRATE VERSION: install CRATE at VERSION unless `cargo install --list` has it
  if ! cargo install --list | grep -qx "$1 v$2:"; then
    cargo install --locked --quiet "$1" --version "$2"
  fi
}
cargo_tool cargo-zigbuild "$CARGO_ZIGBUILD_VERSION"
cargo_tool cargo-deb "$CARGO_DEB_VERSION"

installed=$(rustup target list --installed)
for t in "${TARGETS[@]}"; do
  grep -qx "$t" <<<"$installed" || rustup target add "$t"
done
rustup component list --installed | grep -q '^llvm-tools' || rustup component add llvm-tools

echo "install-tools: zig $(python3 -m ziglang version), $(cargo-zigbuild --version), $(cargo deb --version), qemu $(qemu-aarch64-static --version | head -n 1 | awk '{print $3}')"
