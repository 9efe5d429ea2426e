#!/usr/bin/env python3
"""fake_wechatpay.py: a loopback HTTPS stand-in for WeChat Pay APIv3, written
independently of quan (python3 + the `cryptography` package).

It verifies each request's Authorization signature the way WeChat Pay does
(method, path+query as received, timestamp, nonce, body; for multipart
uploads the meta part) and answers with signed responses. A request header
`X-Fake: a,b=c,...` switches on tampering for that one answer:

  status=N         answer HTTP N with an error body (code by status)
  missing=NAME     leave out response header NAME (e.g. Wechatpay-Nonce)
  skew=S           sign with timestamp now+S
  serial=TEXT      put TEXT in Wechatpay-Serial (signature unchanged)
  serial_lower     send the signer's serial in lower case
  signer=SERIAL    sign with another configured key
  badsig           sign a different message
  signtest         prefix the signature with WECHATPAY/SIGNTEST/ (a probe)
  flip             change one body byte after signing
  garble           cut the JSON body in half before signing (valid signature, bad JSON)
  drop             close the connection without an answer
  sleep=S          wait S seconds before answering
  close_next       answer, then close the connection of the next request that
                   arrives on a kept-alive connection without an answer (a
                   server closing an idle connection as the request arrives);
                   the echo's "stale" counts these closes

Routes: POST /v3/marketing/favor/coupon-stocks answers {stock_id, create_time}
(stock_id = "SID-" + out_request_no); POST .../media/image-upload checks the
multipart layout and answers {media_url}; anything else echoes what arrived.

usage: fake_wechatpay.py --tls-cert C --tls-key K --merchant-cert M
         --mchid ID --signer SERIAL=KEYPATH [--signer ...] --port-file F
"""
import argparse
import base64
import hashlib
import json
import os
import re
import socket
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

AUTH_RE = re.compile(r'^WECHATPAY2-SHA256-RSA2048 (.*)$')
PAIR_RE = re.compile(r'(\w+)="([^"]*)"')
CODES = {400: "PARAM_ERROR", 401: "SIGN_ERROR", 403: "NO_AUTH", 404: "RESOURCE_NOT_EXISTS",
         429: "RATELIMIT_EXCEED", 500: "SYSTEM_ERROR", 503: "SYSTEM_ERROR"}


class Conf:
    merchant_pub = None
    merchant_serial = None
    mchid = None
    signers = {}  # serial -> private key
    default_signer = None
    counter = 0
    close_next = False  # a close_next answer was sent
    stale = 0  # connections closed by it
    stale_auth = None  # the Authorization of the last request so closed
    active = 0  # requests being handled right now
    lock = threading.Lock()


def rid():
    with Conf.lock:
        Conf.counter += 1
        return "FAKE-%08d" % Conf.counter


def parse_multipart(ctype, body):
    m = re.search(r'boundary=([^;]+)', ctype)
    if not m:
        raise ValueError("no boundary")
    b = m.group(1).strip('"').encode()
    parts = []
    chunks = body.split(b"--" + b)
    if chunks[-1].strip() not in (b"--", b"--\r\n".strip()):
        raise ValueError("bad closing boundary")
    for chunk in chunks[1:-1]:
        if not chunk.startswith(b"\r\n") or not chunk.endswith(b"\r\n"):
            raise ValueError("bad part framing")
        head, _, data = chunk[2:-2].partition(b"\r\n\r\n")
        headers = {}
        for line in head.split(b"\r\n"):
            k, _, v = line.decode().partition(":")
            headers[k.strip().lower()] = v.strip()
        disp = headers.get("content-disposition", "")
        name = re.search(r'name="([^"]*)"', disp)
        fname = re.search(r'filename="([^"]*)"', disp)
        parts.append({"name": name and name.group(1), "filename": fname and fname.group(1),
                      "type": headers.get("content-type"), "data": data})
    return parts


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def do_GET(self):
        self.handle_any()

    def do_POST(self):
        self.handle_any()

    def do_PUT(self):
        self.handle_any()

    def do_PATCH(self):
        self.handle_any()

    def do_DELETE(self):
        self.handle_any()

    def send(self, status, body, fake, signed=True):
        body_bytes = body.encode() if isinstance(body, str) else body
        if "garble" in fake:
            body_bytes = body_bytes[:len(body_bytes) // 2]
        headers = [("Content-Type", "application/json; charset=utf-8"), ("Request-ID", rid())]
        if signed:
            serial = fake.get("signer", Conf.default_signer)
            key = Conf.signers[serial]
            ts = str(int(time.time()) + int(fake.get("skew", "0")))
            nonce = os.urandom(16).hex()
            msg = ts.encode() + b"\n" + nonce.encode() + b"\n" + body_bytes + b"\n"
            if "badsig" in fake:
                msg = b"not" + msg
            sig = base64.b64encode(key.sign(msg, padding.PKCS1v15(), hashes.SHA256())).decode()
            if "signtest" in fake:  # WeChat Pay's signature probe (WECHATPAY/SIGNTEST/ signatures)
                sig = "WECHATPAY/SIGNTEST/" + sig
            if "serial" in fake:
                serial = fake["serial"]
            if "serial_lower" in fake:
                serial = serial.lower()
            for name, value in (("Wechatpay-Timestamp", ts), ("Wechatpay-Nonce", nonce),
                                ("Wechatpay-Signature", sig), ("Wechatpay-Serial", serial),
                                ("Wechatpay-Signature-Type", "WECHATPAY2-SHA256-RSA2048")):
                if fake.get("missing", "").lower() != name.lower():
                    headers.append((name, value))
            if "flip" in fake and body_bytes:
                b = bytearray(body_bytes)
                i = len(b) // 2
                b[i] = ord("X") if b[i] != ord("X") else ord("Y")
                body_bytes = bytes(b)
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body_bytes)))
        self.end_headers()
        self.wfile.write(body_bytes)

    def error_answer(self, status, code, message, fake):
        self.send(status, json.dumps({"code": code, "message": message,
                                      "detail": {"field": "/x", "issue": message}}), fake, signed=False)

    def handle_any(self):
        with Conf.lock:
            Conf.active += 1
        try:
            self.handle_one()
        finally:
            with Conf.lock:
                Conf.active -= 1

    def handle_one(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        served = getattr(self, "served", 0)  # requests on this connection before this one
        self.served = served + 1
        with Conf.lock:
            stale = served > 0 and Conf.close_next
            if stale:
                Conf.close_next = False
                Conf.stale += 1
                Conf.stale_auth = self.headers.get("Authorization")
        if stale:
            self.close_connection = True
            return
        fake = {}
        for item in (self.headers.get("X-Fake") or "").split(","):
            item = item.strip()
            if item:
                k, _, v = item.partition("=")
                fake[k] = v
        if "sleep" in fake:
            time.sleep(float(fake["sleep"]))
        if "close_next" in fake:
            with Conf.lock:
                Conf.close_next = True
        concurrent = Conf.active  # how many were in the server as this one woke
        if "drop" in fake:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        # the signature, checked independently of quan
        auth = self.headers.get("Authorization") or ""
        m = AUTH_RE.match(auth)
        if not m:
            return self.error_answer(401, "SIGN_ERROR", "bad authorization scheme", fake)
        pairs = dict(PAIR_RE.findall(m.group(1)))
        if set(pairs) != {"mchid", "serial_no", "timestamp", "nonce_str", "signature"}:
            return self.error_answer(401, "SIGN_ERROR", "authorization fields", fake)
        if pairs["mchid"] != Conf.mchid or pairs["serial_no"] != Conf.merchant_serial:
            return self.error_answer(401, "SIGN_ERROR", "mchid or serial_no mismatch", fake)
        if abs(time.time() - int(pairs["timestamp"])) > 300:
            return self.error_answer(401, "SIGN_ERROR", "timestamp expired", fake)
        if not re.match(r'^[0-9A-Za-z]{32}$', pairs["nonce_str"]):
            return self.error_answer(401, "SIGN_ERROR", "nonce_str", fake)
        ctype = self.headers.get("Content-Type") or ""
        signed_body = body
        parts = None
        if ctype.startswith("multipart/form-data"):
            try:
                parts = parse_multipart(ctype, body)
            except ValueError as e:
                return self.error_answer(400, "PARAM_ERROR", "multipart: %s" % e, fake)
            if len(parts) != 2 or parts[0]["name"] != "meta" or parts[1]["name"] != "file":
                return self.error_answer(400, "PARAM_ERROR", "multipart: meta then file", fake)
            signed_body = parts[0]["data"]
        msg = (self.command + "\n" + self.path + "\n" + pairs["timestamp"] + "\n" +
               pairs["nonce_str"] + "\n").encode() + signed_body + b"\n"
        try:
            Conf.merchant_pub.verify(base64.b64decode(pairs["signature"]), msg,
                                     padding.PKCS1v15(), hashes.SHA256())
        except Exception:
            return self.error_answer(401, "SIGN_ERROR", "sign not match", fake)
        if "status" in fake:
            st = int(fake["status"])
            return self.error_answer(st, CODES.get(st, "ERROR_%d" % st), "fake status %d" % st, fake)
        path = urlsplit(self.path).path
        if self.command == "POST" and path == "/v3/marketing/favor/coupon-stocks":
            try:
                j = json.loads(body)
            except ValueError:
                return self.error_answer(400, "PARAM_ERROR", "body is not JSON", fake)
            out = {"stock_id": "SID-" + str(j.get("out_request_no")), "concurrent": concurrent,
                   "create_time": time.strftime("%Y-%m-%dT%H:%M:%S+08:00", time.gmtime(time.time() + 8 * 3600))}
            return self.send(200, json.dumps(out), fake)
        if self.command == "POST" and path == "/v3/marketing/favor/media/image-upload":
            meta = json.loads(parts[0]["data"])
            data = parts[1]["data"]
            if meta.get("sha256") != hashlib.sha256(data).hexdigest():
                return self.error_answer(400, "PARAM_ERROR", "sha256 mismatch", fake)
            if parts[1]["filename"] != meta.get("filename"):
                return self.error_answer(400, "PARAM_ERROR", "filename mismatch", fake)
            out = {"media_url": "https://fake.example/" + meta["sha256"],
                   "meta": parts[0]["data"].decode(), "file_type": parts[1]["type"], "size": len(data)}
            return self.send(200, json.dumps(out), fake)
        if "empty" in fake:
            return self.send(204, b"", fake)
        if path == "/v3/billdownload/file":  # files are not signed (lua/wechatpay/verify.lua)
            return self.send(200, b"stock_id,coupon_id\n1,2\n", fake, signed=False)
        echo = {"method": self.command, "target": self.path, "path": unquote(path),
                "query": urlsplit(self.path).query, "body": body.decode("utf-8", "replace"),
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "numbers": {"int": 5000, "neg": -3, "float": 1.5, "big": 12345678901},
                "stale": Conf.stale, "stale_auth": Conf.stale_auth}
        return self.send(200, json.dumps(echo, ensure_ascii=False), fake)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64

    def __init__(self, addr, handler, ctx):
        super().__init__(addr, handler)
        self.ctx = ctx

    def get_request(self):
        sock, addr = self.socket.accept()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self.ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

    def finish_request(self, request, client_address):
        try:
            request.do_handshake()
        except (ssl.SSLError, OSError):
            return
        super().finish_request(request, client_address)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tls-cert", required=True)
    ap.add_argument("--tls-key", required=True)
    ap.add_argument("--merchant-cert", required=True)
    ap.add_argument("--mchid", required=True)
    ap.add_argument("--signer", action="append", required=True)
    ap.add_argument("--port-file", required=True)
    a = ap.parse_args()
    cert = x509.load_pem_x509_certificate(open(a.merchant_cert, "rb").read())
    Conf.merchant_pub = cert.public_key()
    Conf.merchant_serial = "%X" % cert.serial_number
    Conf.mchid = a.mchid
    for s in a.signer:
        serial, _, path = s.partition("=")
        Conf.signers[serial] = serialization.load_pem_private_key(open(path, "rb").read(), None)
        Conf.default_signer = Conf.default_signer or serial
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(a.tls_cert, a.tls_key)
    srv = Server(("127.0.0.1", 0), Handler, ctx)
    port = srv.server_address[1]
    tmp = a.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write("%d\n" % port)
    os.rename(tmp, a.port_file)
    ppid = os.getppid()

    def watch():  # exit when the test process goes away
        while os.getppid() == ppid:
            time.sleep(0.5)
        os._exit(0)
    threading.Thread(target=watch, daemon=True).start()
    srv.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
