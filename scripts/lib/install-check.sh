#!/usr/bin/env bash
# A plain install must start: build authd's wheel (pure-Python hot path, cheap), install
# it with its declared dependencies only (no test extras, which could hide a missing
# one) into a fresh, throwaway venv (no network after the first run, see below), start `authd serve` on conf/authd.yaml (state and
# ports moved aside) and wait until /healthz and a Status-Server (RFC 5997, radclient
# from freeradius-utils) answer. Exit 0, or 1 with what failed and the daemon's output.
#
# usage: install-check.sh PYTHON   (a python with pip, setuptools and wheel: the dev venv)
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PY="${1:?usage: install-check.sh PYTHON}"
TIMEOUT=60

work="$(mktemp -d)"
pid=""
cleanup() {
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null
    fi
    rm -rf "$work"
}
trap cleanup EXIT

fail() {
    echo "!! install check: $*" >&2
    echo "!! a plain 'pip install .' of this tree does not give a working 'authd serve'" >&2
    if [ -s "$work/serve.log" ]; then
        echo "!! authd serve output (last 30 lines):" >&2
        tail -n 30 "$work/serve.log" >&2
    fi
    exit 1
}

command -v radclient >/dev/null || fail "radclient not found: apt-get install freeradius-utils"

# The wheel, built from a copy of the tree (an in-tree build would leave build/ behind).
mkdir "$work/src" "$work/dist"
tar -C "$ROOT" --exclude=./.venv --exclude=./build --exclude=./var --exclude=./.git \
    --exclude='*.so' --exclude='*.egg-info' -cf - . | tar -C "$work/src" -xf -
AUTHD_PURE=1 "$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$work/dist" \
    "$work/src" >"$work/build.log" 2>&1 || { cat "$work/build.log" >&2; fail "building the wheel failed"; }

wheel="$(echo "$work"/dist/authd-*.whl)"

# The declared dependencies, as wheels, kept per version of setup.cfg (the only place
# they are declared): resolving them against the index takes ~25 s even from pip's
# cache; installing from the folder needs no index at all. A change to setup.cfg
# resolves afresh, so a dependency dropped from it is missing here too.
key="$(sha256sum <"$ROOT/setup.cfg" | cut -c1-16)"
wheelhouse="${XDG_CACHE_HOME:-$HOME/.cache}/authd/install-check/$key"
if [ ! -d "$wheelhouse" ]; then
    mkdir -p "$(dirname "$wheelhouse")"
    fresh="$(mktemp -d "$wheelhouse.XXXXXX")"
    "$PY" -m pip download -q -d "$fresh" "$wheel" >"$work/download.log" 2>&1 \
        || { cat "$work/download.log" >&2; rm -rf "$fresh"; fail "resolving the declared dependencies failed"; }
    rm -f "$fresh"/authd-*.whl
    mv -T "$fresh" "$wheelhouse" 2>/dev/null || rm -rf "$fresh"  # another run won the race
    # folders of setup.cfg versions unused for a week
    find "$(dirname "$wheelhouse")" -mindepth 1 -maxdepth 1 -mtime +7 -exec rm -rf {} + || true
fi
touch "$wheelhouse"

# A venv without pip (fast); the dev venv's pip installs into it, without byte-compiling
# (a third of the CPU the install costs; the check runs the code once).
"$PY" -m venv --without-pip "$work/venv" || fail "python -m venv failed (Debian: python3-venv)"
"$PY" -m pip --python "$work/venv/bin/python" install -q --no-compile --no-index \
    --find-links "$wheelhouse" "$wheel" >"$work/install.log" 2>&1 \
    || { cat "$work/install.log" >&2; fail "pip install of the wheel failed"; }

free_port() {
    "$work/venv/bin/python" -c "import socket; s = socket.socket(socket.AF_INET, socket.$1); \
s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])"
}
radius_port="$(free_port SOCK_DGRAM)"
http_port="$(free_port SOCK_STREAM)"
# conf/authd.yaml as shipped, in a folder of its own: its relative paths (../var) land in
# $work/var; only the listen ports change.
mkdir "$work/conf"
sed -e "s/127\.0\.0\.1:1812/127.0.0.1:$radius_port/" -e "s/127\.0\.0\.1:8080/127.0.0.1:$http_port/" \
    "$ROOT/conf/authd.yaml" >"$work/conf/authd.yaml"
secret="$(sed -n 's/^ *secret: "\(.*\)"$/\1/p' "$work/conf/authd.yaml" | head -n 1)"

cd "$work"  # not the source tree: the installed package must be what runs
"$work/venv/bin/authd" check-config -c "$work/conf/authd.yaml" >"$work/serve.log" 2>&1 \
    || fail "authd check-config failed on conf/authd.yaml"
"$work/venv/bin/authd" serve -c "$work/conf/authd.yaml" >>"$work/serve.log" 2>&1 &
pid=$!

deadline=$((SECONDS + TIMEOUT))
healthz="import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)"
until "$work/venv/bin/python" -c "$healthz" "http://127.0.0.1:$http_port/healthz" 2>/dev/null; do
    kill -0 "$pid" 2>/dev/null || fail "authd serve exited before /healthz answered"
    [ $SECONDS -lt $deadline ] || fail "/healthz did not answer within ${TIMEOUT}s"
    sleep 0.2
done
echo "Message-Authenticator = 0x00" | radclient -q -r 2 -t 3 "127.0.0.1:$radius_port" status \
    "$secret" >"$work/radclient.log" 2>&1 \
    || { cat "$work/radclient.log" >&2; fail "Status-Server to 127.0.0.1:$radius_port got no answer"; }

kill -TERM "$pid"
wait "$pid"
rc=$?
pid=""
[ $rc -eq 0 ] || fail "authd serve exited $rc on SIGTERM (expected 0)"
echo ">> install check: a plain install of the wheel serves /healthz and Status-Server"
