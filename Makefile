# fastreid-ext: `make demo` and `make test` are the two set-up commands (see README.md).
PY      ?= python3
VENV    := .venv
PYTHON  := $(VENV)/bin/python
STAMP   := $(VENV)/.fastreid-ext-installed
DATA    := datasets
DEMO_CFG := configs/Synthetic/bagtricks_R18.yml
DEMO_OUT := logs/synthetic/bagtricks_R18
# synthetic demo set: Market-style, sizes chosen for a <10 min CPU demo
SYN_ARGS := --train-ids 150 --test-ids 150 --seed 0

.PHONY: venv data demo test bench clean-data

venv: $(STAMP)

# Reinstalls only when requirements.txt or setup.py change; otherwise a no-op in milliseconds.
$(STAMP): requirements.txt setup.py
	test -x $(PYTHON) || $(PY) -m venv $(VENV)
	$(PYTHON) -m pip install -q --upgrade pip
	grep -v -e '^fastreid==' -e '# no-deps$$' -e '# from-source$$' -e '# model-file$$' requirements.txt \
	    > $(VENV)/requirements-deps.txt
	$(PYTHON) -m pip install -r $(VENV)/requirements-deps.txt
	$(PYTHON) -m pip install --no-deps $$(grep '^fastreid==' requirements.txt | cut -d' ' -f1)
	$(PYTHON) -m pip install --no-deps $$(grep '# no-deps$$' requirements.txt | cut -d' ' -f1)
	$(PYTHON) -m pip install --no-deps --no-build-isolation --no-binary :all: \
	    $$(grep '# from-source$$' requirements.txt | cut -d' ' -f1)
	$(PYTHON) -m pip install --no-deps --no-build-isolation -e .
	$(PYTHON) -m fastreid_ext.pose.blazepose install --dest $(VENV)/share/fastreid-ext \
	    $$(grep '# model-file$$' requirements.txt | cut -d' ' -f1)
	$(PYTHON) -m fastreid_ext.compat --build-ranker || echo "Cython ranker not built: the Python ranker will be used"
	touch $@

data: venv
	$(PYTHON) tools/make_synthetic.py --root $(DATA)/synthetic_market --domain market $(SYN_ARGS)

demo: data
	$(PYTHON) tools/train_net.py --config-file $(DEMO_CFG) OUTPUT_DIR $(DEMO_OUT)
	$(PYTHON) tools/train_net.py --config-file $(DEMO_CFG) --eval-only \
	    MODEL.WEIGHTS $(DEMO_OUT)/model_final.pth OUTPUT_DIR $(DEMO_OUT)/eval

test: venv
	$(PYTHON) -m pytest -q -n 2 --dist worksteal tests

clean-data:
	rm -rf $(DATA)/synthetic_market $(DATA)/synthetic_duke
