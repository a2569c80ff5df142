#!/usr/bin/env bash
# Makes an IDX dataset available where the Datasets target looks for it, verified against published MD5 sums.
#
# Usage: scripts/fetch-datasets.sh [fashion-mnist|mnist]     (default: fashion-mnist; `make datasets` runs this)
#
# Order of attempts:
#   1. files already in /usr/share/datasets/NAME (Debian package) or datasets/NAME (an earlier download): verify, done;
#   2. fashion-mnist only, as root with apt-get: install Debian's dataset-fashion-mnist, verify;
#   3. download the four .gz files from the dataset's public mirror into datasets/NAME, each to a temporary name,
#      renamed into place only when its MD5 matches.
#
# Overrides (for tests and unusual machines): DATASETS_DIR (default <repo>/datasets), DATASETS_SYSTEM_DIR
# (default /usr/share/datasets), DATASETS_MIRROR (base URL replacing the mirror list; file:// works),
# DATASETS_NO_APT=1 (never run apt-get).
set -euo pipefail

DATASET="${1:-fashion-mnist}"
REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SYSTEM_DIR="${DATASETS_SYSTEM_DIR:-/usr/share/datasets}/$DATASET"
LOCAL_DIR="${DATASETS_DIR:-$REPO_DIR/datasets}/$DATASET"
FILES=(train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz)

declare -A PUBLISHED_MD5
declare -A UPSTREAM_GZIP_MTIME
case "$DATASET" in
  fashion-mnist)
    # MD5 sums from the table in the fashion-mnist README (also in torchvision's FashionMNIST.resources).
    PUBLISHED_MD5=(
      [train-images-idx3-ubyte.gz]=8d4fb7e6c68d591d4c3dfef9ec88bf0d
      [train-labels-idx1-ubyte.gz]=25c81989df183df01b3e8a0aad5dffbe
      [t10k-images-idx3-ubyte.gz]=bef4ecab320f06d8554ea6380940ec79
      [t10k-labels-idx1-ubyte.gz]=bb300cfdad3c16e7a12a480ee83cd310
    )
    # Debian's package ships the upstream deflate streams unchanged, but its build (strip-nondeterminism) rewrote
    # each gzip header: original file name dropped, timestamp set to the package date. So the .gz files no longer
    # hash to the published sums. Putting the upstream header back (name + these original timestamps, recovered
    # once by search and confirmed to reproduce all four published MD5s exactly) lets us still check those sums.
    UPSTREAM_GZIP_MTIME=(
      [train-images-idx3-ubyte.gz]=1504176606
      [train-labels-idx1-ubyte.gz]=1504176606
      [t10k-images-idx3-ubyte.gz]=1504176627
      [t10k-labels-idx1-ubyte.gz]=1504176627
    )
    MIRRORS=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/")
    DEBIAN_PACKAGE=dataset-fashion-mnist
    ;;
  mnist)
    # MD5 sums as published with the dataset and used by torchvision's MNIST.resources; no Debian package exists.
    PUBLISHED_MD5=(
      [train-images-idx3-ubyte.gz]=f68b3c2dcbeaaa9fbdd348bbdeb94873
      [train-labels-idx1-ubyte.gz]=d53e105ee54ea40749a09fcbcd1e9432
      [t10k-images-idx3-ubyte.gz]=9fb629c4189551a2d022fa330f9573f3
      [t10k-labels-idx1-ubyte.gz]=ec29112dd5afa0611ce80d1b7f02629c
    )
    # The original site often refuses scripted downloads, so the S3 copy torchvision uses comes first.
    MIRRORS=("https://ossci-datasets.s3.amazonaws.com/mnist/" "http://yann.lecun.com/exdb/mnist/")
    DEBIAN_PACKAGE=""
    ;;
  *)
    echo "fetch-datasets: unknown dataset '$DATASET'; known: fashion-mnist, mnist" >&2
    exit 2
    ;;
esac
if [ -n "${DATASETS_MIRROR:-}" ]; then MIRRORS=("${DATASETS_MIRROR%/}/"); fi

md5_of() {  # md5_of FILE|- : prints the hex digest (GNU md5sum or BSD md5)
  if command -v md5sum >/dev/null 2>&1; then md5sum "$1" | cut -d' ' -f1; else md5 -q "$1"; fi
}

# MD5 of FILE as upstream published it: the file itself, or, for a Debian-repacked gzip (no name in its header),
# the file with the upstream header restored.
upstream_md5() {  # upstream_md5 FILE NAME
  local file="$1" name="$2" flags mtime
  flags="$(od -An -tu1 -j3 -N1 "$file" | tr -d ' ')"
  mtime="${UPSTREAM_GZIP_MTIME[$name]:-}"
  if [ "$flags" = "0" ] && [ -n "$mtime" ]; then
    # gzip header: magic, deflate, FLG=FNAME, MTIME (little-endian), XFL=0, OS=Unix, NAME, NUL; then the rest.
    { printf '\x1f\x8b\x08\x08'
      printf "\\x$(printf %02x $((mtime & 255)))\\x$(printf %02x $((mtime >> 8 & 255)))"
      printf "\\x$(printf %02x $((mtime >> 16 & 255)))\\x$(printf %02x $((mtime >> 24 & 255)))"
      printf '\x00\x03%s\x00' "${name%.gz}"
      tail -c +11 "$file"
    } | md5_of -
  else
    md5_of "$file"
  fi
}

verify() {  # verify FILE NAME : fails loudly naming the file and both sums
  local file="$1" name="$2" actual expected="${PUBLISHED_MD5[$2]}"
  actual="$(upstream_md5 "$file" "$name")"
  if [ "$actual" != "$expected" ]; then
    echo "fetch-datasets: MD5 mismatch for $name ($file): expected $expected (published), got $actual" >&2
    return 1
  fi
}

has_all_files() { local f; for f in "${FILES[@]}"; do [ -f "$1/$f" ] || return 1; done; }

verify_directory() {
  local f
  for f in "${FILES[@]}"; do verify "$1/$f" "$f" || return 1; done
  echo "fetch-datasets: $DATASET is available in $1 (all four files match the published MD5 sums)"
}

# 1. Already there? A bad system copy is an error to fix there; a bad earlier download is fetched again below.
if has_all_files "$SYSTEM_DIR"; then
  echo "fetch-datasets: found the four $DATASET files in $SYSTEM_DIR"
  verify_directory "$SYSTEM_DIR"
  exit 0
fi
if has_all_files "$LOCAL_DIR"; then
  echo "fetch-datasets: found the four $DATASET files in $LOCAL_DIR"
  if verify_directory "$LOCAL_DIR"; then exit 0; fi
  echo "fetch-datasets: replacing the files of $LOCAL_DIR that fail verification" >&2
fi

# 2. Debian package (needs root).
if [ -n "$DEBIAN_PACKAGE" ] && [ -z "${DATASETS_NO_APT:-}" ] && command -v apt-get >/dev/null 2>&1 \
    && [ "$(id -u)" = "0" ]; then
  echo "fetch-datasets: installing Debian package $DEBIAN_PACKAGE"
  export DEBIAN_FRONTEND=noninteractive
  # A fresh machine may have no package lists yet, so a failed install is retried once after an update.
  if apt-get install -y "$DEBIAN_PACKAGE" || { apt-get update && apt-get install -y "$DEBIAN_PACKAGE"; }; then
    if has_all_files "$SYSTEM_DIR"; then
      verify_directory "$SYSTEM_DIR"
      exit 0
    fi
    echo "fetch-datasets: $DEBIAN_PACKAGE installed but $SYSTEM_DIR lacks the four files; downloading instead" >&2
  else
    echo "fetch-datasets: apt-get could not install $DEBIAN_PACKAGE; downloading instead" >&2
  fi
fi

# 3. Download with MD5 verification.
mkdir -p "$LOCAL_DIR"
partial=""
trap '[ -n "$partial" ] && rm -f "$partial"' EXIT

download() {  # download URL OUTPUT
  if command -v curl >/dev/null 2>&1; then
    curl -fsSL --retry 3 --connect-timeout 20 -o "$2" "$1"
  elif command -v wget >/dev/null 2>&1; then
    wget -q --tries=3 --timeout=20 -O "$2" "$1"
  else
    echo "fetch-datasets: need curl or wget to download $1" >&2
    return 1
  fi
}

for name in "${FILES[@]}"; do
  target="$LOCAL_DIR/$name"
  if [ -f "$target" ] && verify "$target" "$name" 2>/dev/null; then
    echo "fetch-datasets: $target already present and verified"
    continue
  fi
  partial="$LOCAL_DIR/.$name.part.$$"
  fetched=""
  for mirror in "${MIRRORS[@]}"; do
    echo "fetch-datasets: downloading $mirror$name"
    if download "$mirror$name" "$partial"; then fetched=yes; break; fi
    echo "fetch-datasets: download from $mirror failed" >&2
  done
  if [ -z "$fetched" ]; then
    echo "fetch-datasets: could not download $name from: ${MIRRORS[*]}" >&2
    exit 1
  fi
  if ! verify "$partial" "$name"; then
    echo "fetch-datasets: deleted the bad download of $name" >&2
    exit 1
  fi
  mv -f "$partial" "$target"
  partial=""
done
echo "fetch-datasets: $DATASET downloaded to $LOCAL_DIR (all four files match the published MD5 sums)"
