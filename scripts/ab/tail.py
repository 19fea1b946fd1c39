#!/usr/bin/env python3
# Measurement helper for share/doc/performance.md (issue 18): prints timings, asserts nothing about them.
# Interleaved: time from pytest's exit (the launcher's pid, which is pytest after exec) to the
# end of the launcher's output (stdout and stderr both at EOF). usage: CFG NODES PROJECT ROUNDS NAME=BIN...
import os, statistics, subprocess, sys, threading, time
cfg, nodes, proj, rounds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
variants = dict(a.split("=", 1) for a in sys.argv[5:])
def run(n):
    e = dict(os.environ); e.pop("PYTHONPATH", None)
    e["VIRTUAL_ENV"] = os.path.join(proj, ".venv")
    e["PYTEST_CLOUD_RUNTIME_DIR"] = f"/tmp/pc-ab-rt-{os.getuid()}"
    a = [variants[n], "pytest", "--cloud-nodes", nodes, "--cloud-ssh-config", cfg, "--cloud-max-processes", "2",
         "--cloud-chdir", f"tail_{n}", "-q", "-p", "no:cacheprovider"]
    t0 = time.monotonic()
    p = subprocess.Popen(a, cwd=proj, env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    ends = {}
    def drain(name, f):
        while f.read(65536):
            pass
        ends[name] = time.monotonic()
    ts = [threading.Thread(target=drain, args=(k, f)) for k, f in (("out", p.stdout), ("err", p.stderr))]
    for t in ts: t.start()
    rc = p.wait(); pytest_end = time.monotonic()
    for t in ts: t.join()
    assert rc == 0, rc
    return max(ends.values()) - pytest_end, max(ends.values()) - t0
for n in variants:
    for _ in range(2): run(n)
tails = {n: [] for n in variants}; walls = {n: [] for n in variants}
for r in range(rounds):
    for n in (list(variants) if r % 2 == 0 else list(variants)[::-1]):
        tail, wall = run(n); tails[n].append(tail); walls[n].append(wall)
        print(f"round {r+1} {n}: tail {tail*1000:.0f} ms wall {wall:.3f} s load={open('/proc/loadavg').read().split()[0]}", flush=True)
for n in variants:
    print(f"{n}: tail median {statistics.median(tails[n])*1000:.0f} ms [{min(tails[n])*1000:.0f}-{max(tails[n])*1000:.0f}], wall median {statistics.median(walls[n]):.3f} s")
