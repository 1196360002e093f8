#!/usr/bin/python3
"""Seed corpus of the artifact_verify fuzz target.

usage: make_artifact_corpus.py [OUTDIR]   (default: corpus/artifact_verify
                                           beside this script)

Each seed is what fuzz_artifact_verify.c takes: a signature document, a
newline, a key set, both as keywardd writes them (docs/API.md, "Signing
keys and artifact signatures"): the answer of POST /v1/artifacts/sign and
the answer of GET /v1/signing-keys/{name} or a JWKS. The valid seeds sign
ARTIFACT, the file the target verifies against (the same bytes as in
fuzz_artifact_verify.c); the others are each a valid pair with one thing
broken.

The signing keys are fixed (derived from their names), so key sets and
kids are the same on every run; ECDSA signatures are randomized, so the
signature bytes differ from run to run, and every one verifies. Seeds of
the same names are overwritten; other files in OUTDIR are left alone.
"""
import base64
import hashlib
import json
import os
import string
import sys

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature)

ARTIFACT = b"keyward artifact_verify fuzz target: the signed artifact\n"
OTHER = b"another artifact\n"
# The order n of P-256 (SEC 2 section 2.4.2).
P256_N = 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def compact(obj):
    return json.dumps(obj, separators=(",", ":"))


def fixed_key(label, curve=ec.SECP256R1()):
    # A scalar in [1, n-1] for P-256, and so for P-384 and secp256k1.
    seed = hashlib.sha256(b"keyward fuzz signing key " + label.encode())
    return ec.derive_private_key(
        int(seed.hexdigest(), 16) % (P256_N - 1) + 1, curve)


def coords(key, size=32):
    pub = key.public_key().public_numbers()
    return (b64url(pub.x.to_bytes(size, "big")),
            b64url(pub.y.to_bytes(size, "big")))


def thumbprint(x, y, crv="P-256"):
    # RFC 7638 section 3.2: the required members, sorted, no whitespace.
    canon = '{"crv":"%s","kty":"EC","x":"%s","y":"%s"}' % (crv, x, y)
    return b64url(hashlib.sha256(canon.encode()).digest())


def jwk(key, version=None, state=None):
    x, y = coords(key)
    # The members in keywardd's order (kwd_token_jwk, then signer_doc).
    j = {"kty": "EC", "crv": "P-256", "x": x, "y": y,
         "kid": thumbprint(x, y), "use": "sig", "alg": "ES256"}
    if version is not None:
        j["version"] = version
        j["state"] = state
    return j


def raw_sig(key, data):
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
    return r, s


def sig_bytes(r, s):
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def sig_doc(key, version, name="models", data=ARTIFACT, digest_of=None,
            rs=None):
    r, s = rs if rs is not None else raw_sig(key, data)
    digest = hashlib.sha256(digest_of if digest_of is not None else data)
    return {"key": name, "version": version, "kid": jwk(key)["kid"],
            "alg": "ES256", "digest": "sha256:" + digest.hexdigest(),
            "signature": b64url(sig_bytes(r, s))}


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        here, "corpus", "artifact_verify")
    os.makedirs(out, exist_ok=True)

    v1, v2 = fixed_key("models/1"), fixed_key("models/2")
    tok = fixed_key("token/1")
    keyset = {"name": "models", "active_version": 2,
              "keys": [jwk(v1, 1, "retired"), jwk(v2, 2, "active")]}
    ks = compact(keyset)
    sig2 = sig_doc(v2, 2)
    seeds = {}

    def put(name, sig, keys):
        s = sig if isinstance(sig, str) else compact(sig)
        k = keys if isinstance(keys, str) else compact(keys)
        seeds[name] = s + "\n" + k

    def mutated_sig(**change):
        d = dict(sig2)
        for k, v in change.items():
            if v is None:
                del d[k]
            else:
                d[k] = v
        return d

    def mutated_key(**change):
        # The active version's JWK, changed.
        ks2 = json.loads(ks)
        j = ks2["keys"][1]
        for k, v in change.items():
            if v is None:
                del j[k]
            else:
                j[k] = v
        return ks2

    # ---- signatures that verify
    put("valid-active", sig2, ks)
    put("valid-retired", sig_doc(v1, 1), ks)
    put("valid-jwks", sig_doc(tok, 1, name="token"),
        {"keys": [jwk(v1), jwk(tok)]})
    x, y = coords(v2)
    put("valid-minimal-jwk", sig2,
        {"keys": [{"kty": "EC", "crv": "P-256", "x": x, "y": y,
                   "kid": thumbprint(x, y)}]})
    r, s = raw_sig(v2, ARTIFACT)
    put("valid-high-s", sig_doc(v2, 2, rs=(r, P256_N - s)), ks)
    put("valid-pretty", sig2, json.dumps(keyset, indent=2))
    put("valid-sig-reordered",
        {k: sig2[k] for k in sorted(sig2)}, ks)
    many = {"keys": [jwk(fixed_key("many/%d" % i)) for i in range(12)]}
    many["keys"].append(jwk(v2, 2, "active"))
    put("valid-many-keys", sig2, many)
    put("valid-unknown-members",
        mutated_sig(comment="signed by the release pipeline"),
        mutated_key(x5u="https://example.invalid/keys"))

    # ---- the signature document
    put("bad-wrong-kid", mutated_sig(kid=jwk(tok)["kid"]), ks)
    put("bad-kid-65", mutated_sig(kid="A" * 65), ks)
    put("bad-kid-64-unknown", mutated_sig(kid="A" * 64), ks)
    put("bad-kid-chars", mutated_sig(kid="../" + sig2["kid"]), ks)
    put("bad-kid-empty", mutated_sig(kid=""), ks)
    put("bad-no-kid", mutated_sig(kid=None), ks)
    put("bad-alg-es384", mutated_sig(alg="ES384"), ks)
    put("bad-alg-none", mutated_sig(alg="none"), ks)
    put("bad-version-0", mutated_sig(version=0), ks)
    put("bad-version-string", mutated_sig(version="2"), ks)
    put("bad-version-real", compact(sig2).replace('"version":2',
                                                  '"version":2.0'), ks)
    put("bad-version-huge", compact(sig2).replace(
        '"version":2', '"version":99999999999999999999999'), ks)
    put("bad-version-1e400", compact(sig2).replace('"version":2',
                                                   '"version":1e400'), ks)
    put("bad-version-int64-max", mutated_sig(version=2**63 - 1), ks)
    put("bad-version-mismatch", mutated_sig(version=1), ks)
    put("bad-digest-upper", mutated_sig(digest=sig2["digest"].upper()
                                        .replace("SHA256", "sha256")), ks)
    put("bad-digest-sha512", mutated_sig(
        digest="sha512:" + hashlib.sha512(ARTIFACT).hexdigest()), ks)
    put("bad-digest-short", mutated_sig(digest=sig2["digest"][:-2]), ks)
    put("bad-digest-other-file", sig_doc(v2, 2, data=OTHER), ks)
    put("bad-sig-other-file", sig_doc(v2, 2, data=OTHER,
                                      digest_of=ARTIFACT), ks)
    sb = sig_bytes(r, s)
    put("bad-sig-padded", mutated_sig(signature=b64url(sb) + "=="), ks)
    put("bad-sig-std-alphabet", mutated_sig(
        signature=base64.b64encode(sb).decode().rstrip("=")), ks)
    # 64 bytes in 86 characters: the last one has 4 bits that must be 0.
    alphabet = (string.ascii_uppercase + string.ascii_lowercase +
                string.digits + "-_")
    text = b64url(sb)
    put("bad-sig-noncanonical", mutated_sig(
        signature=text[:-1] + alphabet[alphabet.index(text[-1]) ^ 1]), ks)
    put("bad-sig-63-bytes", mutated_sig(signature=b64url(sb[:63])), ks)
    put("bad-sig-65-bytes", mutated_sig(signature=b64url(sb + b"\0")), ks)
    put("bad-sig-der", mutated_sig(signature=b64url(
        v2.sign(ARTIFACT, ec.ECDSA(hashes.SHA256())))), ks)
    put("bad-r-zero", sig_doc(v2, 2, rs=(0, s)), ks)
    put("bad-s-is-n", sig_doc(v2, 2, rs=(r, P256_N)), ks)
    put("bad-r-above-n", sig_doc(v2, 2, rs=(P256_N + 1, s)), ks)
    put("bad-s-n-minus-1", sig_doc(v2, 2, rs=(r, P256_N - 1)), ks)
    put("bad-sig-dup-key", compact(sig2)[:-1] + ',"kid":"' +
        jwk(v1)["kid"] + '"}', ks)
    put("bad-sig-array", [sig2], ks)
    put("bad-sig-not-json", "signature: " + sig2["signature"], ks)
    put("bad-sig-empty", "", ks)
    put("bad-sig-nul-escape", mutated_sig(key="models\u0000x"), ks)
    put("bad-sig-deep", '{"key":' + "[" * 2100 + "]" * 2100 + "}", ks)

    # ---- the key set
    put("bad-name-mismatch", sig2, dict(keyset, name="firmware"))
    put("bad-keys-missing", sig2, {"name": "models"})
    put("bad-keys-object", sig2, {"keys": keyset["keys"][1]})
    put("bad-keys-empty", sig2, {"keys": []})
    put("bad-keys-not-json", sig2, ks[:-7])
    put("bad-keys-absent", compact(sig2), "")
    put("bad-keys-dup", sig2, ks[:-1] + ',"keys":[]}')
    put("bad-jwk-dup-member", sig2,
        ks.replace('"kty":"EC"', '"kty":"EC","kty":"RSA"', 1))
    put("bad-keys-deep", sig2, '{"keys":[' + "[" * 2100 + "]" * 2100 + "]}")
    put("ok-keys-nested-1000", sig2,
        '{"keys":[' + "[" * 1000 + "]" * 1000 + "," + compact(
            jwk(v2, 2, "active")) + "]}")
    put("bad-kty-rsa", sig2, mutated_key(kty="RSA"))
    put("bad-kty-missing", sig2, mutated_key(kty=None))
    put("bad-crv-p384-label", sig2, mutated_key(crv="P-384"))
    put("bad-alg-jwk-es384", sig2, mutated_key(alg="ES384"))
    put("bad-use-enc", sig2, mutated_key(use="enc"))
    put("bad-jwk-version-mismatch", sig2, mutated_key(version=1))
    put("bad-jwk-version-string", sig2, mutated_key(version="2"))
    put("bad-state-revoked", sig2, mutated_key(state="revoked"))
    put("bad-state-number", sig2, mutated_key(state=1))
    put("bad-x-padded", sig2, mutated_key(x=x + "="))
    put("bad-x-number", sig2, mutated_key(x=12345))
    put("bad-y-missing", sig2, mutated_key(y=None))
    yb = base64.urlsafe_b64decode(y + "=")
    y1 = b64url((int.from_bytes(yb, "big") ^ 1).to_bytes(32, "big"))
    put("bad-point-off-curve", mutated_sig(kid=thumbprint(x, y1)),
        mutated_key(y=y1, kid=thumbprint(x, y1)))
    # v2's point under v1's kid.
    put("bad-kid-not-thumbprint", mutated_sig(kid=jwk(v1)["kid"]),
        {"keys": [dict(jwk(v2), kid=jwk(v1)["kid"])]})
    # A P-384 key, listed as such and under P-256's name.
    k384 = fixed_key("models/384", ec.SECP384R1())
    x3, y3 = coords(k384, 48)
    j384 = {"kty": "EC", "crv": "P-384", "x": x3, "y": y3,
            "kid": thumbprint(x3, y3, "P-384"), "use": "sig",
            "alg": "ES384"}
    put("bad-curve-p384", mutated_sig(kid=j384["kid"]), {"keys": [j384]})
    j384b = dict(j384, crv="P-256", alg="ES256",
                 kid=thumbprint(x3, y3))
    put("bad-curve-p384-as-p256", mutated_sig(kid=j384b["kid"]),
        {"keys": [j384b]})
    # A secp256k1 point, called P-256: off the P-256 curve.
    k1 = fixed_key("models/k1", ec.SECP256K1())
    xk, yk = coords(k1)
    jk = {"kty": "EC", "crv": "P-256", "x": xk, "y": yk,
          "kid": thumbprint(xk, yk)}
    put("bad-curve-secp256k1", mutated_sig(kid=jk["kid"]), {"keys": [jk]})

    for name, text in sorted(seeds.items()):
        with open(os.path.join(out, name), "w", encoding="ascii") as f:
            f.write(text)
    print("%d seeds in %s" % (len(seeds), out))


if __name__ == "__main__":
    main()
