# Two commands do everything on a fresh machine (Python 3.11, no GPU, no hub access):
#   make demo   set up, then run the small end-to-end job offline
#   make test   set up, then run the tests
# Set-up: a virtual environment in .venv with the CPU build of torch 2.13.0 installed first (an open torch
# requirement would pull a multi-GB CUDA build), then xstilts with its test and e5 extras.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

.PHONY: setup demo test test-all bench bench-gpu clean-models

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev,e5]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(OFFLINE) $(BIN)/python -m sweeps.demo

# the default suite (CI's): every test but those marked slow (minutes each: kills at several moments, the example
# experiments, preemption); `make test-all` runs those too
test: setup
	$(OFFLINE) $(BIN)/python -m pytest -q -p no:cacheprovider -m "not slow"

test-all: setup
	$(OFFLINE) $(BIN)/python -m pytest -q -p no:cacheprovider

# every benchmark with the settings benchmarks/README.md reports (about an hour on 2 cores; results in
# benchmarks/results/); not part of the tests
bench: setup
	$(OFFLINE) $(BIN)/python benchmarks/startup.py --repeats 10
	$(OFFLINE) $(BIN)/python benchmarks/fixed_cost.py --repeats 5
	$(OFFLINE) $(BIN)/python benchmarks/cache.py --task xnli --repeats 3
	$(OFFLINE) $(BIN)/python benchmarks/train.py --model tiny-xlmr --task panx --repeats 5
	$(OFFLINE) $(BIN)/python benchmarks/train.py --model tiny-xlmr --task panx --repeats 9 --variants plain-fused,xstilts \
		--threads 1
	$(OFFLINE) $(BIN)/python benchmarks/train.py --model multilingual-e5-small --task panx --steps 20 \
		--batch-size 16 --max-length 128 --repeats 3
	$(OFFLINE) $(BIN)/python benchmarks/tracking.py --repeats 7 --threads 1
	$(OFFLINE) $(BIN)/python benchmarks/tracking.py --repeats 5 --threads 1 --steps 700
	$(OFFLINE) $(BIN)/python benchmarks/whole_run.py --repeats 5 --threads 1
	$(OFFLINE) $(BIN)/python benchmarks/sweep_overhead.py --repeats 3
	$(OFFLINE) $(BIN)/python benchmarks/sweep_overhead.py --repeats 1 --epochs 64
	$(OFFLINE) $(BIN)/python benchmarks/tracking.py --model multilingual-e5-small --steps 50 --batch-size 16 --repeats 3
	$(OFFLINE) $(BIN)/python benchmarks/evaluate.py --model tiny-xlmr --task panx --repeat 25 --repeats 3
	$(OFFLINE) $(BIN)/python benchmarks/evaluate.py --model multilingual-e5-small --task panx --repeat 2 --repeats 2
	$(OFFLINE) $(BIN)/python benchmarks/retrieval_mining.py --n 50000
	$(OFFLINE) $(BIN)/python benchmarks/sweep_workers.py --repeats 2
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(OFFLINE) $(BIN)/python benchmarks/retrieval_mining.py --n 20000 --against-faiss --repeats 3 --threads 1

# the GPU recipe (benchmarks/gpu.py): XLM-R large in bf16, micro-batch 4 x 8 against the largest that fits, with
# and without torch.compile; on a GPU machine
bench-gpu: setup
	$(OFFLINE) $(BIN)/python benchmarks/gpu.py
	$(OFFLINE) $(BIN)/python benchmarks/train.py --model multilingual-e5-small --task panx --precision bf16-mixed \
		--variants plain-fused,xstilts --repeats 3

clean-models:
	rm -rf "$${XSTILTS_CACHE:-$$HOME/.cache/xstilts}"
