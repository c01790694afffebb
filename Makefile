# photosort: `make demo` and `make test` each set up everything they need on a fresh machine.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
DEMO    := runs/demo
SAMPLE  := datasets/face-mask-sample
# Keep everything on this machine: our ultralytics/wandb state lives in the project, never the network.
export PHOTOSORT_HOME ?= $(CURDIR)/runs/.home
export WANDB_MODE ?= offline

.PHONY: demo test lint bench clean install

install: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt requirements-nodeps.txt pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt -r requirements-dev.txt
	$(BIN)/python -m pip install --quiet --no-deps -r requirements-nodeps.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/photosort train $(SAMPLE)/train --name demo --detector-minutes $${DEMO_MINUTES:-2} --imgsz 416 --batch 8
	rm -rf runs/demo-sorted
	$(BIN)/photosort classify $(SAMPLE)/test --out runs/demo-sorted --model $(DEMO) -q; \
	  status=$$?; [ $$status -eq 0 ] || [ $$status -eq 3 ] || exit $$status
	$(BIN)/photosort evaluate $(SAMPLE)/test --model $(DEMO) --out runs/demo-evaluate.json > /dev/null
	$(BIN)/python bench/demo_summary.py runs/demo-evaluate.json
	@echo
	@echo "Sorted copies:  runs/demo-sorted/  (with_mask/, without_mask/, mask_weared_incorrect/, uncertain/, manifest.csv)"
	@echo "Model:          $(DEMO)/  (metrics.json; wandb offline run under $(DEMO)/wandb)"
	@echo "Note: the labels are mask states, so the face detector + photosort's mask head (trained on the"
	@echo "      face-mask set's train side; fine-tuned on these labels if that measured better) do the sorting;"
	@echo "      the YOLO detector trained here for $${DEMO_MINUTES:-2} minutes on 60 photos on a CPU finds little (its mAP above)."

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check sorter tests bench
	$(BIN)/ruff format --check sorter tests bench

bench: $(STAMP)
	$(BIN)/python bench/end_to_end.py

clean:
	rm -rf runs/demo runs/demo-sorted runs/demo-evaluate.json .pytest_cache
