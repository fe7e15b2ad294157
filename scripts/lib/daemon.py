"""Starts `recwatch run` for the bench scripts and talks to its HTTP API. Owns the port-0
handshake (the daemon writes the address it bound to <state>/http.addr) and the token-bearing
GET; never builds configs or measures anything."""
import http.client, os, subprocess, sys, time


def start(binary, config, state_dir, wait_secs):
    """The daemon on `config` and the port it reported, once it reported one."""
    daemon = subprocess.Popen([binary, "run", "--config", config], env=dict(os.environ, RECWATCH_LOG="warn"))
    addr_file = os.path.join(state_dir, "http.addr")
    deadline = time.time() + wait_secs
    while not os.path.exists(addr_file):
        if daemon.poll() is not None: sys.exit(f"daemon exited: {daemon.returncode}")
        if time.time() > deadline: sys.exit("daemon did not report its address")
        time.sleep(0.05)
    return daemon, int(open(addr_file).read().strip().rsplit(":", 1)[1])


def get(port, token, path, timeout):
    """GET `path` with the API token: status, headers, body."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    c.request("GET", path, headers={"Authorization": "Bearer " + token})
    r = c.getresponse(); body = r.read(); c.close()
    return r.status, dict(r.getheaders()), body
