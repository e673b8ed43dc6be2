#!/usr/bin/env bash
# Make sure redis-server is installed (the Redis backend's tests start their own on a free port).
# On a Debian or Ubuntu machine, running as root, a missing server is installed with apt-get.
# Elsewhere it says what to do and exits 0: the Redis tests then skip with that reason (and,
# under CI=true, fail the run).
set -euo pipefail
if command -v redis-server >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing redis-server (apt-get)" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null || true
    if ! apt-get install -y -qq redis-server >/dev/null; then
        echo "apt-get could not install redis-server: the Redis tests will skip (fail under CI=true)" >&2
    fi
    # the package may start a system-wide server; the tests start their own and do not use it
    exit 0
fi
echo "redis-server is not installed and cannot be installed here (not root, or no apt-get):" \
     "install it (e.g. apt-get install redis-server, brew install redis) to test the Redis backend" >&2
exit 0
