#!/usr/bin/python3
"""Checks a real `swiftlet server` against docs/openapi.yaml.

Starts the server on a temporary data directory, drives every operation in the spec (successes
and errors), and validates each response: its status must be declared for that operation and its
body must match the declared schema. Fails if an operation in the spec was never exercised.
Usage: check_openapi.py SWIFTLET_BINARY KERNEL_ELF [DATABASE]
(DATABASE: the server's --database, e.g. postgres://USER:PASSWORD@HOST/DB; default its SQLite file.)
"""
import json, os, random, re, subprocess, sys, time, urllib.request, urllib.error

import jsonschema
import yaml

from contract_server import ContractServer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SPEC = yaml.safe_load(open(os.path.join(ROOT, "docs/openapi.yaml")))
binary, kernel = sys.argv[1], sys.argv[2]
database = sys.argv[3] if len(sys.argv) > 3 else None
exercised, failures = set(), []


def operation(method, path):
    """The spec's path template and operation matching a concrete request path."""
    for template, item in SPEC["paths"].items():
        pattern = "^" + re.sub(r"\{[^}]+\}", "[^/]+", template) + "$"
        if re.match(pattern, path) and method.lower() in item:
            # Prefer the most literal template (/instances/{id}/console over /instances/{id}/{action}).
            literal = [t for t, i in SPEC["paths"].items()
                       if method.lower() in i and re.match("^" + re.sub(r"\{[^}]+\}", "[^/]+", t) + "$", path)]
            best = max(literal, key=lambda t: len(re.sub(r"\{[^}]+\}", "", t)))
            return best, SPEC["paths"][best][method.lower()]
    return None, None


def resolve(node):
    while isinstance(node, dict) and "$ref" in node and len(node) == 1:
        parts = node["$ref"].lstrip("#/").split("/")
        node = SPEC
        for part in parts:
            node = node[part]
    return node


def check(method, path, status, content_type, body):
    template, op = operation(method, path.split("?")[0])
    label = f"{method} {path} -> {status}"
    if op is None:
        failures.append(f"{label}: no such operation in the spec")
        return
    exercised.add((template, method.lower(), str(status)))
    responses = op["responses"]
    if str(status) not in responses:
        failures.append(f"{label}: status not declared (declared: {sorted(responses)})")
        return
    response = resolve(responses[str(status)])
    content = response.get("content")
    if not content:
        if body:
            failures.append(f"{label}: body not declared but got {body[:80]!r}")
        return
    media = content_type.split(";")[0].strip()
    if media not in content:
        failures.append(f"{label}: content type {media} not declared ({list(content)})")
        return
    schema = content[media]["schema"]
    if media == "application/json":
        instance = json.loads(body)
        validator = jsonschema.Draft202012Validator({**schema, "components": SPEC["components"]},
                                                    format_checker=jsonschema.FormatChecker())
        errors = sorted(validator.iter_errors(instance), key=str)
        for error in errors[:3]:
            failures.append(f"{label}: {error.message} at {list(error.absolute_path)}")


def request(method, path, token=None, body=None, content_type="application/json", expect=None):
    data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
    req = urllib.request.Request(BASE + path, data=data, method=method)
    if token:
        req.add_header("Authorization", "Bearer " + token)
    if data is not None:
        req.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(req, timeout=120) as response:
            status, ctype, payload = response.status, response.headers.get("Content-Type", ""), response.read()
    except urllib.error.HTTPError as error:
        status, ctype, payload = error.code, error.headers.get("Content-Type", ""), error.read()
    text = payload.decode()
    check(method, path, status, ctype, text)
    if expect is not None and status != expect:
        failures.append(f"{method} {path}: expected {expect}, got {status}: {text[:200]}")
    return status, (json.loads(text) if ctype.startswith("application/json") and text else text)


server = ContractServer(binary, database)
with server:
    BASE, admin = server.base, server.admin
    request("GET", "/v1/health", expect=200)
    request("GET", "/v1/instances", expect=401)
    request("GET", "/v1/instances", token="swl_bad", expect=401)

    _, project = request("POST", "/v1/projects", admin, {"name": "team"}, expect=201)
    request("POST", "/v1/projects", admin, {"name": "team"}, expect=409)
    request("POST", "/v1/projects", admin, {"name": "a/b"}, expect=400)
    request("GET", "/v1/projects", admin, expect=200)
    _, token = request("POST", f"/v1/projects/{project['id']}/tokens", admin, expect=201)
    request("POST", "/v1/projects/prj-none/tokens", admin, expect=404)
    team = token["token"]
    request("GET", "/v1/projects", team, expect=403)
    request("POST", "/v1/projects", team, {"name": "x"}, expect=403)
    request("POST", f"/v1/projects/{project['id']}/tokens", team, expect=403)
    # Tokens expire and are revoked (401 with the reason); the list never shows a secret.
    _, brief = request("POST", f"/v1/projects/{project['id']}/tokens", admin, {"ttlSeconds": 1}, expect=201)
    request("POST", f"/v1/projects/{project['id']}/tokens", admin, {"ttlSeconds": 0}, expect=400)
    _, doomed = request("POST", f"/v1/projects/{project['id']}/tokens", admin, {}, expect=201)
    request("GET", "/v1/tokens", admin, expect=200)
    _, listed = request("GET", f"/v1/tokens?project={project['id']}", admin, expect=200)
    if any("token" in t for t in listed["tokens"]) or not any(t.get("expiresAt") for t in listed["tokens"]):
        failures.append(f"GET /v1/tokens: a secret shown or an expiry missing: {listed}")
    request("GET", "/v1/tokens", team, expect=403)
    request("GET", "/v1/tokens", expect=401)
    _, revoked = request("DELETE", f"/v1/tokens/{doomed['id']}", admin, expect=200)
    if "revokedAt" not in revoked:
        failures.append(f"DELETE /v1/tokens/{{id}}: no revokedAt in {revoked}")
    request("DELETE", "/v1/tokens/tok-none", admin, expect=404)
    request("DELETE", f"/v1/tokens/{doomed['id']}", team, expect=403)
    request("DELETE", f"/v1/tokens/{doomed['id']}", expect=401)
    _, refusal = request("GET", "/v1/instances", doomed["token"], expect=401)
    if refusal.get("error", {}).get("code") != "auth.token_revoked":
        failures.append(f"a revoked token: {refusal}")
    time.sleep(1.2)
    _, refusal = request("GET", "/v1/instances", brief["token"], expect=401)
    if refusal.get("error", {}).get("code") != "auth.token_expired":
        failures.append(f"an expired token: {refusal}")
    request("GET", "/metrics", expect=401)
    request("GET", "/metrics", token="swl_bad", expect=401)
    request("GET", "/metrics", team, expect=403)
    _, exposition = request("GET", "/metrics", admin, expect=200)
    if "# TYPE swiftlet_host_up gauge" not in exposition:
        failures.append(f"GET /metrics: no swiftlet_host_up in {exposition[:200]!r}")

    elf = open(kernel, "rb").read()
    request("POST", "/v1/images?name=hello&property=ready_pattern=SWIFTLET-READY", team, elf,
            "application/octet-stream", expect=201)
    request("POST", "/v1/images?name=hello", team, elf, "application/octet-stream", expect=409)
    request("POST", "/v1/images?name=text", team, b"just text\n", "application/octet-stream", expect=422)
    request("POST", "/v1/images", team, elf, "application/octet-stream", expect=400)
    request("GET", "/v1/images", team, expect=200)
    request("GET", "/v1/images/hello", team, expect=200)
    request("GET", "/v1/images/hello", admin, expect=200)
    request("GET", "/v1/images/nope", team, expect=404)

    request("GET", "/v1/flavors", team, expect=200)
    request("POST", "/v1/flavors", admin, {"name": "micro", "vcpus": 1, "memoryMib": 8}, expect=201)
    request("POST", "/v1/flavors", admin, {"name": "micro", "vcpus": 1, "memoryMib": 8}, expect=409)
    request("POST", "/v1/flavors", admin, {"name": "zero", "vcpus": 1, "memoryMib": 0}, expect=400)
    request("POST", "/v1/flavors", team, {"name": "mine", "vcpus": 1, "memoryMib": 8}, expect=403)

    _, created = request("POST", "/v1/instances", team,
                         {"name": "h1", "image": "hello", "flavor": "tiny", "wait": True}, expect=201)
    request("POST", "/v1/instances", team, {"name": "h1", "image": "hello"}, expect=409)
    _, placed_on = request("GET", "/v1/hosts", admin, expect=200)
    request("POST", "/v1/instances", team, {"name": "too-big", "image": "hello",
                                            "memoryMib": placed_on["hosts"][0]["memoryMib"]}, expect=409)
    request("POST", "/v1/instances", team, {"image": "nope"}, expect=404)
    request("POST", "/v1/instances", team, b"{oops", expect=400)
    request("POST", "/v1/instances", team, {"name": None, "image": "hello"}, expect=400)
    request("POST", "/v1/instances", team, b"x" * (2 << 20), expect=413)
    request("GET", "/v1/instances", team, expect=200)
    # Quotas: a limit the project is at refuses the next create with 403; usage in the project's view.
    request("PATCH", f"/v1/projects/{project['id']}", admin, {"quota": {"instances": 1}}, expect=200)
    request("PATCH", f"/v1/projects/{project['id']}", admin, {"quota": {"vcpus": -1}}, expect=400)
    request("POST", "/v1/instances", team, {"name": "over", "image": "hello", "flavor": "tiny"}, expect=403)
    _, shown = request("GET", f"/v1/projects/{project['id']}", team, expect=200)
    if shown.get("usage", {}).get("instances") != 1 or shown.get("quota", {}).get("instances") != 1:
        failures.append(f"GET /v1/projects/{{id}}: usage and quota not shown: {shown}")
    request("PATCH", f"/v1/projects/{project['id']}", admin, {"quota": {}}, expect=200)
    request("GET", f"/v1/projects/{project['id']}", admin, expect=200)
    request("GET", "/v1/projects/prj-none", admin, expect=404)
    request("GET", f"/v1/projects/{project['id']}", expect=401)
    request("GET", "/v1/instances?state=running", team, expect=200)
    request("GET", "/v1/instances?state=flying", team, expect=400)
    _, page = request("GET", "/v1/instances?limit=1", admin, expect=200)
    request("GET", f"/v1/instances?limit=1&marker={page['instances'][0]['id']}", admin, expect=200)
    request("GET", "/v1/instances?limit=0", team, expect=400)
    request("GET", "/v1/instances?limit=1&marker=i-0000000000000000", team, expect=400)
    request("GET", "/v1/instances/h1", team, expect=200)
    request("GET", "/v1/instances/h1", admin, expect=200)
    request("GET", "/v1/instances/nope", team, expect=404)
    request("POST", "/v1/instances/h1/pause", team, expect=202)
    request("POST", "/v1/instances/h1/pause", team, expect=409)
    request("POST", "/v1/instances/h1/resume", team, expect=202)
    request("POST", "/v1/instances/h1/reboot", team, expect=202)
    request("POST", "/v1/instances/h1/stop?timeout=abc", team, expect=400)
    request("POST", "/v1/instances/h1/stop?timeout=5", team, expect=202)
    request("POST", "/v1/instances/h1/start", team, expect=202)
    request("POST", "/v1/instances/nope/start", team, expect=404)
    request("POST", "/v1/instances/h1/console", team, b"heap\n", "text/plain", expect=204)
    request("POST", "/v1/instances/h1/console", team, b"\x01\x02", "text/plain", expect=400)
    request("POST", "/v1/instances/nope/console", team, b"heap\n", "text/plain", expect=404)
    request("GET", "/v1/instances/h1/console", team, expect=200)
    request("GET", "/v1/instances/nope/console", team, expect=404)
    request("GET", "/v1/instances/h1/events", team, expect=200)
    request("GET", "/v1/instances/nope/events", team, expect=404)
    request("DELETE", "/v1/images/hello", team, expect=409)
    request("DELETE", "/v1/instances/h1", team, expect=204)
    request("DELETE", "/v1/instances/h1", team, expect=404)
    request("DELETE", "/v1/images/hello", team, expect=204)
    request("DELETE", "/v1/images/hello", team, expect=404)

    # Image service (docs/images.md): catalog, signing keys, signed-image policy, builds.
    request("PATCH", "/v1/images/nope", team, {"tags": ["x"]}, expect=404)
    request("POST", "/v1/images?name=hello-cat&visibility=public&tag=v1", team, elf, "application/octet-stream",
            expect=201)
    request("PATCH", "/v1/images/hello-cat", team, {"tags": ["a b"]}, expect=400)
    request("PATCH", "/v1/images/hello-cat", team, {"visibility": "private", "properties": {"min_memory_mib": "8"}},
            expect=200)
    request("PATCH", "/v1/images/hello-cat", admin, {"tags": ["lts"]}, expect=200)
    _, other = request("POST", "/v1/projects", admin, {"name": "other"}, expect=201)
    _, other_token = request("POST", f"/v1/projects/{other['id']}/tokens", admin, expect=201)
    request("PATCH", "/v1/images/hello-cat", team, {"visibility": "public"}, expect=200)
    request("PATCH", "/v1/images/hello-cat", other_token["token"], {"visibility": "private"}, expect=403)
    request("DELETE", "/v1/images/hello-cat", other_token["token"], expect=403)
    request("DELETE", "/v1/images/hello-cat", team, expect=204)
    request("POST", "/v1/images?name=x&visibility=secret", team, elf, "application/octet-stream", expect=400)
    request("GET", f"/v1/projects/{project['id']}/signing-keys", team, expect=200)
    request("GET", "/v1/projects/prj-none/signing-keys", admin, expect=404)
    request("GET", f"/v1/projects/{other['id']}/signing-keys", team, expect=403)
    request("GET", f"/v1/projects/{project['id']}/signing-keys", expect=401)
    key = "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="
    request("POST", f"/v1/projects/{project['id']}/signing-keys", team, {"name": "ci", "publicKey": key}, expect=201)
    request("POST", f"/v1/projects/{project['id']}/signing-keys", team, {"name": "ci", "publicKey": key}, expect=409)
    request("POST", f"/v1/projects/{project['id']}/signing-keys", team, {"name": "bad", "publicKey": "AAAA"},
            expect=400)
    request("POST", "/v1/projects/prj-none/signing-keys", admin, {"name": "k", "publicKey": key}, expect=404)
    request("POST", f"/v1/projects/{other['id']}/signing-keys", team, {"name": "k", "publicKey": key}, expect=403)
    request("POST", f"/v1/projects/{project['id']}/signing-keys", expect=401)
    request("PATCH", f"/v1/projects/{other['id']}", admin, {"requireSignedImages": True}, expect=200)
    request("PATCH", f"/v1/projects/{other['id']}", admin, {"requireSignedImages": "yes"}, expect=400)
    request("PATCH", f"/v1/projects/{other['id']}", team, {"requireSignedImages": False}, expect=403)
    request("GET", f"/v1/projects/{other['id']}", team, expect=403)
    request("PATCH", "/v1/projects/prj-none", admin, {"requireSignedImages": False}, expect=404)
    request("PATCH", f"/v1/projects/{other['id']}", None, {"requireSignedImages": False}, expect=401)
    request("POST", "/v1/images?name=unsigned", other_token["token"], elf, "application/octet-stream", expect=403)
    request("DELETE", f"/v1/projects/{project['id']}/signing-keys/ci", team, expect=204)
    request("DELETE", f"/v1/projects/{project['id']}/signing-keys/ci", team, expect=404)
    request("DELETE", f"/v1/projects/{other['id']}/signing-keys/ci", team, expect=403)
    request("DELETE", f"/v1/projects/{project['id']}/signing-keys/ci", expect=401)

    bundle = subprocess.run(["tar", "-C", os.path.join(ROOT, "guest/examples/hello"), "-cf", "-", "."],
                            capture_output=True, check=True).stdout
    _, build = request("POST", "/v1/builds?name=hello-built", team, bundle, "application/x-tar", expect=202)
    request("GET", f"/v1/builds/{build['id']}/log?follow=true", team, expect=200)
    request("GET", f"/v1/builds/{build['id']}", team, expect=200)
    request("POST", "/v1/builds?name=hello-built", team, bundle, "application/x-tar", expect=201)
    request("GET", "/v1/builds", team, expect=200)
    request("GET", "/v1/builds", expect=401)
    request("GET", "/v1/builds/bld-none", team, expect=404)
    request("GET", "/v1/builds/bld-none", expect=401)
    request("GET", "/v1/builds/bld-none/log", team, expect=404)
    request("GET", "/v1/builds/bld-none/log", expect=401)
    request("POST", "/v1/builds?name=evil", team, b"A" * 1024, "application/x-tar", expect=400)
    request("POST", "/v1/builds?name=host&path=/tmp", team, expect=403)
    request("POST", "/v1/builds?name=x", expect=401)
    request("DELETE", "/v1/images/" + request("GET", f"/v1/builds/{build['id']}", team)[1]["imageId"], team,
            expect=204)

    # Server groups (docs/api.md): one host here, so an anti-affinity group holds one member.
    request("POST", "/v1/server-groups", team, {"name": "spread", "policy": "anti-affinity"}, expect=201)
    request("POST", "/v1/server-groups", team, {"name": "spread", "policy": "affinity"}, expect=409)
    request("POST", "/v1/server-groups", team, {"name": "x", "policy": "spread-out"}, expect=400)
    request("POST", "/v1/server-groups", team, {"name": "x"}, expect=400)
    request("POST", "/v1/server-groups", None, {"name": "x", "policy": "affinity"}, expect=401)
    request("GET", "/v1/server-groups", team, expect=200)
    request("GET", "/v1/server-groups", expect=401)
    request("GET", "/v1/server-groups/nope", team, expect=404)
    request("GET", "/v1/server-groups/spread", expect=401)
    request("POST", "/v1/images?name=hello-grp", team, elf, "application/octet-stream", expect=201)
    _, members = request("POST", "/v1/instances", team, {"name": "g1", "image": "hello-grp", "serverGroup": "spread",
                                                          "wait": True}, expect=201)
    request("POST", "/v1/instances", team, {"name": "g2", "image": "hello-grp", "serverGroup": "spread"}, expect=409)
    request("POST", "/v1/instances", team, {"name": "g3", "image": "hello-grp", "serverGroup": "nope"}, expect=404)
    _, spread = request("GET", "/v1/server-groups/spread", team, expect=200)
    if spread["members"] != [members["instances"][0]["id"]]:
        failures.append(f"server group members: {spread['members']}")
    request("DELETE", "/v1/server-groups/spread", team, expect=409)
    request("DELETE", "/v1/instances/g1", team, expect=204)
    request("DELETE", "/v1/server-groups/spread", team, expect=204)
    request("DELETE", "/v1/server-groups/spread", team, expect=404)
    request("DELETE", "/v1/server-groups/spread", expect=401)
    request("DELETE", "/v1/images/hello-grp", team, expect=204)

    # Networks and security groups (docs/networking.md): real bridge and TAP, as root.
    request("POST", "/v1/images?name=hello-net", team, elf, "application/octet-stream", expect=201)
    block = f"10.{random.randint(160, 250)}.{random.randint(0, 255)}"
    request("POST", "/v1/networks", team, {"name": "lan", "cidr": block + ".0/24", "mode": "isolated"}, expect=201)
    request("POST", "/v1/networks", team, {"name": "lan2", "cidr": block + ".128/25"}, expect=409)
    request("POST", "/v1/networks", team, {"name": "tiny", "cidr": "10.1.2.0/31"}, expect=400)
    request("GET", "/v1/networks", team, expect=200)
    request("GET", "/v1/networks/lan", team, expect=200)
    request("GET", "/v1/networks/nope", team, expect=404)
    request("POST", "/v1/security-groups", team, {"name": "web"}, expect=201)
    request("POST", "/v1/security-groups", team, {"name": "web"}, expect=409)
    request("POST", "/v1/security-groups", team, {"name": "a/b"}, expect=400)
    request("GET", "/v1/security-groups", team, expect=200)
    request("GET", "/v1/security-groups/nope", team, expect=404)
    _, group = request("POST", "/v1/security-groups/web/rules", team, {"proto": "tcp", "portMin": 80}, expect=201)
    request("POST", "/v1/security-groups/web/rules", team, {"proto": "icmp", "portMin": 80}, expect=400)
    request("POST", "/v1/security-groups/nope/rules", team, {"proto": "any"}, expect=404)
    request("GET", "/v1/security-groups/web", team, expect=200)
    request("DELETE", f"/v1/security-groups/web/rules/{group['rules'][-1]['id']}", team, expect=204)
    request("DELETE", "/v1/security-groups/web/rules/rule-none", team, expect=404)
    request("POST", "/v1/instances", team, {"name": "n1", "image": "hello-net", "networks": [{"network": "lan"}],
                                            "securityGroups": ["web"], "wait": True}, expect=201)
    request("POST", "/v1/instances", team, {"name": "n2", "image": "hello-net",
                                            "networks": [{"network": "lan", "ip": "10.0.0.1"}]}, expect=400)
    request("GET", "/v1/instances/n1", team, expect=200)
    request("GET", "/v1/networks/lan/ports", team, expect=200)
    request("GET", "/v1/networks/nope/ports", team, expect=404)
    request("DELETE", "/v1/networks/lan", team, expect=409)
    request("DELETE", "/v1/security-groups/web", team, expect=409)
    request("DELETE", "/v1/instances/n1", team, expect=204)
    request("DELETE", "/v1/security-groups/web", team, expect=204)
    request("DELETE", "/v1/security-groups/web", team, expect=404)
    request("DELETE", "/v1/networks/lan", team, expect=204)
    request("DELETE", "/v1/networks/lan", team, expect=404)
    request("DELETE", "/v1/images/hello-net", team, expect=204)

    _, hosts = request("GET", "/v1/hosts", admin, expect=200)
    request("GET", "/v1/hosts/" + hosts["hosts"][0]["id"], admin, expect=200)
    request("GET", "/v1/hosts/nope", admin, expect=404)
    host_id = hosts["hosts"][0]["id"]
    request("POST", "/v1/hosts/" + host_id + "/cordon", admin, expect=204)
    _, cordoned = request("GET", "/v1/hosts/" + host_id, admin, expect=200)
    assert cordoned.get("cordoned") is True and cordoned.get("status") == "UP", cordoned
    request("POST", "/v1/hosts/" + host_id + "/cordon", team, expect=403)
    request("POST", "/v1/hosts/nope/cordon", admin, expect=404)
    request("POST", "/v1/hosts/" + host_id + "/uncordon", admin, expect=204)
    request("POST", "/v1/hosts/nope/uncordon", admin, expect=404)
    # This server has no agent listener: joining and revoking are refused, with the reason.
    request("POST", "/v1/hosts/join-tokens", admin, {"ttlSeconds": 60}, expect=409)
    request("POST", "/v1/hosts/" + host_id + "/revoke", admin, expect=409)

    status, _ = request("POST", "/v1/images?name=hello", admin, elf, "application/octet-stream", expect=201)
    _, pool = request("POST", "/v1/pools", admin, {"image": "hello", "size": 1}, expect=201)
    request("POST", "/v1/pools", admin, {"image": "hello", "size": 1}, expect=409)
    request("POST", "/v1/pools", admin, {"image": "hello", "size": 0}, expect=400)
    request("POST", "/v1/pools", admin, {"image": "nope", "size": 1}, expect=404)
    request("GET", "/v1/pools", admin, expect=200)
    request("DELETE", "/v1/pools/" + pool["id"], admin, expect=204)
    request("DELETE", "/v1/pools/" + pool["id"], admin, expect=404)

    # Migrations: one host, so a move has nowhere to go (202 is covered by the cluster tests).
    request("POST", "/v1/instances", admin, {"name": "mover", "image": "hello", "wait": True}, expect=201)
    request("POST", "/v1/instances/mover/migrate", admin, {}, expect=409)
    request("POST", "/v1/instances/mover/migrate", admin, {"mode": "teleport"}, expect=400)
    request("POST", "/v1/instances/mover/migrate", admin, {"host": "nowhere"}, expect=404)
    request("POST", "/v1/instances/nope/migrate", admin, {}, expect=404)
    request("POST", "/v1/instances/mover/migrate", None, {}, expect=401)
    request("GET", "/v1/migrations", admin, expect=200)
    request("GET", "/v1/migrations?instance=mover", admin, expect=200)
    request("GET", "/v1/migrations?instance=nope", admin, expect=404)
    request("GET", "/v1/migrations", expect=401)
    request("GET", "/v1/migrations/mig-0000000000000000", admin, expect=404)
    request("GET", "/v1/migrations/mig-0000000000000000", expect=401)
    request("POST", "/v1/migrations/mig-0000000000000000/cancel", admin, expect=404)
    request("POST", "/v1/migrations/mig-0000000000000000/cancel", expect=401)
    request("POST", "/v1/instances/mover/migrate", admin, {"maxBandwidthMbps": 0}, expect=400)
    # Snapshots: the running mover's state saved, listed, restored into a new instance, deleted.
    _, snap = request("POST", "/v1/instances/mover/snapshot", admin, {"name": "mover-snap"}, expect=201)
    request("POST", "/v1/instances/mover/snapshot", admin, {"name": "mover-snap"}, expect=409)
    request("POST", "/v1/instances/mover/snapshot", admin, {"name": "bad name"}, expect=400)
    request("POST", "/v1/instances/nope/snapshot", admin, {}, expect=404)
    request("POST", "/v1/instances/mover/snapshot", None, {}, expect=401)
    request("GET", "/v1/snapshots", admin, expect=200)
    request("GET", "/v1/snapshots", expect=401)
    request("GET", "/v1/snapshots/mover-snap", admin, expect=200)
    request("GET", "/v1/snapshots/mover-snap", team, expect=404)
    request("GET", "/v1/snapshots/nope", expect=401)
    _, restored = request("POST", "/v1/instances", admin,
                          {"name": "restored", "image": "", "fromSnapshot": "mover-snap", "wait": True}, expect=201)
    if restored["instances"][0]["timeline"].get("bootPath") != "snapshot":
        failures.append(f"POST /v1/instances fromSnapshot: not restored: {restored['instances'][0]}")
    request("POST", "/v1/instances", admin,
            {"name": "r2", "image": "", "fromSnapshot": "mover-snap", "memoryMib": 64}, expect=400)
    request("DELETE", "/v1/instances/restored", admin, expect=204)
    request("DELETE", "/v1/snapshots/" + snap["id"], admin, expect=204)
    request("DELETE", "/v1/snapshots/" + snap["id"], admin, expect=404)
    request("DELETE", "/v1/snapshots/nope", expect=401)
    _, drained = request("POST", "/v1/hosts/" + host_id + "/drain", admin, expect=202)
    assert [s["name"] for s in drained["skipped"]] == ["mover"], drained
    request("POST", "/v1/hosts/" + host_id + "/uncordon", admin, expect=204)
    request("POST", "/v1/hosts/nope/drain", admin, expect=404)
    request("POST", "/v1/hosts/" + host_id + "/drain", team, expect=403)
    request("POST", "/v1/hosts/" + host_id + "/drain", expect=401)
    request("DELETE", "/v1/instances/mover", admin, expect=204)
    # The audit log (every change above, refused ones too), newest first; admins only.
    _, audit = request("GET", "/v1/audit?limit=1000", admin, expect=200)
    if not any(e["method"] == "DELETE" and e.get("resourceId") == doomed["id"] and e["status"] == 200
               for e in audit["entries"]):
        failures.append(f"GET /v1/audit: the token's revocation is not recorded: {audit['entries'][:3]}")
    request("GET", "/v1/audit?since=2026-01-01T00:00:00Z&limit=5", admin, expect=200)
    request("GET", "/v1/audit?since=yesterday", admin, expect=400)
    request("GET", "/v1/audit?limit=0", admin, expect=400)
    request("GET", "/v1/audit", team, expect=403)
    request("GET", "/v1/audit", expect=401)
failures += [f"network device left behind: {name}" for name in server.left_devices]

declared = {(t, m) for t, item in SPEC["paths"].items() for m in item if m in ("get", "post", "delete", "put", "patch")}
covered = {(t, m) for t, m, _ in exercised}
for template, method in sorted(declared - covered):
    failures.append(f"{method.upper()} {template}: never exercised")
if server.left_vmms:
    failures.append(f"VMM processes left behind after every instance was deleted: {server.left_vmms}")
print(f"contract ({'PostgreSQL' if database else 'SQLite'}): {len(exercised)} (operation, status) pairs checked against docs/openapi.yaml")
if failures:
    print("contract: FAILED")
    for failure in failures:
        print("  - " + failure)
    sys.exit(1)
print("contract: OK")
