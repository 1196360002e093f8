#!/usr/bin/python3
"""Send raw bytes over mTLS and print the response's status line.

usage: rawtls.py HOST PORT CERT KEY CA [--drip SECONDS --lines N]

Without --drip, the request is read from stdin and sent at once (for
framing tests curl will not produce: duplicate Content-Length, CL with
Transfer-Encoding). With --drip, a request line and then one header line
every SECONDS seconds, N lines at most, are sent, and the script reports
how long the server kept the connection open. Exit status 1 if the
connection could not be made.
"""
import socket
import ssl
import sys
import time


def main():
    host, port, cert, key, ca = sys.argv[1:6]
    drip = None
    lines = 30
    if "--drip" in sys.argv:
        drip = float(sys.argv[sys.argv.index("--drip") + 1])
    if "--lines" in sys.argv:
        lines = int(sys.argv[sys.argv.index("--lines") + 1])
    ctx = ssl.create_default_context(cafile=ca)
    ctx.load_cert_chain(cert, key)
    raw = socket.create_connection((host, int(port)), timeout=15)
    s = ctx.wrap_socket(raw, server_hostname=host)
    if drip is None:
        s.sendall(sys.stdin.buffer.read())
        data = b""
        while b"\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        print(data.split(b"\r\n", 1)[0].decode(errors="replace")
              .split(" ", 1)[-1])
        return 0
    start = time.monotonic()
    try:
        s.sendall(b"GET /v1/keys HTTP/1.1\r\n")
        for i in range(lines):
            time.sleep(drip)
            s.sendall(b"X-Drip-%d: x\r\n" % i)
    except (OSError, ssl.SSLError):
        pass
    print("closed after %.1fs" % (time.monotonic() - start))
    return 0


if __name__ == "__main__":
    sys.exit(main())
