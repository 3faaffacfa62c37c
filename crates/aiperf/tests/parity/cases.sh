# The parity cases: NAME:ARGS, run by record.sh (Python AIPerf 0.13) and by tests/it/parity.rs
# (this tool) with the same arguments after `-m parity-model --url ... --tokenizer ...
# --random-seed 1`. Paths are relative to this directory.
CASES=(
  "chat_stream:--endpoint-type chat --streaming --concurrency 2 --request-count 10 --isl 32 --osl 16"
  "completions:--endpoint-type completions --concurrency 1 --request-count 5 --isl 32 --osl 8"
  "goodput:--endpoint-type chat --streaming --concurrency 2 --request-count 10 --isl 32 --osl 16 --goodput time_to_first_token:50"
  "multi_turn_requests:--endpoint-type chat --streaming --concurrency 2 --request-count 10 --osl 4 --input-file multi_turn.jsonl --custom-dataset-type multi_turn"
  "multi_turn_conversations:--endpoint-type chat --streaming --concurrency 2 --conversation-num 3 --osl 4 --input-file multi_turn.jsonl --custom-dataset-type multi_turn"
)
