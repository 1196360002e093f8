#!/usr/bin/env bash
# Signing keys and artifact signatures end to end: an operator makes and
# rotates signing keys, a release pipeline signs a model's digest in the
# HSM, a deployment verifies it offline from the published public keys
# (Python's cryptography, independent of keyward); token key rotation
# keeps tokens signed by the old key valid (PyJWT against the JWKS).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
kw_need
"$KW_PY" -c 'import jwt, cryptography' 2>/dev/null ||
	kw_skip "PyJWT or cryptography missing for $KW_PY (apt-get install python3-jwt python3-cryptography)"
kw_setup
cat >"$KW_ENV/policy.json" <<'EOF'
{"version": 1, "rules": [
  {"identity": "alice.operators.keyward.dev",
   "grants": [{"operations": ["admin.*"], "resources": ["*"]}]},
  {"identity": "spiffe://keyward.dev/app/inference-gw",
   "grants": [{"operations": ["sign"], "resources": ["models"]},
              {"operations": ["token"], "scopes": ["model:*"], "max_ttl": 3600}]}
]}
EOF
kw_start

# verify FILE SIGJSON KEYSJSON: offline ECDSA P-256 check of an artifact.
verify() {
	"$KW_PY" - "$@" <<'PY'
import base64, hashlib, json, sys
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils
f, sigf, keysf = sys.argv[1:4]
sig = json.load(open(sigf))
keys = json.load(open(keysf))["keys"]
b = lambda s: base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))
digest = hashlib.sha256(open(f, "rb").read()).digest()
if sig["alg"] != "ES256" or sig["digest"] != "sha256:" + digest.hex():
    sys.exit("digest mismatch")
jwk = next((k for k in keys if k["kid"] == sig["kid"]), None)
if jwk is None:
    sys.exit("unknown kid")
pub = ec.EllipticCurvePublicNumbers(int.from_bytes(b(jwk["x"]), "big"),
        int.from_bytes(b(jwk["y"]), "big"), ec.SECP256R1()).public_key()
raw = b(sig["signature"])
assert len(raw) == 64
der = utils.encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
pub.verify(der, digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
PY
}

digest_of() { echo "sha256:$(sha256sum "$1" | cut -d' ' -f1)"; }

head -c 200000 /dev/urandom >"$KW_DIR/model.safetensors"
D=$(digest_of "$KW_DIR/model.safetensors")

# --- no key yet
kw_req app POST /v1/artifacts/sign "{\"key\":\"models\",\"digest\":\"$D\"}" >/dev/null
kw_expect 404 "signing with a key that does not exist"
kw_req app GET /v1/signing-keys/models >/dev/null
kw_expect 404 "a signing key that does not exist"

# --- the operator makes the key; a non-admin may not
kw_req app POST /v1/signing-keys/models/rotate >/dev/null
kw_expect 403 "rotate without admin"
kw_req operator POST /v1/signing-keys/models/rotate >"$KW_DIR/keys1.json"
kw_expect 200 "make a signing key"
[ "$(kw_json active_version)" = 1 ] || kw_fail "new signing key: $(cat "$KW_DIR/keys1.json")"
kw_req operator POST /v1/keys '{"name":"models"}' >/dev/null
kw_expect 409 "a KEK with a signing key's name"
kw_req operator POST /v1/keys/models/datakey '{"context":{}}' >/dev/null
[ "$KW_CODE" = 404 ] || [ "$KW_CODE" = 403 ] || kw_fail "datakey with a signing key: $KW_CODE"

# --- sign, verify offline
kw_req app POST /v1/artifacts/sign "{\"key\":\"models\",\"digest\":\"$D\"}" >"$KW_DIR/sig1.json"
kw_expect 200 "sign an artifact"
verify "$KW_DIR/model.safetensors" "$KW_DIR/sig1.json" "$KW_DIR/keys1.json" || kw_fail "offline verification"
# One bit flipped (a byte overwritten could be the same byte).
"$KW_PY" -c 'import sys; b=bytearray(open(sys.argv[1],"rb").read()); b[1000]^=1; open(sys.argv[2],"wb").write(b)' \
	"$KW_DIR/model.safetensors" "$KW_DIR/evil.safetensors"
cmp -s "$KW_DIR/model.safetensors" "$KW_DIR/evil.safetensors" && kw_fail "the modified copy is not modified"
if verify "$KW_DIR/evil.safetensors" "$KW_DIR/sig1.json" "$KW_DIR/keys1.json" 2>/dev/null; then
	kw_fail "a modified artifact verified"
fi
"$KW_PY" - "$KW_DIR/sig1.json" "$KW_DIR/sigbad.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
c = list(s["signature"])
c[10] = "A" if c[10] != "A" else "B"
s["signature"] = "".join(c)
json.dump(s, open(sys.argv[2], "w"))
PY
if verify "$KW_DIR/model.safetensors" "$KW_DIR/sigbad.json" "$KW_DIR/keys1.json" 2>/dev/null; then
	kw_fail "an edited signature verified"
fi

# --- refusals
kw_req train-job POST /v1/artifacts/sign "{\"key\":\"models\",\"digest\":\"$D\"}" >/dev/null
kw_expect 403 "signing without a grant"
kw_req operator POST /v1/artifacts/sign "{\"key\":\"token\",\"digest\":\"$D\"}" >/dev/null
[ "$KW_CODE" = 404 ] || [ "$KW_CODE" = 403 ] || kw_fail "signing with the token key: $KW_CODE"
for body in '{"key":"models","digest":"sha256:00"}' '{"key":"models","digest":"sha1:'"${D#sha256:}"'"}' \
	'{"key":"models","digest":"'"$(echo "$D" | tr a-f A-F)"'"}' '{"key":"models"}' \
	'{"key":"Models","digest":"'"$D"'"}' '{"key":"models","digest":"'"$D"'","x":1}'; do
	kw_req app POST /v1/artifacts/sign "$body" >/dev/null
	kw_expect 400 "sign request $body"
done

# --- rotation: new signatures use the new version, old ones still verify
kw_req operator POST /v1/signing-keys/models/rotate >/dev/null
kw_expect 200 "rotate the signing key"
kw_req train-job GET /v1/signing-keys/models >"$KW_DIR/keys2.json"
kw_expect 200 "public keys for any authenticated caller"
"$KW_PY" - "$KW_DIR/keys2.json" <<'PY' || kw_fail "key set after rotation: $(cat "$KW_DIR/keys2.json")"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["active_version"] == 2, d
states = sorted((k["version"], k["state"]) for k in d["keys"])
assert states == [(1, "retired"), (2, "active")], states
assert len({k["kid"] for k in d["keys"]}) == 2, d
PY
verify "$KW_DIR/model.safetensors" "$KW_DIR/sig1.json" "$KW_DIR/keys2.json" || kw_fail "an old signature after rotation"
kw_req app POST /v1/artifacts/sign "{\"key\":\"models\",\"digest\":\"$D\"}" >"$KW_DIR/sig2.json"
kw_expect 200 "sign after rotation"
[ "$(kw_json version)" = 2 ] || kw_fail "signature after rotation: version $(kw_json version)"
verify "$KW_DIR/model.safetensors" "$KW_DIR/sig2.json" "$KW_DIR/keys2.json" || kw_fail "a new signature"
if verify "$KW_DIR/model.safetensors" "$KW_DIR/sig2.json" "$KW_DIR/keys1.json" 2>/dev/null; then
	kw_fail "a new signature verified with the old key set only"
fi

# --- the token key: rotation keeps tokens signed by the old version valid
kw_req app POST /v1/tokens '{"audience":"gw","scope":["model:a"]}' >/dev/null
kw_expect 200 "token before the rotation"
OLD=$(kw_json token)
kw_req operator POST /v1/signing-keys/token/rotate >/dev/null
kw_expect 200 "rotate the token key"
kw_req app POST /v1/tokens '{"audience":"gw","scope":["model:a"]}' >/dev/null
kw_expect 200 "token after the rotation"
NEW=$(kw_json token)
curl -sS --fail --cacert "$KW_ENV/ca/ca.pem" "https://127.0.0.1:$KW_PORT/.well-known/jwks.json" >"$KW_DIR/jwks.json" ||
	kw_fail "JWKS"
"$KW_PY" - "$KW_DIR/jwks.json" "$OLD" "$NEW" <<'PY' || kw_fail "tokens across the token key's rotation"
import json, sys, jwt
ks = jwt.PyJWKSet.from_dict(json.load(open(sys.argv[1])))
assert len(ks.keys) == 2, len(ks.keys)
kids = set()
for t in sys.argv[2:4]:
    kid = jwt.get_unverified_header(t)["kid"]
    kids.add(kid)
    key = next(k for k in ks.keys if k.key_id == kid)
    jwt.decode(t, key.key, algorithms=["ES256"], audience="gw", issuer="keyward")
assert len(kids) == 2, "the new token has the old kid"
PY
AUDIT=$(kw_audit)
grep -q '"op":"sign".*"outcome":"allowed"' "$AUDIT" || kw_fail "signing not audited"
"$KW_BIN" --verify-audit "$AUDIT" >/dev/null 2>&1 || kw_fail "audit chain"
echo "PASS"
