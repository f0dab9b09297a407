#!/usr/bin/env bash
# `make reference`: real BVLC Caffe (CPU only, pycaffe) and a bvlc_googlenet.caffemodel, built once into a
# cache outside git, so `make bench` can time the 2015 notebook beside classicdream. A second call is instant.
#
# Source: the PyPI sdist brocolli-caffe 9.0.2, which is official BVLC Caffe at commit 9b89154. Built against
# Debian's packages and Debian's own python3 (pycaffe is a C++ extension of that interpreter): about 10
# minutes on 2 cores, niced, since the machine may be shared. Log: $CAFFE/build.log.
set -euo pipefail

VERSION=9.0.2
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CAFFE=${CLASSICDREAM_CACHE:-$HOME/.cache/classicdream}/caffe
SRC=$CAFFE/brocolli-caffe-$VERSION
BUILD=$CAFFE/build
MODEL=$CAFFE/model
SHARED=${CLASSICDREAM_SHARED:-$ROOT/../shared}
MIRROR=${CLASSICDREAM_MIRROR:-$SHARED/models}
USER_CAFFEMODEL=${CLASSICDREAM_MODELS:-$ROOT/models}/bvlc_googlenet.caffemodel
PY=/usr/bin/python3
JOBS=${JOBS:-2}
DEBS=(libboost-system-dev libboost-thread-dev libboost-filesystem-dev libboost-regex-dev libboost-python-dev
      libprotobuf-dev protobuf-compiler libgoogle-glog-dev libgflags-dev libhdf5-dev libopenblas-dev
      python3-dev python3-numpy python3-scipy python3-pil python3-protobuf python3-skimage cmake g++ make)

die() { echo "make reference: $*" >&2; exit 1; }

install_debs() {
    local missing=()
    for p in "${DEBS[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return
    [ "$(id -u)" -eq 0 ] || die "needs Debian packages; as root: apt-get install ${missing[*]}"
    echo "installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

fetch_source() {
    [ -f "$SRC/CMakeLists.txt" ] && return
    local dl=$CAFFE/download
    python3 -m pip download -q --no-deps --no-binary :all: "brocolli-caffe==$VERSION" -d "$dl" \
        >>"$CAFFE/build.log" 2>&1 || die "could not download brocolli-caffe==$VERSION from PyPI; see $CAFFE/build.log"
    rm -rf "$CAFFE/unpack" && mkdir -p "$CAFFE/unpack"
    tar xzf "$dl/brocolli-caffe-$VERSION.tar.gz" -C "$CAFFE/unpack"
    mv "$CAFFE/unpack/brocolli-caffe-$VERSION" "$SRC" && rmdir "$CAFFE/unpack"
}

# The sdist's CMakeLists assumes Anaconda: point it at /usr, and give the linker names it asks for
# (-lboost_python, -lhdf5, -lhdf5_hl) that resolve to Debian's versioned and hdf5/serial libraries.
build_pycaffe() {
    [ -e "$SRC/python/caffe/_caffe.so" ] && return
    local arch pyver pydot numpy_inc links=$CAFFE/links
    arch=$(gcc -print-multiarch)
    read -r pyver pydot < <($PY -c 'import sys; v = sys.version_info; print(f"{v[0]}{v[1]} {v[0]}.{v[1]}")')
    numpy_inc=$($PY -c 'import numpy; print(numpy.get_include())')
    mkdir -p "$links"
    ln -sf "/usr/lib/$arch/libboost_python$pyver.so" "$links/libboost_python.so"
    ln -sf "/usr/lib/$arch/hdf5/serial/libhdf5.so" "$links/libhdf5.so"
    ln -sf "/usr/lib/$arch/hdf5/serial/libhdf5_hl.so" "$links/libhdf5_hl.so"
    echo "building Caffe in $BUILD (about 10 minutes on 2 cores; log: $CAFFE/build.log)"
    local start=$SECONDS
    {
        nice -n 19 cmake -S "$SRC" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DCPU_ONLY=ON \
            -DANACONDA_HOME=/usr -DPYTHON_VERSION="python$pydot" \
            -DCMAKE_CXX_FLAGS="-I$numpy_inc -I/usr/include/hdf5/serial -I$SRC/src" \
            -DCMAKE_SHARED_LINKER_FLAGS="-L$links"
        nice -n 19 make -C "$BUILD" -j"$JOBS" pycaffe
    } >>"$CAFFE/build.log" 2>&1 || die "the Caffe build failed; see the end of $CAFFE/build.log"
    echo "built Caffe in $(( (SECONDS - start) / 60 )) min $(( (SECONDS - start) % 60 )) s"
}

# The notebook loads bvlc_googlenet.caffemodel: the user's own if there is one, else one written with
# pycaffe from the mirror's exact float32 parameters (the same values).
write_model() {
    [ -s "$MODEL/bvlc_googlenet.caffemodel" ] && return
    [ -f "$MIRROR/deploy.prototxt" ] || die "no deploy.prototxt in $MIRROR (set CLASSICDREAM_SHARED or CLASSICDREAM_MIRROR)"
    mkdir -p "$MODEL"
    install -m 644 "$MIRROR/deploy.prototxt" "$MODEL/"
    if [ -s "$USER_CAFFEMODEL" ]; then
        ln -sf "$USER_CAFFEMODEL" "$MODEL/bvlc_googlenet.caffemodel"
        return
    fi
    [ -f "$MIRROR/bvlc_googlenet_caffe_layout.npz" ] || die "no bvlc_googlenet_caffe_layout.npz in $MIRROR"
    GLOG_minloglevel=2 PYTHONPATH="$SRC/python" $PY - "$MODEL/deploy.prototxt" \
        "$MIRROR/bvlc_googlenet_caffe_layout.npz" "$MODEL/bvlc_googlenet.caffemodel.part" <<'EOF'
import sys, numpy as np, caffe
deploy, npz, out = sys.argv[1:4]
caffe.set_mode_cpu()
net = caffe.Net(deploy, caffe.TEST)
W = np.load(npz)
for name, blobs in net.params.items():
    blobs[0].data[...] = W[name + '.weight'].reshape(blobs[0].data.shape)
    blobs[1].data[...] = W[name + '.bias']
net.save(out)
EOF
    mv "$MODEL/bvlc_googlenet.caffemodel.part" "$MODEL/bvlc_googlenet.caffemodel"
}

if [ -e "$SRC/python/caffe/_caffe.so" ] && [ -s "$MODEL/bvlc_googlenet.caffemodel" ]; then
    echo "Caffe is built: $CAFFE"
    exit 0
fi
mkdir -p "$CAFFE"
install_debs
fetch_source
build_pycaffe
PYTHONPATH="$SRC/python" $PY -c 'import caffe' || die "pycaffe was built but does not import (PYTHONPATH=$SRC/python)"
write_model
echo "Caffe is built: $CAFFE"
