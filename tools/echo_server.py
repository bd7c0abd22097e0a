#!/usr/bin/env python3
"""A small HTTP server for DSR tests and the demo (standard library only).

    echo_server.py NAME [PORT] [BIND] [--hold-file PATH]

GET /            -> "NAME CLIENT_IP"  (which backend answered, and whom it saw)

BIND "::" serves IPv4 and IPv6 on one socket. With --hold-file, every
answer waits the milliseconds PATH holds, read at each request (a backend
that keeps each connection longer than its peers: a slow disk, a slow
dependency; write the file to change it while it runs).
GET /stream?n=N&ms=M -> N lines "NAME i", one every M ms (a long-lived connection)
GET /work?ms=M       -> "NAME CLIENT_IP" after M ms of CPU work (a server whose CPU is the limit)
POST /               -> "NAME CLIENT_IP BYTES" once the body is read (an upload)
"""

import socket
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


def held(path: str | None) -> float:
    """The seconds every answer waits: what the hold file says, or none."""
    try:
        return int(open(path).read().strip() or 0) / 1000 if path else 0.0
    except (OSError, ValueError):
        return 0.0


def main() -> None:
    args = sys.argv[1:]
    hold_file = None
    if "--hold-file" in args:
        at = args.index("--hold-file")
        hold_file = args[at + 1]
        del args[at : at + 2]
    name = args[0]
    port = int(args[1]) if len(args) > 1 else 80
    bind = args[2] if len(args) > 2 else "0.0.0.0"

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def do_GET(self):  # noqa: N802
            url = urlparse(self.path)
            time.sleep(held(hold_file))
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            if url.path == "/stream":
                query = parse_qs(url.query)
                lines = int(query.get("n", ["50"])[0])
                pause = int(query.get("ms", ["100"])[0]) / 1000
                for i in range(lines):
                    self.wfile.write(f"{name} {i}\n".encode())
                    self.wfile.flush()
                    time.sleep(pause)
                return
            if url.path == "/work":
                spend = int(parse_qs(url.query).get("ms", ["10"])[0]) / 1000
                until = time.thread_time() + spend
                while time.thread_time() < until:
                    pass
            client = self.client_address[0]
            self.wfile.write(f"{name} {client.removeprefix('::ffff:')}\n".encode())

        def do_POST(self):  # noqa: N802
            """Reads the body whole; answers "NAME CLIENT_IP BYTES" (an upload: full-size packets to the backend)."""
            left = int(self.headers.get("Content-Length", 0))
            got = 0
            while left > 0:
                chunk = self.rfile.read(min(left, 65536))
                if not chunk:
                    break
                got, left = got + len(chunk), left - len(chunk)
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(f"{name} {self.client_address[0].removeprefix('::ffff:')} {got}\n".encode())

        def log_message(self, *args):
            pass

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 256
        address_family = socket.AF_INET6 if ":" in bind else socket.AF_INET

        def server_bind(self):
            if self.address_family == socket.AF_INET6:  # "::" serves both families
                self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            super().server_bind()

    Server((bind, port), Handler).serve_forever()


if __name__ == "__main__":
    main()
