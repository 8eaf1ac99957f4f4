#!/usr/bin/env python3
"""Tests of overlays/platform-check/check.py (the platform self-test).

    python3 -m unittest tests/platform/test_platform_check.py

PostgreSQL is the real server from Debian's `postgresql` package, started
here on 127.0.0.1 with SCRAM-SHA-256 authentication. The HTTP services are
small fakes on 127.0.0.1; the S3 fake checks every request's SigV4 signature
with botocore's signer (an independent implementation), and the Kubernetes
API fake records the ConfigMap the check writes.
"""

import glob
import http.server
import json
import os
import pathlib
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.parse

import botocore.auth
import botocore.awsrequest
import botocore.credentials

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "overlays" / "platform-check" / "check.py"
sys.path.insert(0, str(SCRIPT.parent))
import check  # noqa: E402

ACCESS, SECRET = "AKPICLUSTERTEST", "s3cr3t/key+with=odd chars"
PG_PASSWORD = "lake-pw-Ünïcode"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Fakes(http.server.ThreadingHTTPServer):
    """One server answering as S3, Trino, Grafana, JupyterLab, NiFi, Prometheus,
    Loki and the Kubernetes API, by path prefix. `broken` names services that
    answer with errors."""

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.objects = {}
        self.buckets = set()
        self.tables = {}
        self.configmaps = {}
        self.broken = set()
        self.bad_signatures = 0
        self.log = []

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def reply(self, status, body=b"", ctype="application/json"):
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def do_HEAD(self):
        self.route()

    def do_GET(self):
        self.route()

    def do_PUT(self):
        self.route()

    def do_POST(self):
        self.route()

    def do_DELETE(self):
        self.route()

    def route(self):
        srv = self.server
        path = urllib.parse.urlsplit(self.path).path
        body = self.body()
        service = path.split("/")[1]
        srv.log.append((self.command, path))
        if service in srv.broken:
            return self.reply(503, b"down", "text/plain")
        handler = getattr(self, f"svc_{service.replace('-', '_')}", None)
        if handler is None:
            return self.reply(404, b"no such fake", "text/plain")
        return handler(path, body)

    # S3 at /s3/<bucket>[/<key>], path-style.
    def svc_s3(self, path, body):
        srv = self.server
        if not self.signature_ok(body):
            srv.bad_signatures += 1
            return self.reply(403, b"<Error><Code>SignatureDoesNotMatch</Code></Error>", "application/xml")
        parts = path.split("/", 3)[2:]
        bucket = parts[0]
        key = parts[1] if len(parts) > 1 else None
        if key is None:
            if self.command == "HEAD":
                return self.reply(200 if bucket in srv.buckets else 404)
            if self.command == "PUT":
                if bucket in srv.buckets:
                    return self.reply(409, b"<Error><Code>BucketAlreadyOwnedByYou</Code></Error>", "application/xml")
                srv.buckets.add(bucket)
                return self.reply(200)
        if bucket not in srv.buckets:
            return self.reply(404, b"<Error><Code>NoSuchBucket</Code></Error>", "application/xml")
        if self.command == "PUT":
            srv.objects[(bucket, key)] = body
            return self.reply(200)
        if self.command == "GET":
            if (bucket, key) not in srv.objects:
                return self.reply(404, b"<Error><Code>NoSuchKey</Code></Error>", "application/xml")
            return self.reply(200, srv.objects[(bucket, key)], "application/octet-stream")
        if self.command == "DELETE":
            srv.objects.pop((bucket, key), None)
            return self.reply(204)
        return self.reply(405)

    def signature_ok(self, body):
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("AWS4-HMAC-SHA256 "):
            return False
        signed = auth.split("SignedHeaders=")[1].split(",")[0].split(";")
        request = botocore.awsrequest.AWSRequest(
            method=self.command,
            url=f"http://{self.headers['Host']}{self.path}",
            data=body,
            headers={h: self.headers[h] for h in signed if h != "host"},
        )
        signer = botocore.auth.S3SigV4Auth(botocore.credentials.Credentials(ACCESS, SECRET), "s3", "us-east-1")
        request.context["timestamp"] = self.headers["x-amz-date"]
        # botocore signs exactly the headers it is given plus host.
        expected = signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request)
        return auth.endswith(f"Signature={expected}")

    # Trino at /trino: a tiny in-memory table store driven by the statements the check sends.
    def svc_trino(self, path, body):
        srv = self.server
        if path == "/trino/v1/info":
            return self.reply(200, {"starting": False, "nodeVersion": {"version": "480"}})
        if path == "/trino/v1/statement" and self.command == "POST":
            if self.headers.get("X-Trino-User") is None:
                return self.reply(401)
            sql = body.decode()
            words = sql.split()
            result = {"id": "q1", "stats": {"state": "FINISHED"}}
            if sql.startswith("CREATE TABLE"):
                srv.tables[words[2]] = []
            elif sql.startswith("DROP TABLE IF EXISTS"):
                srv.tables.pop(words[4], None)
            elif sql.startswith("DROP TABLE"):
                if words[2] not in srv.tables:
                    result["error"] = {"errorName": "TABLE_NOT_FOUND", "message": "no table"}
                srv.tables.pop(words[2], None)
            elif sql.startswith("INSERT INTO"):
                srv.tables[words[2]].append([1, "picluster"])
            elif sql.startswith("SELECT"):
                # Paged like Trino: the rows come on the next URI.
                rows = srv.tables[words[-1]]
                result = {"id": "q2", "nextUri": f"{srv.url}/trino/v1/statement/executing/q2?" + urllib.parse.urlencode({"rows": json.dumps(rows)})}
            return self.reply(200, result)
        if path.startswith("/trino/v1/statement/executing/"):
            rows = json.loads(urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)["rows"][0])
            return self.reply(200, {"id": "q2", "data": rows, "stats": {"state": "FINISHED"}})
        return self.reply(404)

    def svc_grafana(self, path, body):
        return self.reply(200, {"database": "ok", "version": "13.2.0"})

    def svc_jupyter(self, path, body):
        return self.reply(200, {"version": "2.16.0"})

    def svc_nifi(self, path, body):
        return self.reply(401, b"login", "text/html")

    def svc_prometheus(self, path, body):
        targets = [
            {"health": "up", "labels": {"job": "node-exporter"}},
            {"health": "down", "labels": {"job": "seaweedfs"}},
        ]
        return self.reply(200, {"status": "success", "data": {"activeTargets": targets}})

    def svc_loki(self, path, body):
        result = [{"stream": {"namespace": "kube-system"}, "values": [["1", "a line"]]}]
        return self.reply(200, {"status": "success", "data": {"result": result}})

    # Kubernetes API at /k8s/api/v1/namespaces/<ns>/configmaps[/<name>].
    def svc_k8s(self, path, body):
        srv = self.server
        if self.headers.get("Authorization") != "Bearer test-token":
            return self.reply(401)
        parts = path.split("/")
        ns = parts[5]
        if self.command == "PUT":
            name = parts[7]
            if (ns, name) not in srv.configmaps:
                return self.reply(404, {"reason": "NotFound"})
            srv.configmaps[(ns, name)] = json.loads(body)
            return self.reply(200, body)
        if self.command == "POST":
            doc = json.loads(body)
            srv.configmaps[(ns, doc["metadata"]["name"])] = doc
            return self.reply(201, body)
        return self.reply(405)


class PostgreSQL:
    """A throwaway cluster of Debian's PostgreSQL on 127.0.0.1 (SCRAM-SHA-256)."""

    def __init__(self):
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not found:
            raise RuntimeError("PostgreSQL is not installed: apt-get install postgresql")
        self.bin = pathlib.Path(found[-1]).parent
        self.dir = tempfile.mkdtemp(prefix="picluster-pg-")
        self.port = free_port()
        self.user = None
        if os.geteuid() == 0:  # initdb refuses root: run the server as `postgres`
            self.user = "postgres"
            pw = pwd.getpwnam(self.user)
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        data = f"{self.dir}/data"
        pwfile = f"{self.dir}/pw"
        with open(pwfile, "w") as f:
            f.write("superpw\n")
        if self.user:
            os.chown(pwfile, pwd.getpwnam(self.user).pw_uid, -1)
        self.run(self.bin / "initdb", "-D", data, "-U", "postgres", "--auth=scram-sha-256", f"--pwfile={pwfile}", "-E", "UTF8")
        with open(f"{data}/pg_hba.conf", "w") as f:
            f.write("local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n")
        self.run(
            self.bin / "pg_ctl", "-D", data, "-l", f"{self.dir}/log", "-w", "start",
            "-o", f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.dir} -c ssl=off",
        )
        self.data = data

    def run(self, *cmd):
        cmd = [str(c) for c in cmd]
        if self.user:
            cmd = ["runuser", "-u", self.user, "--"] + cmd
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def psql(self, sql, db="postgres"):
        self.run(self.bin / "psql", "-h", self.dir, "-p", self.port, "-U", "postgres", "-d", db, "-v", "ON_ERROR_STOP=1", "-q", "-c", sql)

    def stop(self):
        self.run(self.bin / "pg_ctl", "-D", self.data, "-m", "immediate", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)


class PlatformCheck(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.pg = PostgreSQL()
        cls.pg.psql(f"CREATE ROLE lake LOGIN PASSWORD '{PG_PASSWORD}'")
        cls.pg.psql("CREATE DATABASE lake OWNER lake")
        # The Iceberg JDBC catalog tables the CloudNativePG bootstrap creates.
        cls.pg.psql(
            "CREATE TABLE iceberg_tables (catalog_name varchar(255)); "
            "CREATE TABLE iceberg_namespace_properties (catalog_name varchar(255)); "
            "ALTER TABLE iceberg_tables OWNER TO lake; ALTER TABLE iceberg_namespace_properties OWNER TO lake",
            db="lake",
        )

    @classmethod
    def tearDownClass(cls):
        cls.pg.stop()

    def setUp(self):
        self.fakes = Fakes()
        threading.Thread(target=self.fakes.serve_forever, daemon=True).start()
        self.tmp = tempfile.TemporaryDirectory()
        token = pathlib.Path(self.tmp.name) / "token"
        token.write_text("test-token\n")
        u = self.fakes.url
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "CHECKS": "s3,postgresql,trino,nifi,jupyter,grafana,prometheus,loki",
            "WAIT_SECONDS": "3",
            "RETRY_SECONDS": "1",
            "S3_ENDPOINT": f"{u}/s3",
            "S3_BUCKET": "lake",
            "S3_ACCESS_KEY": ACCESS,
            "S3_SECRET_KEY": SECRET,
            "PG_HOST": "127.0.0.1",
            "PG_PORT": str(self.pg.port),
            "PG_DATABASE": "lake",
            "PG_USER": "lake",
            "PG_PASSWORD": PG_PASSWORD,
            "TRINO_URL": f"{u}/trino",
            "NIFI_URL": f"{u}/nifi/nifi/",
            "JUPYTER_URL": f"{u}/jupyter",
            "GRAFANA_URL": f"{u}/grafana",
            "PROMETHEUS_URL": f"{u}/prometheus",
            "LOKI_URL": f"{u}/loki",
            "RESULT_CONFIGMAP": "picluster/picluster-platform-check",
            "K8S_API": f"{u}/k8s",
            "K8S_TOKEN_FILE": str(token),
        }

    def tearDown(self):
        self.fakes.shutdown()
        self.fakes.server_close()
        self.tmp.cleanup()

    def script(self, *args, **extra):
        return subprocess.run(
            [sys.executable, str(SCRIPT), *args],
            env={**self.env, **extra},
            capture_output=True,
            text=True,
            timeout=120,
        )

    def results(self):
        return self.fakes.configmaps[("picluster", "picluster-platform-check")]["data"]

    def test_bucket_is_created_once_and_found_again(self):
        first = self.script("make-bucket")
        self.assertEqual(first.returncode, 0, first.stdout + first.stderr)
        self.assertIn("bucket lake created", first.stdout)
        again = self.script("make-bucket")
        self.assertEqual(again.returncode, 0, again.stdout + again.stderr)
        self.assertIn("already exists", again.stdout)
        self.assertEqual(self.fakes.bad_signatures, 0)

    def test_bucket_job_gives_up_after_its_wait(self):
        self.fakes.broken.add("s3")
        started = time.monotonic()
        r = self.script("make-bucket", WAIT_SECONDS="2")
        self.assertEqual(r.returncode, 1, r.stdout)
        self.assertIn("FAILED   bucket: HEAD bucket lake: HTTP 503", r.stdout)
        self.assertLess(time.monotonic() - started, 30)

    def test_everything_ok_and_rerunnable(self):
        self.fakes.buckets.add("lake")
        for run in range(2):  # a second run replaces the first run's ConfigMap
            r = self.script("run")
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            for name in self.env["CHECKS"].split(","):
                self.assertRegex(r.stdout, rf"(?m)^ok +{name} ")
                self.assertTrue(self.results()[name].startswith("ok: "), self.results())
            self.assertEqual(self.results()["summary"], "ok: all 8 checks passed")
        self.assertIn("connected as lake to lake", self.results()["postgresql"])
        self.assertIn("down: seaweedfs", self.results()["prometheus"])
        # The probe object and table were cleaned up; no signature was wrong.
        self.assertEqual(self.fakes.objects, {})
        self.assertEqual(self.fakes.tables, {})
        self.assertEqual(self.fakes.bad_signatures, 0)
        # No credential reaches the log or the results.
        for secret in (SECRET, PG_PASSWORD, "test-token"):
            self.assertNotIn(secret, r.stdout + r.stderr + json.dumps(self.results()))

    def test_failures_are_loud_and_name_the_reason(self):
        # No bucket, Trino down, and a wrong PostgreSQL password.
        self.fakes.broken.add("trino")
        r = self.script("run", PG_PASSWORD="wrong")
        self.assertEqual(r.returncode, 1, r.stdout)
        out = r.stdout
        self.assertRegex(out, r"(?m)^FAILED +s3 +bucket lake does not exist")
        self.assertRegex(out, r"(?m)^FAILED +postgresql .*28P01.*password authentication failed")
        self.assertRegex(out, r"(?m)^FAILED +trino +GET .*/trino/v1/info: HTTP 503")
        self.assertRegex(out, r"(?m)^ok +grafana ")
        self.assertIn("platform check FAILED: s3, postgresql, trino", out)
        data = self.results()
        self.assertTrue(data["trino"].startswith("failed: "), data)
        self.assertEqual(data["summary"], "failed: s3, postgresql, trino")
        # The first failing check retried until the shared wait was spent;
        # the later ones still got their attempt and a reason.
        self.assertIn("waiting  s3", out)
        self.assertNotIn("waiting  trino", out)

    def test_missing_catalog_tables_fail_the_postgresql_check(self):
        self.pg.psql("CREATE DATABASE empty OWNER lake")
        r = self.script("run", CHECKS="postgresql", PG_DATABASE="empty")
        self.assertEqual(r.returncode, 1, r.stdout)
        self.assertIn("the Iceberg catalog tables are missing in empty", r.stdout)

    def test_unknown_check_is_refused(self):
        r = self.script("run", CHECKS="s3,spark")
        self.assertEqual(r.returncode, 2)
        self.assertIn("unknown checks ['spark']", r.stdout)

    def test_results_that_cannot_be_written_fail_the_run(self):
        self.fakes.buckets.add("lake")
        r = self.script("run", CHECKS="grafana", K8S_TOKEN_FILE=os.devnull)
        self.assertEqual(r.returncode, 1, r.stdout)
        self.assertIn("writing ConfigMap picluster/picluster-platform-check: HTTP 401", r.stdout)


class SigV4(unittest.TestCase):
    def test_matches_botocore_for_awkward_keys_and_queries(self):
        import datetime

        now = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
        url = "http://s3.s3.svc.cluster.local:9000/lake/dir/a%20b.txt?list-type=2&prefix=x%2Fy"
        headers = check.sigv4_headers("GET", url, b"", ACCESS, SECRET, "us-east-1", now)
        request = botocore.awsrequest.AWSRequest(method="GET", url=url, data=b"", headers={
            "x-amz-content-sha256": headers["x-amz-content-sha256"], "x-amz-date": headers["x-amz-date"]})
        request.context["timestamp"] = headers["x-amz-date"]
        signer = botocore.auth.S3SigV4Auth(botocore.credentials.Credentials(ACCESS, SECRET), "s3", "us-east-1")
        expected = signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request)
        self.assertTrue(headers["authorization"].endswith(f"Signature={expected}"), headers)


if __name__ == "__main__":
    unittest.main()
