# Every target is one `python -m` command; users without make run the same commands by hand.
# `make engines` goes checkpoint -> ONNX -> cleaned ONNX per precision -> plan + manifest, and
# redoes only what changed (each step depends on the file before it and on the code it loads).

VENV        ?= .venv
PYTHON      ?= $(VENV)/bin/python
# torch 2.13.0 resolves to a CPU build on the project's CI machines; on a GPU machine pass TORCH=torch
TORCH       ?= torch==2.13.0
EXTRAS      ?= pipeline,cpu,rtx,test
VOCODERS    ?= v3 v4
PRECISIONS  ?= fp32 fp16
CHECKPOINT_V3 ?=
CHECKPOINT_V4 ?=
BUILDER     ?= python
ONNX_DIR    := engines/onnx

STAMPS      := engines/.stamps

# A stage's code is every project file its entry module loads: its import closure, which
# pipeline/closure.py reads from the source with ast (plain python3, so it works before `make install`).
# Each stage's rule depends on those files and on a stamp holding their list, rewritten as the
# Makefile is read only when the list changes: editing, adding or dropping a file the stage loads
# remakes what the stage made, and `make -q`/`make -n` tell the truth.
CLOSURES := $(shell python3 -m pipeline.closure --tagged export=export clean=export.clean build=build synthetic=export.synthetic)
closure = $(patsubst $(1):%,%,$(filter $(1):%,$(CLOSURES)))
record_closure = $(shell mkdir -p $(STAMPS) && echo '$(2)' | cmp -s - $(STAMPS)/$(1) || echo '$(2)' > $(STAMPS)/$(1))
EXPORT_SOURCES    := $(call closure,export)
CLEAN_SOURCES     := $(call closure,clean)
BUILD_SOURCES     := $(call closure,build)
SYNTHETIC_SOURCES := $(call closure,synthetic)
ifeq ($(and $(EXPORT_SOURCES),$(CLEAN_SOURCES),$(BUILD_SOURCES),$(SYNTHETIC_SOURCES)),)
$(error python3 -m pipeline.closure listed no sources; run make from the repository root with python3 on the PATH)
endif
$(call record_closure,export,$(EXPORT_SOURCES))
$(call record_closure,clean,$(CLEAN_SOURCES))
$(call record_closure,build,$(BUILD_SOURCES))
$(call record_closure,synthetic,$(SYNTHETIC_SOURCES))

checkpoint = $(CHECKPOINT_$(subst v,V,$(1)))
# make splits file names at spaces (targets, prerequisites, wildcard): refuse such a path in one line
$(foreach v,V3 V4,$(if $(word 2,$(CHECKPOINT_$(v))),$(error CHECKPOINT_$(v)="$(CHECKPOINT_$(v))" has a space, which make cannot hold in a file name; move or link the checkpoint to a path without spaces, or run python -m export --checkpoint "..." by hand)))

.PHONY: install engines onnx stress-checkpoints doctor compare bench report triton test lint clean
.DEFAULT_GOAL := engines

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet "$(TORCH)"
	$(PYTHON) -m pip install --quiet ".[$(EXTRAS)]"
	touch $@

# One export rule per vocoder. It depends on the checkpoint's files, and on a small stamp that
# changes (rewritten as the Makefile is read) only when CHECKPOINT_Vn names another checkpoint or
# none (the synthetic default); so `make -q`/`make -n` tell the truth too.
record_source = $(shell mkdir -p $(ONNX_DIR) && echo '$(call checkpoint,$(1))' | cmp -s - $(ONNX_DIR)/$(1).source || echo '$(call checkpoint,$(1))' > $(ONNX_DIR)/$(1).source)
$(foreach v,$(VOCODERS),$(call record_source,$(v)))

define vocoder_rules
$(ONNX_DIR)/$(1).onnx: $(EXPORT_SOURCES) $(STAMPS)/export $(ONNX_DIR)/$(1).source $(if $(call checkpoint,$(1)),$(wildcard $(call checkpoint,$(1)) $(call checkpoint,$(1))/*)) | $(VENV)/.installed
	$(PYTHON) -m export --vocoder $(1) $(if $(call checkpoint,$(1)),--checkpoint $(call checkpoint,$(1))) --output $$@
endef

# Cleaned ONNX and engine per vocoder and precision. An engine's target is its manifest, which the
# build writes last (build/plan.py): a build cut short leaves no manifest, so make builds it again.
define precision_rules
$(ONNX_DIR)/$(1).$(2).onnx: $(ONNX_DIR)/$(1).onnx $(CLEAN_SOURCES) $(STAMPS)/clean pipeline.toml
	$(PYTHON) -m export.clean $$< --precision $(2) --output $$@
engines/$(1).$(2).json: $(ONNX_DIR)/$(1).$(2).onnx $(BUILD_SOURCES) $(STAMPS)/build pipeline.toml
	$(PYTHON) -m build $$< --vocoder $(1) --precision $(2) --builder $(BUILDER) --output $$(@:.json=.plan)
endef

$(foreach v,$(VOCODERS),$(eval $(call vocoder_rules,$(v))))
$(foreach v,$(VOCODERS),$(foreach p,$(PRECISIONS),$(eval $(call precision_rules,$(v),$(p)))))

onnx: $(foreach v,$(VOCODERS),$(foreach p,$(PRECISIONS),$(ONNX_DIR)/$(v).$(p).onnx))

engines: $(foreach v,$(VOCODERS),$(foreach p,$(PRECISIONS),engines/$(v).$(p).json))

# The seeded stress checkpoints, written as upstream lays them out (README: "Stress checkpoints").
# The full-length check of their fp16 plans is `make engines` on them:
#   make stress-checkpoints && make engines CHECKPOINT_V3=engines/stress/bigvgan CHECKPOINT_V4=engines/stress/vocoder.pth
stress-checkpoints: engines/stress/bigvgan/bigvgan_generator.pt engines/stress/vocoder.pth

engines/stress/bigvgan/bigvgan_generator.pt: $(SYNTHETIC_SOURCES) $(STAMPS)/synthetic pipeline.toml | $(VENV)/.installed
	$(PYTHON) -m export.synthetic --kind stress --vocoder v3 --output $(@D)

engines/stress/vocoder.pth: $(SYNTHETIC_SOURCES) $(STAMPS)/synthetic pipeline.toml | $(VENV)/.installed
	$(PYTHON) -m export.synthetic --kind stress --vocoder v4 --output $@

doctor: $(VENV)/.installed
	$(PYTHON) -m build doctor

compare: engines
	$(PYTHON) -m validate compare-all

bench: $(VENV)/.installed
	$(PYTHON) -m validate bench

report: engines
	$(PYTHON) -m validate report

triton: engines
	$(PYTHON) -m serving.triton_server

test: $(VENV)/.installed
	$(PYTHON) -m pytest

lint: $(VENV)/.installed
	$(PYTHON) -m ruff check .

clean:
	rm -rf $(ONNX_DIR) engines/*.plan engines/*.json engines/*.cache engines/*.runtime-cache engines/*.png engines/report.md engines/triton engines/validate engines/stress $(STAMPS)
