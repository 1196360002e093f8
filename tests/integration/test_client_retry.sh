#!/usr/bin/env bash
# libkeyward's transport rules, through the CLI, against a scripted HTTPS
# server (Python's ssl + http.server with the dev certificates): 503 is
# retried with backoff and Retry-After, 4xx never; a non-idempotent call
# is not repeated after a timeout; oversized and non-JSON answers and
# control bytes in a server's message are handled; an untrusted server
# certificate and plain http are refused before anything is sent.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
KW_CLI=${KEYWARD_CLI:-}
[ -n "$KW_CLI" ] && [ -x "$KW_CLI" ] || kw_skip "keyward CLI not built (KEYWARD_CLI)"
[ -x "$KW_PY" ] || kw_skip "$KW_PY not found"
[ -n "$KW_HSM" ] && [ -x "$KW_HSM" ] || kw_skip "keyward-hsm not built (KEYWARD_HSM)"
kw_setup

SRV_PID=
stop_srv() {
	if [ -n "$SRV_PID" ]; then
		kill "$SRV_PID" 2>/dev/null || true
		wait "$SRV_PID" 2>/dev/null || true
		SRV_PID=
	fi
}
trap 'stop_srv; kw_cleanup' EXIT

# srv MODE: a server answering per MODE; requests and connections are
# counted in $KW_DIR/count ("requests connections").
srv() {
	stop_srv
	PORT=$(kw_port)
	: >"$KW_DIR/count"
	"$KW_PY" - "$1" "$PORT" "$KW_ENV/tls/server.pem" "$KW_ENV/tls/server.key" "$KW_DIR/count" <<'PY' &
import http.server, json, socket, ssl, sys, threading, time
mode, port, cert, key, countf = sys.argv[1:6]
lock = threading.Lock()
state = {"req": 0, "conn": 0}

def bump(k):
    with lock:
        state[k] += 1
        open(countf, "w").write("%d %d\n" % (state["req"], state["conn"]))
        return state[k]

class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def setup(self):
        bump("conn")
        super().setup()
    def log_message(self, *a):
        pass
    def answer(self, code, body, extra=()):
        b = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(b)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(b)
    def handle_any(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            self.rfile.read(n)
        i = bump("req")
        err = lambda c, code, m: {"error": {"code": code, "message": m, "request_id": "00000000000000%02x" % i}}
        if mode == "503x2":
            if i <= 2:
                return self.answer(503, err(503, "unavailable", "the HSM is down"), [("Retry-After", "1")])
            return self.answer(200, {"status": "ok"})
        if mode == "503":
            return self.answer(503, err(503, "unavailable", "the HSM is down"))
        if mode == "403":
            return self.answer(403, err(403, "forbidden", "not allowed"))
        if mode == "429":
            return self.answer(429, err(429, "rate_limited", "slow down"), [("Retry-After", "1")])
        if mode == "slow":
            time.sleep(3)
            return self.answer(200, {"status": "ok"})
        if mode == "big":
            return self.answer(200, b'{"keys":[' + b" " * (5 << 20) + b"]}")
        if mode == "garbage":
            return self.answer(200, b"<html>hello</html>")
        if mode == "ansi":
            return self.answer(404, err(404, "not_found", "no such key\x1b[2J\x07"))
        if mode == "ok":
            return self.answer(200, {"keys": []})
    do_GET = do_POST = do_PATCH = handle_any

srv = http.server.ThreadingHTTPServer(("127.0.0.1", int(port)), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
srv.serve_forever()
PY
	SRV_PID=$!
	for _ in $(seq 50); do
		"$KW_PY" -c 'import socket,sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 0.2)' "$PORT" 2>/dev/null && return 0
		sleep 0.1
	done
	kw_fail "scripted server did not start"
}

cli() { # cli ARGS...: RC, $KW_DIR/out, $KW_DIR/err, ELAPSED (ms)
	local t0
	t0=$(date +%s%N)
	RC=0
	KEYWARD_ADDR=127.0.0.1:$PORT KEYWARD_CA=$KW_ENV/ca/ca.pem \
		KEYWARD_CERT=$KW_ENV/clients/train-job.pem KEYWARD_KEY=$KW_ENV/clients/train-job.key \
		"$KW_CLI" "$@" >"$KW_DIR/out" 2>"$KW_DIR/err" || RC=$?
	ELAPSED=$((($(date +%s%N) - t0) / 1000000))
}
requests() { local n; n=$(cut -d' ' -f1 "$KW_DIR/count"); echo "${n:-0}"; }
expect_rc() {
	[ "$RC" = "$1" ] || kw_fail "$2: exit $RC, expected $1; stderr: $(cat "$KW_DIR/err")"
}

# 503 twice, then 200: three requests, Retry-After (1 s) honoured.
srv 503x2
cli health
expect_rc 0 "503 then ok"
[ "$(requests)" = 3 ] || kw_fail "503 then ok: $(requests) requests, expected 3"
((ELAPSED >= 1900)) || kw_fail "Retry-After ignored: done in $ELAPSED ms"

# 503 forever: the default 3 retries, then exit 3 with the server's words.
srv 503
cli health
expect_rc 3 "503 forever"
[ "$(requests)" = 4 ] || kw_fail "503 forever: $(requests) requests, expected 4"
grep -q "the HSM is down" "$KW_DIR/err" || kw_fail "503: server message lost: $(cat "$KW_DIR/err")"

# 4xx: never retried.
srv 403
cli key list
expect_rc 1 "403"
[ "$(requests)" = 1 ] || kw_fail "403 retried: $(requests) requests"
grep -q "request id 0000000000000001" "$KW_DIR/err" || kw_fail "403: no request id: $(cat "$KW_DIR/err")"
srv 429
cli key list
expect_rc 1 "429"
[ "$(requests)" = 1 ] || kw_fail "429 retried: $(requests) requests"

# A timeout: a read (GET) is retried, a key creation (POST) is not.
srv slow
cli --timeout 500 key list
expect_rc 3 "timeout on a read"
[ "$(requests)" = 4 ] || kw_fail "timed-out GET: $(requests) requests, expected 4"
grep -q "did not answer within 500 ms" "$KW_DIR/err" || kw_fail "timeout message: $(cat "$KW_DIR/err")"
srv slow
cli --timeout 500 key create foo
expect_rc 3 "timeout on a create"
sleep 0.2
[ "$(requests)" = 1 ] || kw_fail "timed-out POST repeated: $(requests) requests"

# Oversized, non-JSON, hostile answers.
srv big
cli key list
expect_rc 3 "oversized answer"
grep -q "larger than" "$KW_DIR/err" || kw_fail "oversized: $(cat "$KW_DIR/err")"
srv garbage
cli key list
expect_rc 3 "non-JSON answer"
srv ansi
cli key show foo
expect_rc 1 "control bytes in a message"
grep -q $'\x1b' "$KW_DIR/err" && kw_fail "an escape byte reached the terminal"
grep -q "no such key" "$KW_DIR/err" || kw_fail "ansi: message lost: $(cat "$KW_DIR/err")"

# An untrusted server certificate: exit 3, not retried.
srv ok
RC=0
KEYWARD_ADDR=127.0.0.1:$PORT KEYWARD_CA=$KW_ENV/rogue-ca/ca.pem \
	KEYWARD_CERT=$KW_ENV/clients/train-job.pem KEYWARD_KEY=$KW_ENV/clients/train-job.key \
	"$KW_CLI" key list >/dev/null 2>"$KW_DIR/err" || RC=$?
expect_rc 3 "untrusted server"
grep -q "not trusted" "$KW_DIR/err" || kw_fail "untrusted server: $(cat "$KW_DIR/err")"
[ "$(requests)" = 0 ] || kw_fail "a request reached an untrusted server"

# Plain http is refused before anything is sent.
RC=0
KEYWARD_ADDR=http://127.0.0.1:$PORT KEYWARD_CERT=$KW_ENV/clients/train-job.pem \
	KEYWARD_KEY=$KW_ENV/clients/train-job.key "$KW_CLI" key list >/dev/null 2>"$KW_DIR/err" || RC=$?
expect_rc 3 "plain http"
echo "PASS"
