#!/usr/bin/env python3
"""Validate rendered picluster data-platform manifests, offline.

    python3 tests/platform/validate.py DIR [DIR ...]

Every *.yaml under DIR is checked:
  * it parses as YAML, every document is a Kubernetes object;
  * core kinds validate against the Kubernetes JSON schemas shipped in the
    kubernetes-validate package, in strict mode (unknown fields fail), for the
    Kubernetes minor of the pinned K3s;
  * HelmChart resources validate against schemas/helmchart.schema.json
    (written from helm-controller's CRD), their valuesContent parses as a YAML
    mapping, every value path they set is one verified to exist in that chart
    version (chart-values-keys.json), and a chartContent archive unpacks to a
    chart whose templates parse;
  * Secrets appear only in *-secrets.yaml files, which hold nothing else but
    Namespaces;
  * the files of each directory (one rendered selection) follow rules.py:
    bounded Jobs reaching ports their Services expose, data-owning releases
    with failurePolicy abort, alerts that can hold, memory floors and caps.
Exit status 0 when everything passes; every failure is printed.
"""

import base64
import io
import json
import pathlib
import sys
import tarfile

import jsonschema
import kubernetes_validate
import yaml

import rules

KUBERNETES_VERSION = "1.33.0"  # K3s v1.33.x, the release the sample cluster pins
HERE = pathlib.Path(__file__).resolve().parent
HELMCHART_SCHEMA = json.loads((HERE / "schemas" / "helmchart.schema.json").read_text())
VALUES_KEYS = json.loads((HERE / "chart-values-keys.json").read_text())
# Custom resources inside generated charts: parsed and checked for shape only.
CUSTOM_KINDS = {("metallb.io/v1beta1", "IPAddressPool"), ("metallb.io/v1beta1", "L2Advertisement")}

errors = []


def fail(where, msg):
    errors.append(f"{where}: {msg}")


def leaf_paths(value, prefix=""):
    """Dotted paths of the values a mapping sets (lists and scalars are leaves)."""
    if isinstance(value, dict) and value:
        for k, v in value.items():
            yield from leaf_paths(v, f"{prefix}.{k}" if prefix else str(k))
    else:
        yield prefix


def path_allowed(path, allowed):
    for a in allowed:
        if a.endswith(".*"):
            if path == a[:-2] or path.startswith(a[:-1]):
                return True
        elif path == a:
            return True
    return False


def check_values(where, chart_key, values):
    allowed = VALUES_KEYS.get(chart_key)
    if allowed is None:
        fail(where, f"no verified value keys for {chart_key} in chart-values-keys.json")
        return
    for p in leaf_paths(values):
        if not path_allowed(p, allowed["keys"]):
            fail(where, f"{chart_key}: value `{p}` is not among the keys verified for this chart version")


def check_chart_content(where, b64):
    try:
        data = base64.b64decode(b64, validate=True)
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            names = tar.getnames()
            root = names[0].split("/")[0]
            if f"{root}/Chart.yaml" not in names:
                fail(where, "chartContent has no Chart.yaml")
                return
            chart = yaml.safe_load(tar.extractfile(f"{root}/Chart.yaml"))
            for key in ("apiVersion", "name", "version"):
                if key not in chart:
                    fail(where, f"chartContent Chart.yaml lacks {key}")
            for name in names:
                if name.startswith(f"{root}/templates/"):
                    for doc in yaml.safe_load_all(tar.extractfile(name)):
                        if doc is None:
                            continue
                        check_object(f"{where} [{name}]", doc, in_chart=True)
    except (ValueError, tarfile.TarError, yaml.YAMLError) as e:
        fail(where, f"chartContent is not a gzipped chart archive: {e}")


def check_object(where, doc, in_chart=False):
    if not isinstance(doc, dict) or "apiVersion" not in doc or "kind" not in doc:
        fail(where, "document is not a Kubernetes object (apiVersion/kind missing)")
        return None
    kind = (doc["apiVersion"], doc["kind"])
    name = doc.get("metadata", {}).get("name", "?")
    where = f"{where} {doc['kind']}/{name}"
    if kind == ("helm.cattle.io/v1", "HelmChart"):
        try:
            jsonschema.validate(doc, HELMCHART_SCHEMA)
        except jsonschema.ValidationError as e:
            fail(where, f"HelmChart schema: {e.message} at {'/'.join(map(str, e.absolute_path))}")
            return kind
        spec = doc["spec"]
        if "valuesContent" in spec:
            try:
                values = yaml.safe_load(spec["valuesContent"])
            except yaml.YAMLError as e:
                fail(where, f"valuesContent is not YAML: {e}")
                values = None
            if not isinstance(values, dict):
                fail(where, "valuesContent is not a YAML mapping")
            elif "chart" in spec:
                check_values(where, f"{spec['chart']}@{spec['version']}", values)
        if "chartContent" in spec:
            check_chart_content(where, spec["chartContent"])
    elif kind in CUSTOM_KINDS:
        if not in_chart:
            fail(where, "custom resources must ride in a chart (CRDs would race them)")
        if not isinstance(doc.get("spec"), dict):
            fail(where, "custom resource without a spec")
    else:
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            fail(where, f"schema ({KUBERNETES_VERSION}, strict): {e.message} at {'/'.join(map(str, e.path))}")
        except kubernetes_validate.SchemaNotFoundError as e:
            fail(where, f"no Kubernetes schema for this kind: {e}")
        except Exception as e:  # kubernetes-validate raises others for bad input
            fail(where, f"not valid: {e}")
    return kind


def check_file(path, collected):
    where = str(path)
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    except yaml.YAMLError as e:
        fail(where, f"not YAML: {e}")
        return 0
    if not docs:
        fail(where, "no documents")
    secret_file = path.name.endswith("-secrets.yaml")
    for doc in docs:
        kind = check_object(where, doc)
        if kind is None:
            continue
        collected.setdefault(path.parent, []).append((path.name, doc))
        if kind == ("v1", "Secret") and not secret_file:
            fail(where, "a Secret outside a *-secrets.yaml file")
        if secret_file and kind not in {("v1", "Secret"), ("v1", "Namespace")}:
            fail(where, f"{kind[1]} in a secrets file (only Namespaces and Secrets belong there)")
    return len(docs)


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    files = docs = 0
    selections = {}
    for d in argv[1:]:
        for path in sorted(pathlib.Path(d).rglob("*.yaml")):
            files += 1
            docs += check_file(path, selections)
    for directory, found in sorted(selections.items()):
        rules.check_selection(str(directory), found, lambda w, m, d=directory: fail(f"{d}: {w}", m))
    if files == 0:
        fail(" ".join(argv[1:]), "no *.yaml files found")
    for e in errors:
        print(e)
    if errors:
        print(f"{len(errors)} problem(s) in {files} files")
        return 1
    print(f"validated {docs} documents in {files} files (Kubernetes {KUBERNETES_VERSION}, strict)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
