#!/usr/bin/env python3
"""Independent PyTorch reference for the decoder's kernels and their gradients.

For each kernel this script draws float32 inputs, evaluates the kernel in
float64 with plain torch ops written from the textbook formulas, back-propagates
L = sum(out * dout) (or the loss itself for cross-entropy) with autograd, and
writes inputs, outputs and gradients as .npy files for the C++ tests.

Usage::

    /usr/bin/python3 tests/reference/decoder_kernels.py --out DIR

Layout: DIR/<kernel>/<name>.npy (float32, int32 for token ids and targets,
C order) and DIR/<kernel>/config.json with the scalar parameters.

    rmsnorm/        x [R,C], weight [C], dout [R,C], dweight_init [C] ->
                    out, dx, dweight (= dweight_init + dL/dweight: the kernel accumulates)
    rope/           x [T,H,hd], dout [T,H,hd] -> out, dx      (config: first_position, theta)
    attention/      q [T,H,hd], k, v [T,KV,hd], dout [T,H,hd] -> out, lse [T,H], dq, dk, dv
    cross_entropy/  logits [R,V], targets int32 [R] (one is -1), config scale ->
                    loss [1] (sum over counted rows), dlogits = d(scale * loss)/dlogits
    embedding/      table [V,d], tokens int32 [n] (with repeats), dx [n,d],
                    dtable_init [V,d] -> out, dtable (= dtable_init + dL/dtable)
"""

import argparse
import json
import math
import os
import sys

import numpy as np
import torch

torch.manual_seed(0)


def f32(*shape, std=1.0):
    """A float32 draw, promoted to float64: both sides then see the same numbers."""
    return (torch.randn(*shape, dtype=torch.float32) * std).double()


def save(directory, config=None, **arrays):
    os.makedirs(directory, exist_ok=True)
    for name, value in arrays.items():
        value = value.detach()
        dtype = "<i4" if value.dtype in (torch.int32, torch.int64) else "<f4"
        np.save(os.path.join(directory, name + ".npy"), np.ascontiguousarray(value.numpy().astype(dtype)))
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(config or {}, f)


def grads_of(loss, *inputs):
    return torch.autograd.grad(loss, inputs)


# --- RMSNorm: y = x / sqrt(mean(x^2) + eps) * w
def rmsnorm(out_dir):
    rows, cols, eps = 7, 64, 1e-5
    x = f32(rows, cols).requires_grad_()
    w = (1.0 + 0.5 * f32(cols)).requires_grad_()
    dout = f32(rows, cols)
    dweight_init = f32(cols)
    y = x / torch.sqrt((x * x).mean(dim=-1, keepdim=True) + eps) * w
    dx, dw = grads_of((y * dout).sum(), x, w)
    save(out_dir, {"rows": rows, "cols": cols, "eps": eps},
         x=x, weight=w, dout=dout, dweight_init=dweight_init, out=y, dx=dx, dweight=dweight_init + dw)


# --- RoPE, rotate-half (NeoX) layout: pairs (i, i + hd/2) rotated by pos * theta^(-2i/hd)
def rope_rotate(x, first_position, theta):
    tokens, _, hd = x.shape
    inv_freq = theta ** (-torch.arange(0, hd, 2, dtype=torch.float64) / hd)          # [hd/2]
    pos = torch.arange(first_position, first_position + tokens, dtype=torch.float64)  # [T]
    angle = torch.outer(pos, inv_freq)                                                # [T, hd/2]
    cos = torch.cat([angle.cos(), angle.cos()], dim=-1)[:, None, :]                   # [T, 1, hd]
    sin = torch.cat([angle.sin(), angle.sin()], dim=-1)[:, None, :]
    x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
    rotate_half = torch.cat([-x2, x1], dim=-1)
    return x * cos + rotate_half * sin


def rope(out_dir):
    tokens, heads, hd, first_position, theta = 9, 3, 16, 1000, 1.6e7
    x = f32(tokens, heads, hd).requires_grad_()
    dout = f32(tokens, heads, hd)
    y = rope_rotate(x, first_position, theta)
    (dx,) = grads_of((y * dout).sum(), x)
    save(out_dir, {"tokens": tokens, "heads": heads, "head_dim": hd, "first_position": first_position,
                   "theta": theta}, x=x, dout=dout, out=y, dx=dx)


# --- Causal GQA self-attention, scale 1/sqrt(hd), written out with an explicit mask
def attention(out_dir):
    tokens, heads, kv_heads, hd = 37, 4, 2, 16
    q = f32(tokens, heads, hd).requires_grad_()
    k = f32(tokens, kv_heads, hd).requires_grad_()
    v = f32(tokens, kv_heads, hd).requires_grad_()
    dout = f32(tokens, heads, hd)
    group = heads // kv_heads
    kq = k.repeat_interleave(group, dim=1)  # query head h reads kv head h // group
    vq = v.repeat_interleave(group, dim=1)
    scores = torch.einsum("thd,jhd->htj", q, kq) / math.sqrt(hd)                    # [H, T, T]
    future = torch.triu(torch.ones(tokens, tokens, dtype=torch.bool), diagonal=1)  # j > t
    scores = scores.masked_fill(future, float("-inf"))
    lse = torch.logsumexp(scores, dim=-1).transpose(0, 1)                           # [T, H]
    probs = torch.softmax(scores, dim=-1)
    out = torch.einsum("htj,jhd->thd", probs, vq)
    dq, dk, dv = grads_of((out * dout).sum(), q, k, v)
    save(out_dir, {"tokens": tokens, "heads": heads, "kv_heads": kv_heads, "head_dim": hd},
         q=q, k=k, v=v, dout=dout, out=out, lse=lse, dq=dq, dk=dk, dv=dv)


# --- Cross-entropy summed over counted rows; the gradient is that of scale * loss
def cross_entropy(out_dir):
    rows, vocab = 13, 50
    logits = f32(rows, vocab, std=3.0).requires_grad_()
    targets = torch.randint(0, vocab, (rows,), dtype=torch.int64)
    targets[5] = -1
    counted = targets >= 0
    scale = 1.0 / int(counted.sum())
    logp = torch.log_softmax(logits, dim=-1)
    loss = -logp[counted, targets[counted]].sum()
    (dlogits,) = grads_of(scale * loss, logits)
    save(out_dir, {"rows": rows, "vocab": vocab, "scale": scale},
         logits=logits, targets=targets, loss=loss.reshape(1), dlogits=dlogits)


# --- Embedding: out = table[tokens]; positions sharing a token sum their gradients
def embedding(out_dir):
    vocab, d, n = 11, 24, 20
    table = f32(vocab, d).requires_grad_()
    tokens = torch.randint(0, vocab, (n,), dtype=torch.int64)
    tokens[7] = tokens[3] = tokens[15] = 4  # repeats for certain
    dx = f32(n, d)
    dtable_init = f32(vocab, d)
    out = table[tokens]
    (dtable,) = grads_of((out * dx).sum(), table)
    save(out_dir, {"vocab": vocab, "d": d, "n": n},
         table=table, tokens=tokens, dx=dx, dtable_init=dtable_init, out=out, dtable=dtable_init + dtable)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="output directory")
    args = parser.parse_args(argv)
    for kernel in (rmsnorm, rope, attention, cross_entropy, embedding):
        kernel(os.path.join(args.out, kernel.__name__))
    return 0


if __name__ == "__main__":
    sys.exit(main())
