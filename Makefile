# Thin wrapper around CMake so the README's commands stay short.
#   make            build (Release, -march=native, OpenMP, OpenBLAS)
#   make test       build and run every test through ctest
#   make demo       build and run the demo
#   make portable   build without -march=native
#   make asan       build and test with AddressSanitizer + UBSan (build-asan/)
#   make noblas     build and test with the built-in GEMM and no OpenMP (build-noblas/)
BUILD ?= build
CMAKE_FLAGS ?=
JOBS ?= $(shell nproc)

.PHONY: all build test demo portable asan noblas clean
all: build
build:
	cmake -S . -B $(BUILD) $(CMAKE_FLAGS) >/dev/null
	cmake --build $(BUILD) -j $(JOBS)
test: build
	cd $(BUILD) && ctest --output-on-failure
demo: build
	./$(BUILD)/demo
portable:
	$(MAKE) build BUILD=build-portable CMAKE_FLAGS="-DMETAATTN_NATIVE=OFF"
asan:
	$(MAKE) test BUILD=build-asan CMAKE_FLAGS="-DCMAKE_BUILD_TYPE=Debug -DMETAATTN_SANITIZE=ON"
noblas:
	$(MAKE) test BUILD=build-noblas CMAKE_FLAGS="-DMETAATTN_BLAS=OFF -DMETAATTN_OPENMP=OFF"
clean:
	rm -rf build build-portable build-asan build-noblas
