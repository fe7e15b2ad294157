#!/usr/bin/env python3
"""Mass fetch against the live daemon (issue 13): N distinct unknown clients each fetch one
recording (a scraped exposure). A local webhook receiver (127.0.0.1, started here) counts what
the daemon pushes. Prints peak RSS (VmHWM) and RSS at every 100 k clients read, lines/s, the
/metrics scrape time at the end, what the receiver got, and the alerts and ledger clients in
the store. Default config (default rules, default engine), only loopback addresses.
Usage: bench-mass.py RECWATCH_BINARY N [STEP]"""
import hashlib, hmac, http.client, http.server, json, os, subprocess, sys, threading, time
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import daemon as recwatch_daemon  # noqa: E402

binary, total = sys.argv[1], int(sys.argv[2])
step = int(sys.argv[3]) if len(sys.argv) > 3 else 100_000
token = "bench-token-0123456789abcdef"
secret = b"bench-webhook-secret-0123456789"

# --- the receiver: counts POSTs and the alerts in them, checks the signature
got = {"posts": 0, "alerts": 0, "ids": set(), "bad_signature": 0, "rollups": 0}
lock = threading.Lock()

class Hook(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        want = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
        with lock:
            got["posts"] += 1
            if self.headers.get("X-Recwatch-Signature") != want:
                got["bad_signature"] += 1
            try:
                doc = json.loads(body)
            except ValueError:
                doc = {}
            # a webhook body carries one alert; an Alertmanager one a list
            alerts = [doc.get("alert", doc)] if isinstance(doc, dict) else doc
            for a in alerts if isinstance(alerts, list) else []:
                got["alerts"] += 1
                if isinstance(a, dict):
                    got["ids"].add(a.get("id") or json.dumps(a.get("labels", a), sort_keys=True)[:200])
                    if str(a.get("rule", "")).endswith("-rollup"):
                        got["rollups"] += 1
        self.send_response(200); self.send_header("Content-Length", "0"); self.end_headers()
    def log_message(self, *a): pass

hook = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
threading.Thread(target=hook.serve_forever, daemon=True).start()

tmp, log, config = recwatch_daemon.scratch("recwatch-mass-", token, "web", f"""
[[receiver]]
name = "hook"
kind = "webhook"
url = "http://127.0.0.1:{hook.server_address[1]}/hook"
secret_file = "hook.key"
""" + os.environ.get("BENCH_EXTRA_TOML", ""))
open(os.path.join(tmp, "hook.key"), "wb").write(secret)
daemon, port = recwatch_daemon.start(binary, config, os.path.join(tmp, "state"), token, 60)

def get(path):
    return recwatch_daemon.get(port, token, path, timeout=120)

def metric(text, name):
    total = None
    for l in text.splitlines():
        if l.startswith(name + " ") or l.startswith(name + "{"):
            total = (total or 0.0) + float(l.rsplit(" ", 1)[1])
    return total

def status(field):
    for l in open(f"/proc/{daemon.pid}/status"):
        if l.startswith(field + ":"):
            return int(l.split()[1]) / 1024.0  # MiB
    return 0.0

ts = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime())
def client(i):
    # distinct, outside 10/8, never a real host: 2001:db8::/32 (documentation) addresses
    return f"2001:db8:{i >> 32 & 0xffff:x}:{i >> 16 & 0xffff:x}::{i & 0xffff:x}"

print(f"mass fetch: {total} distinct unknown clients, one recording each; default config; "
      f"RSS at start {status('VmRSS'):.1f} MiB", flush=True)
t0 = time.perf_counter()
written = 0
rows = []
with open(log, "a") as f:
    while written < total:
        n = min(step, total - written)
        chunk = "".join(
            f'{client(i)} - - [{ts}] "GET /recordings/2026/11/29/call-{i}.wav HTTP/1.1" 200 65536 "-" "scraper/1"\n'
            for i in range(written, written + n))
        f.write(chunk); f.flush()
        written += n
        # wait until the daemon has read and made durable everything written so far
        while True:
            s, _, body = get("/metrics")
            text = body.decode()
            lines = metric(text, "recwatch_lines_read_total") or 0
            lag = metric(text, "recwatch_source_lag_bytes")
            if lines >= written and lag == 0: break
            if daemon.poll() is not None: sys.exit(f"daemon exited: {daemon.returncode}")
            time.sleep(0.2)
        dt = time.perf_counter() - t0
        rows.append((written, status("VmRSS"), status("VmHWM"), dt))
        print(f"  {written:>9} clients read  RSS {rows[-1][1]:7.1f} MiB  peak {rows[-1][2]:7.1f} MiB  "
              f"{written / dt:9.0f} lines/s", flush=True)

elapsed = time.perf_counter() - t0
time.sleep(2)  # let the outbox drain a little (receiver counts are reported as seen)
t = time.perf_counter(); s, _, body = get("/metrics"); scrape_ms = (time.perf_counter() - t) * 1000
text = body.decode()
t = time.perf_counter(); s, headers, page = get("/api/v1/alerts?limit=10"); list_ms = (time.perf_counter() - t) * 1000
total_alerts = headers.get("x-total-count") or headers.get("X-Total-Count")
print(f"lines/s over the run: {total / elapsed:.0f} ({elapsed:.1f} s)")
print(f"/metrics scrape at the end: {scrape_ms:.1f} ms; alert list page (limit 10): {list_ms:.1f} ms, "
      f"x-total-count {total_alerts}")
print(f"alerts opened (metric): {metric(text, 'recwatch_alerts_total')}; groups evicted: "
      f"{metric(text, 'recwatch_clients_evicted_total')}; tracked: {metric(text, 'recwatch_clients_tracked')}")
with lock:
    print(f"receiver got: {got['posts']} POSTs, {got['alerts']} alerts, {len(got['ids'])} distinct, "
          f"roll-ups {got['rollups']}, bad signatures {got['bad_signature']}")
print(f"peak RSS (VmHWM): {status('VmHWM'):.1f} MiB")
daemon.terminate(); daemon.wait(timeout=120)
# clients in the store: the evidence ledger, read from the stopped daemon's store
out = subprocess.run([binary, "alerts", "list", "--json", "--state-dir", os.path.join(tmp, "state")],
                     capture_output=True)
try:
    stored = json.loads(out.stdout)
    r1 = {a["client"] for a in stored if a["rule"] == "unknown-client-fetch"}
    print(f"store: {len(stored)} alerts, {len(r1)} clients with an R1 alert")
except ValueError:
    print(f"store: alerts list failed: {out.stderr[:200]!r}")
print("rows (clients, RSS MiB, peak MiB, seconds):", json.dumps(rows))
