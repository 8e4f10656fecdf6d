#!/usr/bin/env bash
# A local stand-in for SAM's `provided.al2023` base image, for machines whose Docker
# engine cannot pull (no registry reachable). Built from Debian's packages: Debian 12
# (bookworm) `debootstrap --variant=minbase` plus ca-certificates, imported under the
# exact name the pinned SAM CLI looks for with --skip-pull-image:
#   public.ecr.aws/lambda/provided:al2023-<x86_64|arm64>
# SAM builds its invoke image FROM it, adding its own Runtime Interface Emulator
# (`samcli/local/rapid/aws-lambda-rie-*`) as /var/rapid/aws-lambda-rie, and mounts the
# function's `sam build` output at /var/task; the Rust bootstrap needs only glibc
# (Debian 12: 2.36; Amazon Linux 2023: 2.34; our binaries ask for at most 2.30).
#
# Cached: does nothing when the image exists, whether it is this stand-in built by this
# same recipe or the real image (pulled by SAM where a registry is reachable). A stand-in
# from an older recipe is rebuilt, and SAM's invoke image built on it is removed.
# Takes about a minute (debootstrap downloads ~45 MB of .deb files); the image is ~90 MB.
#
# Usage: local/base-image.sh            (DEBIAN_MIRROR overrides http://deb.debian.org/debian)
set -euo pipefail

case "$(uname -m)" in
  x86_64) arch=x86_64 ;;
  aarch64 | arm64) arch=arm64 ;;
  *) echo "base-image: no Lambda architecture for $(uname -m)" >&2; exit 1 ;;
esac
image="public.ecr.aws/lambda/provided:al2023-$arch"
# SAM's invoke image on top of it (see samcli/local/docker/lambda_image.py).
rapid_image="public.ecr.aws/lambda/provided:al2023-rapid-$arch"
recipe=$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-16)
label=org.foodsave.base-image.recipe

if ! docker info >/dev/null 2>&1; then
  echo "base-image: the Docker engine does not answer (docker info):" >&2
  docker info >&2 || true
  exit 1
fi

if docker image inspect "$image" >/dev/null 2>&1; then
  have=$(docker image inspect --format "{{ index .Config.Labels \"$label\" }}" "$image" 2>/dev/null || true)
  if [ -z "$have" ] || [ "$have" = "<no value>" ]; then
    echo "base-image: $image is present (not built here: the real image); kept" >&2
    exit 0
  fi
  if [ "$have" = "$recipe" ]; then
    exit 0
  fi
  echo "base-image: $image is from an older recipe ($have); rebuilding" >&2
fi

if ! command -v debootstrap >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ]; then
    echo "base-image: debootstrap is missing and installing it needs root: apt-get install debootstrap" >&2
    exit 1
  fi
  echo "base-image: installing debootstrap (apt-get)" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi
if [ "$(id -u)" != 0 ]; then
  echo "base-image: debootstrap needs root (it creates device nodes and chroots)" >&2
  exit 1
fi

started=$(date +%s)
work=$(mktemp -d "${TMPDIR:-/tmp}/foodsave-base-image.XXXXXX")
rootfs="$work/rootfs"
# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
  # debootstrap unmounts what it mounted in the target; make sure before deleting.
  local mounts
  mounts=$(awk -v root="$rootfs/" 'index($2, root) == 1 { print $2 }' /proc/mounts | sort -r) || true
  for m in $mounts; do
    umount -l "$m" 2>/dev/null || true
  done
  rm -rf --one-file-system "$work" || true
}
trap cleanup EXIT INT TERM

echo "base-image: debootstrap --variant=minbase bookworm (Debian 12) for $image" >&2
if ! debootstrap --variant=minbase --include=ca-certificates bookworm "$rootfs" \
  "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" >"$work/debootstrap.log" 2>&1; then
  tail -n 30 "$work/debootstrap.log" >&2
  echo "base-image: debootstrap failed (full log above, last 30 lines)" >&2
  exit 1
fi

# What the provided base has and SAM's Dockerfile and the RIE use: /var/task (the code,
# mounted), /var/runtime, /opt (layers), /tmp. Drop package caches, docs and
# translations, as Debian's own container images do.
mkdir -p "$rootfs/var/task" "$rootfs/var/runtime" "$rootfs/opt"
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin \
  "$rootfs"/var/lib/apt/lists/*.* "$rootfs"/usr/share/doc "$rootfs"/usr/share/man \
  "$rootfs"/usr/share/info "$rootfs"/usr/share/locale
glibc=$(chroot "$rootfs" getconf GNU_LIBC_VERSION | awk '{print $2}')

if docker image inspect "$rapid_image" >/dev/null 2>&1; then
  docker image rm -f "$rapid_image" >/dev/null
fi
tar --numeric-owner -C "$rootfs" -c . | docker import \
  --change "LABEL $label=$recipe" \
  --change "LABEL org.foodsave.base-image.distribution=debian-12-bookworm" \
  --change "LABEL org.foodsave.base-image.glibc=$glibc" \
  --change "ENV LANG=C.UTF-8 TZ=:/etc/localtime PATH=/var/lang/bin:/usr/local/bin:/usr/bin:/bin:/opt/bin LD_LIBRARY_PATH=/var/lang/lib:/lib64:/usr/lib64:/var/runtime:/var/runtime/lib:/var/task:/var/task/lib:/opt/lib LAMBDA_TASK_ROOT=/var/task LAMBDA_RUNTIME_DIR=/var/runtime" \
  --change "WORKDIR /var/task" \
  --message "FoodSave local stand-in for provided.al2023: Debian 12 minbase, glibc $glibc (not Amazon Linux 2023)" \
  - "$image" >/dev/null
size=$(docker image inspect --format '{{.Size}}' "$image")
echo "base-image: built $image (Debian 12, glibc $glibc, $((size / 1048576)) MiB) in $(($(date +%s) - started)) s" >&2
