#!/usr/bin/env bash
# Generates throw-away certificates for conf/examples/full.toml into conf/examples/certs/
# (git-ignored): a test CA, ECDSA P-256 server certificates for example.com, example.org and
# internal, a CA for client certificates, and a client certificate sluice shows to backends.
# Never use these for anything real.
set -euo pipefail
dir="$(cd "$(dirname "$0")" && pwd)/certs"
mkdir -p "$dir"
cd "$dir"
days=30
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
ca() {  # name cn
  key "$1.key"
  openssl req -x509 -new -key "$1.key" -out "$1.pem" -days "$days" -subj "/CN=$2" 2>/dev/null
}
leaf() {  # name ca sans
  key "$1.key"
  openssl req -new -key "$1.key" -out "$1.csr" -subj "/CN=$1" 2>/dev/null
  printf 'subjectAltName=%s\n' "$3" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA "$2.pem" -CAkey "$2.key" -CAcreateserial -days "$days" \
    -extfile "$1.ext" -out "$1.crt" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}
ca backend-ca "sluice example CA"
ca clients-ca "sluice example client CA"
leaf example.com backend-ca "DNS:example.com,DNS:*.example.com"
leaf example.org backend-ca "DNS:example.org,DNS:*.example.org"
leaf internal backend-ca "DNS:internal.example.com"
leaf sluice-client clients-ca "DNS:sluice-client"
echo "certificates written to $dir"
