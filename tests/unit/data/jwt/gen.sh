#!/bin/sh
# Regenerates the test keys of tests/unit/jwt_test.cpp with the openssl command line. The keys
# are committed; the tests never run this. Private keys are test-only: the tests sign tokens
# with them to build the attack cases.
set -eu
cd "$(dirname "$0")"
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out rsa.key
openssl pkey -in rsa.key -pubout -out rsa.pub
openssl rsa -in rsa.key -RSAPublicKey_out -out rsa_pkcs1.pub 2>/dev/null
openssl req -new -x509 -key rsa.key -subj /CN=sluice-test -days 36500 -out rsa.crt
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out rsa2.key
openssl pkey -in rsa2.key -pubout -out rsa2.pub
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:1024 -out rsa1024.key
openssl pkey -in rsa1024.key -pubout -out rsa1024.pub
rm rsa1024.key
for c in P-256 P-384 P-521; do
  n=$(echo $c | tr -d P-)
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:$c -out ec$n.key
  openssl pkey -in ec$n.key -pubout -out ec$n.pub
done
openssl genpkey -algorithm ED25519 -out ed25519.key
openssl pkey -in ed25519.key -pubout -out ed25519.pub
