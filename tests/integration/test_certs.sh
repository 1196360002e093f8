#!/usr/bin/env bash
# Short-lived client certificates end to end: POST /v1/certs signs a CSR
# with the CA key in the HSM, from the template only (the identity of the
# caller, clientAuth, CA:FALSE, TTL under the grant's maximum); checked with
# openssl verify and x509 -text; the CA is stable across restarts; the new
# certificate authenticates to keywardd once its CA is trusted.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
kw_need
command -v openssl >/dev/null || kw_skip "openssl not found"
kw_setup
cat >"$KW_ENV/policy.json" <<'EOF'
{"version": 1, "rules": [
  {"identity": "spiffe://keyward.dev/job/train-llama",
   "grants": [{"operations": ["cert"], "resources": ["ca"], "max_ttl": 3600},
              {"operations": ["datakey", "decrypt"], "resources": ["datasets"]}]},
  {"identity": "alice.operators.keyward.dev",
   "grants": [{"operations": ["admin.*"], "resources": ["*"]}]}
]}
EOF
kw_start

# csr NAME [SUBJ] [SAN]: a P-256 key and a CSR asking for whatever it likes.
csr() {
	openssl ecparam -name prime256v1 -genkey -noout -out "$KW_DIR/$1.key" 2>/dev/null
	openssl req -new -key "$KW_DIR/$1.key" -subj "${2:-/CN=whatever}" \
		${3:+-addext "$3"} -addext "basicConstraints=critical,CA:TRUE" \
		-out "$KW_DIR/$1.csr" 2>/dev/null
}
body() { # body CSRFILE [TTL]: the JSON request
	"$KW_PY" -c 'import json,sys; d={"csr": open(sys.argv[1]).read()}; len(sys.argv) > 2 and d.update(ttl=int(sys.argv[2])); print(json.dumps(d))' "$@"
}
split() { # split ANSWER: cert.pem and ca.pem from the JSON answer
	"$KW_PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); open(sys.argv[2],"w").write(d["certificate"]); open(sys.argv[3],"w").write(d["ca"]); print(d["expires_at"])' "$1" "$2" "$3"
}

csr job /CN=admin "subjectAltName=URI:spiffe://keyward.dev/admin,DNS:evil.example"
kw_req train-job POST /v1/certs "$(body "$KW_DIR/job.csr" 1800)" >"$KW_DIR/ans.json"
kw_expect 200 "certificate for the job"
split "$KW_DIR/ans.json" "$KW_DIR/job.pem" "$KW_DIR/kwca.pem" >/dev/null
openssl verify -CAfile "$KW_DIR/kwca.pem" -purpose sslclient "$KW_DIR/job.pem" >/dev/null 2>&1 ||
	kw_fail "openssl verify: $(openssl verify -CAfile "$KW_DIR/kwca.pem" -purpose sslclient "$KW_DIR/job.pem" 2>&1)"
openssl verify -CAfile "$KW_DIR/kwca.pem" -purpose sslserver "$KW_DIR/job.pem" >/dev/null 2>&1 &&
	kw_fail "the client certificate also serves as a server certificate"
openssl x509 -in "$KW_DIR/job.pem" -noout -text >"$KW_DIR/job.txt"
grep -q "URI:spiffe://keyward.dev/job/train-llama" "$KW_DIR/job.txt" || kw_fail "SAN is not the caller's identity"
grep -q "evil.example\|spiffe://keyward.dev/admin" "$KW_DIR/job.txt" && kw_fail "a SAN from the CSR was copied"
grep -q "CA:FALSE" "$KW_DIR/job.txt" || kw_fail "CA:FALSE missing"
grep -q "TLS Web Client Authentication" "$KW_DIR/job.txt" || kw_fail "clientAuth missing"
"$KW_PY" - "$KW_DIR/job.pem" <<'PY' || kw_fail "validity window"
import sys
from cryptography import x509
c = x509.load_pem_x509_certificate(open(sys.argv[1], "rb").read())
life = (c.not_valid_after - c.not_valid_before).total_seconds()
assert 1800 <= life <= 1800 + 300, life
assert c.serial_number.bit_length() >= 64, c.serial_number
PY
cmp -s <(openssl x509 -in "$KW_DIR/job.pem" -noout -pubkey) <(openssl pkey -in "$KW_DIR/job.key" -pubout) ||
	kw_fail "the certificate is not for the CSR's key"

# --- refusals
kw_req train-job POST /v1/certs "$(body "$KW_DIR/job.csr" 7200)" >/dev/null
kw_expect 403 "a TTL over the grant's max_ttl"
kw_req app POST /v1/certs "$(body "$KW_DIR/job.csr")" >/dev/null
kw_expect 403 "a caller without a cert grant"
sed 's/^MII/MIJ/' "$KW_DIR/job.csr" >"$KW_DIR/bad.csr"
kw_req train-job POST /v1/certs "$(body "$KW_DIR/bad.csr")" >/dev/null
kw_expect 400 "a damaged CSR"
openssl ecparam -name secp384r1 -genkey -noout -out "$KW_DIR/weak.key" 2>/dev/null
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:1024 -out "$KW_DIR/weak.key" 2>/dev/null
openssl req -new -key "$KW_DIR/weak.key" -subj /CN=x -out "$KW_DIR/weak.csr" 2>/dev/null
kw_req train-job POST /v1/certs "$(body "$KW_DIR/weak.csr")" >/dev/null
kw_expect 400 "an RSA-1024 CSR"
grep -qi "rsa\|key" "$KW_DIR/resp" || kw_fail "the weak-key refusal does not say why: $(cat "$KW_DIR/resp")"

# --- a second certificate: another serial, the same CA
csr job2
kw_req train-job POST /v1/certs "$(body "$KW_DIR/job2.csr")" >"$KW_DIR/ans2.json"
kw_expect 200 "a second certificate"
split "$KW_DIR/ans2.json" "$KW_DIR/job2.pem" "$KW_DIR/kwca2.pem" >/dev/null
cmp -s "$KW_DIR/kwca.pem" "$KW_DIR/kwca2.pem" || kw_fail "the CA changed between two certificates"
[ "$(openssl x509 -in "$KW_DIR/job.pem" -noout -serial)" != "$(openssl x509 -in "$KW_DIR/job2.pem" -noout -serial)" ] ||
	kw_fail "two certificates share a serial"
grep -q '"op":"cert".*issued serial=' "$(kw_audit)" || kw_fail "issuance not audited"

# --- trusted by keywardd once its CA is in the client CA bundle; the CA
# is the same after a restart
cat "$KW_DIR/kwca.pem" >>"$KW_ENV/tls/ca.pem"
kill -TERM "$KW_PID"
wait "$KW_PID" 2>/dev/null || true
kw_start
cp "$KW_DIR/job.pem" "$KW_ENV/clients/shortlived.pem"
cp "$KW_DIR/job.key" "$KW_ENV/clients/shortlived.key"
kw_req operator POST /v1/keys '{"name":"datasets"}' >/dev/null
kw_expect 201 "create a key"
kw_req shortlived POST /v1/keys/datasets/datakey '{"context":{}}' >/dev/null
kw_expect 200 "a data key with the short-lived certificate"
csr job3
kw_req train-job POST /v1/certs "$(body "$KW_DIR/job3.csr")" >"$KW_DIR/ans3.json"
kw_expect 200 "a certificate after the restart"
split "$KW_DIR/ans3.json" "$KW_DIR/job3.pem" "$KW_DIR/kwca3.pem" >/dev/null
cmp -s "$KW_DIR/kwca.pem" "$KW_DIR/kwca3.pem" || kw_fail "the CA changed across a restart"
echo "PASS"
