#!/usr/bin/env bash
# contrib.promtool: contrib/prometheus/pgdrill-alerts.yml passes "promtool
# check rules", its unit tests (pgdrill-alerts.test.yml) pass "promtool test
# rules", and every pgdrill_* metric it uses is one the built binary exposes
# ("status --prometheus" on a fresh repository prints every metric's HELP
# line, samples or not). Before trusting a pass, promtool must reject a rule
# file with a broken expression, and the unit tests must fail against rules
# whose backup-age threshold was moved.
#
# Usage: check_prometheus_rules.sh PGDRILL_BINARY SOURCE_DIR
set -uo pipefail
bin=${1:?usage: check_prometheus_rules.sh PGDRILL_BINARY SOURCE_DIR}
src=${2:?usage: check_prometheus_rules.sh PGDRILL_BINARY SOURCE_DIR}
# Absolute paths: a unit's ExecStart= takes no relative one.
bin=$(realpath "$bin")
src=$(realpath "$src")
prom=$src/contrib/prometheus
fail=0

if ! command -v promtool >/dev/null 2>&1; then
    echo "FAIL: promtool not found: apt-get install prometheus (scripts/lib.sh installs it)"
    exit 1
fi
echo "promtool: $(promtool --version 2>&1 | head -n 1)"

tmp=$(mktemp -d /tmp/pgdrill-rules.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

# 1. Negative controls.
sed 's/expr: pgdrill_last_drill_success == 0/expr: pgdrill_last_drill_success == == 0/' \
    "$prom/pgdrill-alerts.yml" >"$tmp/broken.yml"
if cmp -s "$prom/pgdrill-alerts.yml" "$tmp/broken.yml"; then
    echo "FAIL: could not break a copy of the rules (the expression changed?)"
    fail=1
elif promtool check rules "$tmp/broken.yml" >/dev/null 2>&1; then
    echo "FAIL: promtool check rules accepted a broken expression: the check proves nothing"
    fail=1
else
    echo "ok: promtool check rules rejects a broken expression"
fi
mkdir "$tmp/moved"
sed 's/> 26 \* 3600/> 28 * 3600/' "$prom/pgdrill-alerts.yml" >"$tmp/moved/pgdrill-alerts.yml"
cp "$prom/pgdrill-alerts.test.yml" "$tmp/moved/"
if cmp -s "$prom/pgdrill-alerts.yml" "$tmp/moved/pgdrill-alerts.yml"; then
    echo "FAIL: could not move the backup-age threshold in a copy of the rules"
    fail=1
elif (cd "$tmp/moved" && promtool test rules pgdrill-alerts.test.yml >/dev/null 2>&1); then
    echo "FAIL: the unit tests pass against a moved threshold: they prove nothing"
    fail=1
else
    echo "ok: the unit tests fail when the backup-age threshold moves"
fi

# 2. The real rules and their tests.
if promtool check rules "$prom/pgdrill-alerts.yml"; then
    echo "ok: promtool check rules"
else
    echo "FAIL: promtool check rules contrib/prometheus/pgdrill-alerts.yml"
    fail=1
fi
if (cd "$prom" && promtool test rules pgdrill-alerts.test.yml); then
    echo "ok: promtool test rules"
else
    echo "FAIL: promtool test rules contrib/prometheus/pgdrill-alerts.test.yml"
    fail=1
fi

# 3. Metric names against the binary.
printf '[main]\nrepo = %s/repo\nkey-file = %s/key\npg-host = %s\npg-port = 1\n' \
    "$tmp" "$tmp" "$tmp" >"$tmp/pgdrill.conf"
chmod 0600 "$tmp/pgdrill.conf"
if ! "$bin" --config "$tmp/pgdrill.conf" init --generate-key-file "$tmp/key" >/dev/null 2>&1 ||
    ! "$bin" --config "$tmp/pgdrill.conf" status --prometheus >"$tmp/status.prom" 2>"$tmp/status.err"; then
    echo "FAIL: pgdrill status --prometheus on a fresh repository failed:"
    cat "$tmp/status.err"
    fail=1
fi
exposed=$(awk '$1 == "#" && $2 == "HELP" {print $3}' "$tmp/status.prom" | sort -u)
used=$(grep -v '^\s*#' "$prom/pgdrill-alerts.yml" | grep -o 'pgdrill_[a-z_]*' | sort -u)
if [[ -z $exposed ]]; then
    echo "FAIL: status --prometheus printed no metric"
    fail=1
fi
for m in $used; do
    if ! grep -qx "$m" <<<"$exposed"; then
        echo "FAIL: the rules use $m, which pgdrill status --prometheus does not expose"
        fail=1
    fi
done
[[ -n $exposed ]] && echo "ok: the rules use $(wc -w <<<"$used") of the $(wc -w <<<"$exposed") metrics pgdrill exposes, all real"

if [[ $fail -ne 0 ]]; then
    echo "contrib.promtool: FAILED"
    exit 1
fi
echo "contrib.promtool: all checks passed"
