#!/usr/bin/env bash
# Build the libmicrohttpd natter links: Debian 12's version (0.9.75, with Debian's own patch)
# plus the upstream fix natter needs (third_party/libmicrohttpd/README.md says which and why),
# as a static library under PREFIX (default .cache/libmicrohttpd-0.9.75-natter1).
#
# A finished build is kept: a second run with the same sources and patches returns at once.
# Concurrent runs (the normal and the sanitizer build started by one `make -j2`) wait for
# each other on a lock; the result appears under PREFIX in one rename, never half-written.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
SRC=$REPO/third_party/libmicrohttpd
TARBALL=$SRC/libmicrohttpd_0.9.75.orig.tar.xz
SHA256=796e7e217a4802679fcac667a4e98501c53185dcf50ca0583870e84192620131
PREFIX=${1:-$REPO/.cache/libmicrohttpd-0.9.75-natter1}

# What the build is made of: the tarball's digest, the patches, this script.
stamp() {
    sha256sum "$TARBALL" "$SRC"/patches/*.patch "${BASH_SOURCE[0]}" | sha256sum | cut -d' ' -f1
}

mkdir -p "$(dirname "$PREFIX")"
exec 9>"$PREFIX.lock"
flock 9
want=$(stamp)
if [[ -f $PREFIX/.natter-stamp && $(<"$PREFIX/.natter-stamp") == "$want" ]]; then
    touch "$PREFIX/lib/libmicrohttpd.a" # newer than its inputs: make stops asking
    exit 0
fi

if [[ $(sha256sum "$TARBALL" | cut -d' ' -f1) != "$SHA256" ]]; then
    echo "natter: $TARBALL does not have the expected SHA-256" >&2
    exit 1
fi

work=$(mktemp -d "$PREFIX.build.XXXXXX")
trap 'rm -rf -- "$work"' EXIT
echo "natter: building libmicrohttpd 0.9.75 (patched, static) into $PREFIX"
tar -xJf "$TARBALL" -C "$work"
srcdir=$work/libmicrohttpd-0.9.75
for p in "$SRC"/patches/*.patch; do
    patch -s -p1 -d "$srcdir" <"$p"
done
# No HTTPS (natter speaks plain HTTP behind a TLS terminator), no documentation, examples
# or test programs; messages stay on (natter's external logger turns them into JSON lines).
(
    cd "$srcdir"
    ./configure --quiet --prefix="$work/install" --libdir="$work/install/lib" \
        --disable-shared --enable-static --with-pic \
        --disable-https --without-gnutls --disable-doc --disable-examples --disable-curl \
        --disable-nls CFLAGS="-O2 -g" >"$work/configure.log" 2>&1 ||
        {
            tail -n 30 "$work/configure.log" >&2
            exit 1
        }
    make -s -j2 -C src/microhttpd >"$work/make.log" 2>&1 || {
        tail -n 30 "$work/make.log" >&2
        exit 1
    }
    make -s -C src/microhttpd install >>"$work/make.log" 2>&1
    make -s -C src/include install >>"$work/make.log" 2>&1
)
echo "$want" >"$work/install/.natter-stamp"
rm -rf -- "$PREFIX.old"
if [[ -e $PREFIX ]]; then
    mv -- "$PREFIX" "$PREFIX.old"
fi
mv -- "$work/install" "$PREFIX"
rm -rf -- "$PREFIX.old"
