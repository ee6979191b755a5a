#!/usr/bin/env python3
"""Write the generated seeds of the GGUF fuzz target (fuzz/seeds/gguf/).

  llama_tok.gguf    a whole small model as fuzz_gguf takes it further than
                    the reader: a one-block LLaMA (d 32, 2 query heads on one
                    K/V head of 16, SwiGLU 32, context 16, Q8_0 matrices,
                    F32 norms) whose vocabulary is tests/fixtures/tok_tiny.gguf's
                    (269 tokens, 13 merges, pre "smollm"), so that one input
                    reaches the reader, mattn_llama_open (hyper-parameters,
                    tensor table, shapes), a forward and a decode step, and
                    the tokenizer build.
  llama_tok_f16.gguf  the same with F16 matrices and pre "gpt-2".

The other seeds are copies of tests/fixtures/ (gguf_*.gguf, tok_tiny.gguf,
llama_bad_*.gguf).  Deterministic (fixed seed).  Needs numpy and gguf:
  /work/main/.venv-bench/bin/python fuzz/gen_seeds.py
"""
import os
import sys

import numpy as np

import gguf
from gguf import GGMLQuantizationType as QT

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "fixtures"))
from gen_tokenizer_fixture import bytes_to_unicode  # noqa: E402


def tiny_vocab():
    """tok_tiny's vocabulary (gen_tokenizer_fixture.write_tiny)."""
    b2u = bytes_to_unicode()
    tokens = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<tool>"]
    types = [3, 3, 3, 4]
    for b in range(256):
        if b not in (ord("~"), 0xFF):
            tokens.append(b2u[b])
            types.append(1)
    merged = ["bc", "ab", "abc", "aa", "xyz", "\u0120a", "12", "\u0120\u0120", "\u0120\u0120\u0120\u0120", "pq", "pqr"]
    tokens += merged
    types += [1] * len(merged)
    merges = ["b c", "a b", "a bc", "a a", "x y", "xy z", "\u0120 a", "1 2", "\u0120 \u0120",
              "\u0120\u0120 \u0120\u0120", "p q", "pq r", "a b"]
    return tokens, types, merges


def write(path, qtype, pre):
    tokens, types, merges = tiny_vocab()
    d, f, v, dkv = 32, 32, len(tokens), 16
    w = gguf.GGUFWriter(path, arch="llama")
    for k, val in {"context_length": 16, "embedding_length": d, "block_count": 1, "feed_forward_length": f,
                   "attention.head_count": 2, "attention.head_count_kv": 1}.items():
        w.add_uint32(f"llama.{k}", val)
    w.add_float32("llama.attention.layer_norm_rms_epsilon", 1e-5)
    w.add_float32("llama.rope.freq_base", 10000.0)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    shapes = {"token_embd.weight": (v, d), "blk.0.attn_norm.weight": (d,), "blk.0.attn_q.weight": (d, d),
              "blk.0.attn_k.weight": (dkv, d), "blk.0.attn_v.weight": (dkv, d), "blk.0.attn_output.weight": (d, d),
              "blk.0.ffn_norm.weight": (d,), "blk.0.ffn_gate.weight": (f, d), "blk.0.ffn_up.weight": (f, d),
              "blk.0.ffn_down.weight": (d, f), "output_norm.weight": (d,)}
    r = np.random.default_rng(5)
    for name, shp in shapes.items():
        a = (0.3 * r.standard_normal(shp)).astype(np.float32)
        if len(shp) == 1:
            w.add_tensor(name, a + 1.0)
        elif qtype == QT.F16:
            w.add_tensor(name, a.astype(np.float16))
        else:
            w.add_tensor(name, gguf.quants.quantize(a, qtype), raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"{path}: {os.path.getsize(path)} bytes")


def main():
    out = os.path.join(HERE, "seeds", "gguf")
    write(os.path.join(out, "llama_tok.gguf"), QT.Q8_0, "smollm")
    write(os.path.join(out, "llama_tok_f16.gguf"), QT.F16, "gpt-2")


if __name__ == "__main__":
    main()
