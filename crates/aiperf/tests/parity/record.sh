#!/usr/bin/env bash
# Records the golden artifacts of Python AIPerf 0.13 that tests/it/parity.rs compares this
# tool against. The recordings are data: run this only to refresh them.
#
#   python3 -m venv /tmp/aiperf-py && /tmp/aiperf-py/bin/pip install 'aiperf==0.13.*'
#   crates/aiperf/tests/parity/record.sh /tmp/aiperf-py/bin/aiperf target/release/aiperf
#
# AIPerf runs against this tool's built-in mock (`aiperf mock-server`, TTFT 20 ms, ITL 5 ms)
# with a small local tokenizer (tokenizer/, a byte-level BPE trained on the mock's corpus;
# AIPerf cannot download one here) so both tools count tokens with the same tokenizer.
set -euo pipefail
AIPERF_PY=${1:?path to Python AIPerf 0.13\'s aiperf}
AIPERF_RS=${2:?path to this tool\'s aiperf binary}
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=$HERE/aiperf-0.13
PORT=${PORT:-8391}
"$AIPERF_RS" mock-server --port "$PORT" >/dev/null 2>&1 &
MOCK=$!
trap 'kill $MOCK' EXIT
sleep 1
# shellcheck source=cases.sh
source "$HERE/cases.sh"
for case in "${CASES[@]}"; do
  name=${case%%:*}
  args=${case#*:}
  dir=$(mktemp -d)
  # shellcheck disable=SC2086
  (cd "$HERE" && "$AIPERF_PY" profile -m parity-model --url "http://127.0.0.1:$PORT" \
      --tokenizer "$HERE/tokenizer" --random-seed 1 --ui-type none \
      --artifact-dir "$dir" $args) >"$dir/stdout.txt" 2>&1
  mkdir -p "$OUT/$name"
  for f in profile_export_aiperf.json profile_export_aiperf.csv profile_export.jsonl inputs.json; do
    cp "$dir/$f" "$OUT/$name/$f"
  done
  echo "aiperf profile -m parity-model --url http://127.0.0.1:PORT --tokenizer tokenizer --random-seed 1 --ui-type none $args" >"$OUT/$name/command.txt"
  rm -rf "$dir"
  echo "recorded $name"
done
