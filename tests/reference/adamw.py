#!/usr/bin/env python3
"""PyTorch reference for moge::train::AdamW, gradient clipping and the lr schedule.

Five steps of torch.optim.AdamW (betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, float32) on
three parameters, the last one in a param group with weight_decay=0 (as norm weights are
trained). Before each step the given gradients are clipped with
torch.nn.utils.clip_grad_norm_, and the step's lr comes from a warmup + cosine schedule
computed here from its definition:

    s <  warmup           lr = max_lr * (s + 1) / warmup
    warmup <= s < total   lr = min_lr + (max_lr - min_lr) * (1 + cos(pi * (s - warmup) / (total - warmup))) / 2
    s >= total            lr = min_lr

Gradients are drawn at random and rescaled to chosen global norms, some below max_norm and some
above, so that both the clipped and the unclipped path are exercised.

Usage::

    /usr/bin/python3 tests/reference/adamw.py --out DIR

Writes into DIR (float32 .npy, C order):
    config.json             hyperparameters, schedule, max_norm, steps,
                            params: [{"name", "shape", "decay"}]
    init_NAME.npy           the parameter before the first step
    grad_S_NAME.npy         the gradient given at step S (0-based), before clipping
    param_S_NAME.npy        the parameter after step S
    grad_norm.npy [steps]   clip_grad_norm_'s return value (norm before clipping) per step
    lr.npy [steps]          the lr of each step (float64)
"""
import argparse
import json
import math
import os

import numpy as np
import torch

BETAS = (0.9, 0.95)
EPS = 1e-8
WEIGHT_DECAY = 0.1
MAX_NORM = 1.0
SCHEDULE = {"max_lr": 0.05, "min_lr": 0.005, "warmup": 2, "total": 5}
STEPS = 5
# Global gradient norms per step: 0.5 and 0.9 are left alone, the others are clipped to 1.
TARGET_NORMS = [0.5, 3.0, 0.9, 10.0, 1.5]
PARAMS = [  # name, shape, decay
    ("layers.0.w", (48, 40), True),
    ("layers.0.b", (33,), True),
    ("layers.0.norm", (40,), False),
]


def lr_at(s):
    c = SCHEDULE
    if s < c["warmup"]:
        return c["max_lr"] * (s + 1) / c["warmup"]
    if s >= c["total"]:
        return c["min_lr"]
    progress = (s - c["warmup"]) / (c["total"] - c["warmup"])
    return c["min_lr"] + 0.5 * (c["max_lr"] - c["min_lr"]) * (1.0 + math.cos(math.pi * progress))


def save(path, array):
    np.save(path, np.ascontiguousarray(array))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    out = ap.parse_args().out
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(1234)

    params = []
    for name, shape, decay in PARAMS:
        p = torch.nn.Parameter(torch.randn(shape, dtype=torch.float32))
        save(os.path.join(out, f"init_{name}.npy"), p.detach().numpy())
        params.append(p)

    groups = [
        {"params": [p for p, (_, _, d) in zip(params, PARAMS) if d]},
        {"params": [p for p, (_, _, d) in zip(params, PARAMS) if not d], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=SCHEDULE["max_lr"], betas=BETAS, eps=EPS,
                            weight_decay=WEIGHT_DECAY, foreach=False)

    norms, lrs = [], []
    for s in range(STEPS):
        raw = [torch.randn(p.shape, dtype=torch.float64) for p in params]
        total = math.sqrt(sum(float((g * g).sum()) for g in raw))
        for p, g, (name, _, _) in zip(params, raw, PARAMS):
            p.grad = (g * (TARGET_NORMS[s] / total)).to(torch.float32)
            save(os.path.join(out, f"grad_{s}_{name}.npy"), p.grad.numpy())
        norms.append(float(torch.nn.utils.clip_grad_norm_(params, MAX_NORM)))
        lr = lr_at(s)
        lrs.append(lr)
        for group in opt.param_groups:
            group["lr"] = lr
        opt.step()
        for p, (name, _, _) in zip(params, PARAMS):
            save(os.path.join(out, f"param_{s}_{name}.npy"), p.detach().numpy())

    save(os.path.join(out, "grad_norm.npy"), np.array(norms, dtype=np.float32))
    save(os.path.join(out, "lr.npy"), np.array(lrs, dtype=np.float64))
    config = {
        "beta1": BETAS[0], "beta2": BETAS[1], "eps": EPS, "weight_decay": WEIGHT_DECAY,
        "max_norm": MAX_NORM, "steps": STEPS, **SCHEDULE,
        "params": [{"name": n, "shape": list(s), "decay": d} for n, s, d in PARAMS],
    }
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f, indent=1)


if __name__ == "__main__":
    main()
