#!/usr/bin/env bash
# Install ctxpack with its test extras and run the whole suite.
# The reference tests need the docker CLI client (`docker`); under CI=true they
# must run, so a missing client is installed from Debian's docker.io package.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q -e '.[test]'
if ! command -v docker >/dev/null 2>&1 && [ "${CI:-}" = "true" ] && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io) >/dev/null
fi
# The session tests forward a real ssh-agent (openssh-client) and make a TLS
# test certificate (openssl).
if { ! command -v ssh-agent || ! command -v openssl; } >/dev/null 2>&1 && [ "${CI:-}" = "true" ] && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-client openssl) >/dev/null
fi
# --durations: the slowest tests, to keep the suite well inside its 10 minutes
python3 -m pytest -q -p no:cacheprovider --durations=15 "$@"
