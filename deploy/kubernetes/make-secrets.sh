#!/bin/sh
# Write certfleet-secrets.env beside this script: the Secret `kubectl apply -k` generates from it.
#
#     CERTFLEET_DATABASE_URL=postgresql://certfleet:PASSWORD@postgres:5432/certfleet \
#         deploy/kubernetes/make-secrets.sh
#
# The secret key is made here, at random. It decrypts the EST passwords, SCEP challenges,
# PKCS#12 files and webhook secrets stored in the database: keep the file (or the Secret) safe,
# out of git, and never make a new one for an installation that has stored secrets: rotate its key
# with `certfleet secrets rotate` instead. An existing file is never overwritten.
set -eu
cd "$(dirname "$0")"
out=certfleet-secrets.env
if [ -e "$out" ]; then
    echo "make-secrets.sh: $PWD/$out exists; it holds the key of the stored secrets, so it is kept" >&2
    exit 1
fi
if [ -z "${CERTFLEET_DATABASE_URL:-}" ]; then
    echo "make-secrets.sh: set CERTFLEET_DATABASE_URL (postgresql://USER:PASSWORD@HOST:5432/DB) first" >&2
    exit 2
fi
# 32 random bytes, from Python where it is installed, else from OpenSSL.
key=$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))' 2>/dev/null || openssl rand -base64 32)
if [ -z "$key" ]; then
    echo "make-secrets.sh: neither python3 nor openssl could make a random key" >&2
    exit 1
fi
umask 077
printf 'CERTFLEET_SECRET_KEY=%s\nCERTFLEET_DATABASE_URL=%s\n' "$key" "$CERTFLEET_DATABASE_URL" > "$out"
echo "wrote $PWD/$out (readable by you only)"
