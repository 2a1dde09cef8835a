#!/usr/bin/env python3
"""Assertions on manifests rendered by `helm template` from charts/tokenmint.

Called by .ci/helm-check once per scenario:

    check_chart.py --scenario NAME --namespace NS --chart DIR --counts FILE RENDERED.yaml

Prints one line per assertion and writes "<passed> <failed>" to FILE. Exits 1 when an
assertion fails.
"""

import argparse
import os
import re
import sys
from pathlib import Path

import yaml

IMAGE = "ghcr.io/tokenmint/tokenmint:0.1.0"
GROUP = "tokenmint.dev"
KINDS = ("servicekeys", "datasourcegrants", "guesttokenrequests")

# What the ServiceAccount may do, from the table shared with tests/rbac.rs (which checks that
# the code uses exactly these rights). Adding or dropping a verb in templates/rbac.yaml must
# fail here: change the template and the table together.
RBAC_TABLE = "rbac-requirements.txt"
RBAC_HOW = ("call", "restart-call", "consumers-call", "apply-create", "admission")
# The workload kinds the consumer watch lists and watches (consumers.enabled).
WORKLOADS = {("apps", "deployments"), ("apps", "statefulsets"), ("apps", "daemonsets"),
             ("apps", "replicasets"), ("batch", "jobs"), ("batch", "cronjobs")}


def load_rbac_table(chart):
    """Rows of CHART/rbac-requirements.txt: dicts of scope, group ("" for core), resource, verb,
    name (None, "keyring" or "lease") and how."""
    rows = []
    path = chart / RBAC_TABLE
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        cols = line.split()
        if len(cols) != 6:
            raise ValueError(f"{path}:{n}: want 6 columns (scope group resource verb name how), got {cols}")
        scope, group, resource, verb, name, how = cols
        if scope not in ("watched", "release", "cluster") or name not in ("-", "keyring", "lease") or how not in RBAC_HOW:
            raise ValueError(f"{path}:{n}: bad scope, name or how: {cols}")
        if scope == "watched" and name != "-":
            raise ValueError(f"{path}:{n}: watched-namespace rules cannot name objects: {cols}")
        rows.append(dict(scope=scope, group="" if group == "core" else group, resource=resource,
                         verb=verb, name=None if name == "-" else name, how=how))
    return rows


def expected_watched(table, restarts, consumers):
    """(apiGroup, resource, verb) granted in every watched namespace. Granted by a ClusterRole
    when watchNamespaces is empty, else by a Role per watched namespace. The restart-call rows
    depend on rbac.allowWorkloadRestarts, the consumers-call rows on consumers.enabled."""
    return {(r["group"], r["resource"], r["verb"]) for r in table
            if r["scope"] == "watched" and (restarts or r["how"] != "restart-call")
            and (consumers or r["how"] != "consumers-call")}


def expected_cluster(table):
    """(apiGroup, resource, verb) of cluster-scoped resources: their own ClusterRole, in both modes."""
    return {(r["group"], r["resource"], r["verb"]) for r in table if r["scope"] == "cluster"}


def expected_release_rules(table, keyring, lease):
    """(apiGroup, resource, verb, resourceName or None) granted in the release namespace."""
    names = {None: None, "keyring": keyring, "lease": lease}
    return {(r["group"], r["resource"], r["verb"], names[r["name"]]) for r in table if r["scope"] == "release"}


SCENARIOS = {
    "default": dict(
        fullname="tokenmint", replicas=2, algorithm="HS256", issuer="tokenmint",
        log_format="json", watch=[], service_monitor=False, restarts=True,
        service_account="tokenmint", sa_created=True, rbac=True, consumers=True,
    ),
    "nondefault": dict(
        fullname="tm-tokenmint", replicas=1, algorithm="EdDSA", issuer="tokenmint",
        log_format="text", watch=["team-a", "team-b"], service_monitor=True, restarts=True,
        service_account="tm-tokenmint", sa_created=True, rbac=True, consumers=True,
    ),
    "minimal": dict(
        fullname="tokenmint", replicas=2, algorithm="HS256", issuer="https://issuer.example.com",
        log_format="json", watch=[], service_monitor=False, restarts=False,
        service_account="custom-sa", sa_created=False, rbac=True, consumers=False,
    ),
    "norbac": dict(
        fullname="tokenmint", replicas=2, algorithm="HS256", issuer="tokenmint",
        log_format="json", watch=[], service_monitor=False, restarts=True,
        service_account="tokenmint", sa_created=True, rbac=False, consumers=True,
    ),
}
KEYRING = "tokenmint-keyring"
LEASE = "tokenmint-leader"


class Checker:
    def __init__(self, scenario, verbose):
        self.scenario = scenario
        self.verbose = verbose
        self.passed = 0
        self.failed = 0

    def check(self, cond, what, detail=""):
        if cond:
            self.passed += 1
            if self.verbose:
                print(f"ok   - [{self.scenario}] {what}")
        else:
            self.failed += 1
            extra = f": {detail}" if detail else ""
            print(f"FAIL - [{self.scenario}] {what}{extra}", file=sys.stderr)
        return cond

    def eq(self, got, want, what):
        if isinstance(got, set) and isinstance(want, set):
            detail = f"granted but not expected {sorted(got - want, key=str)}, " \
                     f"expected but not granted {sorted(want - got, key=str)}"
        else:
            detail = f"got {got!r}, want {want!r}"
        return self.check(got == want, what, detail)


def parse_args(args):
    """Parse `SUBCOMMAND --flag value ... --flag=value ...` into (subcommand, {flag: [values]},
    well_formed)."""
    if not args:
        return None, {}, False
    flags, ok, i = {}, True, 1
    while i < len(args):
        flag = args[i]
        if flag.startswith("--") and "=" in flag:
            name, value = flag.split("=", 1)
            flags.setdefault(name, []).append(value)
            i += 1
            continue
        if not flag.startswith("--") or i + 1 >= len(args) or args[i + 1].startswith("--"):
            ok = False
            i += 1
            continue
        flags.setdefault(flag, []).append(args[i + 1])
        i += 2
    return args[0], flags, ok


def rules_of(obj):
    return obj.get("rules") or []


def triples(rules):
    """(apiGroup, resource, verb) for rules without resourceNames."""
    return {
        (g, r, v)
        for rule in rules if not rule.get("resourceNames")
        for g in rule.get("apiGroups", []) for r in rule.get("resources", [])
        for v in rule.get("verbs", [])
    }


def quads(rules):
    """(apiGroup, resource, verb, resourceName or None) for all rules."""
    return {
        (g, r, v, n)
        for rule in rules
        for g in rule.get("apiGroups", []) for r in rule.get("resources", [])
        for v in rule.get("verbs", []) for n in (rule.get("resourceNames") or [None])
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--scenario", required=True, choices=sorted(SCENARIOS))
    ap.add_argument("--namespace", required=True)
    ap.add_argument("--chart", required=True)
    ap.add_argument("--counts", required=True)
    ap.add_argument("--notes", action="store_true",
                    help="RENDERED holds NOTES.txt rendered into a ConfigMap (see .ci/helm-check)")
    ap.add_argument("rendered")
    a = ap.parse_args()
    exp = SCENARIOS[a.scenario]
    ns = a.namespace
    c = Checker(("notes " if a.notes else "") + a.scenario, os.environ.get("HELM_CHECK_VERBOSE") == "1")
    try:
        if a.notes:
            run_notes(c, exp, Path(a.rendered))
        else:
            run(c, exp, ns, Path(a.chart), Path(a.rendered))
    except Exception as e:  # an assertion helper tripping over an unexpected shape
        c.check(False, "checks ran to the end", f"{type(e).__name__}: {e}")
    Path(a.counts).write_text(f"{c.passed} {c.failed}\n")
    status = "ok  " if not c.failed else "FAIL"
    print(f"{status} - [{c.scenario}] rendered-{'NOTES' if a.notes else 'manifest'} assertions: {c.passed} ok, {c.failed} failing"
          + ("" if c.verbose else " (HELM_CHECK_VERBOSE=1 lists them)"))
    sys.exit(1 if c.failed else 0)


def run(c, exp, ns, chart, rendered):
    docs = [d for d in yaml.safe_load_all(rendered.read_text()) if d]
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)

    def one(kind):
        objs = by_kind.get(kind, [])
        c.eq(len(objs), 1, f"exactly one {kind}")
        return objs[0] if objs else None

    fullname = exp["fullname"]

    # --- labels and namespace of everything the chart renders (CRDs are copied verbatim) ---
    unlabelled, misplaced = [], []
    for d in docs:
        if d["kind"] == "CustomResourceDefinition":
            continue
        labels = d["metadata"].get("labels") or {}
        ident = f'{d["kind"]}/{d["metadata"]["name"]}'
        if not (labels.get("app.kubernetes.io/name") == "tokenmint"
                and labels.get("app.kubernetes.io/instance")
                and labels.get("app.kubernetes.io/version") == "0.1.0"
                and labels.get("app.kubernetes.io/managed-by") == "Helm"):
            unlabelled.append(ident)
        if d["kind"] not in ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "ServiceMonitor") \
                and d["metadata"].get("namespace") != ns:
            misplaced.append(ident)
    c.eq(unlabelled, [], "every object has the app.kubernetes.io name/instance/version/managed-by labels")
    c.eq(misplaced, [], "every namespaced object (RBAC aside) is in the release namespace")

    # --- Deployment ---
    dep = one("Deployment")
    if dep is None:
        return
    c.eq(dep["metadata"]["name"], fullname, "Deployment name")
    c.eq(dep["spec"]["replicas"], exp["replicas"], "Deployment replicas")
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    selector = dep["spec"]["selector"]["matchLabels"]
    c.check(selector.items() <= pod_labels.items(), "Deployment selector matches the pod labels")
    pod = dep["spec"]["template"]["spec"]
    containers = {k["name"]: k for k in pod["containers"]}
    c.eq(sorted(containers), ["operator", "serve"], "pod runs exactly the operator and serve containers")
    c.eq(pod.get("serviceAccountName"), exp["service_account"], "pod serviceAccountName")
    c.eq(pod.get("automountServiceAccountToken"), True, "automountServiceAccountToken true")
    c.eq(pod.get("terminationGracePeriodSeconds"), 30, "terminationGracePeriodSeconds 30")
    psc = pod.get("securityContext") or {}
    c.eq(psc.get("runAsNonRoot"), True, "pod securityContext runAsNonRoot")
    c.eq((psc.get("seccompProfile") or {}).get("type"), "RuntimeDefault", "pod seccompProfile RuntimeDefault")
    spread = pod.get("topologySpreadConstraints") or []
    anti = (pod.get("affinity") or {}).get("podAntiAffinity")
    if exp["replicas"] > 1:
        c.check(
            any(t.get("topologyKey") == "kubernetes.io/hostname"
                and t.get("labelSelector", {}).get("matchLabels", {}).items() <= pod_labels.items()
                for t in spread) or anti,
            "replicas > 1: pods spread across nodes",
        )
    else:
        c.check(not spread and not anti, "replicas = 1: no spread constraints")

    common = {
        "--namespace": [ns],
        "--algorithm": [exp["algorithm"]],
        "--issuer": [exp["issuer"]],
        "--log-format": [exp["log_format"]],
        "--keyring-secret": [KEYRING],
    }
    if exp["watch"]:
        common["--watch-namespace"] = exp["watch"]
    operator_flags = {"--admin-listen": ["0.0.0.0:8081"], "--lease-name": [LEASE]}
    if not exp["consumers"]:
        # consumers.enabled=false: no workload watch.
        operator_flags["--consumers"] = ["false"]
    want_args = {
        "operator": dict(common, **operator_flags),
        "serve": dict(common, **{"--listen": ["0.0.0.0:8080"], "--probe-listen": ["0.0.0.0:8082"],
                                 "--token-audience": ["tokenmint"]}),
    }
    want_port = {"operator": ("admin", 8081), "serve": ("http", 8080)}
    # Where each container's probes go: the serve container's have a listener of their own.
    probe_port = {"operator": ("admin", 8081), "serve": ("probes", 8082)}
    for name in ("operator", "serve"):
        k = containers.get(name)
        if not c.check(k is not None, f"{name} container exists"):
            continue
        c.eq(k.get("image"), IMAGE, f"{name} image")
        sub, flags, well_formed = parse_args(k.get("args") or [])
        c.eq(sub, name, f"{name} args start with the `{name}` subcommand")
        c.check(well_formed, f"{name} args are `--flag value` pairs", repr(k.get("args")))
        c.eq(flags, want_args[name], f"{name} flags (namespace, algorithm, issuer, log format, "
                                     f"keyring, watch namespaces, listen addresses)")
        port_name, port = want_port[name]
        ports = {p["name"]: p["containerPort"] for p in k.get("ports") or []}
        want_ports = {port_name: port, probe_port[name][0]: probe_port[name][1]}
        c.eq(ports, want_ports, f"{name} ports {want_ports}")
        probe_name, probe_number = probe_port[name]
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            get = (k.get(probe) or {}).get("httpGet") or {}
            c.check(get.get("path") == path and get.get("port") in (probe_name, probe_number),
                    f"{name} {probe} httpGet {path} on {probe_name}", repr(get))
        env = {e["name"]: e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
               for e in k.get("env") or []}
        c.check(env.get("POD_NAMESPACE") == "metadata.namespace" and env.get("POD_NAME") == "metadata.name",
                f"{name} env POD_NAMESPACE/POD_NAME from the downward API", repr(env))
        sc = k.get("securityContext") or {}
        c.check(
            sc.get("runAsNonRoot") is True
            and sc.get("runAsUser") == 65532
            and sc.get("runAsGroup") == 65532
            and sc.get("readOnlyRootFilesystem") is True
            and sc.get("allowPrivilegeEscalation") is False
            and (sc.get("capabilities") or {}).get("drop") == ["ALL"]
            and not (sc.get("capabilities") or {}).get("add")
            and (sc.get("seccompProfile") or {}).get("type") == "RuntimeDefault",
            f"{name} securityContext (non-root 65532, read-only root, no privilege escalation, "
            f"drop ALL, seccomp RuntimeDefault)",
            repr(sc),
        )
        res = k.get("resources") or {}
        c.check(all(res.get(t, {}).get(r) for t in ("requests", "limits") for r in ("cpu", "memory")),
                f"{name} has cpu/memory requests and limits", repr(res))

    # --- ServiceAccount ---
    sas = [d for d in by_kind.get("ServiceAccount", [])]
    if exp["sa_created"]:
        c.eq([s["metadata"]["name"] for s in sas], [exp["service_account"]], "ServiceAccount rendered")
    else:
        c.eq(sas, [], "no ServiceAccount rendered (serviceAccount.create=false)")

    # --- Service ---
    svc = one("Service")
    if svc:
        c.eq(svc["spec"]["type"], "ClusterIP", "Service type ClusterIP")
        c.check(svc["spec"]["selector"].items() <= pod_labels.items(), "Service selects the pods")
        ports = {p["name"]: (p["port"], p["targetPort"]) for p in svc["spec"]["ports"]}
        c.eq(ports, {"http": (8080, "http"), "metrics": (8081, "admin")},
             "Service ports http 8080 -> http, metrics 8081 -> admin")

    # --- PodDisruptionBudget iff replicas > 1 ---
    pdbs = by_kind.get("PodDisruptionBudget", [])
    if exp["replicas"] > 1:
        if c.eq(len(pdbs), 1, "replicas > 1: a PodDisruptionBudget"):
            c.eq(pdbs[0]["spec"].get("minAvailable"), 1, "PodDisruptionBudget minAvailable 1")
            c.check(pdbs[0]["spec"]["selector"]["matchLabels"].items() <= pod_labels.items(),
                    "PodDisruptionBudget selects the pods")
    else:
        c.eq(len(pdbs), 0, "replicas = 1: no PodDisruptionBudget")

    # --- ServiceMonitor iff enabled ---
    sms = by_kind.get("ServiceMonitor", [])
    if exp["service_monitor"]:
        if c.eq(len(sms), 1, "serviceMonitor.enabled: a ServiceMonitor"):
            eps = {(e.get("port"), e.get("path")) for e in sms[0]["spec"]["endpoints"]}
            c.check(("metrics", "/metrics") in eps, "ServiceMonitor scrapes port metrics /metrics", repr(eps))
            c.check(svc and sms[0]["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items(),
                    "ServiceMonitor selects the Service")
    else:
        c.eq(len(sms), 0, "serviceMonitor disabled: no ServiceMonitor")

    # --- RBAC ---
    table = load_rbac_table(chart)
    c.check(bool(table) and {r["scope"] for r in table} == {"watched", "release", "cluster"},
            f"{RBAC_TABLE} lists rights for the watched and the release namespace, and cluster-scoped ones")
    c.eq({(r["group"], r["resource"], r["verb"]) for r in table if r["how"] == "restart-call"},
         {("apps", k, "patch") for k in ("deployments", "statefulsets", "daemonsets")},
         f"{RBAC_TABLE}: the optional restart rights (rbac.allowWorkloadRestarts) are the workloads' patch")
    c.eq({(r["group"], r["resource"], r["verb"]) for r in table if r["how"] == "consumers-call"},
         {(g, k, v) for g, k in WORKLOADS for v in ("list", "watch")},
         f"{RBAC_TABLE}: the optional consumer rights (consumers.enabled) are list and watch of the workloads")
    check_rbac(c, exp, ns, by_kind, docs, table)

    # --- once: rule comments in the template source, and CRDs vs RBAC ---
    if c.scenario == "default":
        check_rbac_comments(c, chart / "templates" / "rbac.yaml")
        check_crds(c, by_kind.get("CustomResourceDefinition", []))


def check_rbac(c, exp, ns, by_kind, docs, table):
    rbac_kinds = ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")
    if not exp["rbac"]:
        c.eq(sum(len(by_kind.get(k, [])) for k in rbac_kinds), 0, "rbac.create=false: no RBAC objects")
        return

    # No wildcard anywhere in any rule.
    stars = [
        (d["kind"], d["metadata"]["name"], key, rule.get(key))
        for k in ("ClusterRole", "Role") for d in by_kind.get(k, [])
        for rule in rules_of(d)
        for key in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs")
        if any("*" in str(x) for x in rule.get(key) or [])
    ]
    c.eq(stars, [], "no wildcard '*' in any RBAC rule")
    c.check(not any(rule.get("nonResourceURLs") for k in ("ClusterRole", "Role")
                    for d in by_kind.get(k, []) for rule in rules_of(d)),
            "no nonResourceURLs rules")

    sa = {"kind": "ServiceAccount", "name": exp["service_account"], "namespace": ns}

    def bound(binding, role_kind, role_name):
        return (binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind,
                                       "name": role_name}
                and binding.get("subjects") == [sa])

    roles = {(r["metadata"]["namespace"], r["metadata"]["name"]): r for r in by_kind.get("Role", [])}
    role_bindings = by_kind.get("RoleBinding", [])
    watched_rules = expected_watched(table, exp["restarts"], exp["consumers"])

    # Release namespace: the keyring Secret and the Lease, name-restricted where RBAC allows.
    release_roles = [r for (n, _), r in roles.items()
                     if n == ns and any(g == "coordination.k8s.io" for g, *_ in quads(rules_of(r)))]
    if c.eq(len(release_roles), 1, "one Role in the release namespace holds the lease rules"):
        rr = release_roles[0]
        c.eq(quads(rules_of(rr)), expected_release_rules(table, KEYRING, LEASE),
             f"release-namespace Role grants exactly the release rows of {RBAC_TABLE}")
        c.check(any(b["metadata"]["namespace"] == ns and bound(b, "Role", rr["metadata"]["name"])
                    for b in role_bindings),
                "release-namespace Role is bound to the ServiceAccount")
    # Lease and name-restricted rules exist nowhere else.
    elsewhere = [
        (d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"])
        for k in ("ClusterRole", "Role") for d in by_kind.get(k, [])
        if not (release_roles and d is release_roles[0])
        and any(g == "coordination.k8s.io" or rule.get("resourceNames")
                for rule in rules_of(d) for g in rule.get("apiGroups", []))
    ]
    c.eq(elsewhere, [], "lease and keyring rules only in the release-namespace Role")

    # Cluster-scoped resources (TokenReview): a ClusterRole of their own, bound, in both modes.
    cluster_rows = expected_cluster(table)
    all_cluster_roles = by_kind.get("ClusterRole", [])
    scoped = [r for r in all_cluster_roles if triples(rules_of(r)) == cluster_rows]
    if c.eq(len(scoped), 1, f"one ClusterRole grants exactly the cluster rows of {RBAC_TABLE}"):
        name = scoped[0]["metadata"]["name"]
        c.check(any(bound(b, "ClusterRole", name) for b in by_kind.get("ClusterRoleBinding", [])),
                "the cluster-scoped ClusterRole is bound to the ServiceAccount")
    cluster_roles = [r for r in all_cluster_roles if not any(r is s for s in scoped)]
    cluster_bindings = [b for b in by_kind.get("ClusterRoleBinding", [])
                        if not any(b["roleRef"]["name"] == s["metadata"]["name"] for s in scoped)]
    if not exp["watch"]:
        if c.eq(len(cluster_roles), 1, "watching all namespaces: one ClusterRole"):
            cr = cluster_roles[0]
            got = quads(rules_of(cr))
            c.eq({q for q in got if q[3] is not None}, set(), "ClusterRole has no resourceNames rules")
            c.eq(triples(rules_of(cr)), watched_rules,
                 f"ClusterRole grants exactly the watched rows of {RBAC_TABLE}"
                 + ("" if exp["restarts"] else " without workload restarts")
                 + ("" if exp["consumers"] else " without the workload watch"))
            granted = triples(rules_of(cr))
            c.check(all((g, r, v) in granted for g, r in WORKLOADS for v in ("list", "watch"))
                    if exp["consumers"] else not any((g, r) in WORKLOADS and v in ("list", "watch")
                                                     for g, r, v in granted),
                    "workloads may be listed and watched exactly when consumers.enabled")
            crbs = cluster_bindings
            c.check(len(crbs) == 1 and bound(crbs[0], "ClusterRole", cr["metadata"]["name"]),
                    "ClusterRoleBinding binds the ClusterRole to the ServiceAccount")
        other = [k for (n, _), k in roles.items() if n != ns]
        c.eq(other, [], "watching all namespaces: no Roles outside the release namespace")
    else:
        c.eq(len(cluster_roles), 0, "watchNamespaces set: no ClusterRole for namespaced resources")
        c.eq(len(cluster_bindings), 0, "watchNamespaces set: no ClusterRoleBinding for namespaced resources")
        for wns in exp["watch"]:
            mine = [r for (n, _), r in roles.items()
                    if n == wns and not (release_roles and r is release_roles[0])]
            if c.eq(len(mine), 1, f"watchNamespaces: one Role in {wns}"):
                c.eq(triples(rules_of(mine[0])), watched_rules,
                     f"Role in {wns} grants exactly the watched rows of {RBAC_TABLE}")
                c.check(any(b["metadata"]["namespace"] == wns and bound(b, "Role", mine[0]["metadata"]["name"])
                            for b in role_bindings),
                        f"RoleBinding in {wns} binds the Role to the ServiceAccount")
        unexpected = sorted({n for (n, _) in roles} - set(exp["watch"]) - {ns})
        c.eq(unexpected, [], "no Roles in namespaces that are not watched")


def check_rbac_comments(c, path):
    """Every rule in templates/rbac.yaml is preceded by a comment saying why it exists."""
    lines = path.read_text().splitlines()
    missing = []
    for i, line in enumerate(lines):
        if re.match(r"^\s*- apiGroups:", line):
            prev = next((p for p in reversed(lines[:i]) if p.strip() and not p.strip().startswith("{{")), "")
            if not prev.lstrip().startswith("#"):
                missing.append(i + 1)
    c.eq(missing, [], "every rule in templates/rbac.yaml is preceded by a '# why' comment (line numbers)")


def check_crds(c, crds):
    if not crds:
        print("note - [default] no CRDs in charts/tokenmint/crds/ yet: CRD/RBAC cross-check skipped",
              file=sys.stderr)
        return
    plurals = {d["spec"]["group"] + "/" + d["spec"]["names"]["plural"] for d in crds}
    c.eq(plurals, {f"{GROUP}/{k}" for k in KINDS}, "chart CRDs are exactly the three tokenmint.dev kinds")
    for d in crds:
        name = d["metadata"]["name"]
        c.eq(d["spec"].get("scope"), "Namespaced", f"CRD {name} is namespaced")
        c.check(any(v.get("storage") and "status" in (v.get("subresources") or {})
                    for v in d["spec"].get("versions", [])),
                f"CRD {name} storage version has the status subresource")


def run_notes(c, exp, rendered):
    """NOTES.txt gets a user from `helm install` to a first minted Secret."""
    docs = [d for d in yaml.safe_load_all(rendered.read_text()) if d]
    text = docs[0]["data"]["NOTES.txt"]
    demo_ns = exp["watch"][0] if exp["watch"] else "team-a"
    if exp["watch"]:
        c.check("kubectl create namespace" not in text, "NOTES: no namespace to create when watching given ones")
    else:
        c.check(f"kubectl create namespace {demo_ns}\n" in text, f"NOTES: creates namespace {demo_ns}")
    m = re.search(r"kubectl apply -n (\S+) -f - <<'EOF'\n(.*?)\nEOF\n", text, re.S)
    if not c.check(m is not None, "NOTES: applies an inline heredoc (terminator at column 0)"):
        return
    c.eq(m.group(1), demo_ns, "NOTES: applies into the demo namespace")
    objs = {d["kind"]: d for d in yaml.safe_load_all(m.group(2)) if d}
    sk, dsg = objs.get("ServiceKey", {}), objs.get("DatasourceGrant", {})
    c.eq(sorted(objs), ["DatasourceGrant", "ServiceKey"], "NOTES: heredoc holds a ServiceKey and a DatasourceGrant")
    c.check(all(d.get("apiVersion") == f"{GROUP}/v1alpha1" for d in objs.values()),
            "NOTES: apiVersion tokenmint.dev/v1alpha1")
    c.eq(sk.get("metadata", {}).get("name"), "analytics", "NOTES: ServiceKey analytics")
    principal = sk.get("spec", {}).get("principal", {})
    c.check(principal.get("id") == "1" and principal.get("email") and principal.get("name"),
            "NOTES: ServiceKey principal id \"1\" (a string), email, name", repr(principal))
    c.eq(sk.get("spec", {}).get("dataSources"), ["Data_3_E"], "NOTES: ServiceKey dataSources [Data_3_E]")
    c.eq(dsg.get("metadata", {}).get("name"), "dashboards", "NOTES: DatasourceGrant dashboards")
    c.eq(dsg.get("spec"), {"serviceKeyRef": {"name": "analytics"}, "dataSource": "Data_3_E", "expiration": 3600},
         "NOTES: DatasourceGrant spec")
    c.check(f"kubectl get dsg -n {demo_ns}\n" in text, "NOTES: kubectl get dsg")
    c.check(f"kubectl get secret dashboards-token -n {demo_ns} -o jsonpath='{{.data.token}}' | base64 -d" in text,
            "NOTES: reads the token from Secret dashboards-token")
    c.check(f"port-forward service/{exp['fullname']} 8080:8080" in text, "NOTES: port-forwards to the REST Service")


if __name__ == "__main__":
    main()
