#!/usr/bin/python3
"""Checkpoints move both ways between metaattn and PyTorch.

1. `metaattn train` writes a small model; PyTorch reads model.safetensors
   (names of MetaLanguageModel's state_dict, config in __metadata__), runs the
   float64 reference LM of tests/fixtures/gen_model_fixtures.py on a text and
   must get the cross-entropy `metaattn eval --json` reports.
2. PyTorch changes the weights and writes them back as safetensors under the
   same names (buffers included, tied head omitted); `metaattn eval` on that
   file must agree with PyTorch's loss of the changed model.

Usage: tests/test_torch_roundtrip.py path/to/metaattn
Exit 77 (ctest: skipped) when PyTorch is not importable.
"""
import json
import os
import struct
import subprocess
import sys
import tempfile

try:
    import torch
except ImportError:
    print("PyTorch not importable: skipped (scripts/install-deps.sh --fixtures installs it)")
    sys.exit(77)

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "fixtures"))
from gen_layer_fixtures import save_safetensors  # noqa: E402
from gen_model_fixtures import lm_forward  # noqa: E402

torch.set_default_dtype(torch.float64)


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    meta = header.pop("__metadata__", {})
    out = {}
    for name, e in header.items():
        assert e["dtype"] == "F32", (name, e["dtype"])
        b, en = e["data_offsets"]
        t = torch.frombuffer(bytearray(data[b:en]), dtype=torch.float32).reshape(e["shape"])
        out[name] = t
    return out, meta


def run(*args):
    r = subprocess.run(list(args), capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit("FAIL: %s\n%s%s" % (" ".join(args), r.stdout, r.stderr))
    return r.stdout


def torch_loss(P, cfg, text, T):
    """Mean cross-entropy over consecutive windows of T+1 bytes (metaattn eval --split all)."""
    data = torch.tensor(list(text), dtype=torch.int64)
    n = len(data) // (T + 1)
    w = data[: n * (T + 1)].view(n, T + 1)
    with torch.no_grad():  # lm_forward's loss adds the aux losses; eval reports cross-entropy alone
        logits, _ = lm_forward(P, cfg, w[:, :T], w[:, 1:])
        ce = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), w[:, 1:].reshape(-1))
    return ce.item()


def main():
    binary = sys.argv[1]
    tmp = tempfile.mkdtemp()
    text = subprocess.run(["bible", "Gen1:1-Gen3:24"], capture_output=True).stdout
    if len(text) < 2000:
        sys.exit("FAIL: bible (Debian bible-kjv) printed nothing: run scripts/install-deps.sh")
    data = os.path.join(tmp, "gen.txt")
    with open(data, "wb") as f:
        f.write(text)
    cfg_path = os.path.join(tmp, "cfg.json")
    with open(cfg_path, "w") as f:
        json.dump({"attn": {"d_model": 32, "n_heads": 4, "window_size": 4, "controller_hidden": 8, "dropout": 0.0,
                            "controller": "bayesian"},
                   "vocab_size": 256, "n_layers": 2, "max_seq_len": 32, "position_norm": "max_seq_len"}, f)
    out = os.path.join(tmp, "run")
    run(binary, "train", "--config", cfg_path, "--data", data, "--steps", "30", "--batch", "8", "--context", "32",
        "--out", out, "--sample", "0", "--quiet", "--threads", "2")
    model = os.path.join(out, "model.safetensors")
    T = 32

    # 1. metaattn -> PyTorch
    W, meta = read_safetensors(model)
    cfg = json.loads(meta["config"])
    P = {k: v.double() for k, v in W.items() if not k.endswith(".costs") and not k.endswith(".prior_beta")}
    ev = json.loads(run(binary, "eval", "--model", model, "--data", data, "--split", "all", "--context", str(T),
                        "--json", "--threads", "2"))
    lt = torch_loss(P, cfg, text, T)
    print("metaattn -> torch: metaattn %.6f  torch %.6f  diff %.2e" % (ev["val_loss"], lt, abs(ev["val_loss"] - lt)))
    ok = abs(ev["val_loss"] - lt) <= 1e-4

    # 2. PyTorch -> metaattn: change every weight, write under the same names
    g = torch.Generator().manual_seed(5)
    P2 = {k: v + 0.05 * torch.randn(v.shape, generator=g) for k, v in P.items()}
    back = {k: v.float() for k, v in P2.items()}
    for k, v in W.items():  # buffers as they were
        if k.endswith(".costs") or k.endswith(".prior_beta"):
            back[k] = v
    model2 = os.path.join(tmp, "from_torch.safetensors")
    save_safetensors(model2, back, {"config": meta["config"]})
    ev2 = json.loads(run(binary, "eval", "--model", model2, "--data", data, "--split", "all", "--context", str(T),
                         "--json", "--threads", "2"))
    lt2 = torch_loss({k: v.float().double() for k, v in P2.items()}, cfg, text, T)
    print("torch -> metaattn: metaattn %.6f  torch %.6f  diff %.2e" % (ev2["val_loss"], lt2, abs(ev2["val_loss"] - lt2)))
    ok = ok and abs(ev2["val_loss"] - lt2) <= 1e-4 and abs(lt2 - lt) > 1e-3  # the change mattered
    print("PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
