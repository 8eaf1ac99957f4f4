"""A stand-in Kubernetes API server for `picluster status` tests.

Serves recorded API answers from a directory (request path + ".json"; 404
otherwise) over HTTPS on 127.0.0.x, and, like kube-apiserver with
--client-ca-file, completes the handshake only when the client presents a
certificate that chains to the given client CA (ssl.CERT_REQUIRED). Each
request's client-certificate subject is appended to <root>/requests.log.

usage: kube_api.py HOST CERT KEY CLIENT_CA ROOT   (prints the port, then serves)
"""
import http.server
import json
import os
import ssl
import sys

host, cert, key, client_ca, root = sys.argv[1:6]


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        peer = self.connection.getpeercert()
        subject = ",".join(
            f"{k}={v}" for rdn in peer.get("subject", ()) for (k, v) in rdn
        )
        with open(os.path.join(root, "requests.log"), "a") as log:
            log.write(f"{subject} {self.path}\n")
        path = os.path.normpath(os.path.join(root, "." + self.path.split("?")[0]))
        if not path.startswith(root) or not os.path.isfile(path + ".json"):
            body = json.dumps({"kind": "Status", "code": 404}).encode()
            self.send_response(404)
        else:
            with open(path + ".json", "rb") as f:
                body = f.read()
            self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
ctx.verify_mode = ssl.CERT_REQUIRED
ctx.load_verify_locations(client_ca)
server = http.server.ThreadingHTTPServer((host, 0), Handler)
server.socket = ctx.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
