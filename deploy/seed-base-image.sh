#!/usr/bin/env bash
# Seeds the Dockerfile's base image from Debian's archive, for machines whose Docker engine has no
# registry to pull from. Builds a minimal bookworm root file system with debootstrap and imports it
# under the very tag the Dockerfile names, so the Dockerfile itself stays the one users with a
# registry build unchanged. Does nothing when the image is already present.
# Usage: seed-base-image.sh [TAG]   (default: the FROM line of deploy/Dockerfile)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
tag=${1:-$(awk '/^FROM /{print $2; exit}' "$here/Dockerfile")}
if docker image inspect "$tag" >/dev/null 2>&1; then exit 0; fi
"$here/install-deps.sh" --docker

# The mirror this machine's apt already uses (deb822 sources or the classic list).
mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
[ -n "$mirror" ] || mirror=$(awk '$1=="deb"{print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
[ -n "$mirror" ] || { echo "seed-base-image.sh: no Debian mirror found in this machine's apt sources" >&2; exit 1; }
suite=$(echo "$tag" | sed -E 's/^[^:]*:([a-z]+).*/\1/')
case "$suite" in bookworm|trixie|bullseye) ;; *) suite=bookworm ;; esac

root=$(mktemp -d /tmp/ember-rootfs.XXXXXX)
trap 'rm -rf "$root"' EXIT
echo "seed-base-image.sh: debootstrap $suite into $root (this takes a few minutes)"
debootstrap --variant=minbase "$suite" "$root" "$mirror" >/tmp/ember-debootstrap.log 2>&1 || {
  echo "seed-base-image.sh: debootstrap failed; see /tmp/ember-debootstrap.log" >&2; exit 1; }
# Slim it the way Debian's -slim images are: no apt lists, no docs.
rm -rf "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/var/cache/apt/*.bin
tar -C "$root" -c . | docker import - "$tag" >/dev/null
echo "seed-base-image.sh: imported $tag"
