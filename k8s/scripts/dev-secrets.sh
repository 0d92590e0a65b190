#!/bin/sh
# Writes random development secrets for k8s/overlays/dev to secrets.env (gitignored), unless
# the file already exists. Called by the Tiltfile; safe to run by hand.
#   sh k8s/scripts/dev-secrets.sh [path]
set -eu
out=${1:-$(dirname "$0")/../overlays/dev/secrets.env}
# openssl when present, else node (which the repo needs anyway).
rand_base64() {
  openssl rand -base64 "$1" 2>/dev/null ||
    node -e "process.stdout.write(require('node:crypto').randomBytes($1).toString('base64'))"
}
rand_hex() {
  openssl rand -hex "$1" 2>/dev/null ||
    node -e "process.stdout.write(require('node:crypto').randomBytes($1).toString('hex'))"
}
# Adds KEY=value unless the file has KEY already.
add_missing() {
  grep -q "^$1=" "$out" && return 0
  [ -z "$(tail -c 1 "$out")" ] || echo >>"$out"
  echo "$1=$2" >>"$out"
  echo "added $1 to $out"
}
if [ -e "$out" ]; then
  # Keys added since the file was written are appended (otp, for one, will not start without
  # OTP_HASH_KEY); existing values stay as they are.
  add_missing GATEWAY_SECRET "$(rand_base64 36)"
  add_missing OTP_HASH_KEY "$(rand_base64 36)"
  echo "$out exists; leaving its other values as they are"
  exit 0
fi
mesh_secret=$(rand_base64 36) # 48 characters
gateway_secret=$(rand_base64 36)
key=$(rand_base64 32)
otp_hash_key=$(rand_base64 36) # 48 characters
password=$(rand_hex 24)
umask 077
cat >"$out" <<SECRETS
MESH_SECRET=$mesh_secret
GATEWAY_SECRET=$gateway_secret
AUTH_KEY_ENCRYPTION_KEY=$key
OTP_HASH_KEY=$otp_hash_key
POSTGRES_PASSWORD=$password
SMTP_URL=smtp://mailpit:1025
SECRETS
echo "wrote $out"
