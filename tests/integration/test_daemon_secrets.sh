#!/usr/bin/env bash
# Secrets made at run time (the PIN, a DEK) never appear in the log, the
# audit log, a process's environment or command line, or a core image
# (gcore) of the master, the keeper or the front.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
kw_need
command -v gcore >/dev/null || kw_skip "gcore not found (apt-get install gdb)"
[ "$(id -u)" -eq 0 ] || kw_skip "gcore of non-dumpable processes needs root"
kw_setup
kw_start
ctx='{"context":{"dataset":"imagenet-2026"}}'
kw_req operator POST /v1/keys '{"name":"datasets"}' >/dev/null
kw_expect 201 "create key"
kw_req train-job POST /v1/keys/datasets/datakey "$ctx" >/dev/null
kw_expect 200 "datakey"
dek=$(kw_json plaintext)
wrapped=$(kw_json wrapped)
kw_req train-job POST /v1/keys/datasets/decrypt "{\"wrapped\":\"$wrapped\",\"context\":{\"dataset\":\"imagenet-2026\"}}" >/dev/null
kw_expect 200 "decrypt"
sleep 0.5

pids="$KW_PID $(kw_children)"
mkdir -p "$KW_DIR/cores"
want_cores=3
if [ "${KW_SANITIZED:-0}" = 1 ]; then
	# ASan reserves terabytes of shadow address space: a core image of
	# it is neither practical nor meaningful. The normal build checks it.
	echo "SKIP (part): no core images of sanitizer builds" >&2
	want_cores=0
fi
for p in $pids; do
	tr '\0' '\n' <"/proc/$p/environ" >"$KW_DIR/cores/environ.$p"
	tr '\0' ' ' <"/proc/$p/cmdline" >"$KW_DIR/cores/cmdline.$p"
	if [ "$want_cores" -gt 0 ]; then
		gcore -o "$KW_DIR/cores/core" "$p" >/dev/null 2>&1 || kw_fail "gcore $p failed"
	fi
done
"$KW_PY" - "$KW_ENV/pin" "$dek" "$want_cores" "$KW_DIR/cores" "$KW_DIR/daemon.log" "$(kw_audit)" <<'PY'
import base64, glob, os, sys
pin = open(sys.argv[1], "rb").read().strip()
dek_b64 = sys.argv[2].encode()
dek = base64.b64decode(dek_b64)
want_cores = int(sys.argv[3])
files = glob.glob(os.path.join(sys.argv[4], "*")) + sys.argv[5:7]
needles = {"PIN": pin, "DEK": dek, "DEK (base64)": dek_b64}
bad = []
for f in files:
    data = open(f, "rb").read()
    for what, n in needles.items():
        if n in data:
            bad.append("%s found in %s" % (what, os.path.basename(f)))
cores = [f for f in files if os.path.basename(f).startswith("core")]
if len(cores) < want_cores:
    bad.append("only %d core images" % len(cores))
if bad:
    sys.exit("; ".join(bad))
print("searched %d files (%d cores) for 3 canaries" % (len(files), len(cores)))
PY
echo "PASS: no secret in logs, audit, environ, argv or core images"
