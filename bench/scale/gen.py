#!/usr/bin/env python3
"""Generates a fleet repo with N node files for bench/scale/run.sh.

    gen.py N DIR EXAMPLE_REPO [EXTRA_GROUP_FILE...]

Writes DIR/repo (a directory repo: example-repo's config.yaml and groups, the extra group
files, nodes/edge-NNNNN.yaml for 0 <= i < N) and prints a `git fast-import` stream of the same
files as one commit on refs/heads/main to stdout. Node i's file depends only on i, so a node has
the same file at every N (the same layout as tests/integration/support/fleet.rs).
"""
import os
import sys


def node_file(i):
    name = "edge-%05d" % i
    return (
        "hostname: %s\nk3os:\n  labels:\n    site: store-%05d\nwrite_files:\n"
        "- path: /etc/edge/id\n  content: \"%s\\n\"\n" % (name, i, name)
    ).encode()


def main():
    n, out, example = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    files = {"config.yaml": open(os.path.join(example, "config.yaml"), "rb").read()}
    for g in sorted(os.listdir(os.path.join(example, "groups"))):
        files["groups/" + g] = open(os.path.join(example, "groups", g), "rb").read()
    for extra in sys.argv[4:]:
        files["groups/" + os.path.basename(extra)] = open(extra, "rb").read()
    for i in range(n):
        files["nodes/edge-%05d.yaml" % i] = node_file(i)
    repo = os.path.join(out, "repo")
    for d in ("groups", "nodes"):
        os.makedirs(os.path.join(repo, d), exist_ok=True)
    stream = sys.stdout.buffer
    paths = sorted(files)
    for mark, path in enumerate(paths, 1):
        data = files[path]
        with open(os.path.join(repo, path), "wb") as f:
            f.write(data)
        stream.write(b"blob\nmark :%d\ndata %d\n" % (mark, len(data)))
        stream.write(data + b"\n")
    stream.write(
        b"commit refs/heads/main\ncommitter bench <bench@example.invalid> 1700000000 +0000\n"
        b"data 6\nfleet\n"
    )
    for mark, path in enumerate(paths, 1):
        stream.write(b"M 100644 :%d %s\n" % (mark, path.encode()))
    stream.write(b"done\n")


if __name__ == "__main__":
    main()
