#!/bin/bash
# The steps of the package test that run inside the Debian 12 root (chroot), one per call:
#   in_root.sh STEP
# Each step checks what it did and exits non-zero with a line saying what did not hold. Every
# wait is bounded. package_test.sh copies this file to /tmp of the root and calls the steps.
set -euo pipefail
export PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C DEBIAN_FRONTEND=noninteractive

UNIT=bidmesh-supervisor.service
DATA=/var/lib/bidmesh
CONFIG=/etc/bidmesh/mesh.toml
WANTS=/etc/systemd/system/multi-user.target.wants/$UNIT
DEB=/tmp/bidmesh.deb

fail() { echo "FAILED: $*" >&2; exit 1; }
check() { local what="$1"; shift; "$@" || fail "$what"; }
apt_get() { timeout 600 apt-get -y -q -o Dpkg::Use-Pty=0 "$@"; }

# The files of the package, as dpkg listed them at the first install.
LIST=/tmp/bidmesh.list

step_install() {
  apt_get update >/dev/null
  apt_get install --no-install-recommends "$DEB" >/tmp/install.log 2>&1 || { cat /tmp/install.log; fail "apt-get install $DEB"; }
  for dep in libzmq5 liblmdb0; do
    dpkg-query -W -f='${Status}' "$dep" | grep -q "install ok installed" || fail "$dep not installed from Depends"
  done
  dpkg -L bidmesh >"$LIST"
  check_installed
}

# What every install must leave: the user, the conffile, the unit enabled (not running: there is
# no systemd here at all), the data dir.
check_installed() {
  local entry
  entry="$(getent passwd bidmesh)" || fail "no user bidmesh"
  IFS=: read -r _ _ uid gid _ home shell <<<"$entry"
  ((uid < 1000)) || fail "bidmesh has uid $uid, not a system uid"
  [ "$home" = "$DATA" ] || fail "bidmesh's home is $home"
  [ "$shell" = /usr/sbin/nologin ] || fail "bidmesh's shell is $shell"
  [ "$(getent group bidmesh | cut -d: -f3)" = "$gid" ] || fail "bidmesh's group is not bidmesh"
  dpkg-query -W -f='${Conffiles}\n' bidmesh | grep -q "^ $CONFIG " || fail "$CONFIG is not a conffile"
  grep -q '^data_dir = "/var/lib/bidmesh"' "$CONFIG" || fail "$CONFIG: data_dir"
  [ -L "$WANTS" ] || fail "$WANTS missing: the unit is not enabled"
  local unit
  unit="$(readlink -f "$WANTS")"
  [ -f "$unit" ] || fail "$WANTS points to $(readlink "$WANTS"), which is not there"
  grep -q '^ExecStart=/usr/bin/bidmesh-supervisor ' "$unit" || fail "$unit: ExecStart is not /usr/bin/bidmesh-supervisor"
  [ "$(stat -c '%U:%G %a' "$DATA")" = "bidmesh:bidmesh 750" ] || fail "$DATA is $(stat -c '%U:%G %a' "$DATA")"
  for p in bidmesh bidmesh-ctl bidmesh-supervisor bidmesh-bid-node bidmesh-router; do
    [ -x "/usr/bin/$p" ] || fail "/usr/bin/$p missing"
  done
  echo "installed: user bidmesh (uid $uid), $CONFIG a conffile, $UNIT enabled, $DATA bidmesh:bidmesh 0750"
}

# Runs the supervisor as bidmesh with the installed config, as the unit would (umask 0027, no
# login environment), places a bid, stops it. Needs /proc and a loopback (package_test.sh gives
# it a network namespace of its own, so the mesh's fixed ports meet no other test).
step_run() {
  local out=/tmp/supervisor.out err=/tmp/supervisor.err
  (umask 0027 && exec env -i PATH="$PATH" setpriv --reuid=bidmesh --regid=bidmesh --init-groups \
     /usr/bin/bidmesh-supervisor --config "$CONFIG" >"$out" 2>"$err") &
  local pid=$!
  local deadline=$((SECONDS + 30))
  until grep -q '^bidmesh: mesh ready' "$out" 2>/dev/null; do
    if ! kill -0 "$pid" 2>/dev/null || ((SECONDS >= deadline)); then
      cat "$out" "$err" >&2
      fail "the supervisor did not say 'mesh ready' within 30 s"
    fi
    sleep 0.1
  done
  grep -q "^Uid:[[:space:]]*$(id -u bidmesh)[[:space:]]" "/proc/$pid/status" || fail "the supervisor does not run as bidmesh"
  echo "supervisor: $(cat "$out")"

  timeout 20 bidmesh open pkg-1 --start 100 --increment 10 || fail "bidmesh open"
  timeout 20 bidmesh bid pkg-1 alice 150 || fail "bidmesh bid"
  local got
  got="$(timeout 20 bidmesh get pkg-1)" || fail "bidmesh get"
  echo "$got"
  grep -q 'max 150 by alice' <<<"$got" || fail "the bid is not the item's max"
  # The operator's view, as the bidmesh user (the control socket takes its own uid and root).
  timeout 20 setpriv --reuid=bidmesh --regid=bidmesh --init-groups \
    bidmesh-ctl --config "$CONFIG" status >/tmp/status.txt || { cat /tmp/status.txt; fail "bidmesh-ctl status"; }
  [ "$(grep -c running /tmp/status.txt)" = 3 ] || { cat /tmp/status.txt; fail "not 3 nodes running"; }
  [ -z "$(find "$DATA" ! -user bidmesh -print -quit)" ] || fail "files in $DATA not owned by bidmesh: $(find "$DATA" ! -user bidmesh)"

  timeout 30 bidmesh-ctl --config "$CONFIG" shutdown --wait || fail "bidmesh-ctl shutdown --wait"
  local rc=0
  timeout 30 tail --pid="$pid" -f /dev/null || fail "the supervisor did not exit within 30 s of shutdown"
  wait "$pid" || rc=$?
  ((rc == 0)) || { cat "$err" >&2; fail "the supervisor exited $rc"; }
  echo "stopped: supervisor exited 0"
}

step_remove() {
  apt_get remove bidmesh >/tmp/remove.log 2>&1 || { cat /tmp/remove.log; fail "apt-get remove"; }
  dpkg-query -W -f='${Status}' bidmesh | grep -q "deinstall ok config-files" || fail "not in config-files state after remove"
  [ ! -e /usr/bin/bidmesh-supervisor ] || fail "remove left /usr/bin/bidmesh-supervisor"
  [ -f "$CONFIG" ] || fail "remove deleted the conffile"
  [ -n "$(find "$DATA" -type f -print -quit)" ] || fail "remove deleted the data"
  getent passwd bidmesh >/dev/null || fail "remove deleted the user"
  [ "$(readlink "/etc/systemd/system/$UNIT")" = /dev/null ] || fail "remove did not mask $UNIT"
  echo "removed: binaries gone, unit masked; config, data ($(find "$DATA" -type f | wc -l) files) and user kept"
}

# purge without BIDMESH_PURGE_DATA: the config and the unit's links go, the data and user stay.
step_purge_keep() {
  apt_get purge bidmesh >/tmp/purge.log 2>&1 || { cat /tmp/purge.log; fail "apt-get purge"; }
  grep -q "bidmesh: purge kept $DATA" /tmp/purge.log || { cat /tmp/purge.log; fail "purge did not say it kept $DATA"; }
  check_gone_but_data
  [ -n "$(find "$DATA" -type f -print -quit)" ] || fail "purge deleted the data without being asked"
  getent passwd bidmesh >/dev/null || fail "purge deleted the user that owns the kept data"
  echo "purged: config and unit links gone; data and user kept, as the message says"
}

# Reinstall over the kept data (same uid, data dir mode reset), then purge with the data.
step_reinstall_purge_data() {
  local uid
  uid="$(id -u bidmesh)"
  apt_get install --no-install-recommends "$DEB" >/tmp/install2.log 2>&1 || { cat /tmp/install2.log; fail "reinstall"; }
  [ "$(id -u bidmesh)" = "$uid" ] || fail "reinstall changed bidmesh's uid"
  check_installed
  BIDMESH_PURGE_DATA=1 apt_get purge bidmesh >/tmp/purge2.log 2>&1 || { cat /tmp/purge2.log; fail "purge with BIDMESH_PURGE_DATA=1"; }
  check_gone_but_data
  check_all_gone
  echo "purged with BIDMESH_PURGE_DATA=1: data, user and group gone, nothing of dpkg -L left"
}

# A mesh never started leaves an empty data dir: plain purge removes it, and the user.
step_install_purge_empty() {
  apt_get install --no-install-recommends "$DEB" >/tmp/install3.log 2>&1 || { cat /tmp/install3.log; fail "install"; }
  check_installed
  apt_get purge bidmesh >/tmp/purge3.log 2>&1 || { cat /tmp/purge3.log; fail "purge"; }
  check_gone_but_data
  check_all_gone
  echo "install then purge of an unused mesh: nothing left"
}

check_gone_but_data() {
  local status
  status="$(dpkg-query -W -f='${Status}' bidmesh 2>/dev/null || true)"
  [ -z "$status" ] || [[ "$status" == *" not-installed" ]] || fail "dpkg still has bidmesh: $status"
  [ ! -e /etc/bidmesh ] || fail "/etc/bidmesh left: $(ls -A /etc/bidmesh)"
  local left
  left="$(find /etc/systemd /var/lib/systemd -name "*bidmesh*" 2>/dev/null)"
  [ -z "$left" ] || fail "unit links or helper state left: $left"
  left="$(ls /var/lib/dpkg/info/bidmesh.* 2>/dev/null || true)"
  [ -z "$left" ] || fail "dpkg info left: $left"
  # Every file and link the package listed is gone, and each folder of its own (a name with
  # bidmesh in it); shared folders (/usr/bin, /usr/lib/systemd/system...) stay, of course.
  while IFS= read -r p; do
    [ -n "$p" ] && [ "$p" != /. ] || continue
    if [ -d "$p" ] && [ ! -L "$p" ]; then
      [[ "$p" != *bidmesh* ]] || fail "left behind: folder $p"
    elif [ -e "$p" ] || [ -L "$p" ]; then
      fail "left behind: $p"
    fi
  done <"$LIST"
}

check_all_gone() {
  [ ! -e "$DATA" ] || fail "$DATA left"
  ! getent passwd bidmesh >/dev/null || fail "user bidmesh left"
  ! getent group bidmesh >/dev/null || fail "group bidmesh left"
}

case "${1:-}" in
  install) step_install ;;
  run) step_run ;;
  remove) step_remove ;;
  purge-keep) step_purge_keep ;;
  reinstall-purge-data) step_reinstall_purge_data ;;
  install-purge-empty) step_install_purge_empty ;;
  *) echo "usage: in_root.sh install|run|remove|purge-keep|reinstall-purge-data|install-purge-empty" >&2; exit 100 ;;
esac
