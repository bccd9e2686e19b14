# Benchmarks: the in-process limit, this service and the naive inline pattern, side by side.
# Needs wrk (apt-get install wrk / brew install wrk). BENCH_ARGS passes extra options, e.g.
#   make bench BENCH_ARGS='--env ML_API_MAX_BATCH_SIZE=8'      (see: .venv/bin/python -m bench --help)
# BENCH_OPS_ARGS does the same for the model-operations part (see: .venv/bin/python -m bench ops --help).
BENCH_ARGS ?=
BENCH_OPS_ARGS ?=

.PHONY: bench
bench: venv ## Benchmark limit vs service vs naive, then model operations (~14 min); writes docs/benchmarks.{md,json}
	$(PY) -m bench --docs --out .bench/results.json $(BENCH_ARGS)
	$(PY) -m bench ops --docs --out .bench/results-ops.json $(BENCH_OPS_ARGS)

.PHONY: bench-ops
bench-ops: venv ## Shadow overhead, reload timings and priorities (~6 min); adds them to docs/benchmarks.{md,json}
	$(PY) -m bench ops --docs --out .bench/results-ops.json $(BENCH_OPS_ARGS)

.PHONY: bench-quick
bench-quick: venv ## Short benchmark (~2 min, concurrency 1/16/64) into .bench/results-quick.json; docs untouched
	$(PY) -m bench --quick --out .bench/results-quick.json $(BENCH_ARGS)

.PHONY: bench-gpu
bench-gpu: venv ## The benchmark on a CUDA machine: resnet50, fp16 (ML_API_PRECISION), into .bench/results-gpu.json
	$(PY) -m bench --device cuda --arch resnet50 --precision fp16 --out .bench/results-gpu.json $(BENCH_ARGS)
