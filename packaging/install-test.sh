#!/usr/bin/env bash
# Install test for the Debian packages, run by .ci/run as root on a Debian machine.
#
#   packaging/install-test.sh
#
# Builds the amd64 .deb (cargo deb --no-build) from the static x86_64-musl binary
# (cross/build-static.sh; reused from cross/prove.sh when it is from this commit) and the
# arm64 .deb from the aarch64-musl binary, checks their metadata and contents, then on this
# machine: dpkg -i (files, modes, owners, the vqprobe user, the conffile, the state directory,
# `systemd-analyze verify` of the installed unit), an admin edit of the config, dpkg -r (config
# and user kept), reinstall (edit kept), dpkg -P (config, spool and statoverride gone; the
# system user and group kept, Debian policy, so that an admin-added file such as
# /etc/vqprobe/mqtt.password never has an orphaned gid). Every mismatch fails the script; a
# failed run still purges the package.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
TD=${CARGO_TARGET_DIR:-$ROOT/target}
export CARGO_TARGET_DIR=$TD
DEBS=$TD/debian
started=$(date +%s)
fail() { echo "install-test: FAIL: $*" >&2; exit 1; }
log() { echo "install-test: $* ($(($(date +%s) - started)) s)"; }
expect_stat() { # expect_stat PATH MODE OWNER:GROUP
  [[ -e $1 ]] || fail "$1 missing"
  local got
  got=$(stat -c '%a %U:%G' "$1")
  [[ $got == "$2 $3" ]] || fail "$1 is '$got', expected '$2 $3'"
}
absent() { [[ ! -e $1 ]] || fail "$1 still exists"; }

[[ $(id -u) -eq 0 ]] || fail "must run as root (dpkg -i)"
command -v dpkg >/dev/null || fail "not a Debian system"
dpkg-query -W -f='${Status}' vqprobe 2>/dev/null | grep -q 'installed' &&
  fail "vqprobe is already installed here; purge it first (dpkg -P vqprobe)"
# A vqprobe system user left by an earlier purge is expected (purge keeps it) and reused.
if getent passwd vqprobe >/dev/null; then
  (($(id -u vqprobe) < 1000)) || fail "a non-system vqprobe user exists; remove it first"
fi
absent /etc/vqprobe
absent /var/lib/vqprobe

bash cross/install-tools.sh >/dev/null
# the default config is valid TOML with every documented table (the agent's parser is in src/)
python3 - packaging/config.toml <<'PY' || fail "packaging/config.toml: see above"
import sys, tomllib
c = tomllib.load(open(sys.argv[1], "rb"))
want = {"stats_interval", "mqtt", "spool", "limits"}
assert want <= c.keys(), f"missing top-level keys {want - c.keys()}"
assert {"url", "client_id", "username", "ca_file", "client_cert", "client_key", "topic_prefix", "keepalive", "connect_timeout", "backoff_max"} <= c["mqtt"].keys()
assert {"dir", "max_bytes"} <= c["spool"].keys() and c["spool"]["dir"].startswith("/var/lib/vqprobe/")
assert {"max_streams", "max_pixels", "queue_packets"} <= c["limits"].keys()
assert "probe_id" not in c and "streams" not in c, "the default config must not name a probe or streams"
PY
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
commit=$(git rev-parse HEAD)

# ---------------------------------------------------------------- build the packages
declare -A DEB_ARCH=([x86_64-unknown-linux-musl]=amd64 [aarch64-unknown-linux-musl]=arm64)
rm -rf "$DEBS" && mkdir -p "$DEBS"
for t in x86_64-unknown-linux-musl aarch64-unknown-linux-musl; do
  ok=$TD/cross-proof/$t/build.ok bin=$TD/$t/dist/vqprobe
  if [[ -f $ok && -x $bin && $(sed -n 's/^sha256 //p' "$ok") == "$(sha256sum "$bin" | cut -d' ' -f1)" &&
        ( ${VQPROBE_REUSE_BUILD:-0} == 1 || $(sed -n 's/^commit //p' "$ok") == "$commit" ) ]]; then
    log "using $bin from cross/build-static.sh"
  else
    bash cross/build-static.sh "$t"
  fi
  cargo deb --no-build --no-strip --locked --profile dist --target "$t" --output "$DEBS/" >"$DEBS/cargo-deb.$t.log" 2>&1 ||
    { cat "$DEBS/cargo-deb.$t.log" >&2; fail "cargo deb --target $t failed"; }
  deb=$DEBS/vqprobe_${version}-1_${DEB_ARCH[$t]}.deb
  [[ -f $deb ]] || fail "expected $deb; cargo-deb wrote: $(ls "$DEBS")"
  [[ $(dpkg-deb -f "$deb" Architecture) == "${DEB_ARCH[$t]}" ]] || fail "$deb: wrong Architecture"
  [[ $(dpkg-deb -f "$deb" Depends) == "adduser | passwd" ]] || fail "$deb: Depends is '$(dpkg-deb -f "$deb" Depends)'"
  dpkg-deb -c "$deb" | awk '{print $1, $2, $6}' | sed 's#^\(.\{10\}\) [^ ]* \./#\1 /#' | sort -k2 >"$DEBS/contents.$t.txt"
  for want in "-rwxr-xr-x /usr/bin/vqprobe" "-rw-r----- /etc/vqprobe/config.toml" \
              "-rw-r--r-- /usr/lib/systemd/system/vqprobe.service" \
              "-rw-r--r-- /usr/share/doc/vqprobe/README.md"; do
    grep -qxF -- "$want" "$DEBS/contents.$t.txt" || fail "$deb lacks '$want'; it has:$(printf '\n  %s' "$(cat "$DEBS/contents.$t.txt")")"
  done
  grep -q 'multi-user.target.wants' "$DEBS/contents.$t.txt" && fail "$deb enables the unit at install"
  dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles | grep -qx /etc/vqprobe/config.toml ||
    fail "$deb: /etc/vqprobe/config.toml is not a conffile"
  # the packaged binary is the checked one
  tmp=$(mktemp -d)
  dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$tmp" ./usr/bin/vqprobe
  cmp -s "$tmp/usr/bin/vqprobe" "$bin" || fail "$deb: /usr/bin/vqprobe differs from $bin"
  rm -rf "$tmp"
  log "built $(basename "$deb") ($(stat -c %s "$deb") bytes)"
done
DEB=$DEBS/vqprobe_${version}-1_amd64.deb

# ---------------------------------------------------------------- install
cleanup() {
  local rc=$?
  if ((rc != 0)) && dpkg-query -W vqprobe >/dev/null 2>&1; then
    echo "install-test: purging vqprobe after the failure" >&2
    dpkg -P vqprobe >&2 || true
  fi
}
trap cleanup EXIT

dpkg -i "$DEB"
log "dpkg -i done"
[[ $(dpkg-query -W -f='${Status}' vqprobe) == "install ok installed" ]] || fail "not installed"
expect_stat /usr/bin/vqprobe 755 root:root
expect_stat /usr/lib/systemd/system/vqprobe.service 644 root:root
expect_stat /etc/vqprobe 755 root:root
expect_stat /etc/vqprobe/config.toml 640 root:vqprobe
expect_stat /var/lib/vqprobe 750 vqprobe:vqprobe
cmp -s packaging/vqprobe.service /usr/lib/systemd/system/vqprobe.service || fail "installed unit differs"
cmp -s packaging/config.toml /etc/vqprobe/config.toml || fail "installed config differs"
dpkg-query -W -f='${Conffiles}\n' vqprobe | grep -q '^ /etc/vqprobe/config.toml ' || fail "config.toml not a conffile"
dpkg-statoverride --list /etc/vqprobe/config.toml | grep -Eqx 'root vqprobe 0?640 /etc/vqprobe/config.toml' ||
  fail "no statoverride root vqprobe 0640 for the config"
built=$(sed -n 's/^commit //p' "$TD/cross-proof/x86_64-unknown-linux-musl/build.ok")
got=$(/usr/bin/vqprobe --version)
[[ $got == "vqprobe $version (commit ${built:0:12}, x86_64-unknown-linux-musl)" ]] || fail "--version: $got"

IFS=: read -r _ _ uid gid _ home shell < <(getent passwd vqprobe)
((uid < 1000)) || fail "vqprobe uid $uid is not a system uid"
[[ $(getent group vqprobe | cut -d: -f3) == "$gid" ]] || fail "vqprobe's primary group is not vqprobe"
[[ $home == /var/lib/vqprobe ]] || fail "vqprobe home is $home"
[[ $shell == /usr/sbin/nologin ]] || fail "vqprobe shell is $shell"
[[ $(id -Gn vqprobe) == vqprobe ]] || fail "vqprobe is in groups: $(id -Gn vqprobe)"
# 0640 root:vqprobe: the service user reads the config, other users do not
runuser -u vqprobe -- cat /etc/vqprobe/config.toml >/dev/null || fail "vqprobe cannot read its config"
runuser -u nobody -- cat /etc/vqprobe/config.toml >/dev/null 2>&1 && fail "nobody can read the config"
runuser -u vqprobe -- touch /var/lib/vqprobe/.write-test || fail "vqprobe cannot write /var/lib/vqprobe"
rm -f /var/lib/vqprobe/.write-test
[[ ! -e /etc/systemd/system/multi-user.target.wants/vqprobe.service ]] || fail "the unit was enabled at install"

# The installed unit, with /usr/bin/vqprobe present (verify checks the ExecStart binary)
verify_log=$DEBS/systemd-analyze-verify.log
systemd-analyze verify /usr/lib/systemd/system/vqprobe.service >"$verify_log" 2>&1 ||
  { cat "$verify_log" >&2; fail "systemd-analyze verify failed"; }
# verify prints warnings without failing: any line about our unit is a failure too
if grep -i 'vqprobe' "$verify_log"; then fail "systemd-analyze verify warned about the unit"; fi
unit=/usr/lib/systemd/system/vqprobe.service
for line in Type=notify "ExecStart=/usr/bin/vqprobe run --config /etc/vqprobe/config.toml" \
            "ExecReload=/bin/kill -HUP \$MAINPID" WatchdogSec=30s Restart=on-failure User=vqprobe \
            ProtectSystem=strict ProtectHome=yes NoNewPrivileges=yes PrivateTmp=yes \
            CapabilityBoundingSet= MemoryMax=512M StateDirectory=vqprobe \
            StartLimitIntervalSec=0 RestartSec=10s; do
  grep -qxF -- "$line" "$unit" || fail "the unit lacks the line '$line'"
done
if systemd-analyze security --help 2>/dev/null | grep -q -- '--offline'; then
  systemd-analyze security --offline=yes --no-pager /usr/lib/systemd/system/vqprobe.service \
    >"$DEBS/systemd-analyze-security.txt" 2>&1 || true
  log "systemd-analyze security: $(grep -i 'overall exposure' "$DEBS/systemd-analyze-security.txt" || echo 'no score (see log)')"
fi
log "installed package checked"

# ---------------------------------------------------------------- remove: config and user kept
echo "# edited by the install test" >>/etc/vqprobe/config.toml
edited=$(sha256sum /etc/vqprobe/config.toml)
dpkg -r vqprobe
[[ $(dpkg-query -W -f='${Status}' vqprobe) == "deinstall ok config-files" ]] || fail "state after dpkg -r: $(dpkg-query -W -f='${Status}' vqprobe)"
absent /usr/bin/vqprobe
absent /usr/lib/systemd/system/vqprobe.service
[[ $(sha256sum /etc/vqprobe/config.toml) == "$edited" ]] || fail "dpkg -r changed the edited config"
expect_stat /etc/vqprobe/config.toml 640 root:vqprobe
getent passwd vqprobe >/dev/null || fail "dpkg -r removed the vqprobe user"
[[ -d /var/lib/vqprobe ]] || fail "dpkg -r removed /var/lib/vqprobe (the spool)"
log "dpkg -r kept the config, the user and the spool"

# reinstall over the kept config: the admin's edit survives without a prompt
dpkg -i "$DEB" </dev/null
[[ $(sha256sum /etc/vqprobe/config.toml) == "$edited" ]] || fail "reinstall replaced the edited config"
expect_stat /etc/vqprobe/config.toml 640 root:vqprobe
dpkg -r vqprobe
log "reinstall kept the edited config"

# ---------------------------------------------------------------- purge: everything gone but the user
# An admin-added secret (as docs/mqtt.md suggests): dpkg does not know it, so purge keeps it,
# and it must keep a valid owner group (the vqprobe group is not deleted, its gid not reused).
install -m 0640 -o root -g vqprobe /dev/null /etc/vqprobe/mqtt.password
dpkg -P vqprobe
dpkg-query -W vqprobe >/dev/null 2>&1 && fail "dpkg still knows vqprobe after dpkg -P"
absent /etc/vqprobe/config.toml
absent /var/lib/vqprobe
absent /usr/bin/vqprobe
getent passwd vqprobe >/dev/null || fail "dpkg -P removed the vqprobe user (policy: system users are kept)"
getent group vqprobe >/dev/null || fail "dpkg -P removed the vqprobe group"
expect_stat /etc/vqprobe/mqtt.password 640 root:vqprobe
dpkg-statoverride --list /etc/vqprobe/config.toml >/dev/null && fail "dpkg -P left the statoverride"
rm -f /etc/vqprobe/mqtt.password && rmdir /etc/vqprobe
log "PASS: dpkg -P removed config, spool and statoverride, kept the system user and group and the admin's file (still root:vqprobe)"
