#!/usr/bin/python3
"""Moves checkpoint files between namespace hosts over plain TCP (no compression, no encryption):
the bytes cross the link the bench shapes and counts. Both ends start before a migration, as a
resident migration agent would be, and are driven by lines.

  xfer.py recv ADDRESS PORT DIR   accepts connections; each: u16 name length, name, u64 size, data;
                                  writes DIR/name and prints "got NAME SIZE" when it is whole. A line
                                  "garp DEV IP" on stdin sends a gratuitous ARP for IP from DEV.
  xfer.py send ADDRESS PORT       reads paths from stdin, sends each (a thread each, so many move at
                                  once) and prints "sent NAME" when the receiver has it all.
"""
import os, socket, struct, sys, threading

lock = threading.Lock()


def say(line):
    with lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def recv_exact(conn, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = conn.recv(min(1 << 20, n - len(buf)))
        if not chunk:
            raise EOFError
        buf += chunk
    return bytes(buf)


def receive(conn, directory):
    with conn:
        (length,) = struct.unpack(">H", recv_exact(conn, 2))
        name = os.path.basename(recv_exact(conn, length).decode())
        (size,) = struct.unpack(">Q", recv_exact(conn, 8))
        with open(os.path.join(directory, name), "wb") as f:
            left = size
            while left:
                chunk = conn.recv(min(1 << 20, left))
                if not chunk:
                    raise EOFError
                f.write(chunk)
                left -= len(chunk)
        conn.sendall(b"k")
        say(f"got {name} {size}")


def accept_loop(server, directory):
    while True:
        conn, _ = server.accept()
        threading.Thread(target=receive, args=(conn, directory), daemon=True).start()


def garp(dev, ip):
    """A gratuitous ARP request (sender = target = IP), broadcast: neighbours update their entry."""
    with open(f"/sys/class/net/{dev}/address") as f:
        mac = bytes.fromhex(f.read().strip().replace(":", ""))
    addr = socket.inet_aton(ip)
    frame = b"\xff" * 6 + mac + b"\x08\x06" + struct.pack(">HHBBH", 1, 0x0800, 6, 4, 1) + mac + addr + b"\x00" * 6 + addr
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as s:
        s.bind((dev, 0))
        for _ in range(2):
            s.send(frame)


def send(address, port, path):
    name = os.path.basename(path).encode()
    size = os.path.getsize(path)
    with socket.create_connection((address, port)) as s, open(path, "rb") as f:
        s.sendall(struct.pack(">H", len(name)) + name + struct.pack(">Q", size))
        s.sendfile(f)
        s.recv(1)
    say(f"sent {name.decode()} {size}")


def main():
    mode, address, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if mode == "recv":
        server = socket.create_server((address, port), backlog=128)
        threading.Thread(target=accept_loop, args=(server, sys.argv[4]), daemon=True).start()
        say("ready")
        for line in sys.stdin:
            words = line.split()
            if words and words[0] == "garp":
                garp(words[1], words[2])
                say(f"garp {words[2]}")
    else:
        say("ready")
        for line in sys.stdin:
            threading.Thread(target=send, args=(address, port, line.strip()), daemon=True).start()


if __name__ == "__main__":
    main()
