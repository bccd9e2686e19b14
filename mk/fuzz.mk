# Coverage-guided fuzzing of image decode + preprocess (fuzz/decode_fuzz.py, atheris). CI runs it
# for 60 s through tests/inference/test_decode_hostile.py; this is the longer run. A finding is
# written to $(FUZZ_WORK)/artifacts/: commit it under tests/data/hostile/ with its expected outcome.
FUZZ_SECONDS ?= 600
FUZZ_RSS_MB ?= 2048
FUZZ_WORK ?= .fuzz

.PHONY: fuzz
fuzz: venv ## Fuzz image decode + preprocess for FUZZ_SECONDS (600 s); findings in .fuzz/artifacts/
	@mkdir -p $(FUZZ_WORK)/corpus $(FUZZ_WORK)/artifacts
	$(PY) -m fuzz.decode_fuzz $(FUZZ_WORK)/corpus fuzz/corpus -max_total_time=$(FUZZ_SECONDS) \
		-rss_limit_mb=$(FUZZ_RSS_MB) -timeout=20 -artifact_prefix=$(FUZZ_WORK)/artifacts/ -print_final_stats=1
	@test -z "$$(ls -A $(FUZZ_WORK)/artifacts)" || { echo "fuzz: findings in $(FUZZ_WORK)/artifacts/"; exit 1; }

.PHONY: fuzz-seeds
fuzz-seeds: venv ## Rewrite the committed fuzz seed corpus (fuzz/corpus/) with Pillow
	$(PY) -m fuzz.make_seeds
