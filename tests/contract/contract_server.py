"""A real `swiftlet server` for the contract tests: temporary data directory, a free port, its own
network device prefix, and a cleanup that reports what it had to remove (VMMs, devices)."""
import json, os, shutil, signal, socket, subprocess, tempfile, time, urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ContractServer:
    """`with ContractServer(binary, database) as server:` starts it and waits until it answers;
    `server.base` is its URL, `server.admin` the admin token; after the block, `left_vmms` and
    `left_devices` say what the cleanup had to remove and `log_text` is the server's log."""

    def __init__(self, binary, database=None):
        self.binary, self.database = binary, database
        self.left_vmms, self.left_devices = [], []

    def __enter__(self):
        self.data = tempfile.mkdtemp(prefix="swiftlet-contract-")
        port = free_port()
        self.base = f"http://127.0.0.1:{port}"
        self.log = open(self.data + ".log", "w")
        # Its own device prefix, so that its bridges, TAPs and nftables tables are its own (networking).
        self.net_prefix = "c" + os.urandom(2).hex()
        with open(self.data + "/config.json", "w") as config:
            json.dump({"networkPrefix": self.net_prefix}, config)
        command = [self.binary, "server", "--data", self.data, "--port", str(port),
                   "--config", self.data + "/config.json"]
        if self.database:
            command += ["--database", self.database]
        self.process = subprocess.Popen(command, stdout=self.log, stderr=self.log, start_new_session=True)
        for _ in range(600):
            try:
                urllib.request.urlopen(self.base + "/v1/health", timeout=1)
                break
            except Exception:
                time.sleep(0.1)
        self.admin = open(os.path.join(self.data, "admin.token")).read().strip()
        return self

    def __exit__(self, *_):
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()
        self.log_text = open(self.data + ".log").read()
        self.left_vmms = subprocess.run(["pgrep", "-f", self.data + "/run/"], capture_output=True,
                                        text=True).stdout.split()
        for pid in self.left_vmms:
            os.kill(int(pid), signal.SIGKILL)
        for line in subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout.splitlines():
            name = line.split(":")[1].strip().split("@")[0]
            if name.startswith(self.net_prefix):
                self.left_devices.append(name)
                subprocess.run(["ip", "link", "del", name], capture_output=True)
        for family in ("inet", "bridge"):
            subprocess.run(["nft", "delete", "table", family, "swiftlet_" + self.net_prefix], capture_output=True)
        shutil.rmtree(self.data, ignore_errors=True)
        os.remove(self.data + ".log")
        return False
