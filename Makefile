# Two commands set everything up on a fresh machine:
#   make demo   venv + synthetic UCF-101-style videos -> frames -> json -> train/val/infer -> top-1
#               -> exported model, curves.png, one video classified
#   make test   venv + lint (ruff) + the whole test suite
# GPU: add PADDLE=paddlepaddle-gpu (see README.md).

PYTHON ?= python3
PADDLE ?= paddlepaddle
VENV ?= .venv
DEMO ?= demo
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(PADDLE)

.PHONY: venv demo test clean-demo

venv: $(STAMP)

# Paddle 2.x (the public index's GPU wheel) segfaults beside NumPy 2: it gets numpy<2.
$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip uninstall -q -y paddlepaddle paddlepaddle-gpu
	$(PY) -m pip install -q $(PADDLE) -r requirements.txt pytest ruff
	$(PY) -c "import paddle, sys; sys.exit(paddle.__version__.startswith('2.'))" \
		|| $(PY) -m pip install -q "numpy<2"
	rm -f $(VENV)/.installed-*
	touch $@

demo: $(STAMP)
	$(PY) -m util_scripts.make_demo_data $(DEMO)
	$(PY) -m util_scripts.generate_video_jpgs $(DEMO)/videos $(DEMO)/jpg ucf101
	$(PY) -m util_scripts.ucf101_json $(DEMO)/annotations $(DEMO)/jpg $(DEMO)/json
	$(PY) main.py --root_path $(DEMO) --video_path jpg --annotation_path json/ucf101_01.json \
		--result_path results --dataset ucf101 --n_classes 4 --model resnet --model_depth 10 \
		--resnet_widen_factor 0.5 --sample_size 48 --sample_duration 8 --sample_t_stride 2 \
		--batch_size 8 --n_epochs 40 --learning_rate 0.01 --multistep_milestones 30 \
		--checkpoint 10 --n_threads 2 --inference --inference_batch_size 2 --output_topk 0
	$(PY) -m util_scripts.eval_accuracy $(DEMO)/json/ucf101_01.json $(DEMO)/results/val.json \
		--subset validation -k 1 --save
	$(PY) -m util_scripts.export_model --opts $(DEMO)/results/opts.json \
		--weights $(DEMO)/results/save_40.pdparams --output $(DEMO)/exported
	$(PY) -m pip install -q matplotlib
	$(PY) -m util_scripts.plot_logs $(DEMO)/results
	$(PY) -m util_scripts.predict_video $(DEMO)/videos/DriftUp/v_DriftUp_g04_c02.avi \
		--model $(DEMO)/exported --topk 4

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest tests

clean-demo:
	rm -rf $(DEMO)
