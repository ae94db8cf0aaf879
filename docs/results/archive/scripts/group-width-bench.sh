#!/usr/bin/env bash
# The group-width study's speed leg (src/microdense/study/studies/group-width.yaml): every entry at the width the study
# resolved (read from its study.yaml), and resnet20_cifar, trained side by side by `microdense bench` in fp32 and bf16
# channels_last at batch 128, with the oneDNN convolution kernels each gets. Then the fp32 rows again under oneDNN's
# AVX2 kernels (ONEDNN_MAX_CPU_ISA=AVX2: what an AVX2-only CPU runs, on this one) unless this CPU is AVX2-only already.
# Run it alone on the machine: it measures speed.
set -euo pipefail
cd "$(dirname "$0")/.."
STUDY=${STUDY:-docs/results/group-width}
OUT=${OUT:-$STUDY}
STEPS=${STEPS:-5}
specs() {  # the study's entries as bench specs, with the run options given ($1)
  .venv/bin/python - "$STUDY/study.yaml" "$1" <<'EOF'
import sys, yaml
study, options = yaml.safe_load(open(sys.argv[1])), sys.argv[2]
specs = [":".join([e["model"], *(f"{k}={v}" for k, v in sorted(e["kwargs"].items()))]) for e in study["entries"]]
print(",".join(f"{s}:{options}" for s in specs + ["resnet20_cifar"]))
EOF
}
fp32=$(specs channels_last=true)
bf16=$(specs channels_last=true:amp=bf16)
bench=(.venv/bin/microdense bench --batch-size 128 --steps "$STEPS" --warmup 2 --latency-runs 10 --kernels)
"${bench[@]}" --models "$fp32,$bf16" --json "$OUT/bench-native.json" | tee "$OUT/bench-native.txt"
if grep -q avx512f /proc/cpuinfo; then
  ONEDNN_MAX_CPU_ISA=AVX2 "${bench[@]}" --models "$fp32" --json "$OUT/bench-avx2.json" | tee "$OUT/bench-avx2.txt"
fi
