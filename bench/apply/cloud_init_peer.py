#!/usr/bin/python3
"""Runs Debian's cloud-init write_files module on the benchmark input, rooted at ROOT."""
import json, sys, time
t0 = time.perf_counter()
from cloudinit.config import cc_write_files
t1 = time.perf_counter()
entries, root = json.load(open(sys.argv[1])), sys.argv[2]
files = [dict(e, path=root + e["path"]) for e in entries]
cc_write_files.write_files("write_files", files, "root:root")
t2 = time.perf_counter()
print(f"import {t1 - t0:.3f}s write {t2 - t1:.3f}s", file=sys.stderr)
