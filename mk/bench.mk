# Benchmarks: the in-process limit (per backend and instance layout), this service (default, each
# layout, each backend, /api/v1 and /v2), and the naive inline pattern, side by side.
# Needs wrk (apt-get install wrk / brew install wrk). BENCH_ARGS passes extra options, e.g.
#   make bench BENCH_ARGS='--env ML_API_MAX_BATCH_SIZE=8'      (see: .venv/bin/python -m bench --help)
# BENCH_OPS_ARGS does the same for the model-operations part (see: .venv/bin/python -m bench ops --help).
BENCH_ARGS ?=
BENCH_OPS_ARGS ?=

.PHONY: bench
bench: venv bench-tools ## Benchmark limit vs service vs naive (resnet18 + digits), then model operations (~25 min on 2 cores); writes docs/benchmarks.{md,json,png}
	$(PY) -m bench --docs --out .bench/results.json $(BENCH_ARGS)
	$(PY) -m bench ops --docs --out .bench/results-ops.json $(BENCH_OPS_ARGS)

.PHONY: bench-ops
bench-ops: venv ## Shadow overhead, reload timings and priorities (~6 min); adds them to docs/benchmarks.{md,json}
	$(PY) -m bench ops --docs --out .bench/results-ops.json $(BENCH_OPS_ARGS)

.PHONY: bench-quick
bench-quick: venv bench-tools ## Short benchmark (~7 min, concurrency 1/16/64, 3 s levels) into .bench/results-quick.json; docs untouched
	$(PY) -m bench --quick --out .bench/results-quick.json $(BENCH_ARGS)

.PHONY: bench-gpu
bench-gpu: venv ## The benchmark on a CUDA machine: resnet50, fp16 (ML_API_PRECISION), into .bench/results-gpu.json
	$(PY) -m bench --device cuda --arch resnet50 --precision fp16 --out .bench/results-gpu.json $(BENCH_ARGS)

# perf_analyzer (Triton's load generator for the Open Inference Protocol) for the /v2 rows. The
# perf-analyzer package on the index is an empty placeholder, so this takes the binary that the
# tritonclient wheel ships, plus what it links: libb64 (Debian) and libcudart.so.12 (the
# nvidia-cuda-runtime-cu12 wheel; loaded even on CPU). All under .bench/perf_analyzer (git-ignored).
# A failure here only means the /v2 rows use the fallback load generators (wrk, bench.oip grpc-load).
PERF_ANALYZER_DIR := .bench/perf_analyzer
TRITONCLIENT_VERSION ?= 2.40.0

.PHONY: bench-tools
bench-tools: $(PERF_ANALYZER_DIR)/bin/perf_analyzer ## perf_analyzer for the /v2 bench rows, into .bench/perf_analyzer

$(PERF_ANALYZER_DIR)/bin/perf_analyzer: | venv
	@dpkg -s libb64-0d >/dev/null 2>&1 || apt-get install -y -q --no-install-recommends libb64-0d \
	  || { apt-get update -q && apt-get install -y -q --no-install-recommends libb64-0d; } \
	  || echo "bench-tools: libb64-0d not installed (root and apt needed): perf_analyzer will not run"
	@mkdir -p $(PERF_ANALYZER_DIR)/wheel $(PERF_ANALYZER_DIR)/bin
	$(PY) -m pip download -q --no-deps --dest $(PERF_ANALYZER_DIR)/wheel tritonclient==$(TRITONCLIENT_VERSION) \
	  || echo "bench-tools: tritonclient $(TRITONCLIENT_VERSION) could not be downloaded"
	$(PY) -m pip install -q --no-deps --upgrade --target $(PERF_ANALYZER_DIR)/cudart nvidia-cuda-runtime-cu12 \
	  || echo "bench-tools: nvidia-cuda-runtime-cu12 could not be installed"
	@$(PY) -c 'import glob, os, sys, zipfile; \
	  wheels = glob.glob("$(PERF_ANALYZER_DIR)/wheel/tritonclient-$(TRITONCLIENT_VERSION)-*.whl"); \
	  wheels or sys.exit("bench-tools: no tritonclient wheel: perf_analyzer not installed (the /v2 rows use the fallback)"); \
	  z = zipfile.ZipFile(wheels[0]); \
	  name = next(n for n in z.namelist() if n.endswith("/bin/perf_analyzer")); \
	  out = "$(PERF_ANALYZER_DIR)/bin/perf_analyzer"; \
	  open(out, "wb").write(z.read(name)); os.chmod(out, 0o755); print("installed", out)' || true
