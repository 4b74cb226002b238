#!/usr/bin/env python3
"""Peer comparison driver (issue 7, item 2). Called by bench/compare.sh, which
installs the tools and passes their paths in the environment; see the top of
compare.sh for what is measured, by which tool, and how the loads differ.

Every run starts a fresh server on 127.0.0.1 in its own temp dir, runs one load
generator against it, reads the server's CPU time and RSS from /proc, and stops
the server by PID. Systems alternate (Herald, NATS, Redis, Herald, ...) so
drift on the machine spreads over all. A disk baseline (fio, else dd) runs
first in a temp dir on the same file system as the servers' data dirs.
"""
import datetime
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HERALD = os.environ["HERALD_BIN"]
NATS_SERVER = os.environ["NATS_SERVER_BIN"]
NATS = os.environ["NATS_BIN"]
PEERS = os.environ["PEERS_BIN"]
REDIS_SERVER = os.environ.get("REDIS_SERVER_BIN", "redis-server")
REDIS_BENCH = os.environ.get("REDIS_BENCHMARK_BIN", "redis-benchmark")
FIO = shutil.which(os.environ.get("FIO_BIN", "fio"))

DURATION = float(os.environ.get("DURATION", "8"))  # seconds per run
REPS = int(os.environ.get("REPS", "3"))
SIZES = [int(s) for s in os.environ.get("SIZES", "100,1024").split(",")]
TIERS = os.environ.get("TIERS", "fsync,pagecache").split(",")
WORKLOADS = os.environ.get("WORKLOADS", "publish,pubsub,latency").split(",")
PIN = os.environ.get("PIN", "0") == "1"
WRITE = os.environ.get("WRITE", "1") != "0"
LATENCY_RATE = int(os.environ.get("LATENCY_RATE", "10000"))
# pubsub: events in flight per publisher connection, the same for all three
# (Herald: PUBSUB_WINDOW / 100 batches of 100; NATS: async publishes; Redis:
# XADDs per pipeline), 4 publisher connections each.
PUBSUB_WINDOW = int(os.environ.get("PUBSUB_WINDOW", "100"))
PRODUCERS = 4
# Used only if this herald binary predates `bench subscribe --rate max`.
HERALD_FALLBACK_RATE = os.environ.get("HERALD_FALLBACK_RATE", "200000")
DISK_BLOCKS = os.environ.get("DISK_BLOCKS", "4k,64k,1m").split(",")
BENCHMARKS_MD = os.path.join(ROOT, "BENCHMARKS.md")
SYSTEMS = ["herald", "nats", "redis"]
NAMES = {"herald": "Herald", "nats": "NATS JetStream", "redis": "Redis Streams"}
TIER_NAMES = {"fsync": "fsync before ack", "pagecache": "page cache"}
WORKLOAD_NAMES = {
    "publish": "Publish only (events/s acknowledged)",
    "pubsub": "Publish + one shared consumer acking every event, closed loop (events/s delivered and acked)",
    "latency": f"Publish→deliver latency at an open-loop {LATENCY_RATE:,} events/s",
}
CLK_TCK = os.sysconf("SC_CLK_TCK")

HERALD_PORT, NATS_PORT, REDIS_PORT = 15051, 14222, 16379
SERVER_CPU = ["taskset", "-c", "0"] if PIN else []
LOAD_CPU = ["taskset", "-c", "1"] if PIN else []

# First-rep message counts for the count-based publish tools (nats bench,
# redis-benchmark), for DURATION=10; later reps use the rate measured in the
# previous rep x DURATION.
FIRST_COUNT = {
    ("nats", "fsync"): 20_000,
    ("nats", "pagecache"): 500_000,
    ("redis", "fsync"): 500_000,
    ("redis", "pagecache"): 1_500_000,
}

live = []  # Popen objects of servers and load generators we started


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


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def start(cmd, logf, port):
    p = subprocess.Popen(SERVER_CPU + cmd, stdout=logf, stderr=subprocess.STDOUT)
    live.append(p)
    deadline = time.time() + 15
    while time.time() < deadline:
        if p.poll() is not None:
            raise RuntimeError(f"{cmd[0]} exited early, see {logf.name}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return p
        except OSError:
            time.sleep(0.1)
    stop(p)
    raise RuntimeError(f"{cmd[0]} did not listen on {port}")


def run(cmd, timeout, pin=True, check=True):
    """Runs a load generator (pinned with PIN=1), stopping it by PID on timeout."""
    p = subprocess.Popen((LOAD_CPU if pin else []) + cmd, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    live.append(p)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop(p)
        raise RuntimeError(f"{cmd[0]} {cmd[1]} timed out after {timeout:.0f}s")
    finally:
        if p in live:
            live.remove(p)
    if (check and p.returncode != 0) or not out.strip():
        raise RuntimeError(f"{cmd} failed ({p.returncode}): {err[-2000:]}{out[-2000:]}")
    return out


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime (fields 14, 15)


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return None


class Server:
    """A fresh server of `system` for `tier` in `tmp`, stopped by PID on exit."""

    def __init__(self, system, tier, tmp):
        self.system, self.tier, self.tmp = system, tier, tmp

    def __enter__(self):
        logf = open(os.path.join(self.tmp, "server.log"), "w")
        if self.system == "herald":
            self.p = start([HERALD, "serve", "--listen", f"127.0.0.1:{HERALD_PORT}",
                            "--data-dir", os.path.join(self.tmp, "data")], logf, HERALD_PORT)
        elif self.system == "nats":
            conf = os.path.join(self.tmp, "nats.conf")
            sync = "\n  sync_interval: always" if self.tier == "fsync" else ""
            with open(conf, "w") as f:
                f.write(f'listen: 127.0.0.1:{NATS_PORT}\n'
                        f'jetstream {{\n  store_dir: "{self.tmp}/js"{sync}\n}}\n')
            self.p = start([NATS_SERVER, "-c", conf], logf, NATS_PORT)
            time.sleep(0.5)  # JetStream enables just after the port opens
        else:
            self.p = start([REDIS_SERVER, "--bind", "127.0.0.1", "--port", str(REDIS_PORT),
                            "--dir", self.tmp, "--save", "", "--appendonly", "yes",
                            "--appendfsync", "always" if self.tier == "fsync" else "everysec"],
                           logf, REDIS_PORT)
        return self

    def __exit__(self, *_):
        stop(self.p)

    def measure(self, load):
        """Runs load() -> (figure, events, extra); adds the server's CPU
        seconds per 1M events (over the whole load) and VmRSS at its end."""
        before = cpu_ticks(self.p.pid)
        figure, events, extra = load()
        cpu = (cpu_ticks(self.p.pid) - before) / CLK_TCK
        extra["rss_mb"] = rss_mb(self.p.pid)
        extra["cpu_s"] = cpu
        extra["cpu_per_m"] = cpu / events * 1e6 if events else None
        extra["events"] = events
        return figure, extra


# --- load generators -------------------------------------------------------

HERALD_SUB_HELP = None


def herald_has_rate_max():
    global HERALD_SUB_HELP
    if HERALD_SUB_HELP is None:
        HERALD_SUB_HELP = subprocess.run([HERALD, "bench", "subscribe", "--help"],
                                         capture_output=True, text=True).stdout
    return "`max`" in HERALD_SUB_HELP and "--publish-in-flight" in HERALD_SUB_HELP


def herald_publish(tier, size, _count):
    out = run([HERALD, "bench", "publish", "--endpoint", f"http://127.0.0.1:{HERALD_PORT}",
               "--event-size", str(size), "--batch-size", "100",
               "--duration", f"{DURATION}s", "--json",
               "--create-topic-fsync", "batch" if tier == "fsync" else "none"], DURATION + 60)
    rep = json.loads(out)
    if rep["errors"]:
        raise RuntimeError(f"herald bench errors: {rep['first_error']}")
    return rep["events_per_sec"], rep["events"], {}


def nats_publish(tier, size, count):
    tmp = tempfile.mkdtemp(prefix="herald-cmp-csv-")
    try:
        csv = os.path.join(tmp, "out.csv")
        run([NATS, "-s", f"nats://127.0.0.1:{NATS_PORT}", "bench", "js", "pub", "async",
             "--create", "--storage", "file", "--maxbytes", "1GB", "--no-progress",
             "--msgs", str(count), "--size", f"{size}B", "--batch", "500",
             "--csv", csv, "bench.sub"], DURATION * 10 + 120)
        rows = [l.split(",") for l in open(csv).read().splitlines() if l and not l.startswith("#")]
        return float(sum(float(r[4]) for r in rows)), count, {}  # MsgsPerSec, one row per client
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def redis_publish(tier, size, count):
    out = run([REDIS_BENCH, "-h", "127.0.0.1", "-p", str(REDIS_PORT),
               "-c", "50", "-P", "16", "-n", str(count), "--csv",
               "XADD", "bench", "*", "f", "x" * size], DURATION * 10 + 120)
    last = out.strip().splitlines()[-1]
    return float(re.findall(r'"([^"]*)"', last)[1]), count, {}  # rps column


def latency_extra(rep):
    lat = rep["latency"]
    return {"published_per_sec": rep["published_per_sec"],
            "p50": lat["p50_us"], "p99": lat["p99_us"], "p999": lat["p999_us"],
            "max": lat["max_us"], "samples": lat["count"],
            "undelivered": rep.get("undelivered", 0)}


def herald_subscribe(tier, size, rate, window_batches, batch):
    cmd = [HERALD, "bench", "subscribe", "--endpoint", f"http://127.0.0.1:{HERALD_PORT}",
           "--type", "shared", "--consumers", "1", "--event-size", str(size),
           "--batch-size", str(batch), "--duration", f"{DURATION}s", "--json",
           "--create-topic-fsync", "batch" if tier == "fsync" else "none"]
    if herald_has_rate_max():
        cmd += ["--rate", rate, "--producers", str(PRODUCERS),
                "--publish-in-flight", str(window_batches)]
    else:
        cmd += ["--rate", HERALD_FALLBACK_RATE if rate == "max" else rate]
    rep = json.loads(run(cmd, DURATION * 4 + 60))
    if rep["errors"]:
        raise RuntimeError(f"herald bench errors: {rep['first_error']}")
    return rep


def peers_pubsub(system, size, rate, window):
    addr = f"nats://127.0.0.1:{NATS_PORT}" if system == "nats" else f"127.0.0.1:{REDIS_PORT}"
    out = run([PEERS, f"{system}-pubsub", "--addr", addr, "--size", str(size),
               "--duration", f"{DURATION}s", "--rate", str(rate), "--producers", str(PRODUCERS),
               "--window", str(window), "--fetch", "1000", "--json"],
              DURATION * 2 + 60, check=False)
    rep = json.loads(out)
    if rep["errors"]:
        raise RuntimeError(f"peers {system} errors: {rep['first_error']}")
    return rep


def pubsub(system, tier, size, _count):
    if system == "herald":
        rep = herald_subscribe(tier, size, "max", max(1, PUBSUB_WINDOW // 100), 100)
    else:
        rep = peers_pubsub(system, size, 0, PUBSUB_WINDOW)
    return rep["delivered_per_sec"], rep["delivered_total"], latency_extra(rep)


def latency(system, tier, size, _count):
    if system == "herald":
        rep = herald_subscribe(tier, size, str(LATENCY_RATE), 32, 1)
    else:
        rep = peers_pubsub(system, size, LATENCY_RATE, 32)
    return rep["latency"]["p99_us"], rep["delivered_total"], latency_extra(rep)


LOADS = {
    "publish": {"herald": herald_publish, "nats": nats_publish, "redis": redis_publish},
    "pubsub": {s: (lambda s: lambda *a: pubsub(s, *a))(s) for s in SYSTEMS},
    "latency": {s: (lambda s: lambda *a: latency(s, *a))(s) for s in SYSTEMS},
}


# --- disk baseline ---------------------------------------------------------

SYNC_LATENCY_MS = []  # fio 4k fdatasync latency percentiles, one dict per pass


def disk_baseline(when):
    """Sequential write with an fdatasync after every block, MB/s (10^6) per
    block size, in a temp dir on the file system of the servers' data dirs."""
    tmp = tempfile.mkdtemp(prefix="herald-cmp-disk-")
    res = {}
    try:
        for bs in DISK_BLOCKS:
            try:
                if FIO:
                    out = run([FIO, "--name=seq", "--rw=write", f"--bs={bs}", "--size=256m",
                               "--fdatasync=1", "--ioengine=psync", f"--runtime={int(max(DURATION, 3))}",
                               f"--directory={tmp}", "--unlink=1", "--output-format=json"],
                              DURATION + 120, pin=False)
                    job = json.loads(out[out.index("{"):])["jobs"][0]
                    res[bs] = job["write"]["bw_bytes"] / 1e6
                    if bs == "4k":
                        # One fdatasync of a small write: the floor under any
                        # durable publish's latency (a publish may wait for
                        # the fsync in progress, then its own).
                        pct = job["sync"]["lat_ns"]["percentile"]
                        SYNC_LATENCY_MS.append({q: pct[k] / 1e6 for q, k in
                                                (("p50", "50.000000"), ("p99", "99.000000"),
                                                 ("p99.9", "99.900000"))})
                else:
                    n = {"4k": 4096, "64k": 1024, "1m": 64}.get(bs, 64)
                    r = subprocess.run(["dd", "if=/dev/zero", f"of={tmp}/dd", f"bs={bs.upper()}",
                                        f"count={n}", "oflag=dsync"], capture_output=True, text=True,
                                       timeout=DURATION + 120)
                    m = re.search(r"(\d+) bytes.* s, ", r.stderr)
                    secs = float(re.search(r"copied, ([\d.]+) s", r.stderr).group(1))
                    res[bs] = int(m.group(1)) / secs / 1e6
                    os.unlink(f"{tmp}/dd")
                log(f"[disk {when}] {bs}: {res[bs]:.1f} MB/s")
            except Exception as e:
                log(f"[disk {when}] {bs} FAILED: {e}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return res


# --- report ----------------------------------------------------------------

def sh(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
    except Exception:
        return "?"


def cpu_model():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def machine():
    tmpdir = tempfile.gettempdir()
    fs = sh(["df", "--output=fstype,source", tmpdir]).splitlines()[-1].split()
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(),
        "cpu": cpu_model(),
        "kernel": platform.release(),
        "fs": f"{tmpdir}: {' on '.join(fs)}",
        "load": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "herald": f"{sh([HERALD, '--version'])} ({HERALD}, built "
                  f"{datetime.datetime.fromtimestamp(os.path.getmtime(HERALD), datetime.timezone.utc):%Y-%m-%d %H:%M UTC})",
        "nats-server": sh([NATS_SERVER, "--version"]),
        "natscli": sh([NATS, "--version"]),
        "redis": sh([REDIS_SERVER, "--version"]).split(" sha=")[0],
        "fio": sh([FIO, "--version"]) if FIO else "absent (dd oflag=dsync)",
        "peers": "bench/peers (nats.go v1.55.0, go-redis v9.23.0)",
    }


def med(v):
    return statistics.median(v) if v else None


def fmt_n(v, unit=""):
    return "failed" if v is None else f"{v:,.0f}{unit}"


def fmt_us(us):
    if us is None:
        return "-"
    return f"{us / 1000:.2f} ms" if us < 1_000_000 else f"{us / 1e6:.2f} s"


def fmt_f(v, digits=2):
    return "-" if v is None else f"{v:.{digits}f}"


def ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def fmt_ratio(r):
    return "-" if r is None else f"{r:,.1f}x"


def disk_bw(disk):
    """Disk fsync bandwidth: the highest MB/s of any block size, either pass."""
    return max(max(v) for v in disk.values())


def render(results, disk, mach, started, finished):
    L = []
    out = L.append
    out(f"Run {mach['date']} ({(finished - started) / 60:.1f} min), "
        f"`DURATION={DURATION:g} REPS={REPS} SIZES={','.join(map(str, SIZES))} "
        f"TIERS={','.join(TIERS)} WORKLOADS={','.join(WORKLOADS)} PIN={int(PIN)}` — "
        + ("**pinned: server on CPU 0 only, load generator on CPU 1**" if PIN else
           "not pinned: server and load generator share both cores") + ".")
    out("")
    out(f"Machine: {mach['nproc']} cores, {mach['cpu']}, kernel {mach['kernel']}, "
        f"temp dir {mach['fs']}, load average at start {mach['load']}, at end "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}.")
    out(f"Tools: {mach['herald']}; {mach['nats-server']}; natscli {mach['natscli']}; "
        f"{mach['redis']}; {mach['fio']}; {mach['peers']}.")
    out("")
    if disk:
        best = disk_bw(disk)
        out("Disk baseline, sequential write with fdatasync after every block "
            f"({'fio' if FIO else 'dd oflag=dsync'}), before / after the runs: "
            + ", ".join(f"{bs} " + " / ".join(f"{x:,.1f}" for x in v) + " MB/s" for bs, v in disk.items())
            + f" — disk fsync bandwidth **{best:,.1f} MB/s** (the highest).")
        if SYNC_LATENCY_MS:
            out("fdatasync latency of one 4 KiB write (fio, before / after): "
                + ", ".join(f"{q} " + " / ".join(f"{d[q]:.2f}" for d in SYNC_LATENCY_MS) + " ms"
                            for q in ("p50", "p99", "p99.9"))
                + " — a durable publish waits for up to two of these.")
        out("")

    def m(w, t, s, sysname, key=None):
        runs = results.get((w, t, s, sysname), [])
        if key is None:
            return med([r["figure"] for r in runs])
        vals = [r[key] for r in runs if r.get(key) is not None]
        return med(vals)

    for w in WORKLOADS:
        out(f"#### {WORKLOAD_NAMES[w]}")
        out("")
        if w in ("publish", "pubsub"):
            unit = "ev/s"
            out(f"| tier | event | Herald {unit} | NATS {unit} | Redis {unit} | Herald/NATS | Herald/Redis "
                "| RSS MB H / N / R | CPU s per 1M events H / N / R |")
            out("|---|---|---:|---:|---:|---:|---:|---:|---:|")
            for t in TIERS:
                for s in SIZES:
                    h, n, r = (m(w, t, s, x) for x in SYSTEMS)
                    rss = " / ".join(fmt_f(m(w, t, s, x, "rss_mb"), 0) for x in SYSTEMS)
                    cpu = " / ".join(fmt_f(m(w, t, s, x, "cpu_per_m")) for x in SYSTEMS)
                    out(f"| {TIER_NAMES[t]} | {s} B | {fmt_n(h)} | {fmt_n(n)} | {fmt_n(r)} | "
                        f"{fmt_ratio(ratio(h, n))} | {fmt_ratio(ratio(h, r))} | {rss} | {cpu} |")
            if w == "publish" and disk and "fsync" in TIERS and 1024 in SIZES:
                h = m(w, "fsync", 1024, "herald")
                if h:
                    out("")
                    out(f"Herald durable 1 KiB publish: {h * 1024 / 1e6:,.1f} MB/s = "
                        f"**{h * 1024 / 1e6 / disk_bw(disk) * 100:.0f} %** of the disk fsync bandwidth.")
        else:
            out(f"| tier | event | system | published/s | p50 | p99 | p99.9 | max | RSS MB | CPU s per 1M events |")
            out("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
            for t in TIERS:
                for s in SIZES:
                    for x in SYSTEMS:
                        if not results.get((w, t, s, x)):
                            out(f"| {TIER_NAMES[t]} | {s} B | {NAMES[x]} | failed | | | | | | |")
                            continue
                        pub = m(w, t, s, x, "published_per_sec")
                        behind = " (fell behind)" if pub is not None and pub < 0.95 * LATENCY_RATE else ""
                        out(f"| {TIER_NAMES[t]} | {s} B | {NAMES[x]} | {fmt_n(pub)}{behind} | "
                            f"{fmt_us(m(w, t, s, x, 'p50'))} | {fmt_us(m(w, t, s, x, 'p99'))} | "
                            f"{fmt_us(m(w, t, s, x, 'p999'))} | {fmt_us(m(w, t, s, x, 'max'))} | "
                            f"{fmt_f(m(w, t, s, x, 'rss_mb'), 0)} | {fmt_f(m(w, t, s, x, 'cpu_per_m'))} |")
        out("")

    out("#### Targets of issue 7")
    out("")
    out("| target | measured | verdict |")
    out("|---|---|---|")

    def verdict(ok):
        return "not run" if ok is None else ("**met**" if ok else "**missed**")

    def row(name, measured, ok):
        out(f"| {name} | {measured} | {verdict(ok)} |")

    hp = m("publish", "fsync", 100, "herald")
    row("durable 100 B publish ≥ 1M events/s", fmt_n(hp, " ev/s") if hp else "-",
        None if hp is None else hp >= 1e6)
    rr = ratio(hp, m("publish", "fsync", 100, "redis"))
    row("durable 100 B publish ≥ 10× Redis appendfsync always", fmt_ratio(rr), None if rr is None else rr >= 10)
    rn = ratio(hp, m("publish", "fsync", 100, "nats"))
    row("durable 100 B publish: hundreds × JetStream sync always (≥ 100×)", fmt_ratio(rn),
        None if rn is None else rn >= 100)
    h1k = m("publish", "fsync", 1024, "herald")
    if h1k and disk:
        pct = h1k * 1024 / 1e6 / disk_bw(disk) * 100
        row("durable 1 KiB publish ≥ 70 % of disk fsync bandwidth",
            f"{h1k * 1024 / 1e6:,.1f} MB/s of {disk_bw(disk):,.1f} MB/s = {pct:.0f} %", pct >= 70)
    else:
        row("durable 1 KiB publish ≥ 70 % of disk fsync bandwidth", "-", None)
    for s in SIZES:
        rp = ratio(m("publish", "pagecache", s, "herald"), m("publish", "pagecache", s, "nats"))
        row(f"page cache {s} B publish ≥ 5× JetStream default", fmt_ratio(rp), None if rp is None else rp >= 5)
    for s in SIZES:
        p99, p999 = m("latency", "fsync", s, "herald", "p99"), m("latency", "fsync", s, "herald", "p999")
        ok = None if p99 is None or p999 is None else (p99 <= 2000 and p999 <= 5000)
        row(f"durable {s} B publish→deliver at {LATENCY_RATE:,}/s: p99 ≤ 2 ms and p99.9 ≤ 5 ms",
            f"p99 {fmt_us(p99)}, p99.9 {fmt_us(p999)}" if ok is not None else "-", ok)
    out("")
    out("All runs, in run order (figure: events/s, delivered for pubsub, or p99 for latency; "
        "RSS MB; CPU s per 1M events; pubsub: the closed-loop publishers' rate):")
    out("")
    for (w, t, s, x), runs in sorted(results.items(), key=lambda kv: (WORKLOADS.index(kv[0][0]),
                                                                    TIERS.index(kv[0][1]), kv[0][2],
                                                                    SYSTEMS.index(kv[0][3]))):
        def one(r):
            fig = fmt_us(r["figure"]) if w == "latency" else fmt_n(r["figure"])
            pub = f", published {fmt_n(r['published_per_sec'])}/s" if w == "pubsub" else ""
            return f"{fig} ({fmt_f(r.get('rss_mb'), 0)} MB, {fmt_f(r.get('cpu_per_m'))} s{pub})"
        out(f"- {w}, {TIER_NAMES[t]}, {s} B, {x}: " + (", ".join(one(r) for r in runs) or "failed"))
    return "\n".join(L) + "\n"


BEGIN, END = "<!-- compare:begin -->", "<!-- compare:end -->"
SECTION = "## Peer comparison (generated by bench/compare.sh)"


def write_benchmarks(text):
    with open(BENCHMARKS_MD) as f:
        doc = f.read()
    if BEGIN not in doc or END not in doc:
        doc = doc.rstrip("\n") + f"\n\n{SECTION}\n\n{BEGIN}\n{END}\n"
    head, rest = doc.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    with open(BENCHMARKS_MD, "w") as f:
        f.write(f"{head}{BEGIN}\n{text}{END}{tail}")
    log(f"wrote {BENCHMARKS_MD}")


def main():
    started = time.time()
    mach = machine()
    results = {}  # (workload, tier, size, system) -> [ {figure, rss_mb, cpu_per_m, ...} ]
    last_rate = {}
    failures = 0
    disk = {}  # block size -> [MB/s before the runs, after them]
    try:
        for bs, v in disk_baseline("before").items():
            disk.setdefault(bs, []).append(v)
        for w in WORKLOADS:
            for tier in TIERS:
                for size in SIZES:
                    for rep in range(REPS):
                        for system in SYSTEMS:
                            count = int(last_rate.get((system, tier, size), 0) * DURATION) or \
                                int(FIRST_COUNT.get((system, tier), 0) * DURATION / 10)
                            count = max(count, 1000)
                            tag = f"[{w} {tier} {size}B rep {rep + 1}/{REPS}] {system}"
                            tmp = tempfile.mkdtemp(prefix=f"herald-cmp-{system}-")
                            results.setdefault((w, tier, size, system), [])
                            try:
                                with Server(system, tier, tmp) as srv:
                                    figure, extra = srv.measure(lambda: LOADS[w][system](tier, size, count))
                            except Exception as e:  # keep the other runs; the table says "failed"
                                failures += 1
                                log(f"{tag} FAILED: {e}")
                                continue
                            finally:
                                shutil.rmtree(tmp, ignore_errors=True)
                            if w == "publish":
                                last_rate[(system, tier, size)] = figure
                            results[(w, tier, size, system)].append({"figure": figure, **extra})
                            shown = fmt_us(figure) + " p99" if w == "latency" else f"{figure:,.0f} events/s"
                            log(f"{tag}: {shown}, RSS {fmt_f(extra['rss_mb'], 0)} MB, "
                                f"CPU {fmt_f(extra['cpu_per_m'])} s/1M events "
                                f"(count {count if w == 'publish' and system != 'herald' else '-'}, "
                                f"load1 {os.getloadavg()[0]:.1f})")
        # The disk is shared and noisy: a second pass, and the best of both counts.
        for bs, v in disk_baseline("after").items():
            disk.setdefault(bs, []).append(v)
    finally:
        stop_all()
    text = render(results, disk, mach, started, time.time())
    print(text)
    if WRITE:
        write_benchmarks(text)
    if failures:
        log(f"{failures} run(s) failed")
        sys.exit(1)


if __name__ == "__main__":
    main()
