#!/usr/bin/env bash
# The systemd units this tree installs, checked by systemd itself (docs/deployment.md, "The
# systemd units"): `cmake --install --component runtime` into a temp prefix writes them for that
# prefix, so their ExecStart and ExecReload name programs that exist, and then for each unit
#   - `systemd-analyze verify` (the template also as the instance bidmesh@a.service) must exit 0
#     and print nothing about our units: systemd only warns about a misspelt directive or a bad
#     value and still exits 0, so any line naming a unit of ours fails the test;
#   - the same on a copy with one directive misspelt must warn, so this check cannot pass
#     vacuously on a systemd-analyze that stays silent;
#   - `systemd-analyze security --offline=true` must rate its exposure at most --max-exposure.
# Usage: verify_units.sh --build-dir DIR [--cmake CMAKE] [--max-exposure N]
# Exit codes: 0 passed, 1 failed, 77 skipped (no systemd-analyze: tools/setup installs systemd).
set -euo pipefail

BUILD_DIR=""
CMAKE=cmake
MAX_EXPOSURE=2.0
while (($#)); do
  case "$1" in
    --build-dir) BUILD_DIR="${2:?}"; shift 2 ;;
    --cmake) CMAKE="${2:?}"; shift 2 ;;
    --max-exposure) MAX_EXPOSURE="${2:?}"; shift 2 ;;
    *) echo "verify_units.sh: unknown argument: $1" >&2; exit 1 ;;
  esac
done
[ -n "$BUILD_DIR" ] || { echo "verify_units.sh: --build-dir is required" >&2; exit 1; }

ANALYZE="$(command -v systemd-analyze || true)"
if [ -z "$ANALYZE" ]; then
  echo "SKIP: no systemd-analyze (Debian package systemd; tools/setup installs it)"
  exit 77
fi

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

# Bounded: an install copies eight programs; verify and security read files only.
if ! timeout 120 "$CMAKE" --install "$BUILD_DIR" --prefix "$TMP/prefix" --component runtime >"$TMP/install.log" 2>&1; then
  cat "$TMP/install.log"
  fail "cmake --install $BUILD_DIR --component runtime failed"
  exit 1
fi
UNIT_DIR="$TMP/prefix/lib/systemd/system"
mapfile -t units < <(find "$UNIT_DIR" -maxdepth 1 -name '*.service' -printf '%f\n' | sort)
for expected in bidmesh-supervisor.service bidmesh@.service; do
  [ -f "$UNIT_DIR/$expected" ] || fail "cmake --install wrote no lib/systemd/system/$expected"
done
echo "units: ${units[*]}"

# Runs systemd-analyze verify on $1 (a unit file's path, or an instance's path beside its
# template), in a folder of its own so that its search path holds only our units; prints the
# lines that name one of them.
verify_lines() {
  local out rc=0
  out="$(cd "$TMP" && timeout 60 "$ANALYZE" verify "$1" 2>&1)" || rc=$?
  [ "$rc" -eq 0 ] || echo "exit $rc"
  [ -n "$out" ] || return 0
  grep -E 'bidmesh|/prefix/' <<<"$out" || true
  # Anything else (a unit of the machine's own) is shown, not judged.
  grep -Ev 'bidmesh|/prefix/' <<<"$out" | sed 's/^/  (not ours) /' >&2 || true
}

for unit in "${units[@]}"; do
  targets=("$UNIT_DIR/$unit")
  [[ "$unit" == *@.service ]] && targets+=("$UNIT_DIR/${unit%@.service}@a.service")
  for target in "${targets[@]}"; do
    lines="$(verify_lines "$target")"
    if [ -n "$lines" ]; then
      fail "systemd-analyze verify $(basename "$target"):"$'\n'"$lines"
    else
      echo "ok: systemd-analyze verify $(basename "$target")"
    fi
  done

  # The same unit with its ProtectSystem= misspelt, alone in a folder: systemd must say so.
  bad="$TMP/misspelt/$unit"
  mkdir -p "$(dirname "$bad")"
  sed 's/^ProtectSystem=/ProtectSytem=/' "$UNIT_DIR/$unit" >"$bad"
  if cmp -s "$bad" "$UNIT_DIR/$unit"; then
    fail "$unit has no ProtectSystem= line"
  elif [ -z "$(verify_lines "$bad" 2>/dev/null | grep ProtectSytem)" ]; then
    fail "systemd-analyze verify printed nothing about a misspelt directive (ProtectSytem=) in $unit"
  else
    echo "ok: a misspelt directive in $unit is reported"
  fi

  if "$ANALYZE" security --help 2>/dev/null | grep -q -- '--offline'; then
    report="$(cd "$TMP" && timeout 60 "$ANALYZE" security --offline=true "$UNIT_DIR/$unit" 2>&1)" || true
    level="$(sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p' <<<"$report")"
    if [ -z "$level" ]; then
      echo "$report"
      fail "systemd-analyze security gave no exposure level for $unit"
    elif awk -v l="$level" -v m="$MAX_EXPOSURE" 'BEGIN { exit !(l > m) }'; then
      grep '✗' <<<"$report" || true
      fail "$unit: exposure $level is above $MAX_EXPOSURE (systemd-analyze security; the ✗ lines above)"
    else
      echo "ok: $unit exposure $level (at most $MAX_EXPOSURE)"
    fi
  else
    echo "note: this systemd-analyze has no security --offline; exposure not checked"
  fi
done

if ((failures)); then
  echo "$failures check(s) failed"
  exit 1
fi
echo "all units verified"
