#!/usr/bin/env python3
"""Peer comparison driver (issue 7, first version). Called by bench/compare.sh,
which installs the tools and passes their paths in the environment; see the
top of compare.sh for what is measured and how the tools differ.

Every run starts a fresh server on 127.0.0.1 in its own temp dir, runs one
bench client against it, and stops the server by PID. Systems alternate
(Herald, NATS, Redis, Herald, ...) so drift on the machine spreads over all.
"""
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERALD = os.environ["HERALD_BIN"]
NATS_SERVER = os.environ["NATS_SERVER_BIN"]
NATS = os.environ["NATS_BIN"]
REDIS_SERVER = os.environ.get("REDIS_SERVER_BIN", "redis-server")
REDIS_BENCH = os.environ.get("REDIS_BENCHMARK_BIN", "redis-benchmark")

DURATION = float(os.environ.get("DURATION", "10"))  # seconds per run
REPS = int(os.environ.get("REPS", "3"))
SIZES = [int(s) for s in os.environ.get("SIZES", "100").split(",")]
TIERS = os.environ.get("TIERS", "fsync,pagecache").split(",")
SYSTEMS = ["herald", "nats", "redis"]

HERALD_PORT, NATS_PORT, REDIS_PORT = 15051, 14222, 16379

# First-rep message counts for the count-based tools (nats bench, redis-benchmark);
# later reps use the rate measured in the previous rep x DURATION.
FIRST_COUNT = {
    ("nats", "fsync"): 20_000,
    ("nats", "pagecache"): 500_000,
    ("redis", "fsync"): 500_000,
    ("redis", "pagecache"): 1_500_000,
}

live = []  # Popen objects of servers we started


def stop(p):
    if p.poll() is None:
        os.kill(p.pid, signal.SIGTERM)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(p.pid, signal.SIGKILL)
            p.wait()
    if p in live:
        live.remove(p)


def stop_all(*_):
    for p in list(live):
        stop(p)
    if _:
        sys.exit(130)


signal.signal(signal.SIGTERM, stop_all)
signal.signal(signal.SIGINT, stop_all)


def start(cmd, log, port):
    p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    live.append(p)
    deadline = time.time() + 15
    while time.time() < deadline:
        if p.poll() is not None:
            raise RuntimeError(f"{cmd[0]} exited early, see {log.name}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return p
        except OSError:
            time.sleep(0.1)
    stop(p)
    raise RuntimeError(f"{cmd[0]} did not listen on {port}")


def run(cmd, timeout):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"{cmd} failed: {r.stderr[-2000:]}{r.stdout[-2000:]}")
    return r.stdout


def bench_herald(tmp, tier, size, _count):
    log = open(os.path.join(tmp, "server.log"), "w")
    p = start([HERALD, "serve", "--listen", f"127.0.0.1:{HERALD_PORT}",
               "--data-dir", os.path.join(tmp, "data")], log, HERALD_PORT)
    try:
        out = run([HERALD, "bench", "publish", "--endpoint", f"http://127.0.0.1:{HERALD_PORT}",
                   "--event-size", str(size), "--batch-size", "100",
                   "--duration", f"{DURATION}s", "--json",
                   "--create-topic-fsync", "batch" if tier == "fsync" else "none"],
                  DURATION + 60)
        rep = json.loads(out)
        if rep["errors"]:
            raise RuntimeError(f"herald bench errors: {rep['first_error']}")
        return rep["events_per_sec"]
    finally:
        stop(p)


def bench_nats(tmp, tier, size, count):
    conf = os.path.join(tmp, "nats.conf")
    sync = "\n  sync_interval: always" if tier == "fsync" else ""
    with open(conf, "w") as f:
        f.write(f'listen: 127.0.0.1:{NATS_PORT}\n'
                f'jetstream {{\n  store_dir: "{tmp}/js"{sync}\n}}\n')
    log = open(os.path.join(tmp, "server.log"), "w")
    p = start([NATS_SERVER, "-c", conf], log, NATS_PORT)
    try:
        time.sleep(0.5)  # JetStream enables just after the port opens
        csv = os.path.join(tmp, "out.csv")
        run([NATS, "-s", f"nats://127.0.0.1:{NATS_PORT}", "bench", "js", "pub", "async",
             "--create", "--storage", "file", "--maxbytes", "1GB", "--no-progress",
             "--msgs", str(count), "--size", f"{size}B", "--batch", "500",
             "--csv", csv, "bench.sub"], DURATION * 10 + 120)
        rows = [l.split(",") for l in open(csv).read().splitlines() if l and not l.startswith("#")]
        return float(sum(float(r[4]) for r in rows))  # MsgsPerSec, one row per client
    finally:
        stop(p)


def bench_redis(tmp, tier, size, count):
    log = open(os.path.join(tmp, "server.log"), "w")
    p = start([REDIS_SERVER, "--bind", "127.0.0.1", "--port", str(REDIS_PORT),
               "--dir", tmp, "--save", "", "--appendonly", "yes",
               "--appendfsync", "always" if tier == "fsync" else "everysec"],
              log, REDIS_PORT)
    try:
        out = run([REDIS_BENCH, "-h", "127.0.0.1", "-p", str(REDIS_PORT),
                   "-c", "50", "-P", "16", "-n", str(count), "--csv",
                   "XADD", "bench", "*", "f", "x" * size], DURATION * 10 + 120)
        last = out.strip().splitlines()[-1]
        return float(re.findall(r'"([^"]*)"', last)[1])  # rps column
    finally:
        stop(p)


BENCH = {"herald": bench_herald, "nats": bench_nats, "redis": bench_redis}


def main():
    results = {}  # (tier, size, system) -> [events/s]
    last_rate = {}
    try:
        for tier in TIERS:
            for size in SIZES:
                for rep in range(REPS):
                    for system in SYSTEMS:
                        key = (system, tier)
                        count = int(last_rate.get((system, tier, size), 0) * DURATION) \
                            or FIRST_COUNT.get(key, 0)
                        count = max(count, 1000)
                        tmp = tempfile.mkdtemp(prefix=f"herald-cmp-{system}-")
                        try:
                            rate = BENCH[system](tmp, tier, size, count)
                        except Exception as e:  # keep the other runs; the table says "failed"
                            print(f"[{tier} {size}B rep {rep + 1}] {system} FAILED: {e}",
                                  file=sys.stderr, flush=True)
                            results.setdefault((tier, size, system), [])
                            continue
                        finally:
                            shutil.rmtree(tmp, ignore_errors=True)
                        last_rate[(system, tier, size)] = rate
                        results.setdefault((tier, size, system), []).append(rate)
                        load = os.getloadavg()[0]
                        print(f"[{tier} {size}B rep {rep + 1}/{REPS}] {system}: {rate:,.0f} events/s"
                              f" (count {count if system != 'herald' else '-'}, load1 {load:.1f})",
                              file=sys.stderr, flush=True)
    finally:
        stop_all()

    names = {"fsync": "fsync before ack", "pagecache": "page cache"}
    print("| tier | event | Herald ev/s | NATS JetStream ev/s | Redis XADD ev/s | Herald/NATS | Herald/Redis |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for tier in TIERS:
        for size in SIZES:
            m = {s: statistics.median(results[(tier, size, s)]) if results[(tier, size, s)] else None
                 for s in SYSTEMS}
            fmt = lambda v: "failed" if v is None else f"{v:,.0f}"
            ratio = lambda a, b: "-" if a is None or b is None else f"{a / b:.1f}x"
            print(f"| {names[tier]} | {size} B | {fmt(m['herald'])} | {fmt(m['nats'])} | "
                  f"{fmt(m['redis'])} | {ratio(m['herald'], m['nats'])} | {ratio(m['herald'], m['redis'])} |")
    print()
    print("All runs (events/s):")
    for (tier, size, system), v in sorted(results.items()):
        print(f"- {names[tier]}, {size} B, {system}: " + ", ".join(f"{x:,.0f}" for x in v))


if __name__ == "__main__":
    main()
