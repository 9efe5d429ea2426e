#!/usr/bin/env python3
"""sdk_client.py: a WeChat Pay APIv3 client written independently of quan
(python3 + the `cryptography` package), configured as the PHP and Node SDKs'
READMEs configure a merchant: its mchid, its certificate serial and private
key, and a map of WeChat Pay's keys (serial or PUB_KEY_ID_... -> a public
key or certificate PEM file). Like those SDKs by default, it sends no
Wechatpay-Serial header: the server picks the key it signs answers under.

It reads a plan (JSON) on stdin:

  {"base_url": "https://127.0.0.1:PORT", "ca_file": PATH, "mchid": ID,
   "serial": SERIAL, "private_key": PATH, "certs": {NAME: PATH, ...},
   "requests": [{"method": "GET", "target": "/v3/...",
                 "body": TEXT (optional, sent and signed as is),
                 "upload": {"meta": TEXT, "filename": NAME, "data_hex": HEX}
                           (optional: a multipart image upload, meta signed),
                 "unsigned": true (optional: no Authorization, a control
                                   endpoint)}, ...]}

and writes one JSON line per request:

  {"target": ..., "status": N, "serial": Wechatpay-Serial or null,
   "verified": true|false, "reason": why not, "body": TEXT}

An answer is verified as the SDKs verify it: the four Wechatpay-* headers
present, the serial one of `certs`, the timestamp within 300 s of now, and
the RSA-SHA256 (PKCS#1 v1.5) signature over "TIMESTAMP\\nNONCE\\nBODY\\n"
valid under that key.
"""
import base64
import json
import os
import ssl
import sys
import time
import http.client
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding


def strip_file(path):
    return path[len("file://"):] if path.startswith("file://") else path


def load_verifier(path):
    data = open(strip_file(path), "rb").read()
    if b"BEGIN CERTIFICATE" in data:
        return x509.load_pem_x509_certificate(data).public_key()
    return serialization.load_pem_public_key(data)


def authorization(plan, key, method, target, body):
    ts = str(int(time.time()))
    nonce = os.urandom(16).hex()
    message = "\n".join([method, target, ts, nonce, body]) + "\n"
    sig = base64.b64encode(key.sign(message.encode(), padding.PKCS1v15(), hashes.SHA256())).decode()
    return ('WECHATPAY2-SHA256-RSA2048 mchid="%s",nonce_str="%s",timestamp="%s",serial_no="%s",signature="%s"'
            % (plan["mchid"], nonce, ts, plan["serial"], sig))


def verify(certs, headers, body):
    names = ("wechatpay-timestamp", "wechatpay-nonce", "wechatpay-signature", "wechatpay-serial")
    values = [headers.get(n) for n in names]
    if None in values:
        return False, "missing header " + names[values.index(None)]
    ts, nonce, sig, serial = values
    key = certs.get(serial)
    if key is None:
        return False, "Cannot find the serial(%s)'s configuration" % serial
    if abs(time.time() - int(ts)) > 300:
        return False, "timestamp out of window"
    try:
        key.verify(base64.b64decode(sig), ts.encode() + b"\n" + nonce.encode() + b"\n" + body + b"\n",
                   padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return False, "signature does not verify"
    return True, None


def multipart(upload):
    boundary = "sdkclient" + os.urandom(8).hex()
    meta = upload["meta"].encode()
    data = bytes.fromhex(upload["data_hex"])
    parts = [
        b"--" + boundary.encode() + b"\r\n",
        b'Content-Disposition: form-data; name="meta"\r\nContent-Type: application/json\r\n\r\n', meta, b"\r\n",
        b"--" + boundary.encode() + b"\r\n",
        ('Content-Disposition: form-data; name="file"; filename="%s"\r\n' % upload["filename"]).encode(),
        b"Content-Type: image/png\r\n\r\n", data, b"\r\n",
        b"--" + boundary.encode() + b"--\r\n",
    ]
    return b"".join(parts), "multipart/form-data; boundary=" + boundary, upload["meta"]


def main():
    plan = json.load(sys.stdin)
    key = serialization.load_pem_private_key(open(strip_file(plan["private_key"]), "rb").read(), password=None)
    certs = {name: load_verifier(path) for name, path in plan["certs"].items()}
    url = urlsplit(plan["base_url"])
    context = ssl.create_default_context(cafile=plan["ca_file"])
    conn = http.client.HTTPSConnection(url.hostname, url.port, context=context, timeout=30)
    for r in plan["requests"]:
        method, target = r["method"], r["target"]
        headers = {"Accept": "application/json", "User-Agent": "sdk_client.py"}
        if "upload" in r:
            body, headers["Content-Type"], signed = multipart(r["upload"])
        else:
            signed = r.get("body", "")
            body = signed.encode() if signed else None
            if body is not None:
                headers["Content-Type"] = "application/json"
        if not r.get("unsigned"):
            headers["Authorization"] = authorization(plan, key, method, target, signed)
        conn.request(method, target, body=body, headers=headers)
        res = conn.getresponse()
        answer = res.read()
        got = {k.lower(): v for k, v in res.getheaders()}
        ok, reason = verify(certs, got, answer)
        print(json.dumps({"target": target, "method": method, "status": res.status,
                          "serial": got.get("wechatpay-serial"), "verified": ok, "reason": reason,
                          "body": answer.decode("utf-8", "replace")}, ensure_ascii=False), flush=True)
    conn.close()


if __name__ == "__main__":
    main()
