#!/usr/bin/python3
"""The migration bench's client (run inside its own network namespace).

  client.py HOST PORT OUT.json [--interval-ms 1] [--timeout-ms 1000] [--max-inflight 32]

Every interval it starts `POST /counter` on a new TCP connection (`Connection: close`; no
keep-alive: a connection never has to survive the move), at most --max-inflight at once, each with
its own timeout. It records the CLOCK_MONOTONIC time (ns) of every 200 answer and the value, and
the time and kind of every failure. It stops on SIGTERM or when stdin closes, and writes OUT.json.
"""
import asyncio, json, signal, sys, time

REQUEST = b"POST /counter HTTP/1.1\r\nHost: kv\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


async def one(host, port, timeout, answers, failures):
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        try:
            writer.write(REQUEST)
            data = await asyncio.wait_for(reader.read(), timeout)
        finally:
            writer.close()
        at = time.monotonic_ns()
        head, _, body = data.partition(b"\r\n\r\n")
        if head.startswith(b"HTTP/1.1 200"):
            answers.append((at, int(body.strip())))
        else:
            failures.append((at, "status " + head[:12].decode(errors="replace")))
    except asyncio.TimeoutError:
        failures.append((time.monotonic_ns(), "timeout"))
    except (ConnectionError, OSError, ValueError) as e:
        failures.append((time.monotonic_ns(), type(e).__name__))


async def main():
    host, port, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    opts = dict(zip(sys.argv[4::2], sys.argv[5::2]))
    interval = float(opts.get("--interval-ms", 1)) / 1000
    timeout = float(opts.get("--timeout-ms", 1000)) / 1000
    cap = int(opts.get("--max-inflight", 32))
    answers, failures, inflight, started = [], [], set(), 0
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_reader(sys.stdin.fileno(), lambda: (sys.stdin.buffer.read1(1 << 16) or stop.set()) and None)
    begin = next_tick = time.monotonic()
    while not stop.is_set():
        if len(inflight) < cap:
            task = asyncio.ensure_future(one(host, port, timeout, answers, failures))
            inflight.add(task)
            task.add_done_callback(inflight.discard)
            started += 1
        next_tick += interval
        delay = next_tick - time.monotonic()
        if delay < -0.05:  # fell behind (a busy machine): do not burst to catch up
            next_tick = time.monotonic()
            delay = 0
        await asyncio.sleep(max(delay, 0))
    if inflight:
        await asyncio.wait(inflight, timeout=timeout + 1)
    with open(out, "w") as f:
        json.dump({"started": started, "begin_ns": int(begin * 1e9), "answers": answers, "failures": failures}, f)


asyncio.run(main())
