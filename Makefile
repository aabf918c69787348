# Why: the README's two commands. `make demo` builds and trains the embedded tiny MoE; `make test` builds and runs every test.
# Both first install what is missing (scripts/setup.sh).
BUILD_DIR ?= build
JOBS ?= $(shell nproc)

.PHONY: setup build demo test clean

setup:
	@bash scripts/setup.sh

build: setup
	@cmake -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=Release > $(BUILD_DIR).configure.log 2>&1 || (cat $(BUILD_DIR).configure.log; exit 1)
	@cmake --build $(BUILD_DIR) -j $(JOBS)

demo: build
	$(BUILD_DIR)/moetune train --output runs/demo
	$(BUILD_DIR)/moetune eval --model runs/demo/final --data runs/demo/eval_tokens.jsonl --seq-len 128

test: build
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS)

clean:
	rm -rf $(BUILD_DIR) $(BUILD_DIR).configure.log
