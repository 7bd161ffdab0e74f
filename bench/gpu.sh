#!/usr/bin/env bash
# The GPU figures of bench/README.md on a CUDA machine, in two sets of a few minutes each
# (one H200: 3 min 6 s for `main`). Writes the logs and tables as $OUT/results.tar and the
# full-budget `deep` volumes of the thickness rows as $OUT/vol/*.npz (default OUT: bench-gpu/).
# `bash bench/gpu.sh main`: first the timed row, alone on the GPU (bench/deep.py at 256^2; the
# 512 and 1,024 rows: `--gpu-sizes 512,1024 --memory-gib 40`). Then the score rows side by
# side, one process per specimen, one CPU thread each (scores, not times):
# - bench/quality.py at 96^3, seeds 0-2: 7 tilts (classical, deep, deep with a fused step b,
#   fused), 5 tilts at half dose (deep, deep with a fused step b, fused) and 13 tilts (classical,
#   deep, deep with a fused step b) -- issue 14 item 4, issue 15 item 5;
# - bench/thickness.py, `deep` at the full budget, 96^3, 13 tilts, 800 counts, seeds 0-1 -- issue 13;
# - bench/intervals_coverage.py on TV-KL, 10 seeds -- issue 13 item 2.
# `bash bench/gpu.sh doses`: the thickness of full-budget `deep` against dose and tilt count
# (seed 0 at 7 tilts x 800 and 3000 counts and 13 tilts x 3000; seed 2 at 13 x 800), and the
# quality rows of seeds 3-4 (13 tilts: classical, deep; 7 tilts: as `main`).
# `bash bench/gpu.sh fused`: the rows of `deep`, deep with a fused step b and `fused` again
# (7 tilts seeds 0-4, 5 tilts at half dose and 13 tilts seeds 0-2), after a solver change.
# `bash bench/gpu.sh denoiser`: after a change to the denoiser's training, the timed 256^2 row
# alone, then the 13-tilt `deep` rows of seeds 0-4 side by side (the issue-15 table).
# Needs the project's Python dependencies (`pip install -e .`); on a machine that has only
# PyTorch, install pydantic, hyperspy, exspy and rosettasciio (with their pure-Python
# dependencies) first: the benches simulate through exspy's element database.
set -u
OUT=${OUT:-bench-gpu}
LOGS="$OUT/logs"
mkdir -p "$LOGS" "$OUT/vol"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$LOGS/device.txt"
python3 -c "import torch; print('torch', torch.__version__)" >> "$LOGS/device.txt" 2>&1
quality() {  # name, then bench/quality.py's arguments
    local name=$1
    shift
    timeout ${QUALITY_TIMEOUT_S:-380} python3 bench/quality.py --size 96 --device cuda --threads 1 \
        --out "$LOGS/$name.tsv" "$@" > "$LOGS/$name.txt" 2>&1
}
thickness() {  # seed, tilts, counts
    timeout 380 python3 bench/thickness.py --specimens --methods deep --budget full \
        --device cuda --size 96 --seeds "$1" --tilts "$2" --counts "$3" --step 6 \
        --volumes "$OUT/vol" > "$LOGS/thickness_seed$1_$2t_$3c.txt" 2>&1
}
timed_256() {  # the 256^2 row of bench/deep.py, alone on the GPU
    OMP_NUM_THREADS=4 timeout 100 python3 bench/deep.py --skip-cpu --skip-solvers \
        --gpu-sizes 256 > "$LOGS/deep_256.txt" 2>&1
}
case "${1:-main}" in
main)
    timed_256
    for seed in 0 1 2; do
        quality "q7_seed$seed" --seeds "$seed" --tilts 7 --rows classical deep deepfused fused &
        quality "q5half_seed$seed" --seeds "$seed" --tilts 5 --counts 400 \
            --rows deep deepfused fused &
        quality "q13_seed$seed" --seeds "$seed" --tilts 13 --rows classical deep deepfused &
    done
    thickness 0 13 800 &
    thickness 1 13 800 &
    timeout 380 python3 bench/intervals_coverage.py --device cuda \
        > "$LOGS/coverage.txt" 2>&1 &
    ;;
doses)
    thickness 0 7 800 &
    thickness 0 7 3000 &
    thickness 0 13 3000 &
    thickness 2 13 800 &
    for seed in 3 4; do
        quality "q13_seed$seed" --seeds "$seed" --tilts 13 --rows classical deep &
        quality "q7_seed$seed" --seeds "$seed" --tilts 7 --rows classical deep deepfused fused &
    done
    ;;
fused)
    for seed in 0 1 2 3 4; do
        quality "q7_seed$seed" --seeds "$seed" --tilts 7 --rows deep deepfused fused &
    done
    for seed in 0 1 2; do
        quality "q5half_seed$seed" --seeds "$seed" --tilts 5 --counts 400 \
            --rows deep deepfused fused &
        quality "q13_seed$seed" --seeds "$seed" --tilts 13 --rows deep deepfused &
    done
    ;;
denoiser)
    timed_256
    for seed in 0 1 2 3 4; do
        quality "q13_seed$seed" --seeds "$seed" --tilts 13 --rows deep &
    done
    ;;
*)
    echo "usage: bench/gpu.sh [main|doses|fused|denoiser]" >&2
    exit 2
    ;;
esac
wait
tar -cf "$OUT/results.tar" -C "$OUT" logs && rm -r "$LOGS"
