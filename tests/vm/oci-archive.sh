#!/usr/bin/env bash
# Packs directories as the layers of an OCI image archive (the `oci-archive` format that
# `podman save --format oci-archive`, `skopeo copy … oci-archive:` and `docker save` (Docker 25
# and later) write), without Docker:
#
#   tests/vm/oci-archive.sh OUT.tar LAYER_DIR [LAYER_DIR...]      (bottom layer first)
#
# Each directory becomes one gzip-compressed tar layer: entries sorted, owned by root, mtimes
# set to SOURCE_DATE_EPOCH (default 0), so the same directories give the same archive. The
# image config names linux/amd64. Used by tests/vm/run.sh and the README's no-Docker path.
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 OUT.tar LAYER_DIR [LAYER_DIR...]" >&2; exit 2; }
out="$(realpath -m "$1")"; shift
epoch="${SOURCE_DATE_EPOCH:-0}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/blobs/sha256"

# Stores stdin as a blob; prints "DIGEST SIZE".
blob() {
  cat >"$work/blob"
  local digest size
  digest="$(sha256sum "$work/blob" | cut -d' ' -f1)"
  size="$(stat -c %s "$work/blob")"
  mv "$work/blob" "$work/blobs/sha256/$digest"
  echo "$digest $size"
}

diff_ids="" layers=""
for dir in "$@"; do
  tar --sort=name --mtime="@$epoch" --owner=0 --group=0 --numeric-owner --format=pax \
    --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
    -C "$dir" -cf "$work/layer.tar" .
  diff_id="$(sha256sum "$work/layer.tar" | cut -d' ' -f1)"
  read -r digest size < <(gzip -n -1 <"$work/layer.tar" | blob)
  rm -f "$work/layer.tar"
  diff_ids="${diff_ids:+$diff_ids,}\"sha256:$diff_id\""
  layers="${layers:+$layers,}{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"sha256:$digest\",\"size\":$size}"
done

read -r cdigest csize < <(printf '{"architecture":"amd64","os":"linux","config":{},"rootfs":{"type":"layers","diff_ids":[%s]}}' "$diff_ids" | blob)
read -r mdigest msize < <(printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[%s]}' "$cdigest" "$csize" "$layers" | blob)
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"platform":{"architecture":"amd64","os":"linux"}}]}' "$mdigest" "$msize" >"$work/index.json"
printf '{"imageLayoutVersion":"1.0.0"}' >"$work/oci-layout"
tar --sort=name --mtime="@$epoch" --owner=0 --group=0 --numeric-owner -C "$work" -cf "$out.tmp" oci-layout index.json blobs
mv "$out.tmp" "$out"
