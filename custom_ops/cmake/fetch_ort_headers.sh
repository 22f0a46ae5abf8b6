#!/usr/bin/env bash
# Usage: fetch_ort_headers.sh DEST
# Downloads Debian trixie's libonnxruntime-dev with apt-get, using a private sources list, package lists and
# cache in a temporary directory (the system's apt state is not touched), and copies its onnxruntime headers
# to DEST. Needs apt-get, dpkg and network access to deb.debian.org.
set -euo pipefail

dest=${1:?usage: fetch_ort_headers.sh DEST}
suite=${INQ_ORT_DEBIAN_SUITE:-trixie}
mirror=${INQ_ORT_DEBIAN_MIRROR:-http://deb.debian.org/debian}
keyring=/usr/share/keyrings/debian-archive-keyring.gpg

for tool in apt-get dpkg; do
  command -v "$tool" >/dev/null || { echo "fetch_ort_headers: '$tool' not found" >&2; exit 2; }
done
[ -r "$keyring" ] || { echo "fetch_ort_headers: Debian archive keyring $keyring missing" >&2; exit 2; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/lists/partial" "$tmp/cache/archives/partial"
echo "deb [signed-by=$keyring] $mirror $suite main" > "$tmp/sources.list"
opts=(-o "Dir::Etc::sourcelist=$tmp/sources.list" -o "Dir::Etc::sourceparts=-" -o "Dir::State::Lists=$tmp/lists"
      -o "Dir::Cache=$tmp/cache" -o "APT::Get::List-Cleanup=0" -o "Debug::NoLocking=1")

apt-get "${opts[@]}" -qq update >&2
(cd "$tmp" && apt-get "${opts[@]}" -qq download libonnxruntime-dev >&2)
deb=$(ls "$tmp"/libonnxruntime-dev_*.deb)
dpkg -x "$deb" "$tmp/x"
src="$tmp/x/usr/include/onnxruntime"
[ -f "$src/onnxruntime_c_api.h" ] || { echo "fetch_ort_headers: onnxruntime_c_api.h not in $deb" >&2; exit 3; }

rm -rf "$dest.partial"  # never build on a leftover from an interrupted run
mkdir -p "$dest.partial"
cp -R "$src/." "$dest.partial/"
rm -rf "$dest"
mv "$dest.partial" "$dest"
echo "fetch_ort_headers: $(basename "$deb") -> $dest" >&2
