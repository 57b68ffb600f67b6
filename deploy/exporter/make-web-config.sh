#!/usr/bin/env bash
# Makes what the authenticated scrape needs (docker-compose.auth.yml, exporters/pg_exporter/README.md):
#   tls.crt, tls.key     a self-signed certificate for the exporter (DNS pg-exporter and localhost, IP 127.0.0.1)
#   scrape-password      a random password for Prometheus' basic_auth password_file
#   web-config.yml       the exporter's --web.config.file: that certificate and the password's bcrypt hash
# Usage: bash deploy/exporter/make-web-config.sh [DIR]      (default deploy/exporter/secrets, git-ignored)
# Replace the self-signed certificate with one from your CA in production; Prometheus' tls_config.ca_file then
# points at that CA. Nothing here is ever committed or logged.
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
dir="${1:-$repo/deploy/exporter/secrets}"
python="${PYTHON:-$repo/.venv/bin/python}"
[ -x "$python" ] || python=python3
if ! "$python" -c "import bcrypt, yaml" 2>/dev/null; then
  echo "make-web-config: $python lacks the bcrypt package: run \`make venv\` first (or set PYTHON=...)" >&2
  exit 2
fi
mkdir -p "$dir"
umask 077
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 365 \
    -keyout "$dir/tls.key" -out "$dir/tls.crt" -subj "/CN=pg-exporter" \
    -addext "subjectAltName=DNS:pg-exporter,DNS:localhost,IP:127.0.0.1" 2>/dev/null
openssl rand -base64 24 | tr -d '\n' > "$dir/scrape-password"
hash="$(PYTHONPATH="$repo" "$python" -m exporters.pg_exporter.webconfig hash-password < "$dir/scrape-password")"
cat > "$dir/web-config.yml" <<YAML
# exporter-toolkit web config for sloguard-pg-exporter (made by deploy/exporter/make-web-config.sh)
tls_server_config:
  cert_file: tls.crt          # relative to this file
  key_file: tls.key
basic_auth_users:
  prometheus: '$hash'
YAML
# the containers run as other users (exporter uid 10001, Prometheus nobody): they must read these files
chmod 0644 "$dir/tls.crt" "$dir/tls.key" "$dir/scrape-password" "$dir/web-config.yml"
chmod 0755 "$dir"
echo "wrote $dir/{tls.crt,tls.key,scrape-password,web-config.yml}"
