#!/usr/bin/env python3
"""Loopback HTTPS test server for quan's http and async specs.

usage: https_server.py CERT KEY

Listens on 127.0.0.1, port 0 (HTTP/1.1, keep-alive, a thread per connection)
and prints one JSON line {"port": N, "closed_port": M} on stdout, where M is a
port that was bound and closed again (nothing listens there). Exits when its
parent process dies.

Endpoints:
  /echo             {"method", "path", "headers": [[name, value]...], "body"}
  /slow?ms=N        sleeps N ms, then answers like /echo
  /status/N         answers status N with a short body
  /repeat-header    two Set-Cookie and two X-Multi headers
  /connections      {"connections": accepted TCP connections so far}
  /stats            {"connections", "active", "max_active"}: requests in flight
                    now and at most so far (a /stats request is not counted)
  /reset            zeroes the counters
  /close-next       answers, and makes the server close the connection of the
                    next request that arrives on a kept-alive one (a request
                    that is not the first of its connection) without an
                    answer, as a server closing an idle connection just as
                    the request arrives; counted in stats "stale"
"""
import json
import os
import socket
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

lock = threading.Lock()
stats = {"connections": 0, "active": 0, "max_active": 0, "drops": 0, "stale": 0}
close_next = [False]  # /close-next was asked


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def get_request(self):
        sock, addr = self.socket.accept()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no Nagle stall between header and body writes
        with lock:
            stats["connections"] += 1
        return sock, addr

    def handle_error(self, request, client_address):
        pass  # refused handshakes, clients that hang up: expected in tests


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self):
        # the TLS handshake happens here, in the connection's own thread
        self.request = self.server.ctx.wrap_socket(self.request, server_side=True)
        super().setup()

    def log_message(self, *args):
        pass

    def reply(self, status, body, headers=()):
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        if status in (204, 304) or status < 200:
            body = b""  # these statuses have no body
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        if status != 204 and status >= 200:
            self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def handle_any(self):
        served = getattr(self, "served", 0)  # requests answered on this connection
        self.served = served + 1
        with lock:
            stale = served > 0 and close_next[0]
            if stale:
                close_next[0] = False
                stats["stale"] += 1
        if stale:
            n = int(self.headers.get("Content-Length") or 0)
            if n:
                self.rfile.read(n)
            self.close_connection = True
            return
        if self.path.startswith("/stats"):  # looking does not count as a request in flight
            return self.route()
        with lock:
            stats["active"] += 1
            stats["max_active"] = max(stats["max_active"], stats["active"])
        try:
            self.route()
        finally:
            with lock:
                stats["active"] -= 1

    def route(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        echo = {
            "method": self.command,
            "path": self.path,
            "headers": [[k, v] for k, v in self.headers.items()],
            "body": body.decode("utf-8", "replace"),
        }
        if url.path == "/echo":
            self.reply(200, echo)
        elif url.path == "/slow":
            time.sleep(int(query.get("ms", ["100"])[0]) / 1000)
            self.reply(200, echo)
        elif url.path.startswith("/status/"):
            self.reply(int(url.path[len("/status/"):]), b"status")
        elif url.path == "/repeat-header":
            self.reply(200, b"ok", [("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"),
                                    ("X-Multi", "one"), ("X-Multi", "two")])
        elif url.path == "/big":
            # n bytes, with a Content-Length or (chunked=1) without one
            n = int(query.get("n", ["1000"])[0])
            if query.get("chunked") == ["1"]:
                self.send_response(200)
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for _ in range(0, n, 1000):
                    self.wfile.write(b"3e8\r\n" + b"x" * 1000 + b"\r\n")
                self.wfile.write(b"0\r\n\r\n")
            else:
                self.reply(200, b"x" * n)
        elif url.path == "/drop":
            # read the request, act on it (count it), close without an answer
            with lock:
                stats["drops"] += 1
            self.close_connection = True
        elif url.path == "/close-next":
            with lock:
                close_next[0] = True
            self.reply(200, b"the next request on a kept-alive connection is dropped")
        elif url.path == "/connections":
            with lock:
                self.reply(200, {"connections": stats["connections"]})
        elif url.path == "/stats":
            with lock:
                self.reply(200, dict(stats))
        elif url.path == "/reset":
            with lock:
                stats["connections"] = 0
                stats["max_active"] = stats["active"]
            self.reply(200, b"reset")
        else:
            self.reply(404, b"not found")

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = handle_any


def watch_parent(ppid):
    while True:
        if os.getppid() != ppid:
            os._exit(0)
        time.sleep(0.2)


def main():
    cert, key = sys.argv[1], sys.argv[2]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server = Server(("127.0.0.1", 0), Handler)
    server.ctx = ctx
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    closed.close()
    print(json.dumps({"port": server.server_address[1], "closed_port": closed_port}), flush=True)
    threading.Thread(target=watch_parent, args=(os.getppid(),), daemon=True).start()
    server.serve_forever()


if __name__ == "__main__":
    main()
