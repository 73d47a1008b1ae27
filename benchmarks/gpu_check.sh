#!/usr/bin/env bash
# The GPU check of issue 15, on one GPU in under 8 minutes: bf16 training throughput and MFU of trm_sudoku at batch
# 768 (compile off, then a compiled segment), of hrm_sudoku and rsm_maze (benchmarks/throughput.py), then a 3-minute
# real training of rsm_maze on Maze-Hard and its held-out (validation split) accuracy. Every figure is printed as a
# markdown row for docs/benchmarks.md.
#
#   bash benchmarks/gpu_check.sh             # run it (PYTHON=... picks the interpreter; SHARED=... the shared/ folder)
#   bash benchmarks/gpu_check.sh --dry-run   # print the commands only
#   bash benchmarks/gpu_check.sh --check     # parse the rr commands here (`rr ... --print_config`), run nothing else
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
[[ -x "$PYTHON" ]] || PYTHON="$(command -v python3 || command -v python)"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
MODE="${1:-run}"
case "$MODE" in run | --dry-run | --check) ;; *) echo "usage: $0 [--dry-run | --check]" >&2; exit 2 ;; esac

# shared/ inside the copied tree (the device machine) or beside the checkout (tests/conftest.py's layout)
if [[ -z "${SHARED:-}" ]]; then
  for candidate in "$ROOT/shared" "$ROOT/../shared"; do
    if [[ -d "$candidate/data" ]]; then SHARED="$(cd "$candidate" && pwd)"; break; fi
  done
fi
SHARED="${SHARED:-$ROOT/shared}"
MAZE="$SHARED/data/maze-30x30-hard-1k"
RUN_DIR="${OUT:-$(mktemp -d)}/gpu_check_rsm_maze"

THROUGHPUT=(benchmarks/throughput.py --device cuda --precision bf16 --steps 5 --warmup 2 --skip-eval)
FIT=(-m recursive_reasoning fit --config configs/rsm_maze.yaml --trainer.accelerator=gpu --trainer.devices=1
     --trainer.max_time=00:00:03:00 "--data.init_args.data_dir=$MAZE"
     "--trainer.default_root_dir=$RUN_DIR" --trainer.log_every_n_steps=50)
VALIDATE=(-m recursive_reasoning validate --config configs/rsm_maze.yaml --trainer.accelerator=gpu
          --trainer.devices=1 "--data.init_args.data_dir=$MAZE" "--trainer.default_root_dir=$RUN_DIR")

stage() {  # stage SECONDS ARGS...: one capped stage (prints the command in --dry-run)
  local seconds="$1"; shift
  echo "+ timeout $seconds $PYTHON $*" >&2
  [[ "$MODE" == run ]] || return 0
  timeout "$seconds" "$PYTHON" "$@"
}

if [[ "$MODE" == --check ]]; then
  "$PYTHON" "${FIT[@]}" --print_config > /dev/null
  "$PYTHON" "${VALIDATE[@]}" --print_config > /dev/null
  "$PYTHON" benchmarks/throughput.py --help > /dev/null
  echo "gpu_check: every rr command parses"
  exit 0
fi

echo "## GPU check $(date -u +%F) on $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 || echo 'no GPU')"
stage 10 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
echo "### Training throughput, bf16 (throughput.py tables: ex-seg/s and MFU columns)"
stage 170 "${THROUGHPUT[@]}" --recipe trm_sudoku --batch 768 --compile off segment
stage 100 "${THROUGHPUT[@]}" --recipe hrm_sudoku rsm_maze --batch 128 --compile off
echo "### rsm_maze: 3 minutes of real training, then the held-out split"
[[ "$MODE" != run || -d "$MAZE" ]] || { echo "missing $MAZE: set SHARED to the folder holding data/" >&2; exit 1; }
stage 300 "${FIT[@]}"
CKPT="$(ls -t "$RUN_DIR"/lightning_logs/*/checkpoints/last.ckpt 2>/dev/null | head -1 || true)"
[[ "$MODE" != run || -n "$CKPT" ]] || { echo "no last.ckpt under $RUN_DIR: the training stage failed" >&2; exit 1; }
stage 150 "${VALIDATE[@]}" "--ckpt_path=${CKPT:-RUN_DIR/last.ckpt}"
if [[ "$MODE" == run ]]; then
  "$PYTHON" -c "import sys, torch; c = torch.load(sys.argv[1], map_location='cpu', weights_only=False); \
print(f'| rsm_maze, 3 min on 1 GPU | {c[\"global_step\"]} steps | see val/exact_accuracy above |')" "$CKPT"
fi
