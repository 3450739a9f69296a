# shellcheck shell=bash
# Shared shell helpers for scripts/test and scripts/demo. Sourced, not run.
#
# pd_install_deps: as root, installs every Debian 12 package pgdrill needs to
# build and test (PostgreSQL 15 without its default cluster and without
# starting any service); as another user, checks them and, when any is
# missing, prints exactly what and the apt-get command, then exits 2.

PD_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Debian's interpreter: it has python3-pytest; a pyenv or venv python3 may not.
PD_PYTHON=${PGDRILL_PYTHON:-/usr/bin/python3}

PD_APT_PACKAGES=(
    build-essential cmake pkg-config clang-format git ca-certificates
    libpq-dev libarchive-dev libcurl4-openssl-dev libssl-dev libzstd-dev
    libcmocka-dev libinih-dev libjansson-dev
    postgresql-15 # includes contrib (amcheck) on Debian 12
    python3 python3-pytest python3-cryptography python3-zstandard python3-prometheus-client
    python3-botocore zstd openssl procps util-linux passwd
    # contrib/ checks: systemd-analyze verify on the units (no running
    # systemd needed), promtool check/test rules on the alert rules
    systemd prometheus
)

# Commands the scripts and tests run, and the package that provides each.
PD_COMMANDS=(
    "cc:build-essential" "make:build-essential" "cmake:cmake" "pkg-config:pkg-config"
    "clang-format:clang-format" "git:git" "openssl:openssl" "pgrep:procps"
    "runuser:util-linux" "useradd:passwd" "/usr/bin/python3:python3"
    "/usr/lib/postgresql/15/bin/initdb:postgresql-15"
    "/usr/lib/postgresql/15/bin/pg_ctl:postgresql-15"
    "/usr/lib/postgresql/15/bin/pgbench:postgresql-15"
    "systemd-analyze:systemd" "promtool:prometheus"
)

pd_section() {
    printf '\n==== %s ====\n' "$*"
}

pd_note() {
    printf '%s: %s\n' "${PD_SCRIPT:-pgdrill}" "$*"
}

pd_die() {
    printf '%s: error: %s\n' "${PD_SCRIPT:-pgdrill}" "$*" >&2
    exit 1
}

# Node.js and npm: many images ship them outside Debian (e.g. NodeSource,
# whose nodejs bundles npm and conflicts with Debian's npm), so Debian's are
# installed only when either command is missing.
pd_node_packages() {
    if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
        echo nodejs npm
    fi
}

pd_missing_packages() {
    local p status missing=()
    for p in "${PD_APT_PACKAGES[@]}" $(pd_node_packages); do
        status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
        [[ $status == "install ok installed" ]] || missing+=("$p")
    done
    echo "${missing[@]}"
}

# Prints "command:package" for each missing command, one per line.
pd_missing_command_list() {
    local entry
    for entry in "${PD_COMMANDS[@]}" "node:nodejs" "npm:npm"; do
        command -v "${entry%%:*}" >/dev/null 2>&1 || echo "$entry"
    done
    # pytest must be importable by the interpreter the tests use.
    "$PD_PYTHON" -c 'import pytest' >/dev/null 2>&1 || echo "pytest for $PD_PYTHON:python3-pytest"
}

pd_missing_commands() {
    local entry out=()
    while IFS= read -r entry; do
        out+=("${entry%%:*} (package ${entry##*:})")
    done < <(pd_missing_command_list)
    local IFS=,
    echo "${out[*]}"
}

# pd_install_deps LOGFILE: apt output goes to LOGFILE.
pd_install_deps() {
    local log=$1
    if [[ $(id -u) -ne 0 ]]; then
        local pkgs cmds
        pkgs=$(pd_missing_packages)
        cmds=$(pd_missing_commands)
        # the packages of missing commands too, once each
        local p apt_pkgs=$pkgs
        for p in $(pd_missing_command_list | sed 's/.*://'); do
            [[ " $apt_pkgs " == *" $p "* ]] || apt_pkgs="${apt_pkgs:+$apt_pkgs }$p"
        done
        if [[ -n $apt_pkgs ]]; then
            {
                echo "${PD_SCRIPT:-pgdrill}: error: not running as root, so nothing can be installed, and some requirements are missing"
                [[ -n $pkgs ]] && echo "  missing Debian packages: $pkgs"
                [[ -n $cmds ]] && echo "  missing commands: ${cmds//,/, }"
                echo "  install them with:"
                echo "    sudo apt-get update && sudo apt-get install -y --no-install-recommends $apt_pkgs"
                echo "  or run this script as root (it installs them itself)"
            } >&2
            exit 2
        fi
        pd_note "not root: every required package is installed, nothing to install"
        return 0
    fi

    if [[ ${PGDRILL_SKIP_INSTALL:-0} == 1 ]]; then
        pd_note "PGDRILL_SKIP_INSTALL=1: not installing packages"
        return 0
    fi

    export DEBIAN_FRONTEND=noninteractive
    # No default cluster from postgresql-common's postinst: the tests and the
    # demo make their own throwaway instances.
    mkdir -p /etc/postgresql-common/createcluster.d
    printf '# written by pgdrill scripts/lib.sh: the tests make their own clusters\ncreate_main_cluster = false\n' \
        >/etc/postgresql-common/createcluster.d/50-pgdrill.conf
    # No service starts during installation (invoke-rc.d asks policy-rc.d).
    local made_policy=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\n# pgdrill: no service starts while packages install\nexit 101\n' \
            >/usr/sbin/policy-rc.d
        chmod 0755 /usr/sbin/policy-rc.d
        made_policy=1
    fi

    local rc=0
    # shellcheck disable=SC2046 # pd_node_packages is zero, one or two words
    {
        apt-get update &&
            apt-get install -y --no-install-recommends \
                -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
                "${PD_APT_PACKAGES[@]}" $(pd_node_packages)
    } >>"$log" 2>&1 || rc=$?
    [[ $made_policy == 1 ]] && rm -f /usr/sbin/policy-rc.d
    if [[ $rc -ne 0 ]]; then
        tail -n 20 "$log" >&2
        pd_die "package installation failed (exit $rc); the whole log is $log"
    fi

    local cmds
    cmds=$(pd_missing_commands)
    [[ -z $cmds ]] || pd_die "still missing after installation: ${cmds//,/, }; see $log"
    pd_note "packages installed: PostgreSQL $(/usr/lib/postgresql/15/bin/postgres --version | awk '{print $3}'), node $(node --version), $(cmake --version | head -n 1)"
}

# pd_build DIR LOGFILE [CMAKE ARGS...]: configures DIR and builds the pgdrill
# binary only, with all output in LOGFILE.
pd_build() {
    local dir=$1 log=$2
    shift 2
    if ! { cmake -S "$PD_ROOT" -B "$PD_ROOT/$dir" -DPGDRILL_PYTHON="$PD_PYTHON" "$@" &&
        cmake --build "$PD_ROOT/$dir" -j "$(nproc)" --target pgdrill; } >>"$log" 2>&1; then
        grep -E 'error|Error|ERROR' "$log" | tail -n 30 >&2 || true
        pd_die "building pgdrill in $dir/ failed; the whole log is $log"
    fi
}
