# Two commands do all the set-up: `make demo` and `make test`. Each creates .venv and installs
# everything from pyproject.toml into it.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test samples clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

## Convert every bundled sample to every target, validate each, print the parity table.
demo: $(STAMP)
	$(BIN)/rnnexport convert samples/*.keras samples/*.h5 samples/tf1_tagger samples/*.pb --to all --out build/demo --force \
		--report build/demo/parity.json
	$(BIN)/rnnexport convert samples/lstm_variable.keras samples/gru_fixed.keras samples/kws_conv_gru.keras samples/tf1_tagger \
		samples/unrolled_lstm.pb --streaming --to all --out build/demo/streaming --force --report build/demo/streaming/parity.json

## Run the test suite (what CI runs): two workers, one test file each at a time, so that a file's
## fixtures are written once (17 min in one process on the 2-core CI machine, 8 in two).
test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadfile

## Rewrite the bundled sample models.
samples: $(STAMP)
	$(BIN)/python samples/make_samples.py
	TF_USE_LEGACY_KERAS=1 $(BIN)/python tests/tf1_helper.py write build/tf1 embedded_multi_lstm
	cp build/tf1/embedded_multi_lstm/model.ckpt.* samples/tf1_tagger/
	printf 'model_checkpoint_path: "model.ckpt"\n' > samples/tf1_tagger/checkpoint
	TF_USE_LEGACY_KERAS=1 $(BIN)/python tests/tf1_helper.py freeze build/frozen hand_unrolled_lstm
	cp build/frozen/hand_unrolled_lstm.pb samples/unrolled_lstm.pb

clean:
	rm -rf build $(VENV)
