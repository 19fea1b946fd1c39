#!/usr/bin/env python3
# Measurement helper for share/doc/performance.md (issue 18): prints timings, asserts nothing about them.
"""Interleaved A/B of a no-change `pytest-cloud sync` on the nodes of a local cluster.
usage: ab_sync.py SSH_CONFIG 'node1 node2 ..' PROJECT ROUNDS NAME=BINARY..."""
import json, os, statistics, subprocess, sys, time
cfg, nodes, proj, rounds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
variants = dict(a.split("=", 1) for a in sys.argv[5:])
env = dict(os.environ); env.pop("VIRTUAL_ENV", None)
def run(argv, stdin=b""):
    t = time.monotonic()
    p = subprocess.run(argv, input=stdin, capture_output=True, env=env, cwd=proj)
    return p, time.monotonic() - t
plans = {}
for name, b in variants.items():
    inv, _ = run([b, "probe", "-q", "--ssh-config", cfg, "--nodes", nodes])
    plan, _ = run([b, "plan", "-q", "--chdir", f"pc_ab_{name}", "--source", proj], inv.stdout)
    plans[name] = plan.stdout
    for _ in range(2):  # a first sync, then one that settles the bytecode handed back
        s, _ = run([b, "sync", "-q", "--rsync-bandwidth-limit", "0"], plan.stdout)
        assert s.returncode == 0, s.stderr.decode()
        run([b, "release"], s.stdout)
res = {n: [] for n in variants}
names = list(variants)
for r in range(rounds):
    order = names if r % 2 == 0 else names[::-1]
    for n in order:
        s, secs = run([variants[n], "sync", "-q", "--rsync-bandwidth-limit", "0"], plans[n])
        assert s.returncode == 0, s.stderr.decode()
        doc = json.loads(s.stdout)
        tr = sorted({x.get("transfer", "-") for x in doc["nodes"]})
        res[n].append(secs)
        print(f"round {r+1} {n}: {secs:.3f} s transfer={tr} bytes={sum(x['bytes_sent'] for x in doc['nodes'])} load={open('/proc/loadavg').read().split()[0]}", flush=True)
        run([variants[n], "release"], s.stdout)
for n, v in res.items():
    print(f"{n}: median {statistics.median(v):.3f} s [{min(v):.3f}-{max(v):.3f}] over {len(v)}")
