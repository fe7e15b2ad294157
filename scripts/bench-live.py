#!/usr/bin/env python3
"""Live latency of `recwatch run`: a writer appends combined-format lines to a followed file
at a fixed rate; every 50 ms one "probe" line is a recording fetch by a new unknown client
(rule R1 fires). A poller times each probe from the moment it was appended until its alert
is readable through the alert API (the store stage upserts, then flushes, in one write).
Prints p50/p99/max of that, the daemon's own read→durable histogram quantiles, and its
peak RSS. Usage: bench-live.py RECWATCH_BINARY RATE [SECONDS]"""
import http.client, json, os, random, signal, socket, subprocess, sys, threading, time
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import daemon as recwatch_daemon  # noqa: E402

binary, rate = sys.argv[1], int(sys.argv[2])
seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 5.0
token = "bench-token-0123456789abcdef"

tmp, log, config = recwatch_daemon.scratch("recwatch-live-", token, "bench")
daemon, port = recwatch_daemon.start(binary, config, os.path.join(tmp, "state"), token, 20)

def get(path):
    status, _, body = recwatch_daemon.get(port, token, path, timeout=5)
    return status, body

ts = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime())
def line(ip, path, status=200):
    return f'{ip} - - [{ts}] "GET {path} HTTP/1.1" {status} 4096 "-" "bench/1"\n'
background = [line(f"10.{i % 250}.{i // 250 % 250}.1", f"/static/app.{i}.js") for i in range(1000)]

probes = []          # (ip, t_appended)
probe_lock = threading.Condition()
latencies = []
done = threading.Event()

def poller():
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    i = 0
    while not (done.is_set() and i >= len(probes)):
        with probe_lock:
            while i >= len(probes) and not done.is_set():
                probe_lock.wait(0.1)
            if i >= len(probes): break
            ip, t0 = probes[i]
        while True:
            conn.request("GET", f"/api/v1/alerts?client={ip}", headers={"Authorization": "Bearer " + token})
            r = conn.getresponse(); body = r.read()
            if r.status == 200 and json.loads(body):
                latencies.append(time.perf_counter() - t0); break
            if time.perf_counter() - t0 > 10:
                latencies.append(float("inf")); break
            time.sleep(0.001)
        i += 1

t = threading.Thread(target=poller); t.start()
f = open(log, "a", buffering=1 << 20)
per_ms = rate / 1000.0
start = time.perf_counter(); written = 0; n = 0; next_probe = start
while time.perf_counter() - start < seconds:
    now = time.perf_counter()
    due = int((now - start) * rate) - written
    if due > 0:
        f.write("".join(background[(written + k) % 1000] for k in range(due)))
        written += due
    if now >= next_probe:
        n += 1
        ip = f"198.{18 + n // 65000}.{n // 250 % 250}.{n % 250 + 1}"
        f.write(line(ip, f"/recordings/2019/02/18/call-{n}-part1.wav"))
        f.flush()
        with probe_lock:
            probes.append((ip, time.perf_counter())); probe_lock.notify()
        next_probe += 0.05
    else:
        f.flush()
    time.sleep(0.0005)
f.close()
done.set()
with probe_lock: probe_lock.notify()
t.join()

_, metrics = get("/metrics")
hwm = [l for l in open(f"/proc/{daemon.pid}/status") if l.startswith("VmHWM")][0].split()[1]
daemon.send_signal(signal.SIGTERM); daemon.wait(timeout=20)

def hist_quantile(text, name, q):
    buckets = []
    for l in text.decode().splitlines():
        if l.startswith(name + "_bucket"):
            le = l.split('le="')[1].split('"')[0]; v = float(l.rsplit(" ", 1)[1])
            buckets.append((float("inf") if le == "+Inf" else float(le), v))
    total = buckets[-1][1] if buckets else 0
    for le, v in buckets:
        if total and v >= q * total: return le
    return float("nan")

read = next((float(l.rsplit(" ", 1)[1]) for l in metrics.decode().splitlines()
             if l.startswith("recwatch_lines_read_total")), 0)
lat = sorted(latencies)
pct = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] * 1000
print(f"live {rate:>6} lines/s for {seconds:.0f} s ({int(read)} lines read): {len(lat)} probes, append→alert readable "
      f"p50 {pct(0.5):.1f} ms  p99 {pct(0.99):.1f} ms  max {lat[-1]*1000:.1f} ms; "
      f"daemon read→durable p50 ≤ {hist_quantile(metrics, 'recwatch_detection_latency_seconds', 0.5)*1000:g} ms "
      f"p99 ≤ {hist_quantile(metrics, 'recwatch_detection_latency_seconds', 0.99)*1000:g} ms; peak RSS {int(hwm)/1024:.1f} MiB")
