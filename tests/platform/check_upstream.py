#!/usr/bin/env python3
"""Check picluster's HelmChart values against the upstream charts (maintenance tool).

    python3 tests/platform/check_upstream.py RENDERED_DIR CHARTS_DIR [--write]

CHARTS_DIR holds one directory per pinned chart, named `<chart>@<version>`,
with that release's `values.yaml`, its `values.schema.json` when the chart
publishes one, and `subcharts/<name>/values.yaml` for dependencies whose
values picluster sets (kube-prometheus-stack: grafana, kube-state-metrics,
prometheus-node-exporter). Upstream files are not kept in this repository;
take them from the chart release being pinned.

For every value path a rendered HelmChart sets, the script checks that the
path exists in the chart's defaults (or lies under a free-form map there, such
as `resources: {}`), and validates the whole valuesContent against the
chart's values.schema.json (merged with the defaults, as Helm does). With --write it records the verified paths in
chart-values-keys.json, which validate.py enforces offline.
"""

import json
import pathlib
import sys

import jsonschema
import yaml

from validate import leaf_paths

HERE = pathlib.Path(__file__).resolve().parent
# Keys of custom-resource specs the charts pass through verbatim; upstream
# defaults show only some of their fields.
PASS_THROUGH = {
    # CloudNativePG AffinityConfiguration (postgresql.cnpg.io/v1 Cluster.spec.affinity).
    "cluster@": ["cluster.affinity.nodeSelector", "cluster.affinity.nodeAffinity"],
}


# Values that are free-form maps in every chart (Kubernetes objects or
# application config passed through verbatim): anything below them is allowed.
FREE_FORM = {"resources", "affinity", "nodeSelector", "catalogs", "limits_config"}


def merge(base, over):
    """Helm's coalescing of user values over chart defaults."""
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for k, v in over.items():
            if v is None:
                out.pop(k, None)
            else:
                out[k] = merge(base.get(k), v)
        return out
    return over


def lookup(defaults, parts):
    """'exact' if the path exists, 'free:<prefix>' if it lies under a free-form
    map or unset value, None if the chart does not know it."""
    cur = defaults
    for i, p in enumerate(parts):
        if p in FREE_FORM and i + 1 < len(parts) and isinstance(cur, dict) and p in cur:
            return "free:" + ".".join(parts[: i + 1])
        if isinstance(cur, dict) and p in cur:
            cur = cur[p]
            continue
        if cur is None or cur == {} or cur == [] or cur == "":
            return "free:" + ".".join(parts[:i])
        return None
    return "exact"


def main(argv):
    write = "--write" in argv
    args = [a for a in argv[1:] if a != "--write"]
    if len(args) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    rendered, charts = map(pathlib.Path, args)
    used = {}
    for path in sorted(rendered.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not isinstance(doc, dict) or doc.get("kind") != "HelmChart":
                continue
            spec = doc["spec"]
            if "chart" not in spec or "valuesContent" not in spec:
                continue
            key = f"{spec['chart']}@{spec['version']}"
            used.setdefault(key, []).append((path, yaml.safe_load(spec["valuesContent"])))
    problems = 0
    result = {}
    for key, instances in sorted(used.items()):
        cdir = charts / key
        defaults = yaml.safe_load((cdir / "values.yaml").read_text())
        schema_file = cdir / "values.schema.json"
        schema = json.loads(schema_file.read_text()) if schema_file.exists() else None
        keys = set()
        for path, values in instances:
            if schema is not None:
                try:
                    # Helm validates the defaults merged with the user's values.
                    jsonschema.validate(merge(defaults, values), schema)
                except jsonschema.ValidationError as e:
                    problems += 1
                    print(f"{path}: {key}: values.schema.json: {e.message} at {'/'.join(map(str, e.absolute_path))}")
            for leaf in leaf_paths(values):
                parts = leaf.split(".")
                sub = cdir / "subcharts" / parts[0] / "values.yaml"
                found = lookup(defaults, parts)
                if (found is None or found.startswith("free")) and sub.exists():
                    inner = lookup(yaml.safe_load(sub.read_text()), parts[1:])
                    if inner is not None:
                        found = inner if inner == "exact" else "free:" + ".".join([parts[0]] + [p for p in inner[5:].split(".") if p])
                passthrough = [p for k, ps in PASS_THROUGH.items() if key.startswith(k) for p in ps]
                if found is None and any(leaf == p or leaf.startswith(p + ".") for p in passthrough):
                    found = "free:" + next(p for p in passthrough if leaf == p or leaf.startswith(p + "."))
                if found is None:
                    problems += 1
                    print(f"{path}: {key}: `{leaf}` is not a value of this chart version")
                elif found == "exact":
                    keys.add(leaf)
                else:
                    keys.add(found[5:] + ".*")
        result[key] = {
            "verified_against": f"{key} values.yaml" + (" and values.schema.json" if schema else ""),
            "keys": sorted(keys),
        }
        print(f"{key}: {len(keys)} value paths checked" + (", valuesContent valid against values.schema.json" if schema else ""))
    if write and problems == 0:
        out = HERE / "chart-values-keys.json"
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {out}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
