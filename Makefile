# The README's two commands: `make test` and `make demo`. Both create .venv on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
# visdom 0.2.4 builds only with setuptools<81; tornado 6.6 breaks its dashboard.
export PIP_CONSTRAINT := $(CURDIR)/constraints.txt

VIS_PORT ?= 13570
# pytest processes for `make test` (each runs one test file at a time, one thread each)
TEST_WORKERS ?= 2
VIS_ENV_PATH ?= $(HOME)/.visdom

.PHONY: test demo demo-own demo-geo venv browser visdom clean

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

# The dashboard test drives a real Chromium; install it where we can (root with apt-get), else it skips.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "note: chromium not found and cannot be installed here; the browser test will skip"; fi; }

test: venv browser
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder tests

# Install the dashboard's web assets from the npm registry, then serve it on 127.0.0.1 only.
visdom: venv
	$(PY) tools/visdom_assets.py
	$(PY) -m visdom.server -port $(VIS_PORT) --hostname 127.0.0.1 -bind_local -env_path $(VIS_ENV_PATH)

DEMO_CKPT := checkpoints/best_deeplabv3plus_hrnetv2_48_demo_os16.pth
DEMO_VAL_IMAGES := datasets/data/demo/VOCdevkit/VOC2012/JPEGImages/demo_0030*.jpg

# Generate the demo data, train from scratch (validating at the end), predict on validation images.
demo: venv
	$(PY) main.py --config configs/demo.yaml
	$(PY) predict.py --input "$(DEMO_VAL_IMAGES)" --ckpt $(DEMO_CKPT) --model deeplabv3plus_hrnetv2_48 \
		--output color overlay --save_val_results_to results/demo_predictions

OWN_ROOT := datasets/data/cracks
OWN_CKPT := checkpoints/demo_own/best_deeplabv3plus_mobilenet_folder_os16.pth

# Your own data, worked example: generate binary crack data in the folder layout, train, predict on validation images.
demo-own: venv
	$(PY) tools/make_crack_dataset.py --root $(OWN_ROOT)
	$(PY) main.py --config configs/demo_own.yaml --data_root $(OWN_ROOT)
	$(PY) predict.py --input "$(OWN_ROOT)/images/crack_0016*.jpg" --ckpt $(OWN_CKPT) --dataset folder \
		--classes $(OWN_ROOT)/classes.yaml --output color overlay --save_val_results_to results/demo_own_predictions

GEO_ROOT := datasets/data/geo_demo
GEO_CKPT := checkpoints/demo_geo/best_deeplabv3plus_mobilenet_folder_os16.pth

# Multi-band imagery, worked example: 4-band GeoTIFF tiles, trained with every band and with RGB alone (both mIoUs
# side by side), then a larger georeferenced scene predicted to scene_label.tif.
demo-geo: venv
	$(PY) tools/make_geo_dataset.py --root $(GEO_ROOT)
	$(PY) main.py --config configs/demo_geo.yaml --data_root $(GEO_ROOT)
	$(PY) main.py --config configs/demo_geo.yaml --data_root $(GEO_ROOT) --bands 1,2,3 \
		--checkpoint_dir checkpoints/demo_geo_rgb --results_dir results/demo_geo_rgb
	$(PY) tools/compare_metrics.py "all bands=results/demo_geo/metrics.json" \
		"bands 1,2,3=results/demo_geo_rgb/metrics.json"
	$(PY) predict.py --input $(GEO_ROOT)/scene.tif --ckpt $(GEO_CKPT) --output label color overlay \
		--window 128 --stride 96 --save_val_results_to results/demo_geo_predictions

clean:
	rm -rf $(VENV) .pytest_cache
