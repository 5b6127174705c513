#!/usr/bin/env bash
# Issue 9's GPU check, as ONE prepared run on a lent GPU machine (see ../shared/gpu/README.md).
#   here:   bash ../shared/gpu/make_wheels.sh PyYAML==6.0.3      # fills .whl/ (ray, diffusers, ...)
#   device: bash .ci/gpu-bench.sh                                 # carry [".whl"], timeout_s ~540
# It checks imports first (fail fast: device time is scarce), then measures k clients packed on one
# GPU inside raydiff against k bare processes sharing it (raydiff bench overhead --device cuda), and
# writes everything under $OUT (or /tmp/gpu-bench). Budget: about 5 minutes on an H100/H200.
# Issue 16 (grouped client training), one call each, ~5 minutes each, same carry:
#   device: bash .ci/gpu-bench.sh grouped-small    # small UNet 32x32 batch 64, G = 1..16, fp32 and bf16
#   device: bash .ci/gpu-bench.sh grouped-cifar    # DDPM-CIFAR 35.7M UNet, G = 1..8, fp32 and bf16
#   device: bash .ci/gpu-bench.sh grouped-tiny     # tiny UNet 32x32 batch 64, G = 1..16, fp32 and bf16
# Each prints, per G, ONE process training G jobs as a vmapped group against G bare processes packed
# on the GPU and against one bare process; the last line is the best grouped / packed ratio.
mode=${1:-overhead}
case "$mode" in overhead|grouped-small|grouped-cifar|grouped-tiny) ;;
  *) echo "usage: bash .ci/gpu-bench.sh [overhead|grouped-small|grouped-cifar|grouped-tiny]" >&2; exit 2;; esac
set -uo pipefail
out=${OUT:-/tmp/gpu-bench}
mkdir -p "$out"
exec > >(tee "$out/log-$mode.txt") 2>&1
if [ -d .whl ]; then
  site=$(mktemp -d)
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" .whl/*.whl
  export PYTHONPATH="$site:$PWD"
fi
export RAY_USAGE_STATS_ENABLED=0 RAYDIFF_NO_PROGRESS=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 - <<'PY' || exit 3
import importlib.util, sys
need = ["torch", "ray", "diffusers", "yaml", "numpy", "pandas", "pyarrow", "tqdm", "sklearn", "huggingface_hub",
        "safetensors"]
missing = [m for m in need if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"missing on this machine: {missing}; add them to make_wheels.sh's arguments")
import torch, ray, diffusers
print("torch", torch.__version__, "cuda", torch.version.cuda, "| ray", ray.__version__, "| diffusers",
      diffusers.__version__, "| GPU", torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
import raydiff.runner  # noqa: F401  the whole import chain of a run
PY
grouped() {  # preset, image size, batch, steps, groups, timeout per precision
  for prec in fp32 bf16; do
    flag=""; [ "$prec" = bf16 ] && flag="--bf16"
    timeout "$6" python3 -u -m raydiff bench grouped --device cuda --preset "$1" --image-size "$2" --batch "$3" \
      --local-steps "$4" --groups "$5" --repeats 1 $flag | tee "$out/grouped-$1-$prec.txt"
  done
}
case "$mode" in
  grouped-small) grouped small 32 64 30 1,2,4,8,16 250; echo "done"; exit 0;;
  grouped-tiny) grouped tiny 32 64 30 1,2,4,8,16 250; echo "done"; exit 0;;
  grouped-cifar) grouped ddpm-cifar10 32 64 10 1,2,4,8 250; echo "done"; exit 0;;
esac
# The anchor of ARCHITECTURE.md: 8 clients of a small UNet at 32x32, batch 64, bf16, packed on one GPU.
timeout 330 python3 -m raydiff bench overhead --device cuda --actors 8 --preset small --image-size 32 \
  --batch 64 --bf16 --repeats 2 | tee "$out/overhead-small-8.txt"
# If time is left: the 35.7M DDPM-CIFAR UNet, 4 clients (ARCHITECTURE.md: 3,666 samples/s raw on an H200).
timeout 200 python3 -m raydiff bench overhead --device cuda --actors 4 --preset ddpm-cifar10 --image-size 32 \
  --batch 128 --bf16 --repeats 1 --local-steps 10 | tee "$out/overhead-cifar-4.txt"
echo "done"
