#!/usr/bin/env bash
# System packages sloguard's tests and simulation need (Debian 12). Idempotent: about 0.1 s when all are present.
# `make test` runs it (so `make generate` + `make test` is the whole set-up); `make` runs it with the argument
# `python` before building .venv, which then installs only python3 and python3-venv. Installing needs root or sudo.
# Python packages come from the Makefile (.venv).
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
if [ "${1:-all}" = python ]; then
  PACKAGES=(python3 python3-venv)
elif [ "${1:-all}" != all ]; then
  echo "usage: $0 [all|python]" >&2
  exit 2
fi

if ! command -v dpkg-query >/dev/null; then
  echo "setup-system: this is not a Debian system (no dpkg-query). Install the equivalents of: ${PACKAGES[*]}" >&2
  exit 1
fi
# one dpkg-query for all packages: the fast path of every `make test`
installed=$(dpkg-query -W -f='${Package} ${Status}\n' "${PACKAGES[@]}" 2>/dev/null | awk '/install ok installed$/ {print $1}' || true)
missing=()
for p in "${PACKAGES[@]}"; do
  grep -qx "$p" <<<"$installed" || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup-system: all ${#PACKAGES[@]} packages present"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  # Not root: sudo, when it can run here; otherwise say exactly what is missing and how to install it.
  if ! command -v sudo >/dev/null || { ! sudo -n true 2>/dev/null && [ ! -t 0 ]; }; then
    echo "setup-system: missing system packages: ${missing[*]}" >&2
    echo "setup-system: installing them needs root. Fix: run once as root: bash scripts/setup-system.sh" >&2
    echo "              (or: apt-get install ${missing[*]}), then run make again" >&2
    exit 1
  fi
  SUDO="sudo"
fi
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
