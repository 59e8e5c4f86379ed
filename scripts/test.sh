#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need (Debian packages,
# Python packages), then checks formatting and lints and runs every test in the workspace.
# Usage: scripts/test.sh   (as root, or with sudo available, for apt-get)
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# Real MQTT clients the broker is checked against: mosquitto_pub/sub and python paho-mqtt 2.x.
if ! command -v mosquitto_pub >/dev/null || ! command -v mosquitto_sub >/dev/null \
  || ! command -v mosquitto >/dev/null; then
  echo "== installing mosquitto (a bridge peer) and mosquitto-clients"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto mosquitto-clients >/dev/null
fi
# redis-server and redis-cli for the Redis store's tests (broker/tests/redis.rs).
if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
  echo "== installing redis-server"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
fi
# openssl makes the TLS tests' certificates (broker/tests/tls_ws.rs).
if ! command -v openssl >/dev/null; then
  echo "== installing openssl"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl >/dev/null
fi
# tansu, a Kafka-protocol broker, for the Kafka bridge's tests (broker/tests/kafka.rs); reused
# when already installed (~9 minutes to build). librdkafka is built from source by the rdkafka
# crate: gcc, make and zlib.
if ! command -v gcc >/dev/null || ! command -v make >/dev/null || ! dpkg -s zlib1g-dev >/dev/null 2>&1; then
  echo "== installing gcc, make, zlib1g-dev (librdkafka)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc make zlib1g-dev >/dev/null
fi
if ! command -v tansu >/dev/null && [ ! -x "$HOME/.cargo/bin/tansu" ]; then
  echo "== installing tansu 0.6.0 (cargo install, several minutes)"
  cargo install tansu --version 0.6.0 --locked --features dynostore,libsql
fi
if ! python3 -c 'import paho.mqtt, sys; sys.exit(int(paho.mqtt.__version__.split(".")[0]) < 2)' 2>/dev/null; then
  echo "== installing paho-mqtt"
  python3 -m pip install -q 'paho-mqtt>=2.1,<3'
fi

# MQTT.js for the MQTT 5 smoke test and the WebSocket tests, playwright-core for the browser
# test (pinned by broker/tests/clients/js/package-lock.json).
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "== installing nodejs and npm"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
fi
# Debian's chromium for the browser test (broker/tests/tls_ws.rs, driven by playwright-core).
if ! command -v chromium >/dev/null; then
  echo "== installing chromium"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
if [ ! -d broker/tests/clients/js/node_modules/mqtt ] \
  || [ ! -d broker/tests/clients/js/node_modules/playwright-core ]; then
  echo "== installing MQTT.js and playwright-core"
  (cd broker/tests/clients/js && npm ci --no-audit --no-fund --silent)
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo test"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace 2>&1 | tee "$log"
# One closing line over every test binary (cargo prints one "test result" line per binary).
awk '/^test result:/ { p += $4; f += $6 } END { printf "%d passed, %d failed\n", p, f }' "$log"
