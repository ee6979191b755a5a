# Thin wrapper around CMake so the README's commands stay short.
#   make            build (Release, -march=native, OpenMP, OpenBLAS)
#   make test       build and run every test through ctest
#   make train      build, fetch the KJV corpus, train the default tiny LM (runs/kjv-<time>)
#   make demo       build and run the one-layer demo
#   make portable   build without -march=native
#   make asan       build and test with AddressSanitizer + UBSan (build-asan/, -O2 -g; every test)
#   make noblas     build and test with the built-in GEMM and no OpenMP (build-noblas/; not the slow training test)
BUILD ?= build
CMAKE_FLAGS ?=
CTEST_FLAGS ?=
JOBS ?= $(shell nproc)

.PHONY: all build quiet-build test train demo portable asan noblas clean
RUN ?= runs/kjv-$(shell date +%Y%m%d-%H%M%S)
TRAIN_FLAGS ?=
all: build
build:
	cmake -S . -B $(BUILD) $(CMAKE_FLAGS) >/dev/null
	cmake --build $(BUILD) -j $(JOBS)
# the main job builds quietly: the compiler's output only when the build fails
quiet-build:
	@cmake -S . -B $(BUILD) $(CMAKE_FLAGS) >/dev/null && \
	  cmake --build $(BUILD) -j $(JOBS) >$(BUILD)/build.log 2>&1 || { cat $(BUILD)/build.log; exit 1; }
test: build
	cd $(BUILD) && ctest --output-on-failure $(CTEST_FLAGS)
train: quiet-build
	@scripts/get-corpus.sh
	./$(BUILD)/metaattn train --data data/kjv.txt --out $(RUN) $(TRAIN_FLAGS)
demo: build
	./$(BUILD)/demo
portable:
	$(MAKE) build BUILD=build-portable CMAKE_FLAGS="-DMETAATTN_NATIVE=OFF"
asan:
	$(MAKE) test BUILD=build-asan CMAKE_FLAGS="-DCMAKE_BUILD_TYPE=RelWithDebInfo -DMETAATTN_SANITIZE=ON"
noblas:
	$(MAKE) test BUILD=build-noblas CMAKE_FLAGS="-DMETAATTN_BLAS=OFF -DMETAATTN_OPENMP=OFF" CTEST_FLAGS="-LE slow"
clean:
	rm -rf build build-portable build-asan build-noblas build-install
