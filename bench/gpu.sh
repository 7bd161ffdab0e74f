#!/usr/bin/env bash
# Every GPU figure of bench/README.md in one run on a CUDA machine (7 minutes on one H200,
# the 1,024 px row cut at its 290 s limit). Writes each table to $OUT (default: bench-gpu/).
# Timed rows first, alone on the GPU; the quality rows (scores, not times) then share the GPU
# with the 1,024 px row, whose times are therefore upper bounds while its peak memory is
# exact.
# Needs the project's Python dependencies (`pip install -e .`); on a machine that has only
# PyTorch, install pydantic, hyperspy, exspy and rosettasciio (with their pure-Python
# dependencies) first: the benches simulate through exspy's element database.
set -u
OUT=${OUT:-bench-gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv > "$OUT/device.txt"
timeout 230 python3 bench/deep.py --skip-cpu --skip-solvers --gpu-sizes 256,512 \
    > "$OUT/deep_256_512.txt" 2>&1
timeout 290 python3 bench/deep.py --skip-cpu --skip-solvers --gpu-sizes 1024 --memory-gib 40 \
    > "$OUT/deep_1024.txt" 2>&1 &
timeout 290 python3 bench/quality.py --size 96 --seeds 0 --tilts 7 --device cuda \
    --rows classical deep fused --out "$OUT/quality7.tsv" > "$OUT/quality7.txt" 2>&1 &
timeout 290 python3 bench/thickness.py --specimens --methods tv deep --budget full \
    --device cuda --size 96 --seeds 0 --tilts 13 --counts 800 > "$OUT/thickness.txt" 2>&1 &
timeout 290 python3 bench/intervals_coverage.py --device cuda > "$OUT/coverage.txt" 2>&1 &
wait
