#!/usr/bin/env bash
# The GPU rows of docs/performance.md in one run, for a lent GPU machine that has torch but not Pisar.
#
#   bash bench/gpu.sh                 # on a machine with the project installed (make setup): PYTHON=.venv/bin/python
#   OUT=/some/dir bash bench/gpu.sh   # figures land in OUT (default build/gpu)
#   STEPS='engine profile' bash bench/gpu.sh   # only some steps
#
# Where the machine lacks Pisar's pure-Python dependencies, put their wheels in .whl/ (for that
# machine's Python) and they are installed into /tmp/site first; the shared print lines can travel
# in .gpudata/print-lines. Each step has its own time limit, so a slow step costs only its own figures.
set -u
OUT=${OUT:-build/gpu}
PYTHON=${PYTHON:-python3}
SCALE=${SCALE:-1}  # 0: a quick CPU smoke run of this script (small stand-in, few lines)
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1

if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
if ! "$PYTHON" -c "import pisar.worker" 2>/dev/null; then
    # Pisar importable without an install: worker/ and producer/ become pisar.worker and pisar.producer.
    src=$(mktemp -d)
    mkdir -p "$src/pisar" && cp -r pisar/. "$src/pisar/"
    ln -sfn "$PWD/worker" "$src/pisar/worker" && ln -sfn "$PWD/producer" "$src/pisar/producer"
    export PYTHONPATH=$src:${PYTHONPATH:-}
fi
if [ ! -d ../shared/data/print-lines ] && [ -d .gpudata/print-lines ]; then
    mkdir -p ../shared/data && ln -sfn "$PWD/.gpudata/print-lines" ../shared/data/print-lines
fi

(nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv || echo "no nvidia-smi") >"$OUT/gpu.csv" 2>&1
cat "$OUT/gpu.csv"

if [ "$SCALE" = 0 ]; then
    standin=small lines=48 seed=4 small=24 limit=600 batches='8 16' decode_batches='8' device=cpu encoder_batches='4' half=float32
else
    standin=large lines=4096 seed=64 small=1024 limit=200 batches='64 512' decode_batches='128 256 512' device=cuda encoder_batches='128 512' half=bfloat16
fi
# The default steps' limits add up to 700 s: one prepared run of under 12 minutes of device time.
# `detect` (line detection: blla's network on the GPU, its polygons on the CPU cores) needs the detect
# extra and kraken (--no-deps) on that machine: STEPS=detect bash bench/gpu.sh.
STEPS=${STEPS:-engine engine-s3 decode-step encoder precision engine-b64}
step() {  # name, seconds, command...: run one step under its own limit, keep its output
    local name=$1 seconds=$2
    shift 2
    case " $STEPS " in *" $name "*) ;; *) return ;; esac
    echo "== $name"
    timeout "$seconds" "$@" >"$OUT/$name.log" 2>&1
    echo "exit $? after step $name"
    tail -n 3 "$OUT/$name.log"
}
step engine "$limit" "$PYTHON" bench/engine.py --standin $standin --lines $lines --seed-lines $seed --out "$OUT/engine.json"
step precision 60 "$PYTHON" bench/precision.py --source ../shared/data/print-lines --held-out 0.11 --fp8
step engine-b64 100 "$PYTHON" bench/engine.py --standin $standin --lines $small --seed-lines $seed --pisar-batch-size 64 \
    --out "$OUT/engine-b64.json"
step engine-static 120 "$PYTHON" bench/engine.py --standin $standin --lines $small --seed-lines $seed --decoder-cache static \
    --out "$OUT/engine-static.json"
step engine-s3 120 "$PYTHON" bench/engine.py --standin $standin --lines $small --seed-lines 4 --from-s3 --out "$OUT/engine-s3.json"
step decode-step 120 "$PYTHON" bench/decode_step.py --standin $standin --batch $decode_batches --device $device --repeats 3 \
    --input-threads 4 --out "$OUT/decode-step.json"
step encoder 100 "$PYTHON" bench/encoder.py --standin $standin --batch $encoder_batches --device $device --dtype $half --fp8 \
    --out "$OUT/encoder.json"
step profile 100 "$PYTHON" bench/profile_generate.py --standin $standin --batches $batches --repeats 2 --trace --out "$OUT/profile.json"
step detect 240 "$PYTHON" bench/detect.py --device $device --pasted 4 --out "$OUT/detect.json"
