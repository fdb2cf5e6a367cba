#!/usr/bin/python3
"""Generates the benchmark input: N write_files entries, once as a bosun config repo and once as
the same entries for cloud-init's write_files module (paths prefixed with the peer's root)."""
import json, os, sys

n, out = int(sys.argv[1]), sys.argv[2]
os.makedirs(f"{out}/repo/nodes", exist_ok=True)
entries = []
for i in range(n):
    body = f"# file {i}\n" + ("key_%d=value_%d\n" % (i, i)) * 40
    entries.append({"path": f"/bench/d{i % 20:02d}/f{i:04d}.conf", "content": body,
                    "permissions": "0644" if i % 3 else "0600"})
with open(f"{out}/repo/config.yaml", "w") as f:
    f.write("write_files:\n")
    for e in entries:
        f.write(f"- path: {e['path']}\n  permissions: '{e['permissions']}'\n  content: {json.dumps(e['content'])}\n")
with open(f"{out}/repo/nodes/bench.yaml", "w") as f:
    f.write("hostname: bench\n")
with open(f"{out}/cloud-init.json", "w") as f:
    json.dump(entries, f)
