#!/usr/bin/env bash
# The real-size benchmark on CUDA, fp16 and fp32, in one short script (see docs/PERFORMANCE.md).
#
#   bash bench/device_check.sh [OUT_DIR]     (default: $OUT when set, else ./device-check)
#
# Runs bench/bench_realsize.py for the published-size AudioLDM2 and Stable Audio Open (random
# weights, 10 s, 3 steps) and the published ACE-Step 1.5 / Stable Audio 3 DiTs in their tiny
# pipelines (published-denoiser:, bench/denoiser_shells.py) on cuda in float16 and float32, then
# LSAC on Stable Audio Open (8 steps, every self-attention site frozen from T/4) and the Stable
# Audio decode with and without the crop to a 10 s clip; one JSON per run in OUT_DIR, plus
# nvidia-smi and versions.
# Each run has its own timeout so that one stuck run cannot eat the whole device budget.
set -u
cd "$(dirname "$0")/.."
out="${1:-${OUT:-device-check}}"
mkdir -p "$out"
py="${PYTHON:-python}"
[ -x .venv/bin/python ] && py=.venv/bin/python
{ nvidia-smi; "$py" -c 'import torch, diffusers; print(torch.__version__, torch.version.cuda, diffusers.__version__, torch.cuda.get_device_name(0))'; } \
  > "$out/env.txt" 2>&1
status=0
for model in random:audioldm2 random:stable_audio published-denoiser:ace_step published-denoiser:stable_audio_3; do
  guidance=3.5
  [ "$model" = published-denoiser:stable_audio_3 ] && guidance=1.0  # the distilled SA3 runs without CFG
  for dtype in float16 float32; do
    name="${model#*:}_${dtype}"
    timeout 150 "$py" bench/bench_realsize.py --model "$model" --device cuda --dtype "$dtype" \
      --threads 8 --steps 3 --duration 10 --guidance "$guidance" --out "$out/$name.json" > "$out/$name.log" 2>&1 \
      || { echo "$name failed (exit $?), see $out/$name.log"; status=1; }
  done
done
for dtype in float16 float32; do
  name="lsac_stable_audio_${dtype}"
  timeout 150 "$py" bench/bench_realsize.py --model random:stable_audio --part lsac --lsac self@0.25 \
    --lsac-steps 8 --device cuda --dtype "$dtype" --threads 8 --duration 10 --out "$out/$name.json" \
    > "$out/$name.log" 2>&1 || { echo "$name failed (exit $?), see $out/$name.log"; status=1; }
done
for dtype in float16 float32; do
  timeout 90 "$py" bench/bench_realsize.py --part decode-compare --device cuda --dtype "$dtype" \
    --duration 10 > "$out/decode_$dtype.json" 2> "$out/decode_$dtype.log" \
    || { echo "decode $dtype failed, see $out/decode_$dtype.log"; status=1; }
done
ls -l "$out"
exit $status
