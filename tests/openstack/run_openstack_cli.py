"""Drives a real `swiftlet server` with the real OpenStack clients (python-openstackclient and
openstacksdk from PyPI, in the venv scripts/setup-openstack-client.sh makes): Keystone tokens,
flavors, a server's whole life, console output, and the errors OpenStack's tools expect.

usage: run_openstack_cli.py VENV SWIFTLET_BINARY HELLO_ELF ECHO_ELF [POSTGRES_URL]
(hello for the CLI's server, echo, which takes an address, for openstacksdk's on a network;
with a PostgreSQL URL, the server keeps its store there instead of SQLite)"""
import json, os, random, shlex, socket, subprocess, sys, tempfile, time, urllib.error, urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "contract"))
from contract_server import ContractServer  # noqa: E402

venv, binary, hello, echo = sys.argv[1:5]
database = sys.argv[5] if len(sys.argv) > 5 else None
openstack_bin = os.path.join(venv, "bin", "openstack")
failures = []
# The network's block, /24 under 10.93 at random: another run on this host (a parallel make test
# in another checkout) may hold one at the same time.
NET = f"10.93.{random.randrange(1, 255)}"


def check(condition, what):
    print(("ok   " if condition else "FAIL ") + what, flush=True)
    if not condition:
        failures.append(what)


def http(method, url, token=None, body=None, headers=None):
    """(status, parsed JSON or text, headers) of one request."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if token:
        # Swiftlet's own API takes a bearer token; OpenStack's take X-Auth-Token.
        if "/v1/" in url:
            request.add_header("Authorization", "Bearer " + token)
        else:
            request.add_header("X-Auth-Token", token)
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            status, raw, answer_headers = response.status, response.read(), response.headers
    except urllib.error.HTTPError as error:
        status, raw, answer_headers = error.code, error.read(), error.headers
    try:
        return status, json.loads(raw) if raw else None, answer_headers
    except ValueError:
        return status, raw.decode(errors="replace"), answer_headers


def swiftlet(server, *args, token=None, stdin=None):
    result = subprocess.run([binary, *args, "--url", server.base, "--token", token or server.admin],
                            input=stdin, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise RuntimeError(f"swiftlet {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


def openrc_env(text, password):
    """The variables `swiftlet openrc` exports, with the password its script would read."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    for line in text.splitlines():
        if line.startswith("export ") and "=" in line and "$" not in line:
            name, value = line[len("export "):].split("=", 1)
            env[name] = shlex.split(value)[0] if value else ""
    env["OS_PASSWORD"] = password
    return env


def openstack(env, *args, expect_ok=True):
    started = time.monotonic()
    result = subprocess.run([openstack_bin, *args], env=env, capture_output=True, text=True, timeout=180)
    took = time.monotonic() - started
    if os.environ.get("SWIFTLET_TIMING"):
        print(f"  {took:.1f} s openstack {' '.join(args)}", flush=True)
    if expect_ok and result.returncode != 0:
        raise RuntimeError(f"openstack {' '.join(args)} failed ({took:.1f} s): {result.stderr.strip()}")
    return result


def openstack_json(env, *args):
    return json.loads(openstack(env, *args, "-f", "json").stdout)


def wait_status(env, server, wanted, timeout=60):
    deadline = time.monotonic() + timeout
    status = None
    while time.monotonic() < deadline:
        status = openstack(env, "server", "show", server, "-f", "value", "-c", "status").stdout.strip()
        if status == wanted:
            return status
        time.sleep(0.3)
    return status


def run_sdk(env, script):
    """Runs `script` with the venv's Python (openstacksdk, configured from the OS_* variables);
    returns the JSON lines it printed."""
    result = subprocess.run([os.path.join(venv, "bin", "python"), "-c", script], env=env, capture_output=True,
                            text=True, timeout=240)
    if result.returncode != 0:
        raise RuntimeError(f"openstacksdk script failed: {result.stderr.strip()[-2000:]}")
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def upload_cut_short(server, env):
    """Creates an image, sends a tenth of the bytes its upload announces, hangs up; returns its
    status afterwards (and checks that no image with data was registered)."""
    token = openstack(env, "token", "issue", "-f", "value", "-c", "id").stdout.strip()
    status, queued, _ = http("POST", server.base + "/image/v2/images", token,
                             {"name": "cut", "disk_format": "aki", "container_format": "bare"})
    if status != 201:
        return f"create answered {status}"
    port = int(server.base.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as connection:
        connection.sendall((f"PUT /image/v2/images/{queued['id']}/file HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                            f"X-Auth-Token: {token}\r\nContent-Type: application/octet-stream\r\n"
                            "Content-Length: 100000\r\n\r\n").encode() + b"\0" * 10000)
    time.sleep(0.5)
    status, shown, _ = http("GET", server.base + "/image/v2/images/" + queued["id"], token)
    status, download, _ = http("GET", server.base + "/image/v2/images/" + queued["id"] + "/file", token)
    http("DELETE", server.base + "/image/v2/images/" + queued["id"], token)
    return shown["status"] if status == 404 else f"download answered {status}"


def neutron_and_servers(server, alice, bob, root, project, alice_token, bob_token):
    """Network v2.0 with the CLI (networks, subnets, ports, security groups and rules), a server on
    a network, server groups, limits and quotas, instance actions, image set, isolation and errors.
    Returns the network (osnet) for openstacksdk's server."""
    neutron = server.base + "/network/v2.0"
    network = openstack_json(alice, "network", "create", "osnet")
    check(network["name"] == "osnet" and network["subnets"] == [] and network["status"] == "ACTIVE",
          f"network create: ACTIVE, no subnet yet ({network})")
    subnet = openstack_json(alice, "subnet", "create", "--network", "osnet", "--subnet-range", NET + ".0/24",
                            "ossub")
    check(subnet["cidr"] == NET + ".0/24" and subnet["gateway_ip"] == NET + ".1" and subnet["name"] == "ossub"
          and subnet["network_id"] == network["id"], f"subnet create: the CIDR and its gateway ({subnet})")
    native = http("GET", server.base + "/v1/networks", server.admin)[1]["networks"]
    check([(n["id"], n["name"], n["cidr"]) for n in native] == [(network["id"], "osnet", NET + ".0/24")],
          f"the subnet made the Swiftlet network, with the Neutron network's id ({native})")
    listed = openstack_json(alice, "network", "list")
    check([(n["Name"], n["Subnets"]) for n in listed] == [("osnet", [subnet["id"]])], f"network list: {listed}")
    check(openstack_json(alice, "network", "show", "osnet")["id"] == network["id"], "network show by name")
    subnets = openstack_json(alice, "subnet", "list", "--network", "osnet")
    check([(n["Name"], n["Subnet"]) for n in subnets] == [("ossub", NET + ".0/24")], f"subnet list: {subnets}")
    status, body, _ = http("POST", neutron + "/subnets", alice_token, {"subnet": {
        "network_id": network["id"], "ip_version": 4, "cidr": "10.94.0.0/24"}})
    check(status == 409 and "has its subnet" in body["NeutronError"]["message"],
          f"a second subnet is 409 (one per network) ({body})")

    group = openstack_json(alice, "security", "group", "create", "osg")
    check(group["name"] == "osg", "security group create")
    rule = openstack_json(alice, "security", "group", "rule", "create", "--protocol", "tcp", "--dst-port", "80",
                          "osg")
    check(rule["protocol"] == "tcp" and rule["port_range_min"] == 80 and rule["remote_ip_prefix"] == "0.0.0.0/0"
          and rule["direction"] == "ingress", f"security group rule create: tcp 80 from anywhere ({rule})")
    rules = openstack_json(alice, "security", "group", "rule", "list", "--long", "osg")
    check(sorted((str(r["IP Protocol"]), r["Direction"]) for r in rules)
          == [("None", "egress"), ("None", "ingress"), ("tcp", "ingress")],
          f"rule list: the rule, and the fixed egress and members rules ({rules})")
    native_group = http("GET", server.base + "/v1/security-groups/" + group["id"], server.admin)[1]
    check([(r["proto"], r["portMin"]) for r in native_group["rules"]] == [("tcp", 80)],
          "the rule is Swiftlet's group rule")
    status, body, _ = http("POST", neutron + "/security-group-rules", alice_token, {"security_group_rule": {
        "security_group_id": group["id"], "direction": "egress", "ethertype": "IPv4", "protocol": "udp"}})
    check(status == 400 and "outbound" in body["NeutronError"]["message"],
          f"an egress rule is 400 (outbound is always open) ({body})")

    server_group = openstack_json(alice, "server", "group", "create", "--policy", "anti-affinity", "osgrp")
    check(server_group["name"] == "osgrp" and "anti-affinity" in str(server_group),
          f"server group create --policy anti-affinity ({server_group})")
    created = openstack_json(alice, "server", "create", "--image", "echo", "--flavor", "os.small", "--network",
                             "osnet", "--security-group", "osg", "--hint", "group=" + server_group["id"], "--wait",
                             "os-net")
    check(created["status"] == "ACTIVE" and NET + ".2'" in str(created["addresses"]),
          f"server create --network osnet --hint group= --wait: ACTIVE at {NET}.2 ({created['addresses']})")
    members = openstack_json(alice, "server", "group", "show", "osgrp")["members"]
    check(created["id"] in str(members), f"the server is a member of its server group ({members})")
    ports = openstack_json(alice, "port", "list", "--server", "os-net")
    check(len(ports) == 1 and ports[0]["Fixed IP Addresses"][0]["ip_address"] == NET + ".2"
          and ports[0]["Status"] == "ACTIVE", f"port list --server: its port ({ports})")
    port = openstack_json(alice, "port", "show", ports[0]["ID"])
    check(port["device_id"] == created["id"] and port["network_id"] == network["id"]
          and port["security_group_ids"] == [group["id"]], f"port show: server, network and group ({port})")
    status, body, _ = http("GET", neutron + "/ports?network_id=" + network["id"], alice_token)
    check([p["id"] for p in body["ports"]] == [port["id"]], "ports filtered by network_id")

    actions = openstack_json(alice, "server", "event", "list", "os-net")
    check([a["Action"] for a in actions] == ["create"], f"server event list: the create action ({actions})")
    event = openstack_json(alice, "server", "event", "show", "os-net", actions[0]["Request ID"])
    names = [e["event"] for e in event["events"]]
    check(names[0] == "swiftlet_accepted" and "swiftlet_vmm_spawned" in names and names[-1] == "swiftlet_guest_ready"
          and all(e["result"] == "Success" for e in event["events"]),
          f"server event show: Swiftlet's phases as the create's events ({names})")

    openstack(root, "quota", "set", "--instances", "7", "--cores", "9", project["id"])
    limits = {l["Name"]: l["Value"] for l in openstack_json(alice, "limits", "show", "--absolute")}
    check(limits.get("max_total_instances") == 7 and limits.get("max_total_cores") == 9
          and limits.get("total_instances_used") == 2 and limits.get("max_total_ram_size") == -1,
          f"limits show --absolute: the quota and the use ({limits})")
    quota = openstack_json(alice, "quota", "show")
    if isinstance(quota, list):  # newer clients answer rows of Resource and Limit
        quota = {row["Resource"]: row["Limit"] for row in quota}
    check(quota.get("instances") == 7 and quota.get("cores") == 9 and quota.get("networks") == -1,
          f"quota show: compute and network quotas ({quota})")
    status, body, _ = http("PUT", server.base + "/compute/v2.1/os-quota-sets/" + project["id"], alice_token,
                           {"quota_set": {"instances": 70}})
    check(status == 403 and "forbidden" in body, f"quota set by a member is 403 ({body})")
    openstack(root, "quota", "set", "--instances", "-1", "--cores", "-1", project["id"])

    openstack(alice, "image", "set", "--property", "os_distro=swiftlet", "hello")
    shown = openstack_json(alice, "image", "show", "hello")
    check(shown["properties"].get("os_distro") == "swiftlet", f"image set --property ({shown['properties']})")
    status, body, _ = http("PATCH", server.base + "/image/v2/images/" + shown["id"], alice_token,
                           [{"op": "replace", "path": "/name", "value": "renamed"}])
    check(status == 409 and "rename" in body["error"]["message"], f"renaming a stored image is 409 ({body})")

    # Isolation and errors in Neutron's shape.
    check(openstack_json(bob, "network", "list") == [] and all(
        http("GET", neutron + "/" + kind, bob_token)[1][kind.replace("-", "_")] == []
        for kind in ["subnets", "ports", "security-groups", "security-group-rules"]),
          "another project sees none of the networks, subnets, ports, groups and rules")
    status, body, _ = http("GET", neutron + "/networks/" + network["id"], bob_token)
    check(status == 404 and body["NeutronError"]["type"] == "NetworkNotFound" and body["NeutronError"]["detail"] == "",
          f"another project's network: 404 NetworkNotFound ({body})")
    status, body, _ = http("DELETE", neutron + "/security-groups/" + group["id"], bob_token)
    check(status == 404 and body["NeutronError"]["type"] == "SecurityGroupNotFound",
          f"another project cannot delete the group ({body})")
    status, body, _ = http("DELETE", neutron + "/networks/" + network["id"], alice_token)
    check(status == 409 and body["NeutronError"]["type"] == "NetworkInUse", f"a network with ports: 409 ({body})")
    status, body, _ = http("DELETE", neutron + "/subnets/" + subnet["id"], alice_token)
    check(status == 409 and body["NeutronError"]["type"] == "SubnetInUse", f"a subnet with ports: 409 ({body})")
    status, body, _ = http("POST", neutron + "/networks", alice_token, {"network": {"name": "x", "shared": True}})
    check(status == 400 and body["NeutronError"]["type"] == "HTTPBadRequest", f"a shared network: 400 ({body})")
    status, body, _ = http("POST", neutron + "/ports", alice_token, {"port": {"network_id": network["id"]}})
    check(status == 501 and "NeutronError" in body, f"port create: 501, ports come with servers ({body})")
    status, bad, _ = http("POST", neutron + "/networks", alice_token, {"network": {"name": "bad"}})
    status, body, _ = http("POST", neutron + "/subnets", alice_token, {"subnet": {
        "network_id": bad["network"]["id"], "ip_version": 4, "cidr": "10.95.0.1/24"}})
    check(status == 400 and "host bits" in body["NeutronError"]["message"], f"a bad CIDR: 400 ({body})")
    status, body, _ = http("POST", server.base + "/compute/v2.1/servers", alice_token, {"server": {
        "name": "z", "imageRef": "echo", "flavorRef": "tiny", "networks": [{"uuid": bad["network"]["id"]}]}})
    check(status == 400 and "no subnet" in body["badRequest"]["message"],
          f"a server on a network without a subnet is 400 ({body})")
    check(http("DELETE", neutron + "/networks/" + bad["network"]["id"], alice_token)[0] == 204,
          "a network without a subnet is deleted")
    status, body, _ = http("GET", neutron + "/networks", headers={})
    check(status == 401, f"no token: 401 ({status})")
    return network


def main():
    started = time.monotonic()
    with ContractServer(binary, database) as server:
        identity, compute = server.base + "/identity/v3", server.base + "/compute/v2.1"
        status, project, _ = http("POST", server.base + "/v1/projects", server.admin, {"name": "osproj"})
        check(status == 201, "native project osproj created")
        status, other, _ = http("POST", server.base + "/v1/projects", server.admin, {"name": "other"})
        check(status == 201, "native project other created")

        # Users through the swiftlet CLI.
        swiftlet(server, "user", "create", "alice", "--project", "osproj", "--password-stdin", stdin="alice-secret\n")
        swiftlet(server, "user", "create", "root", "--project", "admin", "--password-stdin", stdin="root-secret\n")
        swiftlet(server, "user", "create", "bob", "--project", other["id"], "--password-stdin", stdin="bob-secret\n")
        rc = swiftlet(server, "openrc", "--user", "alice")
        for needle in ["OS_AUTH_URL=" + identity, "OS_USERNAME='alice'", "OS_PROJECT_NAME='osproj'",
                       "OS_USER_DOMAIN_NAME=Default", "OS_PROJECT_DOMAIN_NAME=Default", "OS_IDENTITY_API_VERSION=3"]:
            check(needle in rc, f"openrc --user alice has {needle}")
        alice = openrc_env(rc, "alice-secret")
        root = openrc_env(swiftlet(server, "openrc", "--user", "root"), "root-secret")
        bob = openrc_env(swiftlet(server, "openrc", "--user", "bob"), "bob-secret")
        admin_token_rc = swiftlet(server, "openrc")
        check("OS_AUTH_TYPE=v3token" in admin_token_rc and "OS_PROJECT_NAME='admin'" in admin_token_rc,
              "openrc without --user uses the CLI's token (v3token) in the admin project")

        # Images through the Image API: from a file, and from a pipe.
        image = openstack_json(alice, "image", "create", "--file", hello, "--disk-format", "aki",
                               "--container-format", "bare", "hello")
        check(image["status"] == "active" and image["size"] == os.path.getsize(hello),
              f"image create --file: active, {image['size']} bytes")
        with open(hello, "rb") as pipe:
            piped = subprocess.run([openstack_bin, "image", "create", "--disk-format", "aki", "hello-piped",
                                    "-f", "json"], env=alice, stdin=pipe, capture_output=True, text=True, timeout=120)
        check(piped.returncode == 0 and json.loads(piped.stdout)["size"] == os.path.getsize(hello),
              f"image create from a pipe ({piped.stderr.strip()[-200:]})")
        images = {i["Name"]: i["Status"] for i in openstack_json(alice, "image", "list")}
        check(images == {"hello": "active", "hello-piped": "active"}, f"image list: {images}")
        shown_image = openstack_json(alice, "image", "show", "hello")
        check(shown_image["disk_format"] == "aki" and shown_image["id"] == image["id"], "image show")
        openstack(alice, "image", "delete", "hello-piped")
        check([i["Name"] for i in openstack_json(alice, "image", "list")] == ["hello"], "image delete")
        saved = "/tmp/swiftlet-openstack-saved.elf"
        openstack(alice, "image", "save", "--file", saved, "hello")
        check(open(saved, "rb").read() == open(hello, "rb").read(), "image save downloads the same bytes")
        os.remove(saved)
        check(http("GET", server.base + "/image/v2/images/" + image["id"] + "/file")[0]
              == 401, "an image download without a token is 401")
        result = openstack(bob, "image", "show", image["id"], expect_ok=False)
        check(result.returncode != 0, "another project's image is not found by the CLI")
        check(upload_cut_short(server, alice) == "queued", "an upload cut short leaves the image queued, no data")

        # Tokens.
        token = openstack_json(alice, "token", "issue")
        check(token["project_id"] == project["id"] and token["id"].startswith("swk_"),
              "token issue: alice's token is scoped to osproj")
        status, body, headers = http("GET", identity + "/auth/tokens", token["id"],
                                     headers={"X-Subject-Token": token["id"]})
        check(status == 200 and body["token"]["user"]["name"] == "alice"
              and {s["type"] for s in body["token"]["catalog"]} == {"identity", "compute", "image", "network"},
              "GET /auth/tokens validates the token, with its catalog")
        openstack(alice, "token", "revoke", token["id"])
        status, body, _ = http("GET", compute + "/servers", token["id"])
        check(status == 401, f"a revoked token is refused (got {status})")

        # Flavors (admin).
        flavor = openstack_json(root, "flavor", "create", "--ram", "32", "--vcpus", "1", "--disk", "0", "os.small")
        check(flavor["name"] == "os.small" and flavor["ram"] == 32, "flavor create by an admin user")
        result = openstack(alice, "flavor", "create", "--ram", "32", "--vcpus", "1", "mine", expect_ok=False)
        check(result.returncode != 0 and "403" in result.stderr, "flavor create by a member is 403")
        names = [f["Name"] for f in openstack_json(alice, "flavor", "list")]
        check("os.small" in names and "tiny" in names, f"flavor list shows the new and built-in flavors: {names}")

        # A server's life.
        with tempfile.NamedTemporaryFile("w", prefix="swiftlet-openstack-", suffix=".user-data") as f:
            f.write("# the hello guest accepts only the key name: the boot config comes from --property\n")
            f.flush()
            created = openstack_json(alice, "server", "create", "--image", "hello", "--flavor", "os.small",
                                     "--user-data", f.name, "--property", "name=osc", "--wait", "os-hello")
        check(created["status"] == "ACTIVE", f"server create --wait ends ACTIVE (got {created['status']})")
        server_id = created["id"]
        listed = openstack_json(alice, "server", "list")
        check([(s["Name"], s["Status"], s["Image"], s["Flavor"]) for s in listed]
              == [("os-hello", "ACTIVE", "hello", "os.small")], f"server list: {listed}")
        shown = openstack_json(alice, "server", "show", "os-hello")
        check(shown.get("OS-EXT-STS:vm_state") == "active" and shown.get("OS-EXT-STS:power_state") in ("Running", 1)
              and shown["flavor"].startswith("os.small"), f"server show: vm_state, power state, flavor")
        log = openstack(alice, "console", "log", "show", "os-hello").stdout
        check("hello from osc" in log, "console log show has the guest's output with the metadata as boot config")
        filtered = openstack_json(alice, "server", "list", "--status", "SHUTOFF")
        check(filtered == [], "server list --status SHUTOFF is empty while it runs")

        openstack(alice, "server", "stop", "os-hello")
        check(wait_status(alice, "os-hello", "SHUTOFF") == "SHUTOFF", "server stop → SHUTOFF")
        openstack(alice, "server", "start", "os-hello")
        check(wait_status(alice, "os-hello", "ACTIVE") == "ACTIVE", "server start → ACTIVE")
        openstack(alice, "server", "pause", "os-hello")
        check(wait_status(alice, "os-hello", "PAUSED") == "PAUSED", "server pause → PAUSED")
        openstack(alice, "server", "unpause", "os-hello")
        check(wait_status(alice, "os-hello", "ACTIVE") == "ACTIVE", "server unpause → ACTIVE")
        openstack(alice, "server", "reboot", "--soft", "os-hello")
        check(wait_status(alice, "os-hello", "ACTIVE") == "ACTIVE", "server reboot --soft → ACTIVE")
        openstack(alice, "server", "reboot", "--hard", "--wait", "os-hello")
        check(wait_status(alice, "os-hello", "ACTIVE") == "ACTIVE", "server reboot --hard --wait → ACTIVE")
        # Live migration is Swiftlet's own (docs/migration.md); with one host there is nowhere to go.
        moved = openstack(alice, "server", "migrate", "--live-migration", "os-hello", expect_ok=False)
        check(moved.returncode != 0 and "403" in moved.stderr, f"live migration is for admins: {moved.stderr.strip()}")
        moved = openstack(root, "server", "migrate", "--live-migration", "os-hello", expect_ok=False)
        check(moved.returncode != 0 and "409" in moved.stderr and "no host" in moved.stderr.lower(),
              f"server migrate --live-migration on one host: a 409 saying no host fits: {moved.stderr.strip()}")

        # Hosts (admin).
        hypervisors = openstack_json(root, "hypervisor", "list")
        check(len(hypervisors) == 1 and hypervisors[0]["State"] == "up" and hypervisors[0]["Hypervisor Type"] == "QEMU",
              f"hypervisor list: the one host, up ({hypervisors})")
        services = openstack_json(root, "compute", "service", "list")
        check([(s["Binary"], s["Status"], s["State"]) for s in services] == [("nova-compute", "enabled", "up")],
              f"compute service list: one nova-compute, enabled and up ({services})")
        result = openstack(alice, "hypervisor", "list", expect_ok=False)
        check(result.returncode != 0 and "403" in result.stderr, "hypervisor list by a member is 403")

        # Bad input.
        wrong = dict(alice, OS_PASSWORD="not-her-password")
        result = openstack(wrong, "token", "issue", expect_ok=False)
        check(result.returncode != 0 and "401" in result.stderr, "a wrong password fails token issue (401)")
        status, body, _ = http("POST", identity + "/auth/tokens", body={"auth": {"identity": {
            "methods": ["password"], "password": {"user": {"name": "alice", "domain": {"name": "Default"},
                                                           "password": "nope"}}}}})
        check(status == 401 and body["error"]["code"] == 401 and body["error"]["title"] == "Unauthorized",
              f"wrong password: 401 in Keystone's shape ({body})")
        status, _, headers = http("POST", identity + "/auth/tokens", body={"auth": {"identity": {
            "methods": ["password"], "password": {"user": {"name": "alice", "domain": {"name": "Default"},
                                                           "password": "alice-secret"}}}}})
        alice_token = headers["X-Subject-Token"]
        status, body, headers = http("GET", compute + "/servers", alice_token,
                                     headers={"OpenStack-API-Version": "compute 2.99"})
        check(status == 406 and "computeFault" in body, f"microversion 2.99 is 406 in Nova's shape ({body})")
        status, body, headers = http("GET", compute + "/servers", alice_token,
                                     headers={"X-OpenStack-Nova-API-Version": "latest"})
        check(status == 200 and headers["OpenStack-API-Version"] == "compute 2.30",
              "microversion latest is answered as compute 2.30")
        result = openstack(bob, "server", "show", server_id, expect_ok=False)
        check(result.returncode != 0 and "No Server found" in result.stderr + result.stdout
              or "404" in result.stderr, "another project's server is not found by the CLI")
        bob_token = openstack_json(bob, "token", "issue")["id"]
        status, body, _ = http("GET", compute + "/servers/" + server_id, bob_token)
        check(status == 404 and "itemNotFound" in body, f"another project's server: 404 itemNotFound ({body})")
        status, body, _ = http("POST", compute + "/servers/" + server_id + "/action", bob_token, {"os-stop": None})
        check(status == 404, "another project cannot stop the server (404)")
        status, body, _ = http("POST", compute + "/servers", alice_token, {"server": {
            "name": "x", "imageRef": "hello", "flavorRef": "no-such-flavor"}})
        check(status == 400 and "badRequest" in body, f"a missing flavor is 400, as Nova ({body})")
        status, body, _ = http("POST", compute + "/servers/" + server_id + "/action", alice_token,
                               {"resize": {"flavorRef": "tiny"}})
        check(status == 501 and "notImplemented" in body, f"an unsupported action is 501 ({body})")
        status, body, _ = http("GET", compute + "/os-keypairs", alice_token)
        check(status == 404 and "not supported" in body["itemNotFound"]["message"],
              f"an unsupported compute path is 404 in Nova's shape, saying so ({body})")
        status, body, _ = http("GET", compute + "/servers")
        check(status == 401 and "unauthorized" in body, f"no token is 401 ({body})")
        status, body, _ = http("POST", compute + "/servers", alice_token, {"server": {
            "name": "y", "imageRef": "hello", "flavorRef": "tiny", "networks": [{"uuid": "net-missing"}]}})
        check(status == 400 and "badRequest" in body, f"a missing network is 400, as Nova ({body})")
        request = urllib.request.Request(compute + "/servers", data=b'{"server": {"name": ', method="POST",
                                         headers={"X-Auth-Token": alice_token, "Content-Type": "application/json"})
        try:
            urllib.request.urlopen(request, timeout=30)
            status, body = 200, None
        except urllib.error.HTTPError as error:
            status, body = error.code, json.loads(error.read())
        check(status == 400 and "badRequest" in body, f"malformed JSON is 400 badRequest ({body})")
        status, body, _ = http("POST", compute + "/servers", alice_token, {"server": "x"})
        check(status == 400 and "badRequest" in body, f"a malformed server is 400 ({body})")

        # Networks through Neutron: a network, then its subnet (which makes the Swiftlet network).
        # openstacksdk's create_server(wait=True) wants the server to have an address, which one on
        # a network has; echo is a guest that takes one.
        openstack(alice, "image", "create", "--file", echo, "--disk-format", "aki", "echo")
        network = neutron_and_servers(server, alice, bob, root, project, alice_token, bob_token)
        sdk = run_sdk(alice, """
import json, openstack
conn = openstack.connect()
server = conn.create_server("sdk-echo", image="echo", flavor="os.small", nics=[{"net-id": "%s"}], wait=True,
                            timeout=60, auto_ip=False)""" % network["id"] + """
print(json.dumps({"addresses": server.addresses}))
server = conn.compute.wait_for_server(conn.compute.get_server(server.id), status="ACTIVE", wait=60)
print(json.dumps({"status": server.status, "names": sorted(s.name for s in conn.compute.servers())}))
conn.delete_server(server.id, wait=True, timeout=60)
print(json.dumps({"after": sorted(s.name for s in conn.compute.servers())}))
""")
        check(list(sdk[0]["addresses"]) == ["osnet"] and sdk[0]["addresses"]["osnet"][0]["addr"] == NET + ".3"
              and sdk[1] == {"status": "ACTIVE", "names": ["os-hello", "os-net", "sdk-echo"]}
              and sdk[2] == {"after": ["os-hello", "os-net"]},
              f"openstacksdk create_server(wait=True), wait_for_server, delete_server(wait=True): {sdk}")

        openstack(alice, "server", "delete", "--wait", "os-hello", "os-net")
        openstack(alice, "subnet", "delete", "ossub")
        check(openstack_json(alice, "network", "show", "osnet")["subnets"] == [],
              "subnet delete once the servers are gone: the network stays, without a subnet")
        openstack(alice, "network", "delete", "osnet")
        openstack(alice, "security", "group", "delete", "osg")
        openstack(alice, "server", "group", "delete", "osgrp")
        check(openstack_json(alice, "network", "list") == [] and http(
            "GET", server.base + "/v1/networks", server.admin)[1]["networks"] == [],
              "network delete and security group delete leave no network behind")
        check(openstack_json(alice, "server", "list") == [],
              "server delete --wait: the list is empty (and no refused create left a server behind)")

        check(server.process.poll() is None, "the server is still running")
    check(server.left_vmms == [], f"no VMM was left behind ({server.left_vmms})")
    engine = "PostgreSQL" if database else "SQLite"
    print(f"openstack CLI ({engine}): {len(failures)} failure(s) in {time.monotonic() - started:.1f} s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
