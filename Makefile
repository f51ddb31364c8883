# Every target is one `python -m` command; users without make run the same commands by hand.
# `make engines` goes checkpoint -> ONNX -> cleaned ONNX per precision -> plan, redoing only what changed.

VENV        ?= .venv
PYTHON      ?= $(VENV)/bin/python
# torch 2.13.0 resolves to the CPU build on the CI machines; on a GPU machine pass TORCH=torch
TORCH       ?= torch==2.13.0
EXTRAS      ?= rtx,test
VOCODERS    ?= v3 v4
PRECISIONS  ?= fp32 fp16
CHECKPOINT_V3 ?=
CHECKPOINT_V4 ?=
ONNX_DIR    := engines/onnx

checkpoint_flag = $(if $(CHECKPOINT_$(shell echo $(1) | tr a-z A-Z)),--checkpoint $(CHECKPOINT_$(shell echo $(1) | tr a-z A-Z)))
checkpoint_dep  = $(wildcard $(CHECKPOINT_$(shell echo $(1) | tr a-z A-Z)) $(CHECKPOINT_$(shell echo $(1) | tr a-z A-Z))/*)

EXPORT_SOURCES := $(wildcard export/*.py pipeline/*.py) pipeline.toml

.PHONY: install engines onnx test clean
.DEFAULT_GOAL := engines

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet "$(TORCH)"
	$(PYTHON) -m pip install --quiet ".[$(EXTRAS)]"
	touch $@

onnx: $(foreach v,$(VOCODERS),$(ONNX_DIR)/$(v).onnx)

engines: onnx

$(ONNX_DIR)/%.onnx: $(VENV)/.installed $(EXPORT_SOURCES)
	$(PYTHON) -m export --vocoder $* $(call checkpoint_flag,$*) --output $@

test: $(VENV)/.installed
	$(PYTHON) -m pytest

clean:
	rm -rf $(ONNX_DIR) engines/*.plan engines/*.json engines/*.cache engines/report.md
