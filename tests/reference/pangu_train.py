#!/usr/bin/env python3
"""Independent PyTorch reference for training the Pangu Pro MoE decoder (tiny, random).

Writes a random model (config.json + model.safetensors, F32), a micro-batch of B
sequences with next-token targets (one target ignored, -1), and, computed with
autograd in float64 from the architecture of MOGE.md section 3 (helpers shared
with pangu_model.py, which does not call moge either):

    loss = mean over counted targets of -log softmax(logits)[target]
           + sum over layers of aux,   aux = alpha * sum_i f_i * P_i
    f_i = N / (K * R) * #{rows r that chose expert i}   (no gradient)
    P_i = (1 / R) * sum_r p[r, i]                       R = B * T rows of the micro-batch

Outputs in DIR: model/ (checkpoint), inputs.npy / targets.npy int32 [B, T],
loss.npy float64 [ce, aux], grads.safetensors (F32, one gradient per checkpoint
tensor, HF names), logits.npy float32 [B*T, V]; the same for a model with tied
embeddings in DIR/tied/.

Usage: /usr/bin/python3 tests/reference/pangu_train.py --out DIR [--seed S]
"""

import argparse
import json
import math
import os
import shutil
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pangu_model as pm  # noqa: E402  (independent reference helpers, not moge)

DTYPE = torch.float64
B, T = 2, 7
ALPHA = 0.05          # large, so that the aux gradient is visible next to the CE one
MARGIN_REL = 1e-3     # routing decisions must not be near-ties (f32 vs f64)

CONFIG = dict(pm.CONFIG, vocab_size=96, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, num_experts=8, num_experts_per_tok=4, moe_intermediate_size=16,
              shared_expert_intermediate_size=24, router_aux_loss_coef=ALPHA)


def forward_loss(w, inputs, targets, cfg):
    """Float64 loss of the micro-batch, with the routing gap for the redraw guard."""
    d, H, KV = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd, N, K = d // H, cfg["num_experts"], cfg["num_experts_per_tok"]
    eps = cfg["rms_norm_eps"]
    cos, sin = pm.rope_tables(T, hd, cfg["rope_theta"])
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    x = w["model.embed_tokens.weight"][inputs.reshape(-1)]           # [R, d]
    R = x.shape[0]
    aux_total, min_gap = 0.0, math.inf
    for i in range(cfg["num_hidden_layers"]):
        p, a = f"model.layers.{i}.", f"model.layers.{i}.self_attn."
        n1 = pm.rmsnorm(x, w[p + "input_layernorm.weight"], eps)
        outs = []
        for b in range(B):                                              # attention per sequence
            rows = n1[b * T:(b + 1) * T]
            q = (rows @ w[a + "q_proj.weight"].T + w[a + "q_proj.bias"]).reshape(T, H, hd)
            k = (rows @ w[a + "k_proj.weight"].T + w[a + "k_proj.bias"]).reshape(T, KV, hd)
            v = (rows @ w[a + "v_proj.weight"].T + w[a + "v_proj.bias"]).reshape(T, KV, hd)
            q, k = pm.apply_rope(q, cos, sin), pm.apply_rope(k, cos, sin)
            k, v = k.repeat_interleave(H // KV, dim=1), v.repeat_interleave(H // KV, dim=1)
            s = torch.einsum("thd,shd->hts", q, k) / math.sqrt(hd)
            s = s.masked_fill(~causal, -math.inf)
            outs.append(torch.einsum("hts,shd->thd", torch.softmax(s, dim=-1), v).reshape(T, H * hd))
        h = x + torch.cat(outs) @ w[a + "o_proj.weight"].T + w[a + "o_proj.bias"]

        n2 = pm.rmsnorm(h, w[p + "post_attention_layernorm.weight"], eps)
        m = p + "mlp."
        probs = torch.softmax(n2 @ w[m + "gate.weight"].T, dim=-1)      # [R, N]
        mask, gap = pm.route(probs.detach(), cfg)
        min_gap = min(min_gap, gap)
        f = N / (K * R) * mask.sum(dim=0)                               # no gradient
        aux_total = aux_total + ALPHA * (f * probs.mean(dim=0)).sum()
        weights = probs * mask * w[m + "router_scale"]
        y = torch.zeros_like(n2)
        for j in range(N):
            e = m + f"experts.{j}."
            out = (torch.nn.functional.silu(n2 @ w[e + "gate_proj.weight"].T)
                   * (n2 @ w[e + "up_proj.weight"].T)) @ w[e + "down_proj.weight"].T
            y = y + weights[:, j:j + 1] * out
        s_ = m + "shared_expert."
        y = y + (torch.nn.functional.silu(n2 @ w[s_ + "gate_proj.weight"].T)
                 * (n2 @ w[s_ + "up_proj.weight"].T)) @ w[s_ + "down_proj.weight"].T
        x = h + y
    head = w["model.embed_tokens.weight"] if cfg["tie_word_embeddings"] else w["lm_head.weight"]
    logits = pm.rmsnorm(x, w["model.norm.weight"], eps) @ head.T
    tgt = targets.reshape(-1)
    keep = tgt >= 0
    ce = torch.nn.functional.cross_entropy(logits[keep], tgt[keep], reduction="mean")
    return ce, aux_total, logits, min_gap


def make(out, tied, seed):
    cfg = dict(CONFIG, tie_word_embeddings=tied)
    for s in range(seed, seed + 200):
        w32, _ = pm.draw_weights(cfg, s)
        if tied:
            del w32["lm_head.weight"]
        g = torch.Generator().manual_seed(s)
        tokens = torch.randint(0, cfg["vocab_size"], (B, T + 1), generator=g)
        inputs, targets = tokens[:, :-1].clone(), tokens[:, 1:].clone()
        targets[1, 3] = -1
        w = {k: v.to(DTYPE).requires_grad_(True) for k, v in w32.items()}
        ce, aux, logits, gap = forward_loss(w, inputs, targets, cfg)
        if gap < MARGIN_REL:
            continue
        (ce + aux).backward()
        break
    else:
        raise RuntimeError("no seed with routing margins")
    if os.path.isdir(out):
        shutil.rmtree(out)
    os.makedirs(os.path.join(out, "model"))
    with open(os.path.join(out, "model", "config.json"), "w") as fh:
        json.dump(dict(cfg, torch_dtype="float32"), fh, indent=2)
    pm.write_safetensors(os.path.join(out, "model", "model.safetensors"), w32)
    pm.write_safetensors(os.path.join(out, "grads.safetensors"),
                         {k: v.grad.to(torch.float32) for k, v in w.items()})
    np.save(os.path.join(out, "inputs.npy"), inputs.numpy().astype("<i4"))
    np.save(os.path.join(out, "targets.npy"), targets.numpy().astype("<i4"))
    np.save(os.path.join(out, "loss.npy"), np.array([float(ce), float(aux)]))
    np.save(os.path.join(out, "logits.npy"), logits.detach().numpy().astype("<f4"))
    print(f"{out}: seed {s}, ce {float(ce):.6f}, aux {float(aux):.6f}, min routing gap {gap:.3g}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(1)
    make(args.out, False, args.seed)
    make(os.path.join(args.out, "tied"), True, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
