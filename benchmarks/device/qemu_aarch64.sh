#!/usr/bin/env bash
# Cross-architecture check: run the benchmark job and the golden-vector check on emulated aarch64.
#
#   benchmarks/device/qemu_aarch64.sh [MODELS_DIR] [WORKDIR]
#       MODELS_DIR  an export dir (default data/export) or a bundle dir
#       WORKDIR     where the arm64 root, the wheels and the reports go (default benchmarks/.cache/qemu-aarch64)
#
# Run from the project root with the project's venv active (or PYTHON=.venv/bin/python). Needs
# qemu-user-static and debootstrap (apt-get install qemu-user-static debootstrap), and network access to
# a Debian mirror and to PyPI the first time (~230 MiB of .debs and ~60 MiB of wheels; later runs reuse them).
#
# How: `debootstrap --foreign --arch arm64` downloads a Debian 12 (bookworm) arm64 root; its .debs are
# extracted with dpkg-deb (no second stage, no chroot, no binfmt_misc needed) and its Python 3.11 is run as
# `qemu-aarch64-static -L ROOT ROOT/usr/bin/python3.11`. The aarch64 wheels are installed on the host with
# `pip install --target --platform manylinux_2_28_aarch64 ...`, and the project's source is put on PYTHONPATH
# (Debian 12's Python is 3.11.2, below the >=3.11.4 that `pip install carryon` asks for tarfile's `data`
# filter; the benchmark job does not unpack tars).
#
# onnxruntime is pinned to 1.26 on the emulated side: its aarch64 wheels 1.28 and newer crash
# (SIGSEGV at import) under Debian 12's qemu-user 7.2. Models are exported for onnxruntime >= 1.21
# (1.20 for models without trees), so 1.26 loads them, .ort included.
#
# Emulated latencies are labeled (device.emulated = true) and never judge budgets; the golden check
# proves the models give the same outputs on ARM as on the host (atol 1e-5).
# Exit status: 0 when the job ran and every model agreed, 1 otherwise.
set -euo pipefail

MODELS=${1:-data/export}
WORK=${2:-benchmarks/.cache/qemu-aarch64}
PYTHON=${PYTHON:-python}
ORT_EMULATED=${ORT_EMULATED:-1.26.0}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
PROJECT=$(cd "$(dirname "$0")/../.." && pwd)

for tool in qemu-aarch64-static debootstrap dpkg-deb; do
    command -v "$tool" >/dev/null || { echo "qemu_aarch64.sh: $tool is missing; apt-get install qemu-user-static debootstrap" >&2; exit 1; }
done
[ -e "$MODELS" ] || { echo "qemu_aarch64.sh: $MODELS does not exist; run dvc repro (or carryon export) first" >&2; exit 1; }
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
ROOT=$WORK/root
SITE=$WORK/site-ort$ORT_EMULATED

if [ ! -x "$ROOT/usr/bin/python3.11" ]; then
    echo "== debootstrap --foreign arm64 bookworm into $ROOT" >&2
    debootstrap --foreign --arch arm64 --variant=minbase --include=python3.11,libpython3.11-stdlib \
        bookworm "$ROOT" "$MIRROR" >"$WORK/debootstrap.log"
    for deb in "$ROOT"/var/cache/apt/archives/*.deb; do dpkg-deb -x "$deb" "$ROOT"; done
fi
EMU=(qemu-aarch64-static -L "$ROOT" "$ROOT/usr/bin/python3.11")

if [ ! -d "$SITE/onnxruntime" ]; then
    echo "== aarch64 wheels into $SITE (onnxruntime==$ORT_EMULATED)" >&2
    # Only what `carryon bench run` imports: the signing/TUF stack of the base is not needed here.
    # pip does not widen --platform to older manylinux tags: list every tag the wheels use.
    "$PYTHON" -m pip install --quiet --target "$SITE" --python-version 3.11 --implementation cp --abi cp311 \
        --platform manylinux_2_28_aarch64 --platform manylinux_2_27_aarch64 --platform manylinux_2_26_aarch64 \
        --platform manylinux_2_17_aarch64 --platform manylinux2014_aarch64 --only-binary=:all: \
        numpy "onnxruntime==$ORT_EMULATED" onnx typer rich pyyaml
fi

export PYTHONPATH="$PROJECT:$SITE"
# Without binfmt_misc the emulated Python cannot exec itself: the job starts its per-model children this way.
export CARRYON_BENCH_PYTHON="${EMU[*]}"
"${EMU[@]}" -c 'import platform, onnxruntime, numpy; print("emulated:", platform.machine(), "python", platform.python_version(), "onnxruntime", onnxruntime.__version__, "numpy", numpy.__version__)' 2>/dev/null

echo "== golden vectors: host outputs, then the emulated ones" >&2
PYTHONPATH="$PROJECT" "$PYTHON" -m benchmarks.device.golden make --models "$MODELS" --out "$WORK/golden.json" >/dev/null
status=0
"${EMU[@]}" -m benchmarks.device.golden check --models "$MODELS" --golden "$WORK/golden.json" \
    >"$WORK/golden-check.json" 2>"$WORK/golden-check.log" || status=1
echo "golden check: $(grep -m1 '"passed"' "$WORK/golden-check.json" || echo failed) (details: $WORK/golden-check.json)"

echo "== benchmark job, emulated" >&2
"${EMU[@]}" -m pipeline.cli bench run --models "$MODELS" --out "$WORK/report-aarch64-emulated.json" \
    --device-id "${CARRYON_DEVICE_ID:-qemu-aarch64}" --emulated --format both 2>"$WORK/bench.log" || status=1
tail -n +1 "$WORK/bench.log" | grep -v 'cpuid_info warning' >&2 || true
exit $status
