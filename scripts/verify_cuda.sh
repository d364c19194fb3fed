#!/usr/bin/env bash
# The CUDA record for docs/verify/ (README "Proving it on a device"): run once on a machine with an NVIDIA GPU
# and a CUDA build of torch, from the repository root with kvplan installed. It writes one transcript,
# docs/verify/cuda-<device>-<date>.txt: the self-check (G = 32, 8, 1 with decode timings, and the pick-g probe),
# a plan that cannot fit (the out-of-memory path on the device), a tp 1 plan with weights, ranks (NCCL when
# the machine has 2 GPUs or more, else the gloo path on the CPU beside it, said so), and --save-gpu into a
# scratch config dir followed by `kvplan gpus`. Each command's exit code is written after it; the script
# itself always finishes (a refuted prediction is a result to record, not a reason to stop).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-docs/verify}
mkdir -p "$OUT"
GPUS=$(python -c "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)")
if [ "$GPUS" = 0 ]; then
    echo "no CUDA device visible to torch: nothing to record" >&2
    exit 2
fi
NAME=$(python -c "import torch; print(torch.cuda.get_device_name(0))")
SLUG=$(echo "$NAME" | tr '[:upper:]' '[:lower:]' | tr -cs 'a-z0-9' '-' | sed 's/-$//')
FILE="$OUT/cuda-$SLUG-$(date -u +%F).txt"
SCRATCH=$(mktemp -d)

run() {
    echo "\$ kvplan $*"
    SECONDS=0
    kvplan "$@"
    echo "(exit $?, ${SECONDS} s)"
    echo
}

{
    echo "# $(date -u +%FT%TZ) · $NAME x $GPUS · $(python -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda)')"
    nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv 2>&1
    echo
    run verify --device cuda
    run verify --device cuda --model meta-llama/Llama-2-70b-chat-hf --ctx 128K --batch 64 --no-timing --no-probe
    run verify --device cuda --model meta-llama/Meta-Llama-3.1-8B --ctx 32K --batch 8 --engine vllm
    if [ "$GPUS" -ge 2 ]; then
        run verify --device cuda --model meta-llama/Meta-Llama-3.1-8B --ctx 8K --batch 4 -tp 2 --engine vllm
    else
        echo "# one GPU: tp > 1 needs one GPU per rank, so the ranks run over gloo on the CPU beside it"
        run verify --device cpu --model meta-llama/Llama-3.2-1B --ctx 8K --batch 4 -tp 4 --no-timing
    fi
    KVPLAN_CONFIG_DIR="$SCRATCH" run verify --device cuda --model meta-llama/Llama-3.2-1B --ctx 4K --save-gpu
    KVPLAN_CONFIG_DIR="$SCRATCH" run gpus
    echo "\$ cat \$KVPLAN_CONFIG_DIR/gpus.yaml"
    cat "$SCRATCH/gpus.yaml"
} >"$FILE" 2>&1
rm -rf "$SCRATCH"
echo "wrote $FILE"
