"""Rules the rendered platform must follow beyond schemas (issue 12), each one
an upstream fact or a sizing decision, checked per selection by validate.py.

Every rule names the upstream file and tag it rests on.
"""

import re

import yaml

# Releases that own persistent data: helm-controller's default failurePolicy
# `reinstall` uninstalls them after a failed upgrade (helm-controller v0.16.13
# pkg/controllers/chart/chart.go DefaultFailurePolicy; klipper-helm
# v0.9.8-build20250709 `entry`), which deletes what the release owns.
DATA_CHARTS = {
    "cluster": "the CloudNativePG Cluster and with it the PostgreSQL volumes",
    "kube-prometheus-stack": "Grafana's PVC (grafana chart 12.11.1 templates/pvc.yaml)",
    "loki": "Loki's volume",
    "longhorn": "every Longhorn volume",
}
SVC_HOST = re.compile(r"\b([a-z0-9-]+)\.([a-z0-9-]+)\.svc\.cluster\.local:(\d+)")
WEED_SHELL_ADDR = re.compile(r"-(?:master|filer)=([a-z0-9.-]+):(\d+)(?:\.(\d+))?")


def mib(q):
    """Kubernetes or JVM quantity to MiB ("512Mi", "2Gi", "768m", "1984M")."""
    m = re.fullmatch(r"(\d+)(Mi|Gi|M|m|G|g)", str(q))
    if not m:
        raise ValueError(f"not a memory size: {q!r}")
    n, unit = int(m.group(1)), m.group(2)
    return n * 1024 if unit in ("Gi", "G", "g") else n


def containers(doc):
    spec = doc.get("spec", {}).get("template", {}).get("spec", {})
    return spec.get("initContainers", []) + spec.get("containers", [])


def texts(container):
    yield from container.get("command", []) or []
    yield from container.get("args", []) or []
    for e in container.get("env", []) or []:
        if "value" in e:
            yield str(e["value"])


def check_selection(where, docs, fail):
    """docs: (file, document) pairs of one rendered selection."""
    services = {}
    charts = {}
    for _, d in docs:
        if d.get("kind") == "Service":
            key = (d["metadata"]["name"], d["metadata"].get("namespace"))
            services[key] = {p["port"] for p in d["spec"].get("ports", [])}
        if d.get("kind") == "HelmChart" and "chart" in d["spec"]:
            values = yaml.safe_load(d["spec"].get("valuesContent") or "{}") or {}
            charts[d["spec"]["chart"]] = (d, values)

    for f, d in docs:
        name = f"{f} {d.get('kind')}/{d.get('metadata', {}).get('name')}"
        if d.get("kind") == "Job":
            # 1. A Job can neither wait forever nor retry forever.
            if "activeDeadlineSeconds" not in d["spec"]:
                fail(name, "Job without activeDeadlineSeconds: it can wait forever")
            if d["spec"].get("backoffLimit", 6) > 10:
                fail(name, f"backoffLimit {d['spec']['backoffLimit']} retries a broken Job for hours")
            for c in containers(d):
                for t in texts(c):
                    # Every Service address a Job uses is a port that Service exposes.
                    for svc, ns, port in SVC_HOST.findall(t):
                        ports = services.get((svc, ns))
                        if ports is not None and int(port) not in ports:
                            fail(name, f"{svc}.{ns}:{port} is not a port of Service {ns}/{svc} (it exposes {sorted(ports)})")
                    # `weed shell` dials gRPC at port+10000 unless given as
                    # host:port.grpcPort (seaweedfs 4.41 weed/pb/server_address.go
                    # ToGrpcAddress, weed/pb/grpc_client_server.go).
                    if "weed shell" in t:
                        for host, port, grpc in WEED_SHELL_ADDR.findall(t):
                            g = int(grpc) if grpc else int(port) + 10000
                            m = SVC_HOST.match(f"{host}:{port}")
                            ports = services.get((m.group(1), m.group(2))) if m else None
                            if ports is not None and g not in ports:
                                fail(name, f"`weed shell` dials gRPC {host}:{g}, which Service {m.group(2)}/{m.group(1)} does not expose")
        # 5. NiFi: heap at most 45% of the limit, non-heap areas capped.
        if d.get("kind") == "StatefulSet" and d["metadata"]["name"] == "nifi":
            for c in containers(d):
                env = {e["name"]: e.get("value") for e in c.get("env", []) or []}
                if "NIFI_JVM_HEAP_MAX" in env:
                    limit = mib(c["resources"]["limits"]["memory"])
                    heap = mib(env["NIFI_JVM_HEAP_MAX"])
                    if heap * 100 > limit * 45:
                        fail(name, f"NiFi heap {heap} MiB is more than 45% of its {limit} MiB limit")
            init = " ".join(t for c in containers(d) for t in texts(c))
            for flag in ("-XX:ReservedCodeCacheSize=", "-XX:MaxMetaspaceSize="):
                if flag not in init:
                    fail(name, f"NiFi's JVM has no {flag} cap")
        # 7. Pi temperature: only the SoC sensor (node-exporter hwmon also
        # reports the NVMe drive and RP1).
        if d.get("kind") == "ConfigMap":
            for text in (d.get("data") or {}).values():
                if "node_hwmon_temp_celsius" in text and 'cpu_thermal' not in text:
                    fail(name, "temperature panel without the cpu_thermal chip filter")

    # 2. Data-owning releases abort instead of reinstalling.
    for chart, why in DATA_CHARTS.items():
        if chart in charts:
            d, values = charts[chart]
            if d["spec"].get("failurePolicy") != "abort":
                fail(f"HelmChart/{d['metadata']['name']}", f"failurePolicy is not `abort`: a failed upgrade would uninstall {why}")
    if "cluster" in charts:
        d, values = charts["cluster"]
        cluster = values.get("cluster", {})
        if (cluster.get("annotations") or {}).get("helm.sh/resource-policy") != "keep":
            fail("HelmChart/postgresql", "the Cluster lacks helm.sh/resource-policy: keep (cluster chart 0.8.1 `cluster.annotations`)")
        # 3. CNPG HA alerts that cannot hold at this size are excluded
        # (cluster chart 0.8.1 prometheus_rules/cluster-ha-*.yaml).
        rule = cluster.get("monitoring", {}).get("prometheusRule", {})
        if rule.get("enabled"):
            excluded = set(rule.get("excludeRules") or [])
            n = cluster.get("instances", 1)
            need = {"CNPGClusterZoneSpreadWarning"}
            need |= {"CNPGClusterHACritical"} if n < 2 else set()
            need |= {"CNPGClusterHAWarning"} if n < 3 else set()
            if need - excluded:
                fail("HelmChart/postgresql", f"alerts {sorted(need - excluded)} fire forever with {n} instance(s)")

    if "kube-prometheus-stack" in charts:
        _, values = charts["kube-prometheus-stack"]
        g = values.get("grafana", {})
        # 4. Grafana: GOMEMLIMIT is the whole limit (grafana chart 12.11.1
        # templates/_pod.tpl); Grafana 13 with the default dashboards needs 512Mi.
        limit = mib(g.get("resources", {}).get("limits", {}).get("memory", "0Mi"))
        if limit < 512:
            fail("HelmChart/monitoring", f"Grafana's memory limit {limit} MiB is under 512 MiB")
        if not g.get("sidecar", {}).get("resources", {}).get("limits"):
            fail("HelmChart/monitoring", "Grafana's sidecars have no resources")
        for group in values.get("additionalPrometheusRulesMap", {}).values():
            for grp in group.get("groups", []):
                for r in grp.get("rules", []):
                    if "node_hwmon_temp_celsius" in r.get("expr", "") and 'chip_name="cpu_thermal"' not in r["expr"]:
                        fail("HelmChart/monitoring", f"{r.get('alert')} takes every hwmon sensor, not the SoC's cpu_thermal")
        # 7. SeaweedFS's metrics port is scraped.
        for f, d in docs:
            if d.get("kind") == "StatefulSet" and d["metadata"]["name"] == "seaweedfs":
                args = " ".join(containers(d)[0].get("args", []))
                port = re.search(r"-metricsPort=(\d+)", args)
                scrapes = values.get("prometheus", {}).get("prometheusSpec", {}).get("additionalScrapeConfigs") or []
                hit = [s for s in scrapes if "seaweedfs;metrics" in str(s.get("relabel_configs"))]
                if not port or not hit:
                    fail("HelmChart/monitoring", "SeaweedFS's metrics port is never scraped")
                elif int(port.group(1)) not in services.get(("seaweedfs", "s3"), set()):
                    fail("Service/seaweedfs", f"the metrics port {port.group(1)} the scrape job needs is not exposed")

    # 6. longhorn-manager has no tight limit (upstream sets none).
    if "longhorn" in charts:
        _, values = charts["longhorn"]
        if (values.get("longhornManager", {}).get("resources") or {}).get("limits", {}).get("memory"):
            fail("HelmChart/longhorn", "longhorn-manager has a memory limit; an OOM kill stalls Longhorn's webhooks")

    # 7. Trino: no tpcds catalog, G1 regions sized for the heap.
    if "trino" in charts:
        _, values = charts["trino"]
        cats = values.get("catalogs", {})
        if "tpcds" not in cats or cats["tpcds"] is not None:
            fail("HelmChart/trino", "the chart's tpcds catalog stays (trino chart 1.42.2 merges `catalogs`: set tpcds: null)")
        for role in ("coordinator", "worker"):
            jvm = values.get(role, {}).get("jvm", {})
            region = jvm.get("gcMethod", {}).get("g1", {}).get("heapRegionSize", "32M")
            heap = mib(jvm.get("maxHeapSize", "0M"))
            if heap // mib(region) < 256:
                fail("HelmChart/trino", f"{role}: G1HeapRegionSize {region} gives {heap // mib(region)} regions of a {heap} MiB heap")

    # 7. Alloy ships logs from every node and keeps its read positions.
    if "alloy" in charts:
        _, values = charts["alloy"]
        ctl = values.get("controller", {})
        if not any(t.get("operator") == "Exists" and "key" not in t for t in ctl.get("tolerations", [])):
            fail("HelmChart/alloy", "Alloy does not tolerate taints: tainted nodes ship no logs")
        path = values.get("alloy", {}).get("storagePath", "/tmp/alloy")
        mounts = {m["mountPath"]: m["name"] for m in values.get("alloy", {}).get("mounts", {}).get("extra", [])}
        host = {v["name"] for v in ctl.get("volumes", {}).get("extra", []) if "hostPath" in v}
        if mounts.get(path) not in host:
            fail("HelmChart/alloy", f"Alloy's storage path {path} is not on a hostPath volume: positions are lost on restart")
