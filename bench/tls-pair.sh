#!/usr/bin/env bash
# A throwaway CA and a server certificate it signed, for wss:// runs of the bench and the ARM
# smoke test (openssl CLI only; nothing here is fit for production).
#
#   bench/tls-pair.sh DIR [ec|rsa]     default ec (ECDSA P-256); rsa: RSA 2048
#
# Writes DIR/ca.pem (the CA to trust: `iot-ws-bench --ca`, `smoke.js --ca`), DIR/cert.pem and
# DIR/key.pem (the server's `--tls-cert` and `--tls-key`, for localhost and 127.0.0.1), valid
# for 7 days. The CA's key is deleted: nothing else can ever be signed with it.
set -euo pipefail

dir=${1:?usage: bench/tls-pair.sh DIR [ec|rsa]}
kind=${2:-ec}
case "$kind" in
  ec) newkey=(-newkey ec -pkeyopt ec_paramgen_curve:P-256) ;;
  rsa) newkey=(-newkey rsa:2048) ;;
  *) echo "bench/tls-pair.sh: key kind $kind: want ec or rsa" >&2; exit 2 ;;
esac
command -v openssl >/dev/null || { echo "bench/tls-pair.sh: openssl is not installed (apt-get install openssl)" >&2; exit 1; }
mkdir -p "$dir"
cd "$dir"

# Extensions written out, not taken from the system's openssl.cnf: webpki wants a CA marked as
# one and a leaf that is not, with the names in subjectAltName.
cat >ca.cnf <<'EOF'
[req]
distinguished_name = dn
x509_extensions = ca
prompt = no
[dn]
CN = iot-ws throwaway CA
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
EOF
cat >leaf.cnf <<'EOF'
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
authorityKeyIdentifier = keyid
EOF

openssl req -x509 "${newkey[@]}" -nodes -days 7 -config ca.cnf -keyout ca.key -out ca.pem 2>/dev/null
openssl req -new "${newkey[@]}" -nodes -subj /CN=localhost -keyout key.pem -out leaf.csr 2>/dev/null
openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -set_serial "0x$(openssl rand -hex 8)" -days 7 \
  -extfile leaf.cnf -out cert.pem 2>/dev/null
rm -f ca.key ca.cnf leaf.cnf leaf.csr
chmod 600 key.pem
