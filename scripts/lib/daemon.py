"""Starts `recwatch run` for the bench scripts and talks to its HTTP API. Owns the scratch
directory and base config they share, the port-0 handshake (the daemon writes the address it
bound to <state>/http.addr) and the token-bearing GET; never measures anything."""
import atexit, ctypes, http.client, os, shutil, signal, subprocess, sys, tempfile, time

PR_SET_PDEATHSIG = 1


def _die_with_parent():
    """In the child before exec: SIGTERM when the bench script dies, also when it is killed
    (a `timeout` around a bench left its daemon running)."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def scratch(prefix, token, source_name, extra_toml=""):
    """A scratch directory with an empty access.log, the API token file and rw.toml: the store
    in state/, 10.0.0.0/8 internal, the API on 127.0.0.1 port 0, one file source on the log,
    then `extra_toml`. Returns (directory, log path, config path); the directory is removed
    when the script exits."""
    tmp = tempfile.mkdtemp(prefix=prefix)
    # Removed when the script exits: a mass bench's store is gigabytes (1 M clients: 3.5 GB);
    # a few left behind kept the kernel reclaiming memory and skewed later timings.
    atexit.register(shutil.rmtree, tmp, True)
    log = os.path.join(tmp, "access.log")
    open(log, "w").close()
    open(os.path.join(tmp, "token"), "w").write(token)
    config = os.path.join(tmp, "rw.toml")
    open(config, "w").write(f"""
[store]
path = "state"
[networks]
internal = ["10.0.0.0/8"]
[http]
listen = "127.0.0.1:0"
token_file = "token"
[[source]]
name = "{source_name}"
path = "{log}"
""" + extra_toml)
    return tmp, log, config


def start(binary, config, state_dir, token, wait_secs):
    """The daemon on `config` and the port it reported, once /readyz answers 200."""
    daemon = subprocess.Popen([binary, "run", "--config", config], env=dict(os.environ, RECWATCH_LOG="warn"),
                              preexec_fn=_die_with_parent)

    def give_up(why):
        daemon.kill()
        sys.exit(why)

    addr_file = os.path.join(state_dir, "http.addr")
    deadline = time.time() + wait_secs
    while not os.path.exists(addr_file):
        if daemon.poll() is not None: sys.exit(f"daemon exited: {daemon.returncode}")
        if time.time() > deadline: give_up("daemon did not report its address")
        time.sleep(0.05)
    port = int(open(addr_file).read().strip().rsplit(":", 1)[1])
    while True:
        try:
            if get(port, token, "/readyz", timeout=5)[0] == 200: return daemon, port
        except OSError: pass
        if time.time() > deadline: give_up("daemon did not become ready")
        time.sleep(0.05)


def get(port, token, path, timeout):
    """GET `path` with the API token: status, headers, body."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    c.request("GET", path, headers={"Authorization": "Bearer " + token})
    r = c.getresponse(); body = r.read(); c.close()
    return r.status, dict(r.getheaders()), body
