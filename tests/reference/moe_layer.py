#!/usr/bin/env python3
"""Independent PyTorch reference for the Mixture-of-Grouped-Experts (MoGE) layer.

This script generates golden data for the C++ tests: for a fixed set of small
cases it draws random inputs, runs the layer forward in float64, back-propagates
a fixed scalar loss with torch autograd, and writes every input, output and
gradient as a ``.npy`` file.

It is deliberately written without reference to the C++ code: routing is done
with plain torch ops and the expert mixture is evaluated densely (every expert
on every token, weighted by a [T, N] routing matrix that is zero for experts a
token did not choose), which is slow but easy to check by eye.

Usage::

    /usr/bin/python3 tests/reference/moe_layer.py --out DIR

Layout of DIR (case directories and cases.txt are overwritten; other entries in
DIR are left alone)::

    DIR/cases.txt               case names, one per line
    DIR/<case>/config.json      {"tokens", "d_model", "num_experts", "num_groups",
                                 "top_k", "mode", "renormalize", "topk_group",
                                 "expert_ff", "shared_ff", "aux_alpha", "aux_grad"}
    DIR/<case>/<name>.npy       float32 (int32 for topk_idx), C order, little-endian

Inputs:  x [T,d], gate [N,d], router_scale [1,N], experts_gate [N,F,d],
         experts_up [N,F,d], experts_down [N,d,F], dy [T,d],
         shared_gate [S,d], shared_up [S,d], shared_down [d,S] (only if S > 0).
Outputs: y [T,d], aux_loss [1], probs [T,N], topk_idx int32 [T,K] (ascending
         expert ids), topk_weight [T,K] (same order), and the gradients
         dx, d_gate, d_router_scale [1,N], d_experts_gate, d_experts_up,
         d_experts_down, d_shared_gate, d_shared_up, d_shared_down (if S > 0)
         of the loss  L = sum(y * dy) + aux_grad * aux_loss.

The math (per token x, N experts in M groups, K experts per token):

    p       = softmax(x @ gate^T)                      over all N experts
    chosen  = depends on mode (see route())
    w_e     = p_e * router_scale[e]                    (renormalize = false)
            = p_e / sum_{j chosen} p_j * router_scale[e]   (renormalize = true)
    expert_e(x) = down_e(silu(gate_e(x)) * up_e(x))    (no biases)
    y       = shared(x) + sum_{e chosen} w_e * expert_e(x)
    aux     = alpha * sum_i f_i * P_i,  f_i = N/(K*T) * #{t chose i} (constant),
                                        P_i = mean_t p[t, i]

Near-tie guard: routing is discontinuous, so a case whose random draw puts any
selection decision close to a tie is redrawn with the next seed.  Every
"keep a / drop b" boundary (the K/M-th vs (K/M+1)-th probability inside each
group for `grouped`; the K-th vs (K+1)-th probability for `topk`; the
topk_group-th vs (topk_group+1)-th group score and then the K-th vs (K+1)-th
probability among experts of the kept groups for `group_limited`) must satisfy

    a - b >= MARGIN_REL * a          (a = value kept, b = best value dropped)

i.e. a relative gap of 1e-3 (for probabilities this is a logit gap of ~1e-3).
A float32 implementation computes p with relative error ~1e-6, so its choices
agree with the float64 reference with a wide safety factor, while small
probabilities (which an absolute threshold would constantly reject) are allowed.
"""

import argparse
import json
import os
import shutil
import sys
import time

import numpy as np
import torch

DTYPE = torch.float64

# Relative gap required at every routing boundary; see the module docstring.
MARGIN_REL = 1e-3

# How many consecutive seeds to try before giving up on a case.
MAX_REDRAWS = 1000


# --------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------

def make_case(name, T, N, M, K, mode, renormalize=False, topk_group=0,
              d=32, F=16, S=24, aux_alpha=0.01, aux_grad=0.7):
    return dict(name=name, tokens=T, d_model=d, num_experts=N, num_groups=M,
                top_k=K, mode=mode, renormalize=renormalize,
                topk_group=topk_group, expert_ff=F, shared_ff=S,
                aux_alpha=aux_alpha, aux_grad=aux_grad)


CASES = (
    [make_case(f"pangu_T{T}", T, 64, 8, 8, "grouped") for T in (1, 16, 257)]
    + [make_case("pangu_noshared_T33", 33, 64, 8, 8, "grouped", S=0)]
    + [make_case(f"two_per_group_T{T}", T, 16, 4, 8, "grouped") for T in (1, 33, 257)]
    + [make_case("two_per_group_noshared_T64", 64, 16, 4, 8, "grouped", S=0)]
    + [make_case("topk_T64", 64, 16, 4, 4, "topk"),
       make_case("topk_renorm_T64", 64, 16, 4, 4, "topk", renormalize=True,
                 aux_alpha=0.02),
       make_case("topk_renorm_T1", 1, 16, 4, 4, "topk", renormalize=True),
       make_case("group_limited_T64", 64, 16, 4, 4, "group_limited",
                 topk_group=2),
       make_case("group_limited_renorm_T257", 257, 16, 4, 4, "group_limited",
                 renormalize=True, topk_group=2, S=0, aux_alpha=0.001),
       make_case("pangu_bigger_T128", 128, 64, 8, 8, "grouped",
                 d=64, F=32, S=64)]
)

CONFIG_KEYS = ("tokens", "d_model", "num_experts", "num_groups", "top_k",
               "mode", "renormalize", "topk_group", "expert_ff", "shared_ff",
               "aux_alpha", "aux_grad")


# --------------------------------------------------------------------------
# Routing
# --------------------------------------------------------------------------

def sort_desc(v):
    """Sort the last dim descending; equal values keep ascending index order
    (stable sort), so ties go to the lowest index."""
    return torch.sort(v, dim=-1, descending=True, stable=True)


def gap_ok(sorted_vals, k):
    """True if, along the last dim of a descending-sorted tensor, the k-th
    largest value beats the (k+1)-th by the relative margin everywhere.
    Trivially true when nothing is dropped (k == size)."""
    if k >= sorted_vals.shape[-1]:
        return True
    kept = sorted_vals[..., k - 1]
    dropped = sorted_vals[..., k]
    return bool(((kept - dropped) >= MARGIN_REL * kept).all())


def route(p, cfg):
    """Pick the experts of every token.

    p: [T, N] probabilities (no gradient needed).
    Returns (mask [T, N] float 0/1 of chosen experts, margins_ok bool).
    """
    T, N = p.shape
    M, K, mode = cfg["num_groups"], cfg["top_k"], cfg["mode"]
    mask = torch.zeros(T, N, dtype=DTYPE)

    if mode == "grouped":
        # MoGE: top-(K/M) inside each contiguous group of N/M experts.
        assert N % M == 0 and K % M == 0
        per_group, k_group = N // M, K // M
        vals, idx = sort_desc(p.reshape(T, M, per_group))
        offset = (torch.arange(M) * per_group).reshape(1, M, 1)
        chosen = (idx[..., :k_group] + offset).reshape(T, K)
        mask.scatter_(1, chosen, 1.0)
        return mask, gap_ok(vals, k_group)

    if mode == "topk":
        vals, idx = sort_desc(p)
        mask.scatter_(1, idx[:, :K], 1.0)
        return mask, gap_ok(vals, K)

    if mode == "group_limited":
        # DeepSeek-V3: score groups by the sum of their top-2 probabilities
        # (top-1 for single-expert groups), keep the best topk_group groups,
        # then take top-K over the experts of the kept groups.
        assert N % M == 0
        per_group, n_keep = N // M, cfg["topk_group"]
        assert 1 <= n_keep <= M and K <= n_keep * per_group
        in_group, _ = sort_desc(p.reshape(T, M, per_group))
        group_score = in_group[..., :min(2, per_group)].sum(-1)          # [T, M]
        score_vals, group_idx = sort_desc(group_score)
        group_kept = torch.zeros(T, M, dtype=torch.bool)
        group_kept.scatter_(1, group_idx[:, :n_keep], True)
        expert_kept = group_kept.repeat_interleave(per_group, dim=1)    # [T, N]
        # Probabilities are >= 0, so -1 pushes dropped groups below any kept expert.
        masked_p = torch.where(expert_kept, p, torch.full_like(p, -1.0))
        vals, idx = sort_desc(masked_p)
        mask.scatter_(1, idx[:, :K], 1.0)
        # vals[:, n_keep*per_group:] are the -1 sentinels; only compare kept ones.
        ok = gap_ok(score_vals, n_keep) and gap_ok(vals[:, :n_keep * per_group], K)
        return mask, ok

    raise ValueError(f"unknown mode {mode!r}")


# --------------------------------------------------------------------------
# Layer
# --------------------------------------------------------------------------

def swiglu(x, w_gate, w_up, w_down):
    """down(silu(gate(x)) * up(x)); weights are [F, d], [F, d], [d, F]."""
    h = torch.nn.functional.silu(x @ w_gate.T) * (x @ w_up.T)
    return h @ w_down.T


def forward(params, cfg, mask):
    """Layer forward for a fixed routing mask.

    Returns (y [T, d], aux_loss scalar, probs [T, N], weights [T, N]) where
    weights is zero for experts a token did not choose.
    """
    x = params["x"]
    T, N, K = cfg["tokens"], cfg["num_experts"], cfg["top_k"]

    probs = torch.softmax(x @ params["gate"].T, dim=-1)                  # [T, N]

    # Routing weights; mask is a constant, so gradient flows only through
    # the chosen probabilities (and, if renormalizing, their sum).
    chosen_p = probs * mask
    if cfg["renormalize"]:
        chosen_p = chosen_p / chosen_p.sum(dim=-1, keepdim=True)
    weights = chosen_p * params["router_scale"]                          # [T, N]

    # Dense mixture: every expert on every token, then weight and sum.
    h_gate = torch.einsum("td,nfd->tnf", x, params["experts_gate"])
    h_up = torch.einsum("td,nfd->tnf", x, params["experts_up"])
    h = torch.nn.functional.silu(h_gate) * h_up                          # [T, N, F]
    expert_out = torch.einsum("tnf,ndf->tnd", h, params["experts_down"])  # [T, N, d]
    y = torch.einsum("tn,tnd->td", weights, expert_out)

    if cfg["shared_ff"] > 0:
        y = y + swiglu(x, params["shared_gate"], params["shared_up"],
                       params["shared_down"])

    # Load-balancing loss; f is a constant (counts of the discrete choice).
    f = mask.sum(dim=0) * (N / (K * T))                                  # [N]
    P = probs.mean(dim=0)                                                # [N]
    aux_loss = cfg["aux_alpha"] * (f * P).sum()
    return y, aux_loss, probs, weights


# --------------------------------------------------------------------------
# Data generation
# --------------------------------------------------------------------------

def draw_params(cfg, seed):
    """Random inputs for one case (float64 leaf tensors requiring grad)."""
    g = torch.Generator().manual_seed(seed)
    T, d, N = cfg["tokens"], cfg["d_model"], cfg["num_experts"]
    F, S = cfg["expert_ff"], cfg["shared_ff"]

    def normal(*shape, std=1.0):
        return torch.randn(*shape, generator=g, dtype=DTYPE) * std

    params = {
        "x": normal(T, d),
        # Scaled up by 3 so that the softmax is far from flat.
        "gate": normal(N, d, std=3.0 / d ** 0.5),
        "router_scale": 0.5 + torch.rand(1, N, generator=g, dtype=DTYPE),
        "experts_gate": normal(N, F, d, std=1.0 / d ** 0.5),
        "experts_up": normal(N, F, d, std=1.0 / d ** 0.5),
        "experts_down": normal(N, d, F, std=1.0 / F ** 0.5),
    }
    if S > 0:
        params["shared_gate"] = normal(S, d, std=1.0 / d ** 0.5)
        params["shared_up"] = normal(S, d, std=1.0 / d ** 0.5)
        params["shared_down"] = normal(d, S, std=1.0 / S ** 0.5)
    dy = normal(T, d)
    for t in params.values():
        t.requires_grad_(True)
    return params, dy


def draw_case(cfg, base_seed):
    """Draw inputs, redrawing with the next seed until routing has margins."""
    for seed in range(base_seed, base_seed + MAX_REDRAWS):
        params, dy = draw_params(cfg, seed)
        with torch.no_grad():
            p = torch.softmax(params["x"] @ params["gate"].T, dim=-1)
        mask, ok = route(p, cfg)
        if ok:
            return params, dy, mask, seed
    raise RuntimeError(f"{cfg['name']}: no seed with routing margins found")


def run_case(cfg, base_seed):
    """Compute everything for one case. Returns (arrays dict, extras dict)."""
    params, dy, mask, seed = draw_case(cfg, base_seed)
    y, aux_loss, probs, weights = forward(params, cfg, mask)

    loss = (y * dy).sum() + cfg["aux_grad"] * aux_loss
    names = list(params)
    grads = torch.autograd.grad(loss, [params[n] for n in names])

    # Chosen experts in ascending id order and their weights.
    K = cfg["top_k"]
    topk_idx = torch.sort(torch.nonzero(mask)[:, 1].reshape(-1, K), dim=1).values
    topk_weight = torch.gather(weights.detach(), 1, topk_idx)

    arrays = {n: params[n].detach() for n in names}
    arrays["dy"] = dy
    arrays["y"] = y.detach()
    arrays["aux_loss"] = aux_loss.detach().reshape(1)
    arrays["probs"] = probs.detach()
    arrays["topk_idx"] = topk_idx
    arrays["topk_weight"] = topk_weight
    for n, gr in zip(names, grads):
        arrays["d" + n if n == "x" else "d_" + n] = gr

    self_check(cfg, params, mask, arrays)
    return arrays, {"seed": seed}


# --------------------------------------------------------------------------
# Self-checks (catch mistakes in the reference itself)
# --------------------------------------------------------------------------

def self_check(cfg, params, mask, arrays):
    T, N, M, K = (cfg["tokens"], cfg["num_experts"], cfg["num_groups"],
                  cfg["top_k"])
    name = cfg["name"]
    idx = arrays["topk_idx"]
    assert idx.shape == (T, K)
    assert bool((idx[:, 1:] > idx[:, :-1]).all()), f"{name}: ids not ascending/unique"
    assert bool((mask.sum(dim=1) == K).all()), f"{name}: wrong expert count"

    if cfg["mode"] == "grouped":
        # Exactly K/M experts from each group for every token.
        per_group = N // M
        counts = torch.stack([((idx // per_group) == g).sum(dim=1)
                              for g in range(M)], dim=1)
        assert bool((counts == K // M).all()), f"{name}: group balance broken"

    if cfg["mode"] == "group_limited":
        # Chosen experts come from at most topk_group groups.
        per_group = N // M
        for t in range(T):
            assert len(set((idx[t] // per_group).tolist())) <= cfg["topk_group"]

    # Aux loss gradient wrt probs, by hand: d(alpha * sum_i f_i * mean_t p_ti)/dp_ti
    # = alpha * f_i / T.
    probs = arrays["probs"].clone().requires_grad_(True)
    f = mask.sum(dim=0) * (N / (K * T))
    aux = cfg["aux_alpha"] * (f * probs.mean(dim=0)).sum()
    assert torch.allclose(aux.detach(), arrays["aux_loss"][0], rtol=1e-12, atol=0)
    (g_probs,) = torch.autograd.grad(aux, probs)
    expected = (cfg["aux_alpha"] * f / T).expand(T, N)
    assert torch.allclose(g_probs, expected, rtol=1e-12, atol=1e-18), \
        f"{name}: aux gradient mismatch"

    # Forward by a plain per-token loop over the chosen experts, to cross-check
    # the dense einsum formulation and the topk_idx/topk_weight outputs.
    with torch.no_grad():
        x = params["x"]
        p = torch.softmax(x @ params["gate"].T, dim=-1)
        for t in range(T):
            chosen = idx[t].tolist()
            p_sel = p[t, chosen]
            if cfg["renormalize"]:
                p_sel = p_sel / p_sel.sum()
            w = p_sel * params["router_scale"][0, chosen]
            assert torch.allclose(w, arrays["topk_weight"][t], rtol=1e-12, atol=1e-15)
            y_t = torch.zeros_like(x[t])
            for e, w_e in zip(chosen, w):
                y_t += w_e * swiglu(x[t], params["experts_gate"][e],
                                    params["experts_up"][e],
                                    params["experts_down"][e])
            if cfg["shared_ff"] > 0:
                y_t += swiglu(x[t], params["shared_gate"], params["shared_up"],
                              params["shared_down"])
            assert torch.allclose(y_t, arrays["y"][t], rtol=1e-10, atol=1e-12), \
                f"{name}: loop forward mismatch at token {t}"


# --------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------

def save_npy(path, tensor, integer=False):
    dtype = "<i4" if integer else "<f4"
    np.save(path, np.ascontiguousarray(tensor.numpy().astype(dtype)))


def write_case(out_dir, cfg, arrays):
    case_dir = os.path.join(out_dir, cfg["name"])
    if os.path.isdir(case_dir):
        shutil.rmtree(case_dir)
    os.makedirs(case_dir)
    with open(os.path.join(case_dir, "config.json"), "w") as fh:
        json.dump({k: cfg[k] for k in CONFIG_KEYS}, fh, indent=2)
        fh.write("\n")
    for name, tensor in arrays.items():
        save_npy(os.path.join(case_dir, name + ".npy"), tensor,
                 integer=(name == "topk_idx"))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="output directory")
    args = parser.parse_args(argv)

    torch.set_num_threads(1)  # tiny problems; also keeps results reproducible
    os.makedirs(args.out, exist_ok=True)
    start = time.time()
    for i, cfg in enumerate(CASES):
        arrays, extra = run_case(cfg, base_seed=1000 * (i + 1))
        write_case(args.out, cfg, arrays)
        print(f"{cfg['name']:30s} seed={extra['seed']}")
    with open(os.path.join(args.out, "cases.txt"), "w") as fh:
        fh.write("".join(cfg["name"] + "\n" for cfg in CASES))
    print(f"wrote {len(CASES)} cases to {args.out} in {time.time() - start:.2f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
