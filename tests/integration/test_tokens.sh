#!/usr/bin/env bash
# Tokens end to end: POST /v1/tokens over mTLS, the public JWKS, and
# verification by an independent JWT library (PyJWT, Debian's python3-jwt)
# against that JWKS: claims, audience, issuer, lifetime, certificate
# binding (RFC 8705), policy caps on scopes and TTL, schema errors, the
# token never in a log, and the signing key kept across a restart.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
kw_need
"$KW_PY" -c 'import jwt, cryptography' 2>/dev/null ||
	kw_skip "PyJWT or cryptography missing for $KW_PY (apt-get install python3-jwt python3-cryptography)"
kw_setup 'c["token_issuer"] = "https://keyward.test"'
cat >"$KW_ENV/policy.json" <<'EOF'
{"version": 1, "rules": [
  {"identity": "spiffe://keyward.dev/job/train-llama",
   "grants": [{"operations": ["datakey", "decrypt"], "resources": ["datasets"],
               "context": {"dataset": "imagenet-*"}},
              {"operations": ["token"], "scopes": ["kw:decrypt:*", "kw:datakey:*"], "max_ttl": 3600}]},
  {"identity": "alice.operators.keyward.dev",
   "grants": [{"operations": ["admin.*"], "resources": ["*"]}]},
  {"identity": "spiffe://keyward.dev/app/inference-gw",
   "grants": [{"operations": ["token"], "scopes": ["model:llama-70b:infer"], "max_ttl": 3600},
              {"operations": ["introspect"], "resources": ["inference-gw"]}]}
]}
EOF
kw_start

APP_ID=spiffe://keyward.dev/app/inference-gw
SCOPE=model:llama-70b:infer

jwks() { # the JWKS, fetched without a client certificate
	curl -sS --fail --cacert "$KW_ENV/ca/ca.pem" "https://127.0.0.1:$KW_PORT/.well-known/jwks.json" \
		>"$KW_DIR/jwks.json" || kw_fail "JWKS without a client certificate"
}

# --- before the first token: an empty key set, public
jwks
"$KW_PY" -c 'import json,sys; assert json.load(open(sys.argv[1])) == {"keys": []}' "$KW_DIR/jwks.json" ||
	kw_fail "JWKS before the first token: $(cat "$KW_DIR/jwks.json")"
kw_req none POST /v1/tokens "{\"audience\":\"gw\",\"scope\":[\"$SCOPE\"]}" >/dev/null
kw_expect 401 "a token without a client certificate"
kw_req none POST /.well-known/jwks.json '{}' >/dev/null || true
[ "$KW_CODE" = 401 ] || [ "$KW_CODE" = 405 ] || kw_fail "POST to the JWKS: $KW_CODE"

# --- issue: the app's policy grants this scope, max_ttl 3600
kw_req app POST /v1/tokens "{\"audience\":\"inference-gw\",\"scope\":[\"$SCOPE\"],\"ttl\":600}" >"$KW_DIR/tok.json"
kw_expect 200 "token"
TOKEN=$(kw_json token)
[ "$(kw_json token_type)" = Bearer ] || kw_fail "token_type"
jwks
"$KW_PY" - "$KW_DIR/jwks.json" "$TOKEN" "$APP_ID" "$SCOPE" 600 "" <<'PY' || kw_fail "PyJWT rejected the token"
import json, sys, jwt
jwks, token, sub, scope, ttl, x5t = sys.argv[1:7]
ks = jwt.PyJWKSet.from_dict(json.load(open(jwks)))
hdr = jwt.get_unverified_header(token)
assert hdr["alg"] == "ES256" and hdr["typ"] == "JWT", hdr
key = next(k for k in ks.keys if k.key_id == hdr["kid"])
c = jwt.decode(token, key.key, algorithms=["ES256"], audience="inference-gw",
               issuer="https://keyward.test",
               options={"require": ["exp", "iat", "nbf", "iss", "aud", "sub", "jti"]})
assert c["sub"] == sub, c
assert c["scope"] == scope, c
assert c["exp"] - c["iat"] == int(ttl), c
assert len(c["jti"]) >= 16, c
if x5t:
    assert c["cnf"] == {"x5t#S256": x5t}, c
else:
    assert "cnf" not in c, c
# A wrong audience or issuer, or another algorithm, is refused.
for kw in ({"audience": "other", "issuer": "https://keyward.test"},
           {"audience": "inference-gw", "issuer": "https://other"}):
    try:
        jwt.decode(token, key.key, algorithms=["ES256"], **kw)
        raise SystemExit("accepted %r" % kw)
    except jwt.InvalidTokenError:
        pass
PY

# --- bound to the certificate: cnf is the x5t#S256 of the app's certificate
kw_req app POST /v1/tokens "{\"audience\":\"inference-gw\",\"scope\":[\"$SCOPE\"],\"bind\":true}" >/dev/null
kw_expect 200 "bound token"
BOUND=$(kw_json token)
X5T=$("$KW_PY" -c '
import base64, hashlib, ssl, sys
der = ssl.PEM_cert_to_DER_cert(open(sys.argv[1]).read())
print(base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode())' "$KW_ENV/clients/app.pem")
"$KW_PY" - "$KW_DIR/jwks.json" "$BOUND" "$APP_ID" "$SCOPE" 3600 "$X5T" <<'PY' || kw_fail "bound token"
import json, sys, jwt
jwks, token, sub, scope, ttl, x5t = sys.argv[1:7]
key = jwt.PyJWKSet.from_dict(json.load(open(jwks))).keys[0]
c = jwt.decode(token, key.key, algorithms=["ES256"], audience="inference-gw", issuer="https://keyward.test")
assert c["cnf"] == {"x5t#S256": x5t}, c
assert c["exp"] - c["iat"] == int(ttl), c   # the grant's max_ttl by default
PY

# --- the policy caps what a caller gets
kw_req train-job POST /v1/tokens "{\"audience\":\"x\",\"scope\":[\"$SCOPE\"]}" >/dev/null
kw_expect 403 "a caller whose grant lacks the scope"
kw_req app POST /v1/tokens '{"audience":"x","scope":["model:other:infer"]}' >/dev/null
kw_expect 403 "a scope the grant does not hold"
kw_req app POST /v1/tokens "{\"audience\":\"x\",\"scope\":[\"$SCOPE\"],\"ttl\":7200}" >/dev/null
kw_expect 403 "a ttl over the grant's max_ttl"
kw_req app POST /v1/tokens "{\"audience\":\"x\",\"scope\":[\"$SCOPE\"],\"ttl\":700000}" >/dev/null
kw_expect 400 "a ttl over the broker's cap"

# --- strict request schema
for body in '{"scope":["a"]}' '{"audience":"x"}' '{"audience":"x","scope":[]}' \
	'{"audience":"x","scope":["a*"]}' '{"audience":"x","scope":["a","a"]}' \
	'{"audience":"x","scope":["a"],"ttl":0}' '{"audience":"x","scope":["a"],"bind":1}' \
	'{"audience":"x","scope":["a"],"exp":1}' '{"audience":"x","scope":"a"}'; do
	kw_req app POST /v1/tokens "$body" >/dev/null
	kw_expect 400 "token request $body"
done

# --- never a token in a log; issuance audited with its jti
AUDIT=$(kw_audit)
JTI=$("$KW_PY" -c 'import jwt,sys; print(jwt.decode(sys.argv[1], options={"verify_signature": False})["jti"])' "$TOKEN")
grep -q "\"op\":\"token\".*jti=$JTI" "$AUDIT" || kw_fail "the issuance is not audited with its jti"
grep -q '"op":"token".*"outcome":"denied"' "$AUDIT" || kw_fail "a refused issuance is not audited"
for t in "$TOKEN" "$BOUND"; do
	sig=${t##*.}
	grep -qF -- "$sig" "$AUDIT" "$KW_DIR/daemon.log" && kw_fail "a token reached a log"
done
"$KW_BIN" --verify-audit "$AUDIT" >/dev/null 2>&1 || kw_fail "audit chain after tokens"

# --- introspection (RFC 7662): for the token's audience only
introspect() { # introspect WHO TOKEN: prints "active" or "inactive"
	kw_req "$1" POST /v1/tokens/introspect "{\"token\":\"$2\"}" >"$KW_DIR/intro.json"
	kw_expect 200 "introspect"
	"$KW_PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); print("active" if d["active"] else "inactive"); assert d["active"] or d == {"active": False}, d' "$KW_DIR/intro.json"
}
[ "$(introspect app "$TOKEN")" = active ] || kw_fail "introspect an active token: $(cat "$KW_DIR/intro.json")"
"$KW_PY" - "$KW_DIR/intro.json" "$APP_ID" "$SCOPE" <<'PY' || kw_fail "introspection answer: $(cat "$KW_DIR/intro.json")"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["sub"] == sys.argv[2] and d["scope"] == sys.argv[3], d
assert d["aud"] == "inference-gw" and d["iss"] == "https://keyward.test", d
assert d["token_type"] == "Bearer" and d["exp"] - d["iat"] == 600, d
PY
[ "$(introspect app "$BOUND")" = active ] || kw_fail "introspect a bound token"
grep -q x5t "$KW_DIR/intro.json" || kw_fail "introspection of a bound token lacks cnf"
[ "$(introspect app "${TOKEN%?????}AAAAA")" = inactive ] || kw_fail "a token with an edited signature is active"
[ "$(introspect app "abc.def.ghi")" = inactive ] || kw_fail "garbage is active"
kw_req train-job POST /v1/tokens/introspect "{\"token\":\"$TOKEN\"}" >/dev/null
kw_expect 403 "introspection without the grant"
kw_req app POST /v1/tokens/introspect '{"token":"a b"}' >/dev/null
kw_expect 400 "introspection of a non-token"

# --- revocation by jti: effective for the next request
kw_req app POST /v1/tokens/revoke "{\"jti\":\"$JTI\"}" >/dev/null
kw_expect 403 "revocation by a caller without admin.revoke"
kw_req operator POST /v1/tokens/revoke "{\"jti\":\"$JTI\"}" >/dev/null
kw_expect 200 "revoke by jti"
[ "$(introspect app "$TOKEN")" = inactive ] || kw_fail "a revoked token is still active"
[ "$(introspect app "$BOUND")" = active ] || kw_fail "revoking one jti revoked another token"
kw_req operator POST /v1/tokens/revoke '{"jti":"short"}' >/dev/null
kw_expect 400 "revoke with a malformed jti"
kw_req operator POST /v1/tokens/revoke '{"jti":"aaaaaaaaaaaaaaaaaaaa","sub":"x"}' >/dev/null
kw_expect 400 "revoke with both jti and sub"

# --- revocation by subject: every token issued to it so far
kw_req operator POST /v1/tokens/revoke "{\"sub\":\"$APP_ID\"}" >/dev/null
kw_expect 200 "revoke by subject"
[ "$(introspect app "$BOUND")" = inactive ] || kw_fail "a token of a revoked subject is active"
sleep 1.1
kw_req app POST /v1/tokens "{\"audience\":\"inference-gw\",\"scope\":[\"$SCOPE\"]}" >/dev/null
kw_expect 200 "a new token after the subject's revocation"
FRESH=$(kw_json token)
[ "$(introspect app "$FRESH")" = active ] || kw_fail "a token issued after the revocation is inactive"
grep -q '"op":"admin.revoke".*revoked jti=' "$AUDIT" || kw_fail "revocation not audited"

# --- a token instead of a certificate: a job decrypts with a token its
# launcher obtained, for its scopes only
# bearer TOKEN WHO METHOD PATH [BODY]: WHO is a client certificate or none.
bearer() {
	local tok=$1 who=$2 method=$3 path=$4 body=${5:-}
	local args=(-s -o "$KW_DIR/resp" -w '%{http_code}' -X "$method"
		--cacert "$KW_ENV/ca/ca.pem" -H "Authorization: Bearer $tok"
		"https://127.0.0.1:$KW_PORT$path")
	[ "$who" != none ] && args+=(--cert "$KW_ENV/clients/$who.pem" --key "$KW_ENV/clients/$who.key")
	[ -n "$body" ] && args+=(-H 'Content-Type: application/json' --data-binary "$body")
	KW_CODE=$(curl "${args[@]}" 2>/dev/null) || KW_CODE=${KW_CODE:-000}
}
kw_req operator POST /v1/keys '{"name":"datasets"}' >/dev/null
kw_expect 201 "create the KEK"
kw_req train-job POST /v1/keys/datasets/datakey '{"context":{"dataset":"imagenet-1k"}}' >/dev/null
kw_expect 200 "datakey with the launcher's certificate"
WRAPPED=$(kw_json wrapped)
PLAIN=$(kw_json plaintext)
DEC="{\"wrapped\":\"$WRAPPED\",\"context\":{\"dataset\":\"imagenet-1k\"}}"
kw_req train-job POST /v1/tokens '{"audience":"https://keyward.test","scope":["kw:decrypt:datasets"],"ttl":3600}' >/dev/null
kw_expect 200 "a job token"
JOB=$(kw_json token)
bearer "$JOB" none POST /v1/keys/datasets/decrypt "$DEC"
kw_expect 200 "decrypt with a token and no certificate"
[ "$(kw_json plaintext)" = "$PLAIN" ] || kw_fail "decrypt with a token: another DEK"
bearer "$JOB" app POST /v1/keys/datasets/decrypt "$DEC"
kw_expect 200 "an unbound token beside another certificate"
bearer "$JOB" none POST /v1/keys/datasets/datakey '{"context":{"dataset":"imagenet-1k"}}'
kw_expect 403 "an operation outside the token's scopes"
bearer "$JOB" none POST /v1/keys/datasets/decrypt "{\"wrapped\":\"$WRAPPED\",\"context\":{\"dataset\":\"laion\"}}"
[ "$KW_CODE" = 403 ] || kw_fail "a context the subject's policy does not grant: $KW_CODE"
bearer "$JOB" none GET /v1/keys
kw_expect 403 "a listing outside the token's scopes"
bearer "$JOB" none POST /v1/tokens "{\"audience\":\"x\",\"scope\":[\"kw:decrypt:datasets\"]}"
kw_expect 403 "a token obtained with a token"
bearer "$FRESH" none POST /v1/keys/datasets/decrypt "$DEC"
kw_expect 401 "a token for another audience"
bearer "abc.def.ghi" none POST /v1/keys/datasets/decrypt "$DEC"
kw_expect 401 "a garbage token"
NONE_TOK=$("$KW_PY" -c '
import base64, json, sys
b = lambda d: base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()
print(b({"alg": "none", "typ": "JWT"}) + "." + b({"sub": "x"}) + ".")')
bearer "$NONE_TOK" none POST /v1/keys/datasets/decrypt "$DEC"
kw_expect 401 "alg none"
KW_CODE=$(curl -s -o /dev/null -w '%{http_code}' --cacert "$KW_ENV/ca/ca.pem" -H 'Authorization: Basic eDp5' \
	-H 'Content-Type: application/json' --data-binary "$DEC" "https://127.0.0.1:$KW_PORT/v1/keys/datasets/decrypt") || true
kw_expect 401 "Basic authorization"
bearer "$JOB" rogue POST /v1/keys/datasets/decrypt "$DEC"
kw_expect 401 "a token beside an untrusted certificate"

# Bound to the launcher's certificate: only with it.
kw_req train-job POST /v1/tokens '{"audience":"https://keyward.test","scope":["kw:decrypt:datasets"],"bind":true}' >/dev/null
kw_expect 200 "a bound job token"
JOBB=$(kw_json token)
bearer "$JOBB" none POST /v1/keys/datasets/decrypt "$DEC"
kw_expect 401 "a bound token without its certificate"
bearer "$JOBB" app POST /v1/keys/datasets/decrypt "$DEC"
kw_expect 401 "a bound token beside another certificate"
bearer "$JOBB" train-job POST /v1/keys/datasets/decrypt "$DEC"
kw_expect 200 "a bound token with its certificate"
grep -q '"identity":"spiffe://keyward.dev/job/train-llama","op":"decrypt".*(token jti=' "$AUDIT" ||
	kw_fail "a token-authenticated request is not audited with its subject and jti"

# Revoked: refused from the next request on.
JOBJTI=$("$KW_PY" -c 'import jwt,sys; print(jwt.decode(sys.argv[1], options={"verify_signature": False})["jti"])' "$JOB")
kw_req operator POST /v1/tokens/revoke "{\"jti\":\"$JOBJTI\"}" >/dev/null
kw_expect 200 "revoke the job token"
bearer "$JOB" none POST /v1/keys/datasets/decrypt "$DEC"
kw_expect 401 "a revoked job token"
grep -q '"op":"decrypt".*"outcome":"failed".*token: token revoked' "$AUDIT" ||
	kw_fail "the refusal of a revoked token is not audited with its reason"

# --- the signing key survives a restart: old tokens still verify
cp "$KW_DIR/jwks.json" "$KW_DIR/jwks.before"
kill -TERM "$KW_PID"
wait "$KW_PID" 2>/dev/null || true
kw_start
jwks
cmp -s "$KW_DIR/jwks.before" "$KW_DIR/jwks.json" || kw_fail "the JWKS changed across a restart"
"$KW_PY" - "$KW_DIR/jwks.json" "$TOKEN" "$APP_ID" "$SCOPE" 600 "" <<'PY' || kw_fail "token after restart"
import json, sys, jwt
jwks, token = sys.argv[1:3]
key = jwt.PyJWKSet.from_dict(json.load(open(jwks))).keys[0]
jwt.decode(token, key.key, algorithms=["ES256"], audience="inference-gw", issuer="https://keyward.test")
PY
# Revocations survive the restart too.
[ "$(introspect app "$TOKEN")" = inactive ] || kw_fail "a revoked token is active after a restart"
[ "$(introspect app "$BOUND")" = inactive ] || kw_fail "a revoked subject's token is active after a restart"
[ "$(introspect app "$FRESH")" = active ] || kw_fail "a valid token is inactive after a restart"
bearer "$JOB" none POST /v1/keys/datasets/decrypt "$DEC"
kw_expect 401 "a revoked job token after a restart"
bearer "$JOBB" train-job POST /v1/keys/datasets/decrypt "$DEC"
kw_expect 200 "a valid job token after a restart"
echo "PASS"
