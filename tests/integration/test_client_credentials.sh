#!/usr/bin/env bash
# libkeyward and the keyward CLI for credentials, against a real keywardd:
# tokens (issue, checked by PyJWT against the public JWKS; a job that
# works with KEYWARD_TOKEN only, within its scopes; introspection from
# standard input; revocation felt by the job at once), signing keys and
# artifact signatures (offline verification, tampering, unknown kid,
# rotation), and short-lived client certificates (openssl verify, SAN,
# use against keywardd, --renew-before).
#
# Parts of the server that are not there yet (the routes answer 404 or
# 405) are skipped with a SKIPPED line on standard error, never passed.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
kw_need
KW_CLI=${KEYWARD_CLI:-}
[ -n "$KW_CLI" ] && [ -x "$KW_CLI" ] || kw_skip "keyward CLI not built (KEYWARD_CLI)"
command -v openssl >/dev/null || kw_skip "openssl not found"
"$KW_PY" -c 'import jwt, cryptography' 2>/dev/null ||
	kw_skip "PyJWT or cryptography missing for $KW_PY (apt-get install python3-jwt python3-cryptography)"
kw_setup

JOB_ID=spiffe://keyward.dev/job/train-llama
APP_ID=spiffe://keyward.dev/app/inference-gw

# policy [sign] [cert]: the policy, with the grants of the server parts
# that exist.
policy() {
	local sign='' cert=''
	[ "${1:-}" = sign ] && sign=',{"operations": ["sign"], "resources": ["models"]}'
	[ "${2:-}" = cert ] && cert=',{"operations": ["cert"], "resources": ["*"], "max_ttl": 3600}'
	cat >"$KW_ENV/policy.json" <<EOF
{"version": 1, "rules": [
  {"identity": "$JOB_ID",
   "grants": [{"operations": ["datakey", "decrypt"], "resources": ["datasets"],
               "context": {"dataset": "imagenet-*"}},
              {"operations": ["token"], "scopes": ["kw:decrypt:*", "kw:datakey:*"], "max_ttl": 3600}$sign]},
  {"identity": "alice.operators.keyward.dev",
   "grants": [{"operations": ["admin.*"], "resources": ["*"]},
              {"operations": ["introspect"], "resources": ["keyward"]}]},
  {"identity": "$APP_ID",
   "grants": [{"operations": ["token"], "scopes": ["model:llama-70b:infer"], "max_ttl": 3600}$cert]}
]}
EOF
}

restart() {
	kill -TERM "$KW_PID"
	wait "$KW_PID" 2>/dev/null || true
	kw_start
}

# Which server parts are there: probe with a policy that names none.
policy
kw_start
HAVE_SIGN=0 HAVE_CERT=0
kw_req operator GET /v1/signing-keys/models >/dev/null
if [ "$KW_CODE" != 404 ] || ! grep -qi 'route' "$KW_DIR/resp"; then
	HAVE_SIGN=1
fi
kw_req app POST /v1/certs '{}' >/dev/null
case "$KW_CODE" in 404 | 405) ;; *) HAVE_CERT=1 ;; esac
policy "$([ $HAVE_SIGN = 1 ] && echo sign || echo -)" "$([ $HAVE_CERT = 1 ] && echo cert || echo -)"
restart

# as WHO CMD...: the CLI as a client identity (a certificate); output in
# $KW_DIR/out, stderr in $KW_DIR/err, status in RC.
as() {
	local who=$1
	shift
	RC=0
	KEYWARD_ADDR=127.0.0.1:$KW_PORT KEYWARD_CA=$KW_ENV/ca/ca.pem \
		KEYWARD_CERT=$KW_ENV/clients/$who.pem KEYWARD_KEY=$KW_ENV/clients/$who.key \
		"$KW_CLI" "$@" >"$KW_DIR/out" 2>"$KW_DIR/err" || RC=$?
}
# with_token TOKEN CMD...: the CLI with KEYWARD_TOKEN and no certificate.
with_token() {
	local tok=$1
	shift
	RC=0
	env -u KEYWARD_CERT -u KEYWARD_KEY KEYWARD_ADDR=127.0.0.1:$KW_PORT \
		KEYWARD_CA=$KW_ENV/ca/ca.pem KEYWARD_TOKEN="$tok" \
		"$KW_CLI" "$@" >"$KW_DIR/out" 2>"$KW_DIR/err" || RC=$?
}
# offline CMD...: the CLI with no server and no credentials at all.
offline() {
	RC=0
	env -u KEYWARD_ADDR -u KEYWARD_CERT -u KEYWARD_KEY -u KEYWARD_TOKEN \
		"$KW_CLI" "$@" >"$KW_DIR/out" 2>"$KW_DIR/err" || RC=$?
}
expect_rc() { # expect_rc CODE WHAT
	[ "$RC" = "$1" ] || kw_fail "$2: exit $RC, expected $1; stderr: $(cat "$KW_DIR/err")"
}
err_has() { # err_has TEXT WHAT
	grep -q -- "$1" "$KW_DIR/err" || kw_fail "$2: stderr lacks '$1': $(cat "$KW_DIR/err")"
}
py() { "$KW_PY" "$@"; }
skipped() { echo "SKIPPED: $*" >&2; }
jwks() {
	curl -sS --fail --cacert "$KW_ENV/ca/ca.pem" "https://127.0.0.1:$KW_PORT/.well-known/jwks.json" \
		>"$KW_DIR/jwks.json" || kw_fail "JWKS"
}
jti_of() {
	py -c 'import jwt,sys; print(jwt.decode(sys.argv[1], options={"verify_signature": False})["jti"])' "$1"
}

# --- help needs no server, for every new command
for c in token signing-key artifact cert; do
	offline $c --help
	expect_rc 0 "keyward $c --help"
	grep -q Usage "$KW_DIR/out" || kw_fail "keyward $c --help prints no usage"
done
offline token frobnicate
expect_rc 2 "token: unknown action"
offline artifact
expect_rc 2 "artifact without an action"

# ===================================================================
# Tokens
# ===================================================================
as train-job token issue --audience keyward --scope kw:decrypt:datasets --ttl 600
expect_rc 0 "token issue"
TOKEN=$(cat "$KW_DIR/out")
[ "$(wc -l <"$KW_DIR/out")" = 1 ] || kw_fail "token issue prints more than the token"
jwks
py - "$KW_DIR/jwks.json" "$TOKEN" "$JOB_ID" kw:decrypt:datasets 600 <<'PY' || kw_fail "PyJWT rejected the CLI's token"
import json, sys, jwt
jwks, token, sub, scope, ttl = sys.argv[1:6]
ks = jwt.PyJWKSet.from_dict(json.load(open(jwks)))
hdr = jwt.get_unverified_header(token)
key = next(k for k in ks.keys if k.key_id == hdr["kid"])
c = jwt.decode(token, key.key, algorithms=["ES256"], audience="keyward", issuer="keyward",
               options={"require": ["exp", "iat", "nbf", "iss", "aud", "sub", "jti"]})
assert c["sub"] == sub and c["scope"] == scope, c
assert c["exp"] - c["iat"] == int(ttl), c
assert "cnf" not in c, c
PY

# --json: the whole answer; --bind: bound to the caller's certificate
as train-job --json token issue --audience keyward --scope kw:decrypt:datasets --scope kw:datakey:datasets --bind
expect_rc 0 "token issue --json --bind"
py - "$KW_DIR/out" "$KW_DIR/jwks.json" "$KW_ENV/clients/train-job.pem" <<'PY' || kw_fail "token issue --json: $(cat "$KW_DIR/out")"
import base64, hashlib, json, ssl, sys, time, jwt
d = json.load(open(sys.argv[1]))
assert set(d) == {"token", "token_type", "expires_at"} and d["token_type"] == "Bearer", d
key = jwt.PyJWKSet.from_dict(json.load(open(sys.argv[2]))).keys[0]
c = jwt.decode(d["token"], key.key, algorithms=["ES256"], audience="keyward", issuer="keyward")
assert c["exp"] == d["expires_at"] and abs(c["exp"] - time.time() - 3600) < 60, (c, d)
assert c["scope"] == "kw:decrypt:datasets kw:datakey:datasets", c
der = ssl.PEM_cert_to_DER_cert(open(sys.argv[3]).read())
x5t = base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()
assert c["cnf"] == {"x5t#S256": x5t}, c
PY

# Refusals: a scope the grant lacks, a ttl over max_ttl, usage errors
as train-job token issue --audience keyward --scope kw:admin.list
expect_rc 1 "a scope outside the grant"
err_has forbidden "a scope outside the grant"
as train-job token issue --audience keyward --scope kw:decrypt:datasets --ttl 7200
expect_rc 1 "a ttl over max_ttl"
as train-job token issue --scope kw:decrypt:datasets
expect_rc 2 "token issue without --audience"
as train-job token issue --audience keyward --scope 'kw:decrypt:*'
expect_rc 1 "a wildcard scope"
as train-job token revoke --jti aaaaaaaaaaaaaaaaaaaa --sub x
expect_rc 2 "revoke with --jti and --sub"

# --- a job with a token and no certificate, within its scopes
as operator key create datasets
expect_rc 0 "key create"
head -c 300000 /dev/urandom >"$KW_DIR/shard.bin"
as train-job encrypt "$KW_DIR/shard.bin" -k datasets -C dataset=imagenet-1k -o "$KW_DIR/shard.kw"
expect_rc 0 "encrypt with the launcher's certificate"
with_token "$TOKEN" decrypt "$KW_DIR/shard.kw" -o "$KW_DIR/shard.out"
expect_rc 0 "decrypt with KEYWARD_TOKEN only"
cmp -s "$KW_DIR/shard.bin" "$KW_DIR/shard.out" || kw_fail "decrypt with a token: plaintext differs"
with_token "$TOKEN" datakey datasets -C dataset=imagenet-1k
expect_rc 1 "datakey outside the token's scopes"
err_has forbidden "datakey outside the token's scopes"
with_token "$TOKEN" key list
expect_rc 1 "key list outside the token's scopes"
# A token that holds datakey too.
as train-job token issue --audience keyward --scope kw:datakey:datasets --scope kw:decrypt:datasets
expect_rc 0 "a token for datakey and decrypt"
TOKEN2=$(cat "$KW_DIR/out")
with_token "$TOKEN2" --json datakey datasets -C dataset=imagenet-1k
expect_rc 0 "datakey with a token"
py -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["key"]=="datasets" and d["plaintext"]' "$KW_DIR/out" ||
	kw_fail "datakey with a token: $(cat "$KW_DIR/out")"
with_token "$TOKEN2" datakey datasets -C dataset=laion
expect_rc 1 "a context the subject's policy does not grant"
# The same from --token-file (mode 0600) instead of the environment.
printf '%s\n' "$TOKEN" >"$KW_DIR/job.token"
chmod 600 "$KW_DIR/job.token"
RC=0
env -u KEYWARD_CERT -u KEYWARD_KEY -u KEYWARD_TOKEN KEYWARD_ADDR=127.0.0.1:$KW_PORT KEYWARD_CA=$KW_ENV/ca/ca.pem \
	"$KW_CLI" --token-file "$KW_DIR/job.token" decrypt "$KW_DIR/shard.kw" --range 0-99 -o - \
	>"$KW_DIR/out" 2>"$KW_DIR/err" || RC=$?
expect_rc 0 "decrypt with --token-file"
cmp -s <(head -c 100 "$KW_DIR/shard.bin") "$KW_DIR/out" || kw_fail "decrypt --range with a token file"

# --- introspection: the token from standard input or a file, never argv
RC=0
KEYWARD_ADDR=127.0.0.1:$KW_PORT KEYWARD_CA=$KW_ENV/ca/ca.pem KEYWARD_CERT=$KW_ENV/clients/operator.pem \
	KEYWARD_KEY=$KW_ENV/clients/operator.key "$KW_CLI" --json token introspect \
	<"$KW_DIR/job.token" >"$KW_DIR/out" 2>"$KW_DIR/err" || RC=$?
expect_rc 0 "introspect from standard input"
py - "$KW_DIR/out" "$JOB_ID" <<'PY' || kw_fail "introspection: $(cat "$KW_DIR/out")"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["active"] is True and d["sub"] == sys.argv[2], d
assert d["aud"] == "keyward" and d["scope"] == "kw:decrypt:datasets", d
assert d["exp"] - d["iat"] == 600, d
PY
as operator token introspect --token-file "$KW_DIR/job.token"
expect_rc 0 "introspect --token-file"
grep -q "^active  *true" "$KW_DIR/out" || kw_fail "introspect: $(cat "$KW_DIR/out")"
grep -q "^sub  *$JOB_ID" "$KW_DIR/out" || kw_fail "introspect: $(cat "$KW_DIR/out")"
as operator token introspect "$TOKEN"
expect_rc 2 "a token on the command line"
as train-job token introspect --token-file "$KW_DIR/job.token"
expect_rc 1 "introspection without the grant"
err_has forbidden "introspection without the grant"

# --- revocation: the job fails at once (401: exit 3)
JTI=$(jti_of "$TOKEN")
as train-job token revoke --jti "$JTI"
expect_rc 1 "revocation without admin.revoke"
as operator token revoke --jti "$JTI"
expect_rc 0 "token revoke --jti"
grep -q "revoked jti $JTI" "$KW_DIR/out" || kw_fail "revoke output: $(cat "$KW_DIR/out")"
with_token "$TOKEN" decrypt "$KW_DIR/shard.kw" -o "$KW_DIR/shard.out2"
expect_rc 3 "a revoked token"
err_has 401 "a revoked token"
[ ! -e "$KW_DIR/shard.out2" ] || kw_fail "a refused decrypt left a file"
RC=0
KEYWARD_ADDR=127.0.0.1:$KW_PORT KEYWARD_CA=$KW_ENV/ca/ca.pem KEYWARD_CERT=$KW_ENV/clients/operator.pem \
	KEYWARD_KEY=$KW_ENV/clients/operator.key "$KW_CLI" --json token introspect \
	<"$KW_DIR/job.token" >"$KW_DIR/out" 2>"$KW_DIR/err" || RC=$?
expect_rc 1 "introspect a revoked token"
py -c 'import json,sys; assert json.load(open(sys.argv[1])) == {"active": False}' "$KW_DIR/out" ||
	kw_fail "introspect a revoked token: $(cat "$KW_DIR/out")"
with_token "$TOKEN2" decrypt "$KW_DIR/shard.kw" --range 0-9 -o -
expect_rc 0 "another token of the same subject still works"
as operator --json token revoke --sub "$JOB_ID"
expect_rc 0 "token revoke --sub"
py -c 'import json,sys; assert json.load(open(sys.argv[1])) == {"revoked": True}' "$KW_DIR/out" ||
	kw_fail "revoke --json: $(cat "$KW_DIR/out")"
with_token "$TOKEN2" decrypt "$KW_DIR/shard.kw" --range 0-9 -o -
expect_rc 3 "a token of a revoked subject"
with_token "abc.def.ghi" decrypt "$KW_DIR/shard.kw" --range 0-9 -o -
expect_rc 3 "a garbage token"

# Never a token in the logs.
AUDIT=$(kw_audit)
for t in "$TOKEN" "$TOKEN2"; do
	grep -qF -- "${t##*.}" "$AUDIT" "$KW_DIR/daemon.log" && kw_fail "a token reached a log"
done

# ===================================================================
# Signing keys and artifact signatures
# ===================================================================
if [ $HAVE_SIGN = 1 ]; then
	as train-job signing-key rotate models
	expect_rc 1 "signing-key rotate without admin"
	as operator signing-key rotate models
	expect_rc 0 "signing-key rotate (create)"
	grep -q "active version  *1" "$KW_DIR/out" || kw_fail "signing-key rotate: $(cat "$KW_DIR/out")"
	as train-job --json signing-key show models
	expect_rc 0 "signing-key show"
	cp "$KW_DIR/out" "$KW_DIR/keys1.json"
	as train-job signing-key show token
	expect_rc 0 "signing-key show token"
	grep -q "active" "$KW_DIR/out" || kw_fail "signing-key show token: $(cat "$KW_DIR/out")"
	as operator signing-key show no-such-signer
	expect_rc 1 "signing-key show of a missing key"

	head -c 1500000 /dev/urandom >"$KW_DIR/model.bin"
	as train-job artifact sign "$KW_DIR/model.bin" --key models
	expect_rc 0 "artifact sign"
	[ -s "$KW_DIR/model.bin.sig" ] || kw_fail "artifact sign wrote no FILE.sig"
	grep -q "version 1" "$KW_DIR/out" || kw_fail "artifact sign: $(cat "$KW_DIR/out")"
	cp "$KW_DIR/model.bin.sig" "$KW_DIR/sig1"
	as app artifact sign "$KW_DIR/model.bin" --key models -o "$KW_DIR/app.sig"
	expect_rc 1 "artifact sign without the grant"
	[ ! -e "$KW_DIR/app.sig" ] || kw_fail "a refused signature left a file"
	as train-job artifact sign "$KW_DIR/model.bin" --key token -o "$KW_DIR/tok.sig"
	expect_rc 1 "artifact sign with the token key"

	# The document: the server's answer, nothing else; checked by an
	# independent implementation (Python's cryptography).
	py - "$KW_DIR/model.bin" "$KW_DIR/sig1" "$KW_DIR/keys1.json" <<'PY' || kw_fail "the signature does not verify with cryptography"
import base64, hashlib, json, sys
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils
data = open(sys.argv[1], "rb").read()
sig = json.load(open(sys.argv[2]))
keys = json.load(open(sys.argv[3]))
assert set(sig) == {"key", "version", "kid", "alg", "digest", "signature"}, sig
assert sig["digest"] == "sha256:" + hashlib.sha256(data).hexdigest(), sig
b = lambda s: base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))
jwk = next(k for k in keys["keys"] if k["kid"] == sig["kid"])
pub = ec.EllipticCurvePublicNumbers(int.from_bytes(b(jwk["x"]), "big"), int.from_bytes(b(jwk["y"]), "big"),
                                    ec.SECP256R1()).public_key()
raw = b(sig["signature"])
der = utils.encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
pub.verify(der, data, ec.ECDSA(hashes.SHA256()))
PY

	offline artifact verify "$KW_DIR/model.bin" --keys "$KW_DIR/keys1.json"
	expect_rc 0 "artifact verify (offline)"
	grep -q "good signature by key models version 1" "$KW_DIR/out" || kw_fail "verify: $(cat "$KW_DIR/out")"
	offline --json artifact verify "$KW_DIR/model.bin" --sig "$KW_DIR/sig1" --keys "$KW_DIR/keys1.json"
	expect_rc 0 "artifact verify --json --sig"
	py -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["ok"] is True and d["version"]==1, d' "$KW_DIR/out" ||
		kw_fail "verify --json: $(cat "$KW_DIR/out")"
	# The JWKS form of a key set works too.
	py -c 'import json,sys; k=json.load(open(sys.argv[1])); json.dump({"keys": k["keys"]}, open(sys.argv[2], "w"))' \
		"$KW_DIR/keys1.json" "$KW_DIR/jwks1.json"
	offline artifact verify "$KW_DIR/model.bin" --keys "$KW_DIR/jwks1.json"
	expect_rc 0 "artifact verify with a JWKS"

	# A flipped byte in the file.
	cp "$KW_DIR/model.bin" "$KW_DIR/flip.bin"
	printf '\x01' | dd of="$KW_DIR/flip.bin" bs=1 seek=777777 conv=notrunc 2>/dev/null
	cmp -s "$KW_DIR/model.bin" "$KW_DIR/flip.bin" && printf '\x02' | dd of="$KW_DIR/flip.bin" bs=1 seek=777777 conv=notrunc 2>/dev/null
	offline artifact verify "$KW_DIR/flip.bin" --sig "$KW_DIR/sig1" --keys "$KW_DIR/keys1.json"
	expect_rc 4 "a flipped byte in the file"
	err_has "digest mismatch" "a flipped byte in the file"
	# edit SIG FIELD HOW: a copy of the signature with one field edited.
	edit() {
		py - "$KW_DIR/sig1" "$KW_DIR/$1" "$2" "$3" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
field, how = sys.argv[3], sys.argv[4]
v = d[field]
if how == "flip":   # another character, still canonical base64url
    i = 10
    v = v[:i] + ("A" if v[i] != "A" else "B") + v[i + 1:]
elif how == "zero-s":
    v = v[:43] + "A" * 43
else:
    v = how
d[field] = v
json.dump(d, open(sys.argv[2], "w"))
PY
	}
	edit sig.bad signature flip
	offline artifact verify "$KW_DIR/model.bin" --sig "$KW_DIR/sig.bad" --keys "$KW_DIR/keys1.json"
	expect_rc 4 "an edited signature"
	err_has "bad signature" "an edited signature"
	edit sig.zero signature zero-s
	offline artifact verify "$KW_DIR/model.bin" --sig "$KW_DIR/sig.zero" --keys "$KW_DIR/keys1.json"
	expect_rc 4 "a signature with s = 0"
	edit sig.kid kid AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA
	offline artifact verify "$KW_DIR/model.bin" --sig "$KW_DIR/sig.kid" --keys "$KW_DIR/keys1.json"
	expect_rc 4 "an unknown kid"
	err_has "unknown kid" "an unknown kid"
	edit sig.dig digest "sha256:$(sha256sum "$KW_DIR/flip.bin" | cut -c1-64)"
	offline artifact verify "$KW_DIR/flip.bin" --sig "$KW_DIR/sig.dig" --keys "$KW_DIR/keys1.json"
	expect_rc 4 "a digest edited to match another file"
	err_has "bad signature" "a digest edited to match another file"
	edit sig.alg alg none
	offline artifact verify "$KW_DIR/model.bin" --sig "$KW_DIR/sig.alg" --keys "$KW_DIR/keys1.json"
	expect_rc 4 "alg none"
	echo '{}' >"$KW_DIR/keys.empty"
	offline artifact verify "$KW_DIR/model.bin" --sig "$KW_DIR/sig1" --keys "$KW_DIR/keys.empty"
	expect_rc 1 "not a key set"
	offline artifact verify "$KW_DIR/model.bin" --sig "$KW_DIR/sig1"
	expect_rc 2 "verify without --keys"

	# Rotation: the old signature verifies with the new key set (its key
	# listed as retired); a new signature is by version 2, unknown to
	# the old key set.
	as operator signing-key rotate models
	expect_rc 0 "signing-key rotate"
	as train-job --json signing-key show models
	cp "$KW_DIR/out" "$KW_DIR/keys2.json"
	py - "$KW_DIR/keys2.json" "$KW_DIR/sig1" <<'PY' || kw_fail "key set after rotation: $(cat "$KW_DIR/keys2.json")"
import json, sys
k = json.load(open(sys.argv[1]))
s = json.load(open(sys.argv[2]))
assert k["name"] == "models" and k["active_version"] == 2, k
st = {x["version"]: x["state"] for x in k["keys"]}
assert st == {1: "retired", 2: "active"}, st
assert any(x["kid"] == s["kid"] and x["version"] == 1 for x in k["keys"]), k
PY
	offline artifact verify "$KW_DIR/model.bin" --sig "$KW_DIR/sig1" --keys "$KW_DIR/keys2.json"
	expect_rc 0 "an old signature after rotation"
	as train-job --json artifact sign "$KW_DIR/model.bin" --key models -o "$KW_DIR/sig2"
	expect_rc 0 "artifact sign after rotation"
	py -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["signature"]["version"]==2 and d["output"]==sys.argv[2], d' \
		"$KW_DIR/out" "$KW_DIR/sig2" || kw_fail "sign --json: $(cat "$KW_DIR/out")"
	offline artifact verify "$KW_DIR/model.bin" --sig "$KW_DIR/sig2" --keys "$KW_DIR/keys2.json"
	expect_rc 0 "a new signature"
	offline artifact verify "$KW_DIR/model.bin" --sig "$KW_DIR/sig2" --keys "$KW_DIR/keys1.json"
	expect_rc 4 "a new signature against the old key set"
	err_has "unknown kid" "a new signature against the old key set"
else
	skipped "signing keys and artifact signatures: keywardd has no /v1/signing-keys or /v1/artifacts/sign yet"
fi

# ===================================================================
# Short-lived client certificates
# ===================================================================
if [ $HAVE_CERT = 1 ]; then
	C=$KW_DIR/c/app.pem
	K=$KW_DIR/c/app.key
	mkdir "$KW_DIR/c"
	as app cert --key-out "$K" --cert-out "$C" --ttl 600
	expect_rc 0 "cert"
	[ "$(stat -c %a "$K")" = 600 ] || kw_fail "key file mode $(stat -c %a "$K")"
	[ -f "$C.ca.pem" ] || kw_fail "no CA file beside the certificate"
	openssl verify -CAfile "$C.ca.pem" -purpose sslclient "$C" >/dev/null 2>"$KW_DIR/err" ||
		kw_fail "openssl verify: $(cat "$KW_DIR/err")"
	openssl x509 -in "$C" -noout -ext subjectAltName >"$KW_DIR/san" 2>&1 || kw_fail "no SAN"
	grep -q "URI:$APP_ID\$" "$KW_DIR/san" || kw_fail "SAN: $(cat "$KW_DIR/san")"
	[ "$(grep -c 'URI:\|DNS:\|IP' "$KW_DIR/san")" = 1 ] || kw_fail "SAN: $(cat "$KW_DIR/san")"
	[ "$(openssl x509 -in "$C" -noout -pubkey | openssl sha256)" = \
		"$(openssl pkey -in "$K" -pubout | openssl sha256)" ] || kw_fail "the certificate does not hold the key"
	ls -a "$KW_DIR/c" | grep -q XXXX && kw_fail "temporary files left"
	# It works as a client certificate against keywardd, once keywardd
	# trusts the CA (docs/API.md: appended to tls.client_ca).
	cat "$C.ca.pem" >>"$KW_ENV/tls/ca.pem"
	restart
	RC=0
	KEYWARD_ADDR=127.0.0.1:$KW_PORT KEYWARD_CA=$KW_ENV/ca/ca.pem "$KW_CLI" --cert "$C" --key "$K" health \
		>"$KW_DIR/out" 2>"$KW_DIR/err" || RC=$?
	expect_rc 0 "health with the new certificate"
	RC=0
	KEYWARD_ADDR=127.0.0.1:$KW_PORT KEYWARD_CA=$KW_ENV/ca/ca.pem "$KW_CLI" --cert "$C" --key "$K" --json \
		token issue --audience gw --scope model:llama-70b:infer >"$KW_DIR/out" 2>"$KW_DIR/err" || RC=$?
	expect_rc 0 "a token with the new certificate"
	py -c 'import json,sys,jwt; d=json.load(open(sys.argv[1])); assert jwt.decode(d["token"], options={"verify_signature": False})["sub"]==sys.argv[2]' \
		"$KW_DIR/out" "$APP_ID" || kw_fail "the new certificate's identity"

	# --renew-before: nothing to do while the certificate has time
	sum0=$(cat "$C" "$K" | sha256sum)
	as app cert --key-out "$K" --cert-out "$C" --renew-before 60
	expect_rc 0 "--renew-before with time left"
	grep -q "not renewed" "$KW_DIR/out" || kw_fail "--renew-before: $(cat "$KW_DIR/out")"
	[ "$(cat "$C" "$K" | sha256sum)" = "$sum0" ] || kw_fail "--renew-before changed valid files"
	# ... with no server at all
	offline cert --key-out "$K" --cert-out "$C" --renew-before 60
	expect_rc 0 "--renew-before with time left, offline"
	# ... and renews when the certificate expires within the window
	as app --json cert --key-out "$K" --cert-out "$C" --renew-before 3600 --ttl 900
	expect_rc 0 "--renew-before inside the window"
	py -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["renewed"] is True, d' "$KW_DIR/out" ||
		kw_fail "renew --json: $(cat "$KW_DIR/out")"
	[ "$(cat "$C" "$K" | sha256sum)" != "$sum0" ] || kw_fail "--renew-before did not renew"
	openssl verify -CAfile "$C.ca.pem" -purpose sslclient "$C" >/dev/null 2>&1 || kw_fail "renewed certificate"
	# ... and when the key does not match the certificate
	openssl ecparam -name prime256v1 -genkey -noout -out "$K" 2>/dev/null
	chmod 600 "$K"
	as app cert --key-out "$K" --cert-out "$C" --renew-before 60
	expect_rc 0 "--renew-before with a key that does not match"
	grep -q "renewed" "$KW_DIR/out" && ! grep -q "not renewed" "$KW_DIR/out" || kw_fail "mismatch: $(cat "$KW_DIR/out")"
	[ "$(openssl x509 -in "$C" -noout -pubkey | openssl sha256)" = \
		"$(openssl pkey -in "$K" -pubout | openssl sha256)" ] || kw_fail "renewal: key and certificate differ"
	# ... and when there is no certificate yet
	as app cert --key-out "$KW_DIR/c/new.key" --cert-out "$KW_DIR/c/new.pem" --renew-before 60
	expect_rc 0 "--renew-before with no certificate"
	[ -s "$KW_DIR/c/new.pem" ] || kw_fail "--renew-before with no certificate made none"
	# Refusals
	as app cert --key-out "$KW_DIR/c/x.key" --cert-out "$KW_DIR/c/x.pem" --ttl 7200
	expect_rc 1 "a ttl over the grant's max_ttl"
	[ ! -e "$KW_DIR/c/x.key" ] || kw_fail "a refused certificate left its key"
	as train-job cert --key-out "$KW_DIR/c/y.key" --cert-out "$KW_DIR/c/y.pem"
	expect_rc 1 "cert without the grant"
	as app cert --key-out "$KW_DIR/c/z.key"
	expect_rc 2 "cert without --cert-out"
else
	skipped "short-lived certificates: keywardd has no POST /v1/certs yet"
fi

[ $HAVE_SIGN = 1 ] && [ $HAVE_CERT = 1 ] && echo "PASS" ||
	echo "PASS (with SKIPPED sections: see above)"
