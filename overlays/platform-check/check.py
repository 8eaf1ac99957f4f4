#!/usr/bin/env python3
"""picluster platform self-test (the picluster-platform-check Job).

    check.py run          wait for every selected component, prove the data
                          path end to end, report per check, exit 1 on failure
    check.py make-bucket  create the S3 bucket if it is missing (SeaweedFS Job)

Standard library only: the Job runs the pinned python image as it is.
Configuration comes from the environment (the Job's env and the Secret
platform-check-env); no credential is ever printed or passed as an argument.

  CHECKS            comma-separated: s3,postgresql,trino,nifi,jupyter,grafana,prometheus,loki
  WAIT_SECONDS      how long the checks wait, in all, for their components (default 1800)
  S3_ENDPOINT, S3_BUCKET, S3_REGION, S3_ACCESS_KEY, S3_SECRET_KEY
  PG_HOST, PG_PORT, PG_DATABASE, PG_USER, PG_PASSWORD
  TRINO_URL, NIFI_URL, JUPYTER_URL, GRAFANA_URL, PROMETHEUS_URL, LOKI_URL
  RESULT_CONFIGMAP  namespace/name of the ConfigMap receiving the results
                    (in-cluster API through the pod's service account;
                    K8S_API and K8S_TOKEN_FILE override it for tests)
"""

import base64
import datetime
import hashlib
import hmac
import json
import os
import secrets
import socket
import ssl
import struct
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

HTTP_TIMEOUT = 20


class CheckFailed(Exception):
    """A check failed; the message is the reason shown to the user."""


def env(name, default=None):
    value = os.environ.get(name, default)
    if value is None:
        raise CheckFailed(f"environment variable {name} is not set")
    return value


# ---------------------------------------------------------------- HTTP


def insecure_tls():
    # NiFi serves its own generated certificate; the check proves it answers.
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def http(method, url, body=None, headers=None, timeout=HTTP_TIMEOUT):
    """(status, headers, body bytes); HTTP error statuses are returned, not raised."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    ctx = insecure_tls() if url.startswith("https:") else None
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=ctx) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise CheckFailed(f"{method} {url}: {reason}") from None


def http_json(method, url, body=None, headers=None, expect=200):
    status, _, data = http(method, url, body, headers)
    if status != expect:
        raise CheckFailed(f"{method} {url}: HTTP {status} {data[:200]!r}")
    try:
        return json.loads(data)
    except ValueError:
        raise CheckFailed(f"{method} {url}: not JSON: {data[:200]!r}") from None


# ---------------------------------------------------------------- S3 (SigV4)


def _sign(key, msg):
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def sigv4_headers(method, url, body, access_key, secret_key, region, now=None):
    """Headers of an AWS Signature Version 4 request to the S3 service."""
    u = urllib.parse.urlsplit(url)
    now = now or datetime.datetime.now(datetime.timezone.utc)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    day = amz_date[:8]
    payload = hashlib.sha256(body or b"").hexdigest()
    headers = {"host": u.netloc, "x-amz-content-sha256": payload, "x-amz-date": amz_date}
    names = sorted(headers)
    query = "&".join(
        f"{urllib.parse.quote(k, safe='-_.~')}={urllib.parse.quote(v, safe='-_.~')}"
        for k, v in sorted(urllib.parse.parse_qsl(u.query, keep_blank_values=True))
    )
    canonical = "\n".join(
        [
            method,
            urllib.parse.quote(urllib.parse.unquote(u.path or "/"), safe="/-_.~"),
            query,
            "".join(f"{n}:{headers[n]}\n" for n in names),
            ";".join(names),
            payload,
        ]
    )
    scope = f"{day}/{region}/s3/aws4_request"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = _sign(_sign(_sign(_sign(("AWS4" + secret_key).encode(), day), region), "s3"), "aws4_request")
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, "
        f"SignedHeaders={';'.join(names)}, Signature={signature}"
    )
    del headers["host"]  # urllib sets it from the URL
    return headers


class S3:
    def __init__(self):
        self.endpoint = env("S3_ENDPOINT").rstrip("/")
        self.bucket = env("S3_BUCKET", "lake")
        self.region = env("S3_REGION", "us-east-1")
        self.access_key = env("S3_ACCESS_KEY")
        self.secret_key = env("S3_SECRET_KEY")

    def request(self, method, path, body=None):
        url = f"{self.endpoint}/{path}"
        headers = sigv4_headers(method, url, body, self.access_key, self.secret_key, self.region)
        return http(method, url, body, headers)

    def bucket_exists(self):
        status, _, data = self.request("HEAD", self.bucket)
        if status == 200:
            return True
        if status == 404:
            return False
        raise CheckFailed(f"HEAD bucket {self.bucket}: HTTP {status} {data[:200]!r}")


def make_bucket():
    """Create the bucket unless it exists; safe to run again."""
    s3 = S3()
    if s3.bucket_exists():
        return f"bucket {s3.bucket} already exists"
    status, _, data = s3.request("PUT", s3.bucket)
    if status == 200 or (status == 409 and b"BucketAlreadyOwnedByYou" in data):
        return f"bucket {s3.bucket} created"
    raise CheckFailed(f"PUT bucket {s3.bucket}: HTTP {status} {data[:300]!r}")


def check_s3():
    s3 = S3()
    if not s3.bucket_exists():
        raise CheckFailed(f"bucket {s3.bucket} does not exist (see the bucket Job in namespace s3)")
    key = f"{s3.bucket}/picluster-check/probe-{secrets.token_hex(4)}"
    payload = f"picluster platform check {time.time()}".encode()
    status, _, data = s3.request("PUT", key, payload)
    if status != 200:
        raise CheckFailed(f"PUT {key}: HTTP {status} {data[:200]!r}")
    status, _, data = s3.request("GET", key)
    if status != 200 or data != payload:
        raise CheckFailed(f"GET {key}: HTTP {status}, {len(data)} bytes, content differs from what was written")
    status, _, data = s3.request("DELETE", key)
    if status not in (200, 204):
        raise CheckFailed(f"DELETE {key}: HTTP {status} {data[:200]!r}")
    return f"wrote, read back and deleted {key}"


# ---------------------------------------------------------------- PostgreSQL


class PgError(CheckFailed):
    pass


class Pg:
    """The few parts of the PostgreSQL protocol (v3) the check needs: TLS when
    the server offers it, SCRAM-SHA-256 / MD5 / cleartext password, simple query."""

    def __init__(self, host, port, user, database, password, timeout=HTTP_TIMEOUT):
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self.sock.sendall(struct.pack("!ii", 8, 80877103))  # SSLRequest
        if self.sock.recv(1) == b"S":
            self.sock = insecure_tls().wrap_socket(self.sock)
        self.buf = b""
        params = f"user\0{user}\0database\0{database}\0\0".encode()
        self.sock.sendall(struct.pack("!ii", 8 + len(params), 196608) + params)
        self._auth(user, password)

    def _read(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise PgError("the server closed the connection")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _msg(self):
        kind = self._read(1)
        (length,) = struct.unpack("!i", self._read(4))
        body = self._read(length - 4)
        if kind == b"E":
            fields = {f[:1]: f[1:].decode(errors="replace") for f in body.split(b"\0") if f}
            raise PgError(f"{fields.get(b'S', 'ERROR')} {fields.get(b'C', '')}: {fields.get(b'M', '')}")
        return kind, body

    def _send(self, kind, body):
        self.sock.sendall(kind + struct.pack("!i", len(body) + 4) + body)

    def _auth(self, user, password):
        scram = None
        while True:
            kind, body = self._msg()
            if kind == b"Z":
                return
            if kind != b"R":
                continue
            (code,) = struct.unpack("!i", body[:4])
            if code == 0:
                continue
            if code == 3:
                self._send(b"p", password.encode() + b"\0")
            elif code == 5:
                inner = hashlib.md5(password.encode() + user.encode()).hexdigest()
                outer = hashlib.md5(inner.encode() + body[4:8]).hexdigest()
                self._send(b"p", b"md5" + outer.encode() + b"\0")
            elif code == 10:
                if b"SCRAM-SHA-256" not in body[4:].split(b"\0"):
                    raise PgError(f"no supported SASL mechanism in {body[4:]!r}")
                scram = {"nonce": base64.b64encode(secrets.token_bytes(18)).decode()}
                scram["first"] = f"n=,r={scram['nonce']}"
                first = ("n,," + scram["first"]).encode()
                self._send(b"p", b"SCRAM-SHA-256\0" + struct.pack("!i", len(first)) + first)
            elif code == 11 and scram:
                server_first = body[4:].decode()
                attrs = dict(a.split("=", 1) for a in server_first.split(","))
                if not attrs["r"].startswith(scram["nonce"]):
                    raise PgError("SCRAM: the server nonce does not extend ours")
                salted = hashlib.pbkdf2_hmac(
                    "sha256", password.encode(), base64.b64decode(attrs["s"]), int(attrs["i"])
                )
                client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
                stored = hashlib.sha256(client_key).digest()
                final = f"c=biws,r={attrs['r']}"
                auth_msg = f"{scram['first']},{server_first},{final}".encode()
                sig = hmac.new(stored, auth_msg, hashlib.sha256).digest()
                proof = bytes(a ^ b for a, b in zip(client_key, sig))
                server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
                scram["verifier"] = hmac.new(server_key, auth_msg, hashlib.sha256).digest()
                self._send(b"p", f"{final},p={base64.b64encode(proof).decode()}".encode())
            elif code == 12 and scram:
                attrs = dict(a.split("=", 1) for a in body[4:].decode().split(","))
                if base64.b64decode(attrs.get("v", "")) != scram["verifier"]:
                    raise PgError("SCRAM: the server's signature is wrong")
            else:
                raise PgError(f"unsupported authentication request {code}")

    def query(self, sql):
        """Rows of a simple query, every value as text (None for NULL)."""
        self._send(b"Q", sql.encode() + b"\0")
        rows, error = [], None
        while True:
            try:
                kind, body = self._msg()
            except PgError as e:
                error = e  # the server still sends ReadyForQuery
                continue
            if kind == b"D":
                (n,) = struct.unpack("!h", body[:2])
                pos, row = 2, []
                for _ in range(n):
                    (size,) = struct.unpack("!i", body[pos : pos + 4])
                    pos += 4
                    row.append(None if size < 0 else body[pos : pos + size].decode())
                    pos += max(size, 0)
                rows.append(row)
            elif kind == b"Z":
                if error:
                    raise error
                return rows

    def close(self):
        try:
            self._send(b"X", b"")
        finally:
            self.sock.close()


def check_postgresql():
    db = Pg(env("PG_HOST"), env("PG_PORT", "5432"), env("PG_USER"), env("PG_DATABASE"), env("PG_PASSWORD"))
    try:
        user, database = db.query("SELECT current_user, current_database()")[0]
        tables = db.query(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_name IN ('iceberg_tables', 'iceberg_namespace_properties') ORDER BY 1"
        )
    finally:
        db.close()
    if [t[0] for t in tables] != ["iceberg_namespace_properties", "iceberg_tables"]:
        raise CheckFailed(f"the Iceberg catalog tables are missing in {database}: found {tables}")
    return f"connected as {user} to {database}; Iceberg catalog tables present"


# ---------------------------------------------------------------- Trino


def trino(sql):
    base = env("TRINO_URL").rstrip("/")
    headers = {"X-Trino-User": "picluster-check", "Content-Type": "text/plain"}
    doc = http_json("POST", f"{base}/v1/statement", sql.encode(), headers)
    rows = []
    while True:
        if doc.get("error"):
            err = doc["error"]
            raise CheckFailed(f"{sql!r}: {err.get('errorName', '')}: {err.get('message', '')}")
        rows += doc.get("data") or []
        if not doc.get("nextUri"):
            return rows
        doc = http_json("GET", doc["nextUri"], headers=headers)


def check_trino():
    info = http_json("GET", env("TRINO_URL").rstrip("/") + "/v1/info")
    if info.get("starting"):
        raise CheckFailed("Trino is still starting")
    table = "lake.picluster_check.probe"
    trino("CREATE SCHEMA IF NOT EXISTS lake.picluster_check")
    trino(f"DROP TABLE IF EXISTS {table}")  # left over by an interrupted run
    trino(f"CREATE TABLE {table} (id integer, note varchar)")
    trino(f"INSERT INTO {table} VALUES (1, 'picluster')")
    rows = trino(f"SELECT id, note FROM {table}")
    trino(f"DROP TABLE {table}")
    if rows != [[1, "picluster"]]:
        raise CheckFailed(f"read back {rows} from {table}, expected [[1, 'picluster']]")
    return f"created, filled, read back and dropped the Iceberg table {table}"


# ---------------------------------------------------------------- UIs, monitoring, logs


def answers(name, url, ok=lambda status, body: status == 200):
    status, _, body = http("GET", url)
    if not ok(status, body):
        raise CheckFailed(f"GET {url}: HTTP {status} {body[:200]!r}")
    return f"{name} answers at {url} (HTTP {status})"


def check_nifi():
    # The UI redirects or asks for a login; anything below 500 is NiFi answering.
    return answers("NiFi", env("NIFI_URL"), lambda s, _: s < 500)


def check_jupyter():
    return answers("JupyterLab", env("JUPYTER_URL").rstrip("/") + "/api")


def check_grafana():
    url = env("GRAFANA_URL").rstrip("/") + "/api/health"
    doc = http_json("GET", url)
    if doc.get("database") != "ok":
        raise CheckFailed(f"GET {url}: database is {doc.get('database')!r}")
    return f"Grafana {doc.get('version', '')} answers, database ok"


def check_prometheus():
    url = env("PROMETHEUS_URL").rstrip("/") + "/api/v1/targets?state=active"
    targets = http_json("GET", url).get("data", {}).get("activeTargets", [])
    up = [t for t in targets if t.get("health") == "up"]
    down = sorted({t.get("labels", {}).get("job", "?") for t in targets if t.get("health") == "down"})
    if not up:
        raise CheckFailed(f"no target is up ({len(targets)} active)")
    note = f"; down: {', '.join(down)}" if down else ""
    return f"{len(up)} of {len(targets)} targets up{note}"


def check_loki():
    now = time.time_ns()
    query = urllib.parse.urlencode(
        {"query": '{namespace=~".+"}', "limit": "1", "start": str(now - 3600 * 10**9), "end": str(now)}
    )
    url = env("LOKI_URL").rstrip("/") + "/loki/api/v1/query_range?" + query
    result = http_json("GET", url).get("data", {}).get("result", [])
    if not result:
        raise CheckFailed("Loki has received no log line in the last hour")
    return f"Loki has log lines (e.g. from namespace {result[0].get('stream', {}).get('namespace', '?')})"


CHECKS = {
    "s3": check_s3,
    "postgresql": check_postgresql,
    "trino": check_trino,
    "nifi": check_nifi,
    "jupyter": check_jupyter,
    "grafana": check_grafana,
    "prometheus": check_prometheus,
    "loki": check_loki,
}


# ---------------------------------------------------------------- results


def write_configmap(results, finished):
    target = os.environ.get("RESULT_CONFIGMAP")
    if not target:
        return
    namespace, name = target.split("/", 1)
    api = os.environ.get("K8S_API")
    if not api:
        api = f"https://{os.environ['KUBERNETES_SERVICE_HOST']}:{os.environ['KUBERNETES_SERVICE_PORT']}"
    sa = "/var/run/secrets/kubernetes.io/serviceaccount"
    with open(os.environ.get("K8S_TOKEN_FILE", f"{sa}/token")) as f:
        token = f.read().strip()
    ctx = None
    if api.startswith("https:"):
        ctx = ssl.create_default_context(cafile=os.environ.get("K8S_CA_FILE", f"{sa}/ca.crt"))
    data = {c: f"{state}: {reason}" for c, (state, reason) in results.items()}
    failed = [c for c, (state, _) in results.items() if state != "ok"]
    data["summary"] = f"failed: {', '.join(failed)}" if failed else f"ok: all {len(results)} checks passed"
    data["finished"] = finished
    body = json.dumps(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/part-of": "picluster"}},
            "data": data,
        }
    ).encode()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    base = f"{api}/api/v1/namespaces/{namespace}/configmaps"
    # Replace what an earlier run left, or create it the first time.
    for method, url in (("PUT", f"{base}/{name}"), ("POST", base)):
        req = urllib.request.Request(url, data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT, context=ctx):
                return
        except urllib.error.HTTPError as e:
            if not (method == "PUT" and e.code == 404):
                raise CheckFailed(f"writing ConfigMap {target}: HTTP {e.code} {e.read()[:200]!r}") from None
        except (urllib.error.URLError, OSError) as e:
            raise CheckFailed(f"writing ConfigMap {target}: {getattr(e, 'reason', e)}") from None


def run_check(name, deadline, pause):
    """Retry one check until it passes or its component's wait is over."""
    last = "not run"
    while True:
        try:
            return "ok", CHECKS[name]()
        except CheckFailed as e:
            last = str(e)
        except Exception as e:  # a bug or a protocol surprise: report it, keep going
            last = f"{type(e).__name__}: {e}"
        if time.monotonic() + pause > deadline:
            return "failed", last
        print(f"waiting  {name:<11} {last}", flush=True)
        time.sleep(pause)


def main(argv):
    if argv[1:] == ["make-bucket"]:
        wait = float(os.environ.get("WAIT_SECONDS", "600"))
        deadline = time.monotonic() + wait
        while True:
            try:
                print(make_bucket(), flush=True)
                return 0
            except CheckFailed as e:
                if time.monotonic() + 5 > deadline:
                    print(f"FAILED   bucket: {e}", flush=True)
                    return 1
                print(f"waiting  bucket: {e}", flush=True)
                time.sleep(5)
    if argv[1:] != ["run"]:
        print(__doc__, file=sys.stderr)
        return 2
    names = [c.strip() for c in env("CHECKS", "").split(",") if c.strip()]
    unknown = [c for c in names if c not in CHECKS]
    if unknown or not names:
        print(f"FAILED   CHECKS names unknown checks {unknown} (known: {', '.join(CHECKS)})", flush=True)
        return 2
    wait = float(os.environ.get("WAIT_SECONDS", "1800"))
    pause = float(os.environ.get("RETRY_SECONDS", "10"))
    # One budget for all checks: the platform comes up while the first ones
    # wait; once it is spent, every remaining check still gets one attempt.
    deadline = time.monotonic() + wait
    results = {}
    for name in names:
        state, reason = run_check(name, deadline, pause)
        results[name] = (state, reason)
        print(f"{'ok' if state == 'ok' else 'FAILED':<8} {name:<11} {reason}", flush=True)
    finished = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    failed = [c for c, (s, _) in results.items() if s != "ok"]
    try:
        write_configmap(results, finished)
    except CheckFailed as e:
        print(f"FAILED   results    {e}", flush=True)
        return 1
    if failed:
        print(f"platform check FAILED: {', '.join(failed)}", flush=True)
        return 1
    print(f"platform check ok: all {len(results)} checks passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
