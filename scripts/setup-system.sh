#!/usr/bin/env bash
# System packages sloguard's tests and simulation need (Debian 12). Idempotent; run as root.
# Used by .ci/run and documented in the README. Python packages come from the Makefile (.venv).
set -euo pipefail

PACKAGES=(
  python3 python3-venv     # the Makefile builds .venv with `python3 -m venv` (Debian's python3 lacks ensurepip)
  postgresql-15            # throwaway clusters in tests, simulation, migration gate
  postgresql-contrib       # pg_stat_statements
  postgresql-15-hypopg     # hypothetical indexes (missing-index evidence)
  prometheus               # promtool + prometheus for rule tests and end-to-end tests
  prometheus-alertmanager  # amtool + alertmanager for the simulation
  prometheus-postgres-exporter  # the peer our exporter is benchmarked against
  openssl                  # self-signed certificates: exporter TLS tests, deploy/exporter/make-web-config.sh
  docker-compose           # validates docker-compose.yml (no engine needed for `config`)
  make
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup-system: all ${#PACKAGES[@]} packages present"
  exit 0
fi

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
echo "setup-system: installing ${missing[*]}"
$SUDO apt-get update -qq
# Debian's postgresql/prometheus packages try to start services; policy-rc.d stops that on CI machines.
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  $SUDO chmod +x /usr/sbin/policy-rc.d
  trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
fi
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
