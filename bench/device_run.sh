#!/usr/bin/env bash
# One device session of GPU benchmarks (run through the device tool from the repo root).
# Carried: .devcarry/ComfyUI (ComfyUI's .py files only, from scripts/setup_env.sh's tree, without the
# large tokenizer files and blueprints), .devcarry/inductor-cache.gz.part* when a run saved one, and
# .whl (torchsde, trampoline, comfy-aimdo). Not carried: av and comfy-kitchen (35 + 45 MB, over
# the carry limit); the bench never calls them, so tiny import-only stand-ins are written to /tmp.
# Usage: bash bench/device_run.sh PHASE...   (phases: see the case below)
set -uo pipefail
OUT="${OUT:-/tmp/out}"; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
mkdir -p /tmp/stubs/av/container /tmp/stubs/av/subtitles/stream /tmp/stubs/av/video/reformatter /tmp/stubs/comfy_kitchen
stub='class _Any:\n    pass\n\ndef __getattr__(name):\n    return _Any\n'
for d in av av/container av/subtitles av/subtitles/stream av/video av/video/reformatter comfy_kitchen; do
  printf "$stub" > "/tmp/stubs/$d/__init__.py"
done
export PYTHONPATH=/tmp/site:/tmp/stubs PYTHONUNBUFFERED=1
COMFY=.devcarry/ComfyUI
B="python3 bench/sampling_speed.py --comfyui $COMFY"
# A compile cache saved by an earlier call (its parts copied into .devcarry/) starts compiled runs
# warm; without one, the first compiled run saves its cache under $OUT, in parts that come back.
CACHE="$OUT/inductor-cache.gz"
ls .devcarry/inductor-cache.gz.part0 >/dev/null 2>&1 && CACHE=.devcarry/inductor-cache.gz
for phase in "$@"; do
  echo "=== $phase $(date -u +%FT%TZ)"
  case "$phase" in
    attention) python3 bench/attention_kernels.py ;;
    temporal-attention) timeout 420 python3 bench/temporal_attention.py ;;
    frame-kernel) timeout 150 python3 bench/temporal_attention.py
                  timeout 420 $B --compile --cuda-graphs --batched-cond-uncond --warm-runs 1 --compile-cache "$CACHE" \
                    --save-compile-cache "$OUT/inductor-cache-fk.gz" --check-levers frame_attention_kernel,channels_last ;;
    speed) $B ;;
    nographs) $B --no-cuda-graphs ;;
    check) $B --steps 10 --check-levers ;;
    dynamic) $B --dynamic-vram ;;
    precision) (cd bench && python3 precision.py --comfyui "../$COMFY") ;;
    compile) python3 bench/block_compile.py --comfyui $COMFY ;;
    compiled) $B --compile --warm-runs 1 --network-times ;;
    diag) timeout 420 $B --compile --steps 3 --warm-runs 1 --profile --network-times --memory-trace \
            --compile-cache "$CACHE" ;;
    fast) timeout 580 $B --compile --cuda-graphs --separate-cond-uncond --warm-runs 1 --network-times \
            --check-levers cuda_graphs,batch_cond_uncond ;;
    default-trace) $B --steps 10 --memory-trace ;;
    graphs-diag) timeout 575 $B --compile --cuda-graphs --warm-runs 1 --network-times --profile-after 3 \
                   --compile-cache "$CACHE" --check-levers cuda_graphs ;;
    host-diag) timeout 330 $B --compile --cuda-graphs --warm-runs 1 --compile-cache "$CACHE" --stack-sample \
                 --profile-after 10 ;;
    final2) timeout 270 $B --compile --cuda-graphs --batched-cond-uncond --warm-runs 1 --compile-cache "$CACHE" \
              --profile-after 10 --check-levers cuda_graphs --check-warm
            timeout 70 $B --steps 10 --separate-cond-uncond
            timeout 80 $B --steps 10 --usable-gib 8
            timeout 70 $B --steps 10 --usable-gib 12
            timeout 80 $B --steps 10 --comfy-flag=--novram ;;
    fast-fp8) timeout 250 $B --compile --cuda-graphs --batched-cond-uncond --warm-runs 1 --compile-cache "$CACHE" \
                --profile-after 10 --check-levers cuda_graphs
              (cd bench && timeout 230 python3 precision.py --comfyui "../$COMFY" --dtypes fp8_e4m3fn fp8_e4m3fn_fast) ;;
    gaps) timeout 250 $B --compile --cuda-graphs --batched-cond-uncond --warm-runs 1 --compile-cache "$CACHE" \
            --profile-after 10 ;;
    probe) timeout 300 python3 bench/block_compile.py --comfyui $COMFY --channels-last --cudnn-benchmark
           timeout 200 $B --compile --cuda-graphs --batched-cond-uncond --warm-runs 1 --compile-cache "$CACHE" \
             --steps 3 --profile ;;
    channels-last) timeout 560 $B --compile --cuda-graphs --batched-cond-uncond --warm-runs 1 --compile-cache "$CACHE" \
                     --save-compile-cache "$OUT/inductor-cache-cl.gz" --check-levers channels_last --profile-after 10 ;;
    confirm) timeout 200 $B --compile --cuda-graphs --batched-cond-uncond --warm-runs 1 --compile-cache "$CACHE"
             timeout 340 $B --compile --cuda-graphs --separate-cond-uncond --warm-runs 1 --compile-cache "$CACHE" ;;
    defaults-check) timeout 100 $B --steps 10 --check-levers frame_attention_kernel
                    timeout 100 $B --steps 10 --usable-gib 8 ;;
    cl-check) timeout 330 $B --compile --cuda-graphs --batched-cond-uncond --warm-runs 1 --compile-cache "$CACHE" \
                --check-levers channels_last ;;
    fast-separate) timeout 300 $B --compile --cuda-graphs --separate-cond-uncond --warm-runs 1 --compile-cache "$CACHE" \
                     --check-levers cuda_graphs --check-warm ;;
    ref-graphs) timeout 560 $B --compile --cuda-graphs --batched-cond-uncond --warm-runs 1 --compile-cache "$CACHE" \
                  --profile-after 10 ;;
    long-flat) timeout 130 $B --steps 2 --frames 480 --window-memory
               timeout 215 $B --steps 2 --frames 960 --window-memory ;;
    host-stack) timeout 230 $B --compile --cuda-graphs --batched-cond-uncond --warm-runs 1 --compile-cache "$CACHE" \
                  --stack-sample ;;
    clip-lengths) timeout 100 $B --steps 10; timeout 150 $B --steps 10 --frames 240 ;;
    final) timeout 420 $B --compile --cuda-graphs --separate-cond-uncond --warm-runs 1 --check-levers cuda_graphs
           timeout 70 $B --steps 10 --memory-trace ;;
    final-rest) timeout 60 $B --steps 10 --usable-gib 8
                timeout 90 $B --steps 10 --frames 240 ;;
    compiled-profile) $B --compile --warm-runs 1 --profile ;;
    compile-cl) python3 bench/block_compile.py --comfyui $COMFY --channels-last ;;
    compile-autotune) python3 bench/block_compile.py --comfyui $COMFY --mode max-autotune-no-cudagraphs ;;
    compiled-final) $B --compile --warm-runs 1 --network-times --check-levers compile_blocks,reuse_hint_features ;;
    compiled-check) $B --compile --steps 10 --check-levers ;;
    compiled-lcm) $B --compile --warm-runs 1 --steps 8 --cfg 1.0 --sampler lcm --scheduler sgm_uniform ;;
    compiled-long) $B --compile --steps 10 --frames 240 ;;
    compiled-precision) (cd bench && python3 precision.py --comfyui "../$COMFY" --compile --dtypes fp16) ;;
    baseline) $B --no-attention-kernels --no-reuse-residuals ;;
    levers) $B --no-reuse-residuals; $B --no-attention-kernels ;;
    small) for gib in 8 12; do $B --steps 10 --usable-gib $gib; done
           $B --steps 10 --reserve-vram 131.8 --memory-cap-gib 8
           $B --steps 10 --usable-gib 8 --comfy-flag=--lowvram
           $B --steps 10 --comfy-flag=--novram ;;
    reserve8) $B --steps 10 --reserve-vram 131.8 --memory-cap-gib 8 ;;
    blocker8) $B --steps 10 --usable-gib 8 ;;
    blocker12) $B --steps 10 --usable-gib 12 ;;
    small8) $B --steps 10 --usable-gib 8; $B --steps 10 --reserve-vram 131.8 --memory-cap-gib 8
            $B --steps 10 --usable-gib 8 --comfy-flag=--lowvram ;;
    long) $B --steps 10 --frames 240 ;;
    fp8) $B --dtype fp8_e4m3fn; $B --dtype fp8_e4m3fn_fast ;;
    fp8-quick) $B --steps 10 --dtype fp8_e4m3fn_fast ;;
    fp8-precision) (cd bench && python3 precision.py --comfyui "../$COMFY" --dtypes fp8_e4m3fn fp8_e4m3fn_fast) ;;
    vae) python3 bench/vae_decode.py --comfyui $COMFY ;;
    profile) $B --steps 3 --profile ;;
    lcm) $B --steps 8 --cfg 1.0 --sampler lcm --scheduler sgm_uniform ;;
    *) echo "unknown phase $phase" ;;
  esac
done 2>&1 | tee -a "$OUT/bench.log"
