#!/usr/bin/env bash
# Rehearse the 45-minute lesson: run every command of docs/lesson/plan.md in order, the way the
# teacher will, and record what each printed and the minute it finished. Run it from the
# repository root on the computer you will teach with (the plan's timings were measured this way):
#
#     bash docs/lesson/rehearse.sh            # writes lesson_rehearsal/ (transcript.md + one log per step)
#
# It uses its own run names (lesson_*), so it never touches checkpoints/teacher_3m.
set -uo pipefail
out=${1:-lesson_rehearsal}
mkdir -p "$out"
transcript="$out/transcript.md"
start=$(date +%s)
{
  echo "# Lesson rehearsal ($(date '+%Y-%m-%d %H:%M'))"
  echo
  echo "machine: $(lscpu 2>/dev/null | sed -n 's/^Model name:[[:space:]]*//p' | head -1), $(nproc) cores; gptf $(python -c 'import gptf; print(gptf.__version__)')"
  echo
} >"$transcript"

step() {  # step NAME COMMAND...: run it, keep its output, note the minute it finished
  local name=$1
  shift
  local log="$out/$name.log"
  local before=$(date +%s)
  "$@" >"$log" 2>&1
  local status=$?
  local now=$(date +%s)
  printf '## %s (exit %s, %ds, done at minute %.1f)\n\n```\n$ %s\n' "$name" "$status" $((now - before)) \
    "$(echo "($now - $start) / 60" | bc -l)" "$*" >>"$transcript"
  tail -n 40 "$log" >>"$transcript"
  printf '```\n\n' >>"$transcript"
}

step 01-inspect gptf inspect recipes/teacher_3m.yaml
step 02-tokenize gptf tokenize "什么是注意力机制？" --recipe recipes/teacher_3m.yaml --as-prompt
step 03-train gptf run recipes/teacher_3m.yaml name=lesson_teacher
step 04-ask gptf generate --ckpt checkpoints/lesson_teacher --prompt "什么是注意力机制？" --prompt "注意力到底在算什么" --prompt "今天股票会涨吗"
step 05-sample gptf generate --ckpt checkpoints/lesson_teacher --prompt "什么是注意力机制？" --temperature 1.0 --top-k 20 --seed 1 --stats
step 06-eval gptf eval --ckpt checkpoints/lesson_teacher
step 07-ablate gptf ablate recipes/teacher_3m.yaml --swap model.positional=rope,none --steps 150 --out ablations/lesson
step 08-plugin-check gptf plugin check examples/plugins/scalenorm.py
step 09-plugin-run gptf run examples/plugins/scalenorm.yaml name=lesson_scalenorm training.max_steps=150
step 10-attention gptf attention --ckpt checkpoints/lesson_teacher --prompt "什么是注意力机制？" --out "$out/attention"
echo "transcript: $transcript"
