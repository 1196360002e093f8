#!/usr/bin/env bash
# OpenSC's pkcs11-tool, an independent PKCS#11 client, lists a KEK made by
# keyward-hsm on a development token as sensitive and never extractable,
# and keyward-hsm's selftest wraps and unwraps a data key.
set -euo pipefail

repo=${KEYWARD_REPO:?KEYWARD_REPO unset}
hsm=${KEYWARD_HSM:-}
if [ -z "$hsm" ] || [ ! -x "$hsm" ]; then
	echo "SKIP: keyward-hsm not built (KEYWARD_HSM)" >&2
	exit 77
fi
if ! command -v pkcs11-tool >/dev/null 2>&1; then
	echo "SKIP: pkcs11-tool not found (apt-get install opensc)" >&2
	exit 77
fi

dir=$(mktemp -d /tmp/kwp11tool.XXXXXX)
trap 'rm -rf "$dir"' EXIT
fail() {
	echo "FAIL: $*" >&2
	exit 1
}

"$repo/scripts/dev-setup" "$dir/dev" >"$dir/setup.out" 2>&1 ||
	fail "dev-setup: $(cat "$dir/setup.out")"
cfg=$dir/dev/keywardd.json
module=$(/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["pkcs11"]["module"])' "$cfg")

"$hsm" -c "$cfg" kek create datasets >"$dir/create.out" 2>&1 ||
	fail "kek create: $(cat "$dir/create.out")"
grep -q "created KEK datasets version 1" "$dir/create.out" ||
	fail "unexpected kek create output: $(cat "$dir/create.out")"

# The PIN goes to pkcs11-tool through its environment (env:NAME), never
# its command line.
KW_TEST_PIN=$(cat "$dir/dev/pin") SOFTHSM2_CONF=$dir/dev/softhsm2.conf \
	pkcs11-tool --module "$module" --token-label keyward-dev \
	--login --pin env:KW_TEST_PIN --list-objects --type secrkey \
	>"$dir/list.out" 2>&1 || fail "pkcs11-tool: $(cat "$dir/list.out")"

obj=$(awk '/^Secret Key Object/{o=""} {o=o $0 "\n"} /label: *kek\/datasets\/1$/{f=1} f && /Access:/{printf "%s", o; exit}' "$dir/list.out")
[ -n "$obj" ] || fail "kek/datasets/1 not listed by pkcs11-tool: $(cat "$dir/list.out")"
echo "$obj" | grep -q "AES length 32" || fail "KEK is not AES-256: $obj"
echo "$obj" | grep -Eq "Access: *sensitive, always sensitive, never extractable" ||
	fail "KEK not sensitive and never extractable: $obj"
echo "$obj" | grep -Eq "Usage: *encrypt, decrypt$" ||
	fail "KEK usage is not exactly encrypt, decrypt: $obj"
# The value itself cannot be read.
grep -q "CKR_ATTRIBUTE_SENSITIVE" "$dir/list.out" ||
	fail "pkcs11-tool could read a KEK value"

"$hsm" -c "$cfg" selftest datasets dataset=imagenet-2026 purpose=train \
	>"$dir/selftest.out" 2>&1 || fail "selftest: $(cat "$dir/selftest.out")"
grep -q "selftest     ok" "$dir/selftest.out" || fail "selftest output"
grep -q "refused (KW_ERR_AUTH)" "$dir/selftest.out" || fail "selftest: other context"

# Neither PIN shows up in anything the tools printed.
for f in "$dir"/*.out; do
	if grep -qF -f "$dir/dev/pin" "$f" || grep -qF -f "$dir/dev/so-pin" "$f"; then
		fail "a PIN appears in $(basename "$f")"
	fi
done

# A wrong PIN is a clear error, and the exit status says so.
printf 'wrong-pin-%s\n' "$RANDOM" >"$dir/dev/pin"
if "$hsm" -c "$cfg" info >"$dir/wrong.out" 2>&1; then
	fail "info succeeded with a wrong PIN"
fi
grep -q "rejected the PIN" "$dir/wrong.out" || fail "wrong PIN message: $(cat "$dir/wrong.out")"

echo "PASS: pkcs11-tool sees a sensitive, non-extractable KEK"
