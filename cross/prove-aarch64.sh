#!/usr/bin/env bash
# The aarch64-musl proof run by .ci/run: see cross/prove.sh.
set -euo pipefail
exec bash "$(dirname "${BASH_SOURCE[0]}")/prove.sh" aarch64-unknown-linux-musl
