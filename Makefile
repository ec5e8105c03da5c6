# storyd: `make demo` renders the example comic; `make test` runs the test suite.
# Both set up the virtual environment first (torch pinned to the CPU wheel 2.13.0).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.storyd-setup

.PHONY: setup demo test test-full-size bench bench-gpu lint docs train-toy train-toy-motion train-toy-video eval clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test]'
	# open_clip_torch ships the CLIP BPE merges storyd builds its tokenizer from; its own
	# dependencies (torchvision) are not needed, and would not import beside the CPU torch.
	$(BIN)/pip install --quiet --no-deps open_clip_torch==3.3.0
	touch $(STAMP)

demo: setup
	$(BIN)/storyd comic stories/beach-day.yaml
	$(BIN)/storyd animate out/beach-day --force  # into out/beach-day/video: the toy model's video stage, on the CPU

test: setup
	$(BIN)/python -m pytest -q

# SD1.5 and SDXL at full size, random weights in the published single-file layout, through storyd's
# real loading path (tests/test_full_size.py, marked slow: `make test` leaves it out). 4 to 7 minutes on
# 2 CPU cores, 7 GB of temporary disk, 14 GB peak RSS of which 7 GB is the mapped file (docs/benchmarks.md).
test-full-size: setup
	$(BIN)/python -m pytest -q -m slow tests/test_full_size.py

bench: setup
	$(BIN)/python -m bench

# Full size on a CUDA GPU (random weights, no network; under 8 minutes on an H100), reduced on a CPU.
# The table also goes to out/bench/gpu-<device>-<date>.md, or to STORYD_BENCH_OUT.
bench-gpu: setup
	$(BIN)/python -m bench gpu

lint: setup
	$(BIN)/ruff check storyd tests bench

# docs/commands.md from every command's --help (a test checks that it is current).
docs: setup
	$(BIN)/python -m storyd.cli.reference

train-toy: setup
	$(BIN)/storyd train-toy --device cpu  # where the shipped model was trained: the same bytes

# The toy image encoder, then the motion predictor on its embeddings, each measured and installed
# (docs/toy-model.md#motion); with the thread counts the shipped ones were trained with.
train-toy-motion: setup
	OMP_NUM_THREADS=2 $(BIN)/python -m storyd.toy.image_encoder out/toy-image-encoder --install
	OMP_NUM_THREADS=1 $(BIN)/storyd train-motion --toy -o out/toy-motion --device cpu
	OMP_NUM_THREADS=1 $(BIN)/python -m storyd.toy.motion_train out/toy-motion --install
	$(BIN)/storyd weights lock-fill toy

# The toy video stage (motion modules, SparseCtrl, IP-Adapter Plus) on the toy world's clips; resumes
# when run again; installs into storyd/assets/toy/video (docs/toy-model.md#video-stage), then re-pins the toy entry.
train-toy-video: setup
	OMP_NUM_THREADS=2 $(BIN)/python -m storyd.toy.video_train out/toy-video --install
	$(BIN)/storyd weights lock-fill toy

# The embedded model over the toy evaluation stories, CSA off and on, then the table.
eval: setup
	$(BIN)/storyd eval-suite stories/eval/toy --out out/eval
	$(BIN)/storyd eval out/eval/off out/eval/on --label csa-off --label csa-on

clean:
	rm -rf $(VENV) out build *.egg-info
