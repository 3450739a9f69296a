#!/usr/bin/env bash
# contrib.systemd: the units in contrib/systemd pass "systemd-analyze verify"
# with no message at all (it only warns, exit 0, about an unknown or
# misspelt directive), their references resolve (each timer's service, each
# OnFailure= template), and "systemd-analyze security --offline" keeps each
# unit's exposure under a ceiling, so hardening cannot silently go.
#
# verify checks that ExecStart= programs exist, so the units are checked in a
# temporary copy in which /usr/bin/pgdrill is the built binary and the
# /usr/local/lib/pgdrill scripts are contrib's. No running systemd is needed.
# Before trusting a pass, the checker must fail on three broken copies.
#
# Usage: check_systemd_units.sh PGDRILL_BINARY SOURCE_DIR
set -uo pipefail
bin=${1:?usage: check_systemd_units.sh PGDRILL_BINARY SOURCE_DIR}
src=${2:?usage: check_systemd_units.sh PGDRILL_BINARY SOURCE_DIR}
# Absolute paths: a unit's ExecStart= takes no relative one.
bin=$(realpath "$bin")
src=$(realpath "$src")
units=$src/contrib/systemd
fail=0

if ! command -v systemd-analyze >/dev/null 2>&1; then
    echo "FAIL: systemd-analyze not found: apt-get install systemd (scripts/lib.sh installs it)"
    exit 1
fi
echo "systemd-analyze: $(systemd-analyze --version | head -n 1)"

tmp=$(mktemp -d /tmp/pgdrill-units.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/units" "$tmp/bad"
cp "$units"/*.service "$units"/*.timer "$tmp/units/"
sed -i -e "s#/usr/bin/pgdrill#$bin#g" \
    -e "s#/usr/local/lib/pgdrill/pgdrill-onfailure#$units/pgdrill-onfailure#g" \
    -e "s#/usr/local/lib/pgdrill/pgdrill-textfile#$src/contrib/prometheus/pgdrill-textfile#g" \
    "$tmp/units"/*
if grep -n '/usr/bin/pgdrill\|/usr/local/lib/pgdrill/' "$tmp/units"/*; then
    echo "FAIL: a program path above was not substituted for the test"
    fail=1
fi

# verify_clean FILE...: exit 0 and not one line of output.
verify_clean() {
    local out rc
    out=$(cd "$(dirname "$1")" && systemd-analyze verify "$@" 2>&1)
    rc=$?
    [[ -n $out ]] && printf '%s\n' "$out"
    [[ $rc -eq 0 && -z $out ]]
}

# The checker must catch a misspelt directive, a missing program and a bad
# calendar expression.
sed 's/^ProtectSystem=/ProtectSystm=/' "$tmp/units/pgdrill-backup.service" >"$tmp/bad/misspelt.service"
sed "s#^ExecStart=$bin #ExecStart=$tmp/no-such-pgdrill #" "$tmp/units/pgdrill-drill.service" \
    >"$tmp/bad/missing.service"
sed 's/^OnCalendar=.*/OnCalendar=Sun *-*-* 25:00:00/' "$tmp/units/pgdrill-drill.timer" \
    >"$tmp/bad/badcal.timer"
for bad in misspelt.service missing.service badcal.timer; do
    if verify_clean "$tmp/bad/$bad" >/dev/null 2>&1; then
        echo "FAIL: systemd-analyze verify accepted the broken $bad: the check proves nothing"
        fail=1
    else
        echo "ok: the broken $bad is rejected"
    fi
done

mapfile -t all < <(cd "$tmp/units" && ls ./*.service ./*.timer)
if verify_clean "${all[@]/#./$tmp/units}"; then
    echo "ok: systemd-analyze verify: ${all[*]#./}"
else
    echo "FAIL: systemd-analyze verify on contrib/systemd (messages above)"
    fail=1
fi

# References verify does not follow: a timer's service, OnFailure= templates.
for timer in "$units"/*.timer; do
    svc=$(basename "$timer" .timer).service
    if [[ ! -f $units/$svc ]]; then
        echo "FAIL: $(basename "$timer") starts $svc, which contrib/systemd lacks"
        fail=1
    fi
done
while IFS= read -r line; do
    target=${line#*OnFailure=}
    template=${target%%@*}@.service
    if [[ ! -f $units/$template ]]; then
        echo "FAIL: OnFailure=$target needs $template, which contrib/systemd lacks"
        fail=1
    fi
done < <(grep -h '^OnFailure=' "$units"/*.service)
[[ $fail -eq 0 ]] && echo "ok: every timer's service and OnFailure= template exists"

# Exposure ceilings (0 = fully locked down, 10 = none; --threshold counts
# tenths). The drill needs root's CAP_SYS_ADMIN, CAP_SETUID, ... (see its
# unit), hence its higher one.
declare -A ceiling=([pgdrill-backup.service]=2.0 [pgdrill-metrics.service]=2.0
    [pgdrill-drill.service]=4.0 [pgdrill-failure@.service]=5.0)

# exposure FILE CEILING: prints the level; true when it is at most CEILING.
exposure() {
    local out rc level
    out=$(systemd-analyze security --offline=true --threshold="${2/./}" "$1" 2>&1)
    rc=$?
    level=$(printf '%s\n' "$out" | grep -o 'Overall exposure level for [^:]*: [0-9.]*' |
        awk '{print $NF}')
    echo "${level:-unknown}"
    [[ -n $level ]] || { printf '%s\n' "$out" | tail -n 5 >&2; return 1; }
    [[ $rc -eq 0 ]] && awk -v l="$level" -v c="$2" 'BEGIN { exit !(l <= c) }'
}

for unit in "${!ceiling[@]}"; do
    if level=$(exposure "$tmp/units/$unit" "${ceiling[$unit]}"); then
        echo "ok: $unit: exposure $level (ceiling ${ceiling[$unit]})"
    else
        echo "FAIL: $unit: exposure $level, above its ceiling ${ceiling[$unit]}"
        systemd-analyze security --offline=true "$tmp/units/$unit" 2>&1 | grep '✗' | head -n 30
        fail=1
    fi
done
# ... and the ceiling must bite: the backup unit without its hardening.
sed -e '/^# Hardening/,$d' "$tmp/units/pgdrill-backup.service" >"$tmp/bad/pgdrill-backup.service"
if level=$(exposure "$tmp/bad/pgdrill-backup.service" 2.0); then
    echo "FAIL: the backup unit without hardening passed the exposure ceiling ($level)"
    fail=1
elif [[ $level == unknown ]]; then
    echo "FAIL: no exposure level for the backup unit without hardening"
    fail=1
else
    echo "ok: the backup unit without hardening is over its ceiling ($level)"
fi

if [[ $fail -ne 0 ]]; then
    echo "contrib.systemd: FAILED"
    exit 1
fi
echo "contrib.systemd: all checks passed"
