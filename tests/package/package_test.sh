#!/bin/bash
# The Debian package, installed into a fresh Debian 12 root: tools/package builds the .deb; a
# debootstrap minbase root (cached, see below) gets it with apt-get, which fetches the runtime
# dependencies from the package's Depends; then, in a chroot (in_root.sh, one step per call):
#   install   the user, the conffile, the unit enabled, the data dir bidmesh:bidmesh 0750
#   run       the supervisor as bidmesh with /etc/bidmesh/mesh.toml, a bid with /usr/bin/bidmesh,
#             bidmesh-ctl status and shutdown (in a network namespace of its own: the installed
#             config's fixed loopback ports meet no other test)
#   remove, purge-keep, reinstall-purge-data, install-purge-empty
#             remove keeps data, user and config; purge keeps data that is there unless
#             BIDMESH_PURGE_DATA=1; nothing of dpkg -L is left (docs/packaging.md)
#
# Each step runs in its own mount and PID namespace (unshare), so /proc and the other mounts
# go when the step ends, however it ends, and so does every process it started.
#
# Cache: the finished root (debootstrap, sources, apt lists) is a tar in $BIDMESH_PACKAGE_CACHE
# (default /var/cache/bidmesh-test: outside the checkout, so CI's clean checkouts on this machine
# reuse it), with debootstrap's and apt's downloaded .debs. Cold: about 5 min more.
#
# Usage: package_test.sh [--work DIR] [--package-build-dir DIR]
#   --work               scratch folder (default build-pkg/package-test); the root is made anew there
#   --package-build-dir  package this built tree as it is (tools/package --build-dir DIR
#                        --no-build); without it, tools/package builds build-pkg/
# Exit: 0 passed, 1 a check failed, 77 skipped (not root), 111 system failure.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
WORK="$ROOT/build-pkg/package-test"
PACKAGE_ARGS=()
while (($#)); do
  case "$1" in
    --work) WORK="${2:?}"; shift 2 ;;
    --package-build-dir) PACKAGE_ARGS=(--build-dir "${2:?}" --no-build); shift 2 ;;
    *) echo "package_test.sh: unknown argument: $1" >&2; exit 100 ;;
  esac
done
CACHE="${BIDMESH_PACKAGE_CACHE:-/var/cache/bidmesh-test}"
MIRROR="${BIDMESH_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SUITE=bookworm
IMAGE="$CACHE/$SUITE-minbase-root.tar"
R="$WORK/root"

say() { echo "package_test: $*"; }
if [ "$(id -u)" -ne 0 ]; then
  say "SKIPPED: needs root (debootstrap, chroot, namespaces)"
  exit 77
fi
for tool in debootstrap unshare chroot ip flock; do
  command -v "$tool" >/dev/null || { say "$tool is missing (tools/setup installs it)"; exit 111; }
done

t0=$SECONDS
phase_start=$SECONDS
phase() { say "$1: $((SECONDS - phase_start)) s"; phase_start=$SECONDS; }

# Runs a command in a fresh mount and PID namespace (and with --net, a network namespace with
# only a loopback, up): proc mounted in the root, the apt .deb cache bound to the root's, then
# the command; everything mounted or started there ends with it.
in_ns() {
  local net=()
  if [ "$1" = --net ]; then net=(--net); shift; fi
  timeout --kill-after=10 900 unshare --mount --propagation private --pid --fork --kill-child "${net[@]}" -- \
    /bin/bash -euc '
      R="$1"; CACHE="$2"; net="$3"; shift 3
      mount -t proc proc "$R/proc"
      mount --bind "$CACHE/apt-archives" "$R/var/cache/apt/archives"
      if [ -n "$net" ]; then ip link set lo up; fi
      exec "$@"' _ "$R" "$CACHE" "${net[*]}" "$@"
}

# After a step failed or was killed: no mount of ours may stay (the namespace should have taken
# them; this is the backstop).
cleanup() {
  local m
  for m in $(awk -v r="$R/" 'index($2, r) == 1 { print $2 }' /proc/self/mounts | sort -r); do
    umount -l "$m" 2>/dev/null || true
  done
}
trap cleanup EXIT

# 1. The package.
mkdir -p "$WORK"
deb="$("$ROOT/tools/package" "${PACKAGE_ARGS[@]}" --out "$WORK" | tail -n 1)"
[ -f "$deb" ] || { say "tools/package made no .deb"; exit 1; }
phase "tools/package ($(basename "$deb"))"

# 2. The pristine root, made once (under a lock: two runs may start together).
mkdir -p "$CACHE/debootstrap-debs" "$CACHE/apt-archives/partial"
exec 8>"$CACHE/lock"
flock -w 1200 8 || { say "the cache lock $CACHE/lock stayed taken"; exit 111; }
if [ ! -f "$IMAGE" ]; then
  say "no cached root in $IMAGE: debootstrap --variant=minbase $SUITE (a few minutes, once)"
  fresh="$CACHE/root.new"
  rm -rf "$fresh"
  timeout 1500 debootstrap --variant=minbase --cache-dir="$CACHE/debootstrap-debs" \
    "$SUITE" "$fresh" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 ||
    { tail -n 20 "$CACHE/debootstrap.log"; say "debootstrap failed (log: $CACHE/debootstrap.log)"; exit 111; }
  printf 'deb %s %s main\ndeb %s %s-updates main\ndeb http://deb.debian.org/debian-security %s-security main\n' \
    "$MIRROR" "$SUITE" "$MIRROR" "$SUITE" "$SUITE" >"$fresh/etc/apt/sources.list"
  rm -f "$fresh/var/cache/apt/archives/"*.deb
  tar -C "$fresh" --numeric-owner -cf "$IMAGE.new" .
  mv "$IMAGE.new" "$IMAGE"
  rm -rf "$fresh"
  phase "debootstrap (cold)"
fi
flock -u 8

cleanup
rm -rf "$R"
mkdir -p "$R"
tar -C "$R" --numeric-owner -xf "$IMAGE"
cp /etc/resolv.conf "$R/etc/resolv.conf"
cp "$deb" "$R/tmp/bidmesh.deb"
install -m 0755 "$HERE/in_root.sh" "$R/tmp/in_root.sh"
phase "fresh root from the cache"

# 3. The steps (apt-get may fetch, so only run gets a network namespace of its own).
step() {
  local net=()
  if [ "$1" = --net ]; then net=(--net); shift; fi
  say "== $1"
  if ! in_ns "${net[@]}" chroot "$R" /bin/bash /tmp/in_root.sh "$1"; then
    say "step $1 FAILED"
    exit 1
  fi
  phase "$1"
}
step install
step --net run
step remove
step purge-keep
step reinstall-purge-data
step install-purge-empty

rm -rf "$R"
say "PASSED in $((SECONDS - t0)) s"
