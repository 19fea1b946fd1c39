#!/usr/bin/env python3
# Measurement helper for share/doc/performance.md (issue 18): prints timings, asserts nothing about them.
"""Interleaved warm launcher runs vs local -n 8. usage: ab_launch.py SSH_CONFIG 'nodes' PROJECT ROUNDS NAME=BIN[:EARLY]..."""
import json, os, re, statistics, subprocess, sys, time
cfg, nodes, proj, rounds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
variants = {}
for a in sys.argv[5:]:
    n, spec = a.split("=", 1)
    b, _, early = spec.partition(":")
    variants[n] = (b, early or "1")
py = os.path.join(proj, ".venv/bin/python")
def env_for(early=None):
    e = dict(os.environ); e.pop("PYTHONPATH", None)
    e["VIRTUAL_ENV"] = os.path.join(proj, ".venv")
    e["PYTEST_CLOUD_RUNTIME_DIR"] = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"pc-ab-rt-{os.getuid()}")
    if early is not None:
        e["PYTEST_CLOUD_EARLY_CONTROLLER"] = early
    return e
def argv(n):
    if n == "local":
        return [py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "8", "--dist", "load"], env_for()
    b, early = variants[n]
    return [b, "pytest", "--cloud-nodes", nodes, "--cloud-ssh-config", cfg, "--cloud-max-processes", "2",
            "--cloud-chdir", f"ab_{n}", "--cloud-timings", "-q", "-p", "no:cacheprovider"], env_for(early)
names = list(variants) + ["local"]
for n in variants:  # untimed warm-up (twice: the second settles bytecode handed back)
    for _ in range(2):
        a, e = argv(n); subprocess.run(a, cwd=proj, env=e, capture_output=True)
res = {n: [] for n in names}; phases = {n: [] for n in variants}
for r in range(rounds):
    order = names if r % 2 == 0 else names[::-1]
    for n in order:
        a, e = argv(n)
        t = time.monotonic(); p = subprocess.run(a, cwd=proj, env=e, capture_output=True, text=True); s = time.monotonic() - t
        assert p.returncode == 0, p.stdout[-500:] + p.stderr[-1500:]
        res[n].append(s)
        m = re.search(r"pytest-cloud: timings (\{.*\})", p.stderr)
        if m: phases[n].append(json.loads(m.group(1)))
        print(f"round {r+1} {n}: {s:.3f} s load={open('/proc/loadavg').read().split()[0]}", flush=True)
loc = statistics.median(res["local"])
for n in names:
    med = statistics.median(res[n])
    line = f"{n}: median {med:.3f} s [{min(res[n]):.3f}-{max(res[n]):.3f}] = {med/loc:.2f}x local"
    if phases.get(n):
        keys = ["probe", "plan", "sync", "controller_start", "worker_start", "tests", "teardown", "total"]
        line += " | " + " ".join(f"{k}={statistics.median([p.get(k, 0) for p in phases[n]]):.0f}" for k in keys)
    print(line)
