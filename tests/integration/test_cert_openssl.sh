#!/usr/bin/env bash
# Client certificates from broker/cert.c, checked by an independent
# implementation: the openssl CLI makes CSRs of every kind, tests/cert_tool
# (a software CA) issues or refuses them, and openssl verifies what was
# issued (-purpose sslclient -x509_strict) and shows it holds the template
# and nothing the CSR asked for.
set -euo pipefail

tool=${KW_CERT_TOOL:-}
if [ -z "$tool" ] && [ -n "${KEYWARDD:-}" ]; then
	tool=$(dirname "$KEYWARDD")/cert_tool
fi
if [ -z "$tool" ] || [ ! -x "$tool" ]; then
	echo "SKIP: cert_tool not built (KW_CERT_TOOL or KEYWARDD)" >&2
	exit 77
fi
command -v openssl >/dev/null 2>&1 || {
	echo "SKIP: openssl command not found" >&2
	exit 77
}
py=/usr/bin/python3
[ -x "$py" ] || {
	echo "SKIP: $py not found" >&2
	exit 77
}

dir=$(mktemp -d /tmp/kwcert.XXXXXX)
trap 'rm -rf "$dir"' EXIT
cd "$dir"
fail() {
	echo "FAIL: $*" >&2
	exit 1
}

id=spiffe://prod.example/ns/ml/sa/trainer
"$tool" ca ca.key ca.pem >/dev/null || fail "cert_tool ca"
"$tool" ca other.key other.pem >/dev/null || fail "cert_tool ca (other)"
openssl x509 -in ca.pem -noout -text >ca.txt
grep -q 'CA:TRUE, pathlen:0' ca.txt || fail "CA lacks CA:TRUE pathlen 0"
grep -q 'Certificate Sign, CRL Sign' ca.txt || fail "CA keyUsage"
openssl verify -x509_strict -CAfile ca.pem ca.pem >/dev/null ||
	fail "openssl does not verify the self-signed CA"

# csr NAME OPENSSL-REQ-ARGS...: NAME.csr and NAME.key.
csr() {
	local name=$1
	shift
	openssl req -new -nodes -subj "/CN=x" -keyout "$name.key" \
		-out "$name.csr" "$@" 2>/dev/null || fail "openssl req $name"
}

# issue NAME [IDENTITY [TTL [MAX]]]: NAME.pem, or the exit status.
issue() {
	"$tool" issue ca.key ca.pem "$1.csr" "${2:-$id}" "${3:-3600}" \
		"${4:-86400}" >"$1.pem" 2>"$1.err"
}

# ---- accepted: every key type, and a CSR asking for everything ----
csr evil -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
	-subj "/CN=admin/O=Evil Corp/emailAddress=root@example.com" \
	-addext "basicConstraints=critical,CA:TRUE,pathlen:3" \
	-addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
	-addext "extendedKeyUsage=serverAuth,codeSigning,clientAuth" \
	-addext "subjectAltName=DNS:admin.example,URI:spiffe://prod.example/admin,IP:10.0.0.1"
csr p384 -newkey ec -pkeyopt ec_paramgen_curve:P-384 -sha384
csr ed25519 -newkey ed25519
csr rsa2048 -newkey rsa:2048
csr rsa3072 -newkey rsa:3072 -sha512

expected_ext='X509v3 extensions:
X509v3 Basic Constraints: critical
X509v3 Key Usage: critical
X509v3 Extended Key Usage:
X509v3 Subject Key Identifier:
X509v3 Authority Key Identifier:
X509v3 Subject Alternative Name:'

for name in evil p384 ed25519 rsa2048 rsa3072; do
	issue "$name" || fail "$name refused: $(cat "$name.err")"
	openssl verify -x509_strict -CAfile ca.pem -purpose sslclient \
		"$name.pem" >"$name.verify" 2>&1 ||
		fail "$name: openssl verify: $(cat "$name.verify")"
	if openssl verify -CAfile ca.pem -purpose sslserver "$name.pem" \
		>/dev/null 2>&1; then
		fail "$name: verifies for sslserver (clientAuth only expected)"
	fi
	if openssl verify -CAfile other.pem "$name.pem" >/dev/null 2>&1; then
		fail "$name: verifies under another CA"
	fi
	openssl x509 -in "$name.pem" -noout -text >"$name.txt"
	ext=$(grep -o 'X509v3 [A-Za-z ]*:\( critical\)\?' "$name.txt")
	[ "$ext" = "$expected_ext" ] ||
		fail "$name: extensions are not the template's: $ext"
	for want in 'Version: 3 (0x2)' 'Signature Algorithm: ecdsa-with-SHA256' \
		'Issuer: CN = keyward test CA' \
		'Subject: O = keyward test, CN = trainer' 'CA:FALSE' \
		'Digital Signature$' 'TLS Web Client Authentication$' \
		"URI:$id\$"; do
		grep -q "$want" "$name.txt" || fail "$name: no \"$want\""
	done
	for bad in admin Evil 'TLS Web Server' 'Code Signing' 'CA:TRUE' \
		'Certificate Sign' 'IP Address' 'DNS:' 'email'; do
		if grep -q "$bad" "$name.txt"; then
			fail "$name: \"$bad\" from the CSR made it in"
		fi
	done
	# Serial: 16 bytes, positive, the second bit set.
	serial=$(openssl x509 -in "$name.pem" -noout -serial | cut -d= -f2)
	[[ $serial =~ ^[4-7][0-9A-F]{31}$ ]] || fail "$name: serial $serial"
	echo "$serial" >>serials
	# The same public key as the CSR.
	[ "$(openssl req -in "$name.csr" -noout -pubkey)" = \
		"$(openssl x509 -in "$name.pem" -noout -pubkey)" ] ||
		fail "$name: public key differs from the CSR's"
done
[ "$(sort -u serials | wc -l)" -eq 5 ] || fail "serials repeat"

# Validity: backdated 300 s, ttl after issuance.
csr dns -newkey ec -pkeyopt ec_paramgen_curve:P-256
issue dns worker-1.ml.example 900 3600 || fail "dns: $(cat dns.err)"
openssl x509 -in dns.pem -noout -text >dns.txt
grep -q 'DNS:worker-1.ml.example$' dns.txt || fail "dns: no DNS SAN"
grep -q 'Subject: O = keyward test, CN = worker-1.ml.example' dns.txt ||
	fail "dns: subject"
nb=$(date -d "$(openssl x509 -in dns.pem -noout -startdate | cut -d= -f2)" +%s)
na=$(date -d "$(openssl x509 -in dns.pem -noout -enddate | cut -d= -f2)" +%s)
[ $((na - nb)) -eq 1200 ] || fail "dns: validity $((na - nb)) s, not 300 + 900"
now=$(date +%s)
[ "$nb" -le $((now - 299)) ] && [ "$nb" -ge $((now - 310)) ] ||
	fail "dns: notBefore $nb not 300 s before $now"

# ---- refused ----
# refused NAME WORDS: exit 3 and the reason contains WORDS.
refused() {
	local st=0
	issue "$1" || st=$?
	[ "$st" -eq 3 ] || fail "$1: exit $st, refusal (3) expected"
	grep -q "$2" "$1.err" || fail "$1: reason \"$(cat "$1.err")\" lacks \"$2\""
}

csr rsa1024 -newkey rsa:1024
refused rsa1024 "RSA key of 1024 bits"
csr sha1 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -sha1
refused sha1 "too weak"
csr sha1rsa -newkey rsa:2048 -sha1
refused sha1rsa "too weak"
csr p224 -newkey ec -pkeyopt ec_paramgen_curve:P-224
refused p224 "secp224r1"
csr k1 -newkey ec -pkeyopt ec_paramgen_curve:secp256k1
refused k1 "secp256k1"
csr ed448 -newkey ed448
refused ed448 "ED448"
csr pss -newkey rsa-pss -pkeyopt rsa_keygen_bits:2048
refused pss "RSASSA-PSS keys"
csr e3 -newkey rsa:2048 -pkeyopt rsa_keygen_pubexp:3
refused e3 "exponent"
openssl ecparam -name prime256v1 -param_enc explicit -genkey -noout \
	-out explicit.key 2>/dev/null
openssl req -new -key explicit.key -subj /CN=x -out explicit.csr
refused explicit "explicit"
openssl ecparam -name prime256v1 -genkey -noout -out c.key
openssl ec -in c.key -conv_form compressed -out comp.key 2>/dev/null
openssl req -new -key comp.key -subj /CN=x -out comp.csr
refused comp "uncompressed"

# Malformed PEM and DER.
cat evil.csr evil.csr >two.csr
refused two "exactly one PEM block"
{ cat evil.csr; echo junk; } >junk.csr
refused junk "text after the END line"
sed '2s/^./!/' evil.csr >b64.csr
refused b64 "outside base64"
openssl req -in evil.csr -outform DER -out evil.der
"$py" - evil.der <<'EOF' >/dev/null
import base64, sys
der = open(sys.argv[1], "rb").read()
def pem(name, b):
    s = base64.encodebytes(b).decode()
    open(name, "w").write("-----BEGIN CERTIFICATE REQUEST-----\n" + s +
                          "-----END CERTIFICATE REQUEST-----\n")
pem("trail.csr", der + b"\x05\x00")
sig = bytearray(der)
sig[-3] ^= 1
pem("badsig.csr", bytes(sig))
EOF
refused trail "after the request"
refused badsig "no proof of possession"
sans=$(for i in $(seq 1000); do printf 'DNS:h%d.example,' "$i"; done)
csr huge -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
	-addext "subjectAltName=${sans%,}"
[ "$(stat -c %s huge.csr)" -gt 16384 ] || fail "huge.csr is not huge"
st=0
issue huge || st=$?
[ "$st" -eq 3 ] && grep -q "at most 16384" huge.err || fail "huge: $(cat huge.err)"

# TTL over the template's maximum; an identity the front would not read.
st=0
issue p384 "$id" 7200 3600 || st=$?
[ "$st" -eq 4 ] || fail "ttl over max: exit $st, 4 expected"
st=0
issue p384 "Admin.Example" || st=$?
[ "$st" -eq 4 ] || fail "bad identity: exit $st, 4 expected"

echo "ok: certificates issued, verified and refused as expected"
