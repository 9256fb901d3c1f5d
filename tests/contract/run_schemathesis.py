#!/usr/bin/python3
"""Fuzzes a real `swiftlet server` against docs/openapi.yaml with schemathesis.

Runs schemathesis's coverage phase (every boundary and invalid case the schema defines, and the
methods a path does not have) and its fuzzing phase (random cases, bounded per operation), with
the admin token for the admin-only operations and a project's token for the rest. Fails on any
5xx, any status or body the contract does not declare, a wrong content type or `Allow` header,
or invalid data accepted. What it leaves out, and why: docs/api.md, "Contract tests".
Usage: run_schemathesis.py SCHEMATHESIS SWIFTLET_BINARY KERNEL_ELF
"""
import json, os, random, subprocess, sys, tempfile, time, urllib.request

from contract_server import ContractServer

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
schemathesis, binary, kernel = sys.argv[1:4]
CHECKS = ",".join([
    "not_a_server_error", "status_code_conformance", "content_type_conformance", "response_schema_conformance",
    "response_headers_conformance", "negative_data_rejection", "unsupported_method", "allow_header_conformance",
])
# Random cases per operation in the fuzzing phase; the coverage phase runs all of its cases.
MAX_EXAMPLES = os.environ.get("SWIFTLET_FUZZ_EXAMPLES", "25")
# Admin-only operations run with the admin token; the rest with a project's token, which also
# keeps `POST /v1/builds?path=` (a build from a directory on the server, admin only) at 403.
ADMIN_ONLY = "^/(v1/(projects|hosts|flavors|tokens|audit)|metrics)"


def call(base, method, path, token, body=None, content_type="application/json"):
    data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method=method)
    request.add_header("Authorization", "Bearer " + token)
    if data is not None:
        request.add_header("Content-Type", content_type)
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


def seed(base, admin):
    """A project with one of each resource, so that the fuzzed requests reach past "not found".
    Returns its token and the parameters to pin: (path regex, methods left out, parameters)."""
    project = call(base, "POST", "/v1/projects", admin, {"name": "fuzz"})
    team = call(base, "POST", f"/v1/projects/{project['id']}/tokens", admin)["token"]
    call(base, "POST", "/v1/images?name=hello", team, open(kernel, "rb").read(), "application/octet-stream")
    instance_id = call(base, "POST", "/v1/instances", team, {"name": "fz", "image": "hello", "wait": True})[
        "instances"][0]["id"]
    block = f"10.{random.randint(160, 250)}.{random.randint(0, 255)}"
    network = call(base, "POST", "/v1/networks", team, {"name": "fzlan", "cidr": block + ".0/24", "mode": "isolated"})
    group = call(base, "POST", "/v1/security-groups", team, {"name": "fzsg"})
    call(base, "POST", "/v1/security-groups/fzsg/rules", team, {"proto": "tcp", "portMin": 80})
    server_group = call(base, "POST", "/v1/server-groups", team, {"name": "fzgrp", "policy": "affinity"})
    call(base, "POST", f"/v1/projects/{project['id']}/signing-keys", team,
         {"name": "fzkey", "publicKey": "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="})
    host = call(base, "GET", "/v1/hosts", admin)["hosts"][0]
    # Deletes keep random ids (404s): one that hit would leave the other operations only 404s.
    # A followed console streams until the instance stops, past any request timeout.
    return team, [
        ("^/v1/instances/\\{id\\}(/\\{action\\}|/events)?$", ["DELETE"], {"path.id": instance_id}),
        ("^/v1/instances/\\{id\\}/console$", ["GET"], {"path.id": instance_id}),
        ("^/v1/instances/\\{id\\}/console$", ["POST"], {"path.id": instance_id, "query.follow": "false"}),
        ("^/v1/images/\\{id\\}$", ["DELETE"], {"path.id": "hello"}),
        ("^/v1/networks/\\{id\\}", ["DELETE"], {"path.id": network["id"]}),
        ("^/v1/security-groups/\\{id\\}", ["DELETE"], {"path.id": group["id"]}),
        ("^/v1/server-groups/\\{id\\}$", ["DELETE"], {"path.id": server_group["id"]}),
        ("^/v1/projects/\\{id\\}", ["DELETE"], {"path.id": project["id"]}),
        ("^/v1/hosts/\\{id\\}", ["DELETE"], {"path.id": host["id"]}),
    ]


def config_file(pinned):
    """A schemathesis.toml that pins the given parameters for the operations on a path but some
    methods (two `include-` filters would match either, an `exclude-` one narrows)."""
    # Its crash cache (for `st replay`) under .build, not in the source tree.
    lines = ["[cache]", f"directory = {json.dumps(os.path.join(ROOT, '.build/schemathesis-cache'))}", ""]
    for path, methods, parameters in pinned:
        lines += ["[[operations]]", f"include-path-regex = {json.dumps(path)}",
                  f"exclude-method-regex = {json.dumps('^(' + '|'.join(methods) + ')$')}",
                  "parameters = { " + ", ".join(f"{json.dumps(k)} = {json.dumps(v)}" for k, v in parameters.items())
                  + " }", ""]
    handle = tempfile.NamedTemporaryFile("w", prefix="swiftlet-schemathesis-", suffix=".toml", delete=False)
    handle.write("\n".join(lines))
    handle.close()
    return handle.name


def fuzz(base, token, config, selection):
    command = [schemathesis, "--config-file", config, "run", os.path.join(ROOT, "docs/openapi.yaml"), "--url", base,
               "-H", "Authorization: Bearer " + token, "--phases=coverage,fuzzing", "--checks", CHECKS,
               "--max-examples", MAX_EXAMPLES, "--workers", "2", "--seed", os.environ.get("SWIFTLET_FUZZ_SEED", "1"),
               "--request-timeout", "30", "--generation-database", "none", "--no-color", *selection]
    hooks = {"SCHEMATHESIS_HOOKS": "schemathesis_hooks", "PYTHONPATH": HERE}
    return subprocess.run(command, cwd=ROOT, env={**os.environ, **hooks}).returncode


with ContractServer(binary) as server:
    started = time.monotonic()
    team, pinned = seed(server.base, server.admin)
    config = config_file(pinned)
    try:
        codes = [fuzz(server.base, server.admin, config, ["--include-path-regex", ADMIN_ONLY]),
                 fuzz(server.base, team, config, ["--exclude-path-regex", ADMIN_ONLY])]
    finally:
        os.remove(config)
    elapsed = time.monotonic() - started
if any(codes):
    print(f"schemathesis: FAILED (exit codes {codes}); the end of the server's log:\n" + server.log_text[-4000:])
    sys.exit(1)
print(f"schemathesis: OK in {elapsed:.0f} s")
