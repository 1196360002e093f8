#!/usr/bin/python3
"""Seed corpora of the datakey_answer and token_answer fuzz targets.

usage: make_answer_corpus.py [CORPUSDIR]   (default: corpus beside this
                                            script)

Writes CORPUSDIR/datakey_answer/ and CORPUSDIR/token_answer/: keywardd's
answers to datakey, decrypt and POST /v1/tokens, byte for byte as
broker/front.c writes them (dek_json, token_json), then each with one
thing changed. A datakey_answer seed is the key name of the call, a
newline, the wrapped key the call sent (empty for datakey), a newline and
the answer (fuzz_datakey_answer.c). A token_answer seed is the answer.

Wrapped keys follow docs/FORMATS.md (format 1) with fixed bytes for the
nonce, ciphertext and tag, DEKs are fixed, and the tokens are the real,
signed ones of corpus/token/ (the client does not verify a token, it
hands it on). The output is the same on every run. Seeds of the same
names are overwritten; other files are left alone.
"""
import base64
import hashlib
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def stream(label, n):
    """n fixed pseudo-random bytes for label."""
    out = b""
    i = 0
    while len(out) < n:
        out += hashlib.sha256(b"%s/%d" % (label.encode(), i)).digest()
        i += 1
    return out[:n]


def b64(b):
    return base64.b64encode(b).decode()


def blob(name, version, magic=b"KWDK", fmt=1, alg=1, name_len=None,
         ct_len=48):
    """A wrapped DEK: docs/FORMATS.md, format 1."""
    n = len(name) if name_len is None else name_len
    label = "%s/%d" % (name, version)
    return (magic + bytes([fmt, alg, n]) + name.encode() +
            version.to_bytes(4, "big") + stream("nonce " + label, 12) +
            ct_len.to_bytes(2, "big") + stream("ct " + label, ct_len))


def dek(label):
    return stream("dek " + label, 32)


def dek_json(name, version, wrapped, plaintext):
    # front.c dek_json(): datakey (with the key) and decrypt (without).
    if name is None:
        return '{"plaintext":"%s"}' % plaintext
    return ('{"key":"%s","version":%d,"wrapped":"%s","plaintext":"%s"}' %
            (name, version, wrapped, plaintext))


def datakey_seeds():
    seeds = {}

    def put(seed, name, call_wrapped, answer):
        seeds[seed] = "%s\n%s\n%s" % (name, call_wrapped, answer)

    w1 = b64(blob("datasets", 1))
    p1 = b64(dek("datasets/1"))
    ok = dek_json("datasets", 1, w1, p1)

    # ---- answers keywardd sends
    put("valid-datakey", "datasets", "", ok)
    put("valid-decrypt", "datasets", w1, dek_json(None, 0, None, p1))
    name = "team.ml-data_v2"
    w7 = b64(blob(name, 7))
    put("valid-datakey-dotted-name", name, "",
        dek_json(name, 7, w7, b64(dek(name + "/7"))))
    put("valid-decrypt-dotted-name", name, w7,
        dek_json(None, 0, None, b64(dek(name + "/7"))))
    long_name = "k" + "0123456789abcdef" * 3 + "0123456789abcd"
    assert len(long_name) == 63
    wl = b64(blob(long_name, 3))
    put("valid-datakey-name-63", long_name, "",
        dek_json(long_name, 3, wl, b64(dek("long"))))
    put("valid-decrypt-name-63", long_name, wl,
        dek_json(None, 0, None, b64(dek("long"))))
    wmax = b64(blob("datasets", 0xffffffff))
    put("valid-datakey-version-max", "datasets", "",
        dek_json("datasets", 0xffffffff, wmax, p1))
    # The DEK's base64 is all 'A's but the padding: like its blanking.
    put("valid-dek-zero", "datasets", "",
        dek_json("datasets", 1, w1, b64(bytes(32))))
    put("valid-dek-ff", "datasets", "",
        dek_json("datasets", 1, w1, b64(b"\xff" * 32)))
    put("valid-plaintext-first", "datasets", "",
        '{"plaintext":"%s","key":"datasets","version":1,"wrapped":"%s"}' %
        (p1, w1))
    put("valid-extra-member", "datasets", "",
        ok[:-1] + ',"request_id":"3d661d182fda0a1d"}')
    put("valid-whitespace", "datasets", "",
        '{ "key" : "datasets", "version" : 1, "wrapped" : "%s",\n'
        '  "plaintext":"%s" }\n' % (w1, p1))

    # ---- the DEK member
    put("bad-no-plaintext", "datasets", "",
        '{"key":"datasets","version":1,"wrapped":"%s"}' % w1)
    put("bad-two-plaintexts", "datasets", "",
        ok[:-1] + ',"plaintext":"%s"}' % p1)
    put("bad-plaintext-31", "datasets", "",
        dek_json("datasets", 1, w1, b64(dek("x")[:31])))
    put("bad-plaintext-33", "datasets", "",
        dek_json("datasets", 1, w1, b64(dek("x") + b"\0")))
    put("bad-plaintext-empty", "datasets", "",
        dek_json("datasets", 1, w1, ""))
    put("bad-plaintext-unpadded", "datasets", "",
        dek_json("datasets", 1, w1, p1.rstrip("=")))
    slashy = b"\xfb\xff" * 16  # base64 with '+' and '/'
    put("bad-plaintext-urlsafe", "datasets", "",
        dek_json("datasets", 1, w1,
                 base64.urlsafe_b64encode(slashy).decode()))
    put("bad-plaintext-escaped-slash", "datasets", "",
        dek_json("datasets", 1, w1, b64(slashy).replace("/", "\\/")))
    # libsodium 1.0.18 reads a byte above 0x7f as the digit 63 ('/').
    put("bad-plaintext-high-byte", "datasets", "",
        dek_json("datasets", 1, w1, p1[:19] + "\xa7" + p1[20:]))
    put("bad-plaintext-utf8", "datasets", "",
        dek_json("datasets", 1, w1, p1[:19] + "\xc3\xa9" + p1[21:]))
    put("bad-plaintext-space", "datasets", "",
        ok.replace('"plaintext":"', '"plaintext": "'))
    put("bad-plaintext-number", "datasets", "",
        '{"key":"datasets","version":1,"wrapped":"%s","plaintext":1}' % w1)
    put("bad-plaintext-unterminated", "datasets", "", ok[:-20])
    put("bad-plaintext-newline", "datasets", "",
        dek_json("datasets", 1, w1, p1[:20] + "\n" + p1[20:]))
    put("bad-plaintext-nested", "datasets", "",
        '{"key":"datasets","version":1,"wrapped":"%s","n":{"plaintext":'
        '"%s"}}' % (w1, p1))
    # The member scanned for and the member parsed made to differ: the
    # top level's plaintext written so that the scan misses it (an escape
    # in its name, a space before its colon), and a decoy the scan finds.
    blank = "A" * len(p1)
    put("bad-decoy-escaped-name", "datasets", "",
        '{"key":"datasets","version":1,"wrapped":"%s","plain\\u0074ext":'
        '"%s","n":{"plaintext":"%s"}}' % (w1, blank, p1))
    put("bad-decoy-space", "datasets", "",
        '{"key":"datasets","version":1,"wrapped":"%s","plaintext" :"%s",'
        '"n":{"plaintext":"%s"}}' % (w1, blank, p1))
    put("bad-decoy-in-name", "datasets", "",
        '{"key":"datasets","version":1,"wrapped":"%s","x\\"plaintext":'
        '"%s","plaintext" :"%s"}' % (w1, p1, blank))
    put("bad-decoy-array", "datasets", "",
        '{"key":"datasets","version":1,"wrapped":"%s","plaintext" :"%s",'
        '"n":[{"plaintext":"%s"}]}' % (w1, blank, p1))

    # ---- the wrapped key
    put("bad-wrapped-other-key", "datasets", "",
        dek_json("datasets", 1, b64(blob("models", 1)), p1))
    put("bad-wrapped-name-len-0", "datasets", "",
        dek_json("datasets", 1, b64(blob("datasets", 1, name_len=0)), p1))
    put("bad-wrapped-name-len-64", "datasets", "",
        dek_json("datasets", 1, b64(blob("datasets", 1, name_len=64)), p1))
    put("bad-wrapped-truncated", "datasets", "",
        dek_json("datasets", 1, b64(blob("datasets", 1)[:17]), p1))
    put("bad-wrapped-magic", "datasets", "",
        dek_json("datasets", 1, b64(blob("datasets", 1, magic=b"KWDL")),
                 p1))
    put("bad-wrapped-urlsafe", "datasets", "",
        dek_json("datasets", 1,
                 base64.urlsafe_b64encode(blob("datasets", 1)).decode(), p1))
    padded = b64(blob("datasets", 1, ct_len=49))
    assert padded.endswith("==")
    put("bad-wrapped-unpadded", "datasets", "",
        dek_json("datasets", 1, padded.rstrip("="), p1))
    big = b64(blob("datasets", 1, ct_len=240))
    assert len(big) > 344
    put("bad-wrapped-too-long", "datasets", "",
        dek_json("datasets", 1, big, p1))
    put("ok-wrapped-344", "datasets", "",
        dek_json("datasets", 1, b64(blob("datasets", 1, ct_len=223)), p1))
    put("bad-wrapped-empty", "datasets", "", dek_json("datasets", 1, "", p1))
    put("bad-wrapped-missing", "datasets", "",
        '{"key":"datasets","version":1,"plaintext":"%s"}' % p1)
    put("bad-wrapped-number", "datasets", "",
        '{"key":"datasets","version":1,"wrapped":7,"plaintext":"%s"}' % p1)
    put("bad-decrypt-other-key", "datasets", b64(blob("models", 2)),
        dek_json(None, 0, None, p1))
    put("bad-decrypt-wrapped-chars", "datasets", w1[:4] + "-" + w1[5:],
        dek_json(None, 0, None, p1))

    # ---- the JSON
    put("bad-dup-key", "datasets", "", ok[:-1] + ',"key":"datasets"}')
    put("bad-array", "datasets", "", "[" + ok + "]")
    put("bad-trailing", "datasets", "", ok + "{}")
    put("bad-truncated", "datasets", "", ok[:-1])
    put("bad-nul", "datasets", "", ok[:-1] + "\0}")
    put("bad-version-1e400", "datasets", "",
        ok.replace('"version":1', '"version":1e400'))
    put("bad-deep", "datasets", "",
        ok[:-1] + ',"n":' + "[" * 2100 + "]" * 2100 + "}")
    put("bad-html", "datasets", "",
        "<html><body>plaintext: %s</body></html>\n" % p1)
    put("bad-empty", "datasets", "", "")
    return seeds


def jws_exp(token):
    payload = token.split(".")[1]
    payload += "=" * (-len(payload) % 4)
    return json.loads(base64.urlsafe_b64decode(payload))["exp"]


def token_json(token, exp):
    # front.c token_json().
    return ('{"token":"%s","token_type":"Bearer","expires_at":%d}' %
            (token, exp))


def token_seeds():
    seeds = {}
    real = {}
    for name in ("valid-bearer", "valid-bound", "valid-max-scopes"):
        with open(os.path.join(HERE, "corpus", "token", name)) as f:
            real[name] = f.read().strip()
    for name, tok in real.items():
        seeds[name] = token_json(tok, jws_exp(tok))
    tok = real["valid-bearer"]
    exp = jws_exp(tok)
    ok = token_json(tok, exp)
    h, p, s = tok.split(".")

    def sized(n):
        body = n - len(h) - len(s) - 2
        return "%s.%s.%s" % (h, ("eyJ" + "x" * n)[:body], s)

    seeds["valid-token-8192"] = token_json(sized(8192), exp)
    seeds["valid-expires-int64-max"] = token_json(tok, 2**63 - 1)
    seeds["valid-members-reordered"] = (
        '{"expires_at":%d,"token_type":"Bearer","token":"%s"}' % (exp, tok))
    seeds["valid-shortest"] = token_json("..", 1)

    seeds["bad-token-8193"] = token_json(sized(8193), exp)
    seeds["bad-expires-0"] = token_json(tok, 0)
    seeds["bad-expires-negative"] = token_json(tok, -1)
    seeds["bad-expires-real"] = ok.replace('"expires_at":%d' % exp,
                                           '"expires_at":%d.5' % exp)
    seeds["bad-expires-string"] = ok.replace('"expires_at":%d' % exp,
                                             '"expires_at":"%d"' % exp)
    seeds["bad-expires-huge"] = token_json(tok, 10**20)
    seeds["bad-expires-missing"] = '{"token":"%s","token_type":"Bearer"}' % tok
    seeds["bad-type-lowercase"] = ok.replace('"Bearer"', '"bearer"')
    seeds["bad-type-dpop"] = ok.replace('"Bearer"', '"DPoP"')
    seeds["bad-type-missing"] = '{"token":"%s","expires_at":%d}' % (tok, exp)
    seeds["bad-one-dot"] = token_json(h + "." + p + s, exp)
    seeds["bad-three-dots"] = token_json(tok + ".x", exp)
    seeds["bad-empty-token"] = token_json("", exp)
    seeds["bad-token-base64"] = token_json(tok.replace("-", "+").replace(
        "_", "/") + "==", exp)
    seeds["bad-token-escaped-dot"] = token_json(tok.replace(".", "\\u002e",
                                                            1), exp)
    seeds["bad-token-space"] = ok.replace('"token":"', '"token": "')
    seeds["bad-token-number"] = '{"token":1,"token_type":"Bearer",' \
        '"expires_at":%d}' % exp
    seeds["bad-two-tokens"] = ok[:-1] + ',"token":"%s"}' % tok
    seeds["bad-token-nested"] = '{"t":{"token":"%s"},"token_type":"Bearer",' \
        '"expires_at":%d}' % (tok, exp)
    blank = "A" * len(tok)
    seeds["bad-decoy-escaped-name"] = (
        '{"to\\u006ben":"%s","n":{"token":"%s"},"token_type":"Bearer",'
        '"expires_at":%d}' % (blank, tok, exp))
    seeds["bad-decoy-space"] = (
        '{"token" :"%s","n":{"token":"%s"},"token_type":"Bearer",'
        '"expires_at":%d}' % (blank, tok, exp))
    seeds["bad-decoy-in-name"] = (
        '{"x\\"token":"%s","token" :"%s","token_type":"Bearer",'
        '"expires_at":%d}' % (tok, blank, exp))
    seeds["bad-dup-type"] = ok[:-1] + ',"token_type":"Bearer"}'
    seeds["bad-array"] = "[" + ok + "]"
    seeds["bad-truncated"] = ok[:-1]
    seeds["bad-unterminated"] = '{"token":"%s' % tok
    seeds["bad-nul"] = ok[:-1] + ' \0}'
    # jansson 2.14 drops one NUL right after a number or literal.
    seeds["ok-nul-after-number"] = ok[:-1] + "\0}"
    seeds["bad-deep"] = ok[:-1] + ',"n":' + "[" * 2100 + "]" * 2100 + "}"
    seeds["bad-revoke-answer"] = '{"revoked":true}'
    seeds["bad-introspect-answer"] = '{"active":false}'
    seeds["bad-error-answer"] = (
        '{"error":"forbidden","message":"the policy does not allow token '
        'for this caller","request_id":"3d661d182fda0a1d"}')
    seeds["bad-empty"] = ""
    return seeds


def write(dirname, seeds):
    os.makedirs(dirname, exist_ok=True)
    for name, text in sorted(seeds.items()):
        with open(os.path.join(dirname, name), "wb") as f:
            f.write(text.encode("latin-1"))
    print("%d seeds in %s" % (len(seeds), dirname))


def main():
    corpus = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE,
                                                                "corpus")
    write(os.path.join(corpus, "datakey_answer"), datakey_seeds())
    write(os.path.join(corpus, "token_answer"), token_seeds())


if __name__ == "__main__":
    main()
