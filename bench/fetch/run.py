#!/usr/bin/env python3
"""Peak anonymous memory of `bosun daemon` while it fetches a commit with one big blob.

For each blob size and transport (git:// through a local `git daemon` on 127.0.0.1, and
file://) the script commits `big.bin` to a fresh repo, starts the daemon on it with signature
verification on (the commits are unsigned, so every one is refused after its fetch, as in issue
12), samples /proc/<pid>/status (RssAnon) every millisecond until the daemon has dealt with the
commit (a refusal in its status), then commits a one-byte change of the blob (the next fetch is
a thin pack: the new blob arrives as a delta that libgit2 resolves in memory) and measures
again. Two kinds of blob: random bytes (incompressible) and zeros (compresses ~1000:1), each
followed by a one-byte change of it (`+1`: a delta). Prints one line per case, in MiB above the
idle daemon:

    BOSUN=target/release/bosun bench/fetch/run.py            # sizes 16 64 128 200 MiB
    BOSUN=... SIZES="32 64" TRANSPORTS="git" bench/fetch/run.py

Needs git and python3; everything listens on 127.0.0.1.
"""
import json, os, random, shutil, socket, subprocess, sys, tempfile, time

BOSUN = os.environ.get("BOSUN", "target/debug/bosun")
SIZES = [int(s) for s in os.environ.get("SIZES", "16 64 128 200").split()]
TRANSPORTS = os.environ.get("TRANSPORTS", "git file").split()
KINDS = os.environ.get("KINDS", "random zeros").split()
ENV = dict(os.environ, GIT_CONFIG_GLOBAL="/dev/null", GIT_CONFIG_NOSYSTEM="1",
           GIT_AUTHOR_NAME="bench", GIT_AUTHOR_EMAIL="bench@example.invalid",
           GIT_COMMITTER_NAME="bench", GIT_COMMITTER_EMAIL="bench@example.invalid")


def git(repo, *args):
    subprocess.run(["git", "-C", repo, *args], check=True, env=ENV, capture_output=True)


def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p


def anon_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    return 0


def refusals(state):
    try:
        with open(os.path.join(state, "status.json")) as f:
            s = json.load(f)
        return s.get("refused_total", 0), s
    except (OSError, ValueError):
        return 0, {}


def wait_handled(pid, state, before, timeout=600):
    """Samples RssAnon until the status shows one more refusal or a new error; returns peak KiB."""
    peak, t0 = 0, time.time()
    last_err = refusals(state)[1].get("last_error")
    while time.time() - t0 < timeout:
        peak = max(peak, anon_kib(pid))
        n, s = refusals(state)
        if n > before or (s.get("last_error") and s.get("last_error") != last_err):
            return peak, s
        time.sleep(0.001)
    raise SystemExit("the daemon did not handle the commit in time")


def case(work, transport, size_mib, kind):
    repo = os.path.join(work, "srv", "fleet")
    shutil.rmtree(os.path.join(work, "srv"), ignore_errors=True)
    shutil.rmtree(os.path.join(work, "state"), ignore_errors=True)
    os.makedirs(repo)
    git(repo, "init", "-q", "-b", "main")
    with open(os.path.join(repo, "config.yaml"), "w") as f:
        f.write("hostname: bench\n")
    git(repo, "add", "-A"); git(repo, "commit", "-q", "-m", "small")
    daemon = None
    if transport == "git":
        port = free_port()
        daemon = subprocess.Popen([os.path.join(subprocess.check_output(["git", "--exec-path"], text=True).strip(), "git-daemon"),
                                   "--listen=127.0.0.1", f"--port={port}", "--export-all", "--reuseaddr",
                                   f"--base-path={work}/srv"], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), 0.1).close(); break
            except OSError:
                time.sleep(0.05)
        url = f"git://127.0.0.1:{port}/fleet"
    else:
        url = f"file://{repo}"
    signers = os.path.join(work, "allowed_signers")
    key = os.path.join(work, "ops")
    if not os.path.exists(key):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key], check=True)
    with open(key + ".pub") as f:
        with open(signers, "w") as out:
            out.write("ops@example.invalid " + f.read())
    agent = os.path.join(work, "agent.yaml")
    extra = os.environ.get("AGENT_SOURCE_EXTRA", "")
    with open(agent, "w") as f:
        f.write(f"source:\n  url: {url}\n  ref: main\n{extra}interval: 1s\njitter_percent: 0\nnode_name: bench\n"
                f"root: {work}/root\nstate_dir: {work}/state\n"
                f"verification:\n  mode: head\n  allowed_signers: {signers}\n")
    os.makedirs(os.path.join(work, "root"), exist_ok=True)
    env = {k: v for k, v in ENV.items() if k not in ("NOTIFY_SOCKET", "JOURNAL_STREAM")}
    d = subprocess.Popen([BOSUN, "daemon", "--config", agent], env=env,
                         stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "daemon.log"), "w"))
    try:
        # The daemon refuses the small first commit; its memory after that is the baseline.
        _, status = wait_handled(d.pid, os.path.join(work, "state"), 0)
        out = []
        data = bytearray(os.urandom(size_mib << 20)) if kind == "random" else bytearray(size_mib << 20)
        for step in (kind, kind + "+1"):
            if step.endswith("+1"):
                data[len(data) // 2] ^= 0xff
            with open(os.path.join(repo, "big.bin"), "wb") as f:
                f.write(data)
            git(repo, "add", "-A"); git(repo, "commit", "-q", "-m", step)
            time.sleep(0.1)
            base = anon_kib(d.pid)
            peak, status = wait_handled(d.pid, os.path.join(work, "state"), status.get("refused_total", 0))
            out.append((step, peak - base, status.get("last_refusal") or status.get("last_error")))
        return base, out
    finally:
        d.terminate(); d.wait()
        if daemon:
            daemon.terminate(); daemon.wait()


def main():
    work = tempfile.mkdtemp(prefix="bosun-fetch-bench-")
    try:
        print(f"bosun: {BOSUN}")
        print("transport  blob MiB  kind      peak anon above idle (MiB)  outcome")
        for transport in TRANSPORTS:
            for size in SIZES:
                for kind in KINDS:
                    base, rows = case(work, transport, size, kind)
                    for k, delta_kib, outcome in rows:
                        print(f"{transport:9}  {size:8}  {k:8}  {delta_kib / 1024:26.1f}  {str(outcome)[:100]}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
