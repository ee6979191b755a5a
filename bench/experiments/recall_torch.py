#!/usr/bin/env python3
"""An independent check of the recall pilot (docs/results.md "Recall"): the
all-full tiny model written in PyTorch (the same shape as `metaattn train
--experts full`: token + learned position embeddings, pre-LN blocks with one
causal softmax attention and a GELU MLP, tied output; N(0, 0.02) init, AdamW
0.9/0.95 with decay 0.1 on matrices, clip 1.0, linear warmup 100 then cosine
to lr/10), trained on the same records.  It prints the training loss and the
loss on the value bytes of the queries, so that a plateau seen in metaattn
can be told apart from a bug in metaattn.

    .venv-bench/bin/python bench/experiments/recall_torch.py --data data/recall.txt \
        [--records 257] [--steps 600] [--batch 16] [--lr 2e-3] [--layers 4] [--d-model 128] \
        [--heads 4] [--query-sep :] [--seed 1] [--threads 2]

Needs PyTorch 2.x (scripts/install-deps.sh --bench).
"""
import argparse
import math
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, D, H):
        super().__init__()
        self.H = H
        self.ln1, self.ln2 = nn.LayerNorm(D), nn.LayerNorm(D)
        self.qkv, self.out = nn.Linear(D, 3 * D, bias=False), nn.Linear(D, D, bias=False)
        self.mlp = nn.Sequential(nn.Linear(D, 4 * D), nn.GELU(), nn.Linear(4 * D, D))

    def forward(self, x):
        B, T, D = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, T, 3, self.H, D // self.H).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.out(y.transpose(1, 2).reshape(B, T, D))
        return x + self.mlp(self.ln2(x))


class LM(nn.Module):
    def __init__(self, L, D, H, T, V=256):
        super().__init__()
        self.tok, self.pos = nn.Embedding(V, D), nn.Embedding(T, D)
        self.blocks = nn.ModuleList(Block(D, H) for _ in range(L))
        self.lnf = nn.LayerNorm(D)
        for p in self.parameters():
            if p.dim() == 2:
                nn.init.normal_(p, 0.0, 0.02)

    def forward(self, idx):
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1]))
        for b in self.blocks:
            x = b(x)
        return self.lnf(x) @ self.tok.weight.T


def value_mask(recs, sep):
    """[:, t] is True where target t (byte t + 1) is a queried value digit:
    the bytes "@", 4 upper-case letters, SEP, then the 4 digits."""
    T = recs.shape[1]
    ok = recs[:, :T - 9] == ord("@")
    for i in range(1, 5):
        c = recs[:, i:T - 9 + i]
        ok &= (c >= ord("A")) & (c <= ord("Z"))
    ok &= recs[:, 5:T - 4] == ord(sep)
    m = torch.zeros_like(recs, dtype=torch.bool)
    for o in range(6, 10):
        m[:, o:T - 9 + o] |= ok
    return m[:, 1:]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--records", type=int, default=257)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--query-sep", default=":")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--every", type=int, default=100)
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    torch.set_num_threads(a.threads)
    raw = np.fromfile(a.data, dtype=np.uint8)
    n = len(raw) // a.records
    if n < 10:
        sys.exit(f"recall_torch.py: --data {a.data} holds {n} records of {a.records} bytes, fewer than 10")
    recs = torch.from_numpy(raw[:n * a.records].reshape(n, a.records).astype(np.int64))
    vmask = value_mask(recs, a.query_sep)
    n_train = n - n // 10
    m = LM(a.layers, a.d_model, a.heads, a.records - 1)
    mats = [p for p in m.parameters() if p.dim() == 2]
    rest = [p for p in m.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": mats, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.95))
    g = torch.Generator().manual_seed(a.seed)
    warm, lo_lr = 100, a.lr / 10
    for step in range(1, a.steps + 1):
        lr = a.lr * step / warm if step <= warm else \
            lo_lr + 0.5 * (a.lr - lo_lr) * (1 + math.cos(math.pi * (step - warm) / max(1, a.steps - warm)))
        for pg in opt.param_groups:
            pg["lr"] = lr
        ix = torch.randint(0, n_train, (a.batch,), generator=g)
        b = recs[ix]
        ce = F.cross_entropy(m(b[:, :-1]).reshape(-1, 256), b[:, 1:].reshape(-1), reduction="none")
        ce = ce.view(a.batch, -1)
        loss = ce.mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        opt.step()
        if step % a.every == 0 or step == a.steps:
            vm = vmask[ix]
            vl = ce[vm].mean().item() if vm.any() else float("nan")
            print(f"step {step} loss {loss.item():.4f} value-byte loss {vl:.4f} (ln 10 = 2.3026)", flush=True)


if __name__ == "__main__":
    main()
