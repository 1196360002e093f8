#!/usr/bin/env bash
# Keyward tokens against an independent implementation, PyJWT 2.x
# (python3-jwt, with python3-cryptography), both ways:
#  - tokens issued by kwd_token_build (tests/token_tool.c, a software
#    P-256 key) verify in PyJWT through the JWKS that kwd_token_jwk makes,
#    and their kid is the RFC 7638 thumbprint PyJWT's JWK gives;
#  - ES256 tokens made by PyJWT with the same key verify with
#    kwd_token_verify, bound ones only with their certificate;
#  - PyJWT tokens with HS256 (a secret, or the public key as the secret),
#    alg none, an audience list, or expired are refused.
# Always /usr/bin/python3: the python3 on PATH may lack jwt.
set -euo pipefail

PY=/usr/bin/python3
TOOL=${KW_TOKEN_TOOL:-}
if [ -z "$TOOL" ] && [ -n "${KEYWARDD:-}" ]; then
	TOOL=$(dirname "$KEYWARDD")/token_tool
fi
skip() {
	echo "SKIP: $*" >&2
	exit 77
}
fail() {
	echo "FAIL: $*" >&2
	exit 1
}
[ -n "$TOOL" ] && [ -x "$TOOL" ] || skip "token_tool not built (KW_TOKEN_TOOL or KEYWARDD)"
[ -x "$PY" ] || skip "$PY not found"
"$PY" -c 'import jwt, cryptography; assert int(jwt.__version__.split(".")[0]) >= 2' 2>/dev/null ||
	skip "PyJWT 2.x with cryptography not installed (apt-get install python3-jwt python3-cryptography)"
command -v openssl >/dev/null || skip "openssl not found"

DIR=$(mktemp -d /tmp/kwtok.XXXXXX)
trap 'rm -rf "$DIR"' EXIT
ISS=https://keyward.test
AUD=api.keyward.test
SUB=spiffe://keyward.dev/job/train-llama
SCOPE="model:llama-70b:infer datasets/imagenet:read"

"$TOOL" keygen "$DIR/key.pem"
for n in a b; do
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
		-keyout "$DIR/$n.key" -out "$DIR/$n.pem" -subj "/CN=client-$n" \
		-days 1 2>/dev/null || fail "openssl cannot make a certificate"
done
THUMB_A=$("$TOOL" thumbprint "$DIR/a.pem")
THUMB_B=$("$TOOL" thumbprint "$DIR/b.pem")

# 1. keyward -> PyJWT: a bearer and a bound token.
"$TOOL" issue "$DIR/key.pem" "$ISS" "$SUB" "$AUD" "$SCOPE" 600 >"$DIR/bearer"
"$TOOL" issue "$DIR/key.pem" "$ISS" "$SUB" "$AUD" "$SCOPE" 600 "$THUMB_A" >"$DIR/bound"

KW_DIR=$DIR KW_ISS=$ISS KW_AUD=$AUD KW_SUB=$SUB KW_SCOPE=$SCOPE KW_THUMB_A=$THUMB_A \
	"$PY" - <<'PY' || fail "PyJWT refused a keyward token"
import base64, hashlib, json, os, sys
import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization

d = os.environ["KW_DIR"]
iss, aud, sub, scope = (os.environ[k] for k in ("KW_ISS", "KW_AUD", "KW_SUB", "KW_SCOPE"))

def b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()

for name in ("bearer", "bound"):
    token, jwks = open(f"{d}/{name}").read().split("\n")[:2]
    keyset = jwt.PyJWKSet.from_dict(json.loads(jwks))
    header = jwt.get_unverified_header(token)
    assert header == {"alg": "ES256", "kid": header["kid"], "typ": "JWT"}, header
    jwk = keyset[header["kid"]]
    claims = jwt.decode(token, jwk.key, algorithms=["ES256"], audience=aud, issuer=iss,
                        options={"require": ["exp", "iat", "nbf", "iss", "aud", "sub", "jti"]})
    assert claims["sub"] == sub and claims["scope"] == scope, claims
    assert len(base64.urlsafe_b64decode(claims["jti"] + "==")) >= 16, claims["jti"]
    # The kid is the RFC 7638 thumbprint, recomputed here from the JWK.
    j = json.loads(jwks)["keys"][0]
    canon = json.dumps({k: j[k] for k in ("crv", "kty", "x", "y")}, separators=(",", ":"), sort_keys=True)
    assert header["kid"] == b64u(hashlib.sha256(canon.encode()).digest()), "kid is not the RFC 7638 thumbprint"
    # The key in the JWK is the key in the PEM.
    priv = serialization.load_pem_private_key(open(f"{d}/key.pem", "rb").read(), None)
    assert priv.public_key().public_numbers() == jwk.key.public_numbers()
    # Wrong audience or issuer: PyJWT refuses too.
    for kw in ({"audience": "other", "issuer": iss}, {"audience": aud, "issuer": "https://evil"}):
        try:
            jwt.decode(token, jwk.key, algorithms=["ES256"], **kw)
            sys.exit(f"PyJWT accepted {kw}")
        except jwt.InvalidTokenError:
            pass
    if name == "bound":
        cert = x509.load_pem_x509_certificate(open(f"{d}/a.pem", "rb").read())
        want = b64u(hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).digest())
        assert claims["cnf"] == {"x5t#S256": want} == {"x5t#S256": os.environ["KW_THUMB_A"]}, claims
    else:
        assert "cnf" not in claims
print("keyward -> PyJWT: ok")
PY

# keyward's own verifier on the same tokens (bound: only with cert a).
head -1 "$DIR/bearer" | "$TOOL" verify "$DIR/key.pem" "$ISS" "$AUD" 3600 >/dev/null ||
	fail "keyward refused its own bearer token"
head -1 "$DIR/bound" | "$TOOL" verify "$DIR/key.pem" "$ISS" "$AUD" 3600 "$THUMB_A" >/dev/null ||
	fail "keyward refused its own bound token with the right certificate"
for args in "$THUMB_B" ""; do
	set +e
	out=$(head -1 "$DIR/bound" | "$TOOL" verify "$DIR/key.pem" "$ISS" "$AUD" 3600 $args)
	rc=$?
	set -e
	[ "$rc" = 1 ] || fail "bound token accepted with certificate '${args:-none}' (rc $rc)"
	case $out in *"bound to"*) ;; *) fail "unexpected refusal: $out" ;; esac
done

# 2. PyJWT -> keyward: tokens PyJWT signs with the same key, and ones it
# must not get through.
KW_DIR=$DIR KW_ISS=$ISS KW_AUD=$AUD KW_SUB=$SUB KW_THUMB_A=$THUMB_A \
	"$PY" - <<'PY' || fail "PyJWT could not make the tokens"
import hashlib, hmac, base64, json, os, secrets, time
import jwt
from cryptography.hazmat.primitives import serialization

d = os.environ["KW_DIR"]
iss, aud, sub = os.environ["KW_ISS"], os.environ["KW_AUD"], os.environ["KW_SUB"]
pem = open(f"{d}/key.pem", "rb").read()
priv = serialization.load_pem_private_key(pem, None)
pub_pem = priv.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)
kid = json.loads(open(f"{d}/bearer").read().split("\n")[1])["keys"][0]["kid"]
now = int(time.time())

def claims(**over):
    c = {"iss": iss, "sub": sub, "aud": aud, "iat": now, "nbf": now, "exp": now + 300,
         "jti": secrets.token_urlsafe(16), "scope": "model:llama-70b:infer"}
    c.update(over)
    return {k: v for k, v in c.items() if v is not None}

def b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()

good = [jwt.encode(claims(), priv, algorithm="ES256", headers={"kid": kid}) for _ in range(64)]
with open(f"{d}/py-good", "w") as f:
    f.write("\n".join(good) + "\n")
with open(f"{d}/py-bound", "w") as f:
    f.write(jwt.encode(claims(cnf={"x5t#S256": os.environ["KW_THUMB_A"]}), priv,
                       algorithm="ES256", headers={"kid": kid}) + "\n")
bad = {
    "hs256-secret": jwt.encode(claims(), "a shared secret", algorithm="HS256", headers={"kid": kid}),
    "none": jwt.encode(claims(), None, algorithm="none", headers={"kid": kid}),
    "aud-list": jwt.encode(claims(aud=[aud]), priv, algorithm="ES256", headers={"kid": kid}),
    "expired": jwt.encode(claims(iat=now - 900, nbf=now - 900, exp=now - 600), priv,
                          algorithm="ES256", headers={"kid": kid}),
    "no-kid": jwt.encode(claims(), priv, algorithm="ES256"),
    "extra-claim": jwt.encode(claims(admin=True), priv, algorithm="ES256", headers={"kid": kid}),
    "no-jti": jwt.encode(claims(jti=None), priv, algorithm="ES256", headers={"kid": kid}),
}
# HS256 keyed with the public key (PyJWT itself refuses to make it).
h = b64u(json.dumps({"alg": "HS256", "kid": kid, "typ": "JWT"}, separators=(",", ":")).encode())
p = b64u(json.dumps(claims(), separators=(",", ":")).encode())
mac = hmac.new(pub_pem, f"{h}.{p}".encode(), hashlib.sha256).digest()
bad["hs256-public-key"] = f"{h}.{p}.{b64u(mac)}"
for name, tok in bad.items():
    with open(f"{d}/py-bad-{name}", "w") as f:
        f.write(tok + "\n")
print("PyJWT tokens made")
PY

n=0
while read -r tok; do
	echo "$tok" | "$TOOL" verify "$DIR/key.pem" "$ISS" "$AUD" 3600 >"$DIR/out" ||
		fail "keyward refused a PyJWT ES256 token: $(cat "$DIR/out")"
	grep -q "\"sub\":\"$SUB\"" "$DIR/out" || fail "claims lost: $(cat "$DIR/out")"
	n=$((n + 1))
done <"$DIR/py-good"
[ "$n" = 64 ] || fail "only $n PyJWT tokens checked"
"$TOOL" verify "$DIR/key.pem" "$ISS" "$AUD" 3600 "$THUMB_A" <"$DIR/py-bound" >/dev/null ||
	fail "keyward refused a PyJWT bound token with the right certificate"
set +e
"$TOOL" verify "$DIR/key.pem" "$ISS" "$AUD" 3600 "$THUMB_B" <"$DIR/py-bound" >/dev/null
rc=$?
set -e
[ "$rc" = 1 ] || fail "PyJWT bound token accepted with another certificate (rc $rc)"

expect_refused() { # NAME REASON
	local out rc
	set +e
	out=$("$TOOL" verify "$DIR/key.pem" "$ISS" "$AUD" 3600 <"$DIR/py-bad-$1")
	rc=$?
	set -e
	[ "$rc" = 1 ] || fail "PyJWT $1 token not refused (rc $rc): $out"
	case $out in *"$2"*) ;; *) fail "PyJWT $1 token refused for another reason: $out" ;; esac
	echo "PyJWT $1: $out"
}
expect_refused hs256-secret 'alg "HS256" is not ES256'
expect_refused hs256-public-key 'alg "HS256" is not ES256'
expect_refused none 'token: an empty part'
expect_refused aud-list 'aud is not a string'
expect_refused expired 'expired'
expect_refused no-kid 'no kid'
expect_refused extra-claim 'unknown claim "admin"'
expect_refused no-jti 'payload: no jti'
echo "PyJWT -> keyward: $n ES256 tokens accepted, bound token checked, 8 bad tokens refused"
echo "PASS"
