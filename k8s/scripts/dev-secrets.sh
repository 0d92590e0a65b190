#!/bin/sh
# Writes random development secrets for k8s/overlays/dev to secrets.env (gitignored), unless
# the file already exists. Called by the Tiltfile; safe to run by hand.
#   sh k8s/scripts/dev-secrets.sh [path]
set -eu
out=${1:-$(dirname "$0")/../overlays/dev/secrets.env}
if [ -e "$out" ]; then
  echo "$out exists; leaving it as it is"
  exit 0
fi
# openssl when present, else node (which the repo needs anyway).
rand_base64() {
  openssl rand -base64 "$1" 2>/dev/null ||
    node -e "process.stdout.write(require('node:crypto').randomBytes($1).toString('base64'))"
}
rand_hex() {
  openssl rand -hex "$1" 2>/dev/null ||
    node -e "process.stdout.write(require('node:crypto').randomBytes($1).toString('hex'))"
}
mesh_secret=$(rand_base64 36) # 48 characters
key=$(rand_base64 32)
otp_hash_key=$(rand_base64 36) # 48 characters
password=$(rand_hex 24)
umask 077
cat >"$out" <<SECRETS
MESH_SECRET=$mesh_secret
AUTH_KEY_ENCRYPTION_KEY=$key
OTP_HASH_KEY=$otp_hash_key
POSTGRES_PASSWORD=$password
SMTP_URL=smtp://mailpit:1025
SECRETS
echo "wrote $out"
