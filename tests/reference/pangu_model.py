#!/usr/bin/env python3
"""Independent PyTorch reference for a whole Pangu Pro MoE model (tiny, random).

This script writes a small random model in the exact Hugging Face layout of the
released checkpoint (config.json, sharded safetensors, index.json), once in F32
and once rounded to BF16, together with golden logits and greedy continuations
computed in float64.  The C++ loader and forward pass are tested against it.

It is written from the architecture description in MOGE.md section 3, without
reference to the C++ code.  The forward pass is plain torch in float64; the
MoGE mixture is evaluated densely (every expert on every token, weighted by a
[T, N] routing matrix that is zero for experts a token did not choose).

Usage::

    /usr/bin/python3 tests/reference/pangu_model.py --out DIR [--seed S]

Layout of DIR (the sub-directories below are replaced; nothing else is touched)::

    DIR/f32/config.json                         HF config, torch_dtype float32
    DIR/f32/model-0000k-of-0000n.safetensors    shards, split by layer, all F32
    DIR/f32/model.safetensors.index.json        {"metadata": {"total_size"}, "weight_map"}
    DIR/bf16/...                                the same, weights rounded to BF16
    DIR/w8a8/config.json + model.safetensors    the W8A8 release layout (see w8a8_release)
    DIR/reference/tokens.npy        int32 [T]          the prompt (positions 0..T-1)
    DIR/reference/logits_f32.npy    float32 [T, V]     prompt logits, f32 model
    DIR/reference/logits_bf16.npy   float32 [T, V]     prompt logits, bf16 model
    DIR/reference/greedy_f32.npy    int32 [G]          greedy continuation, f32 model
    DIR/reference/greedy_bf16.npy   int32 [G]          greedy continuation, bf16 model
    DIR/reference/hidden_layer0.npy float32 [T, d]     residual stream after layer 0
                                                       (f32 model)
    DIR/reference/{logits,greedy}_{bf16_compute,w8a8,int4}.npy   the same for:
        bf16_compute  the bf16 model with every GEMM input but the router's rounded to bf16
        w8a8          DIR/w8a8's weights, GEMM inputs quantized per row to int8
        int4          moge convert --type int4 of DIR/f32 (Q4 of quant.h), int8 inputs
    (not with --float-only).  Every o_proj bias is rounded to what the W8A8
    release stores, so w8a8 is also exactly moge convert --type int8 of DIR/f32.

"bf16 model" means: the F32 weights rounded to bfloat16 (round to nearest even),
exactly the values stored in DIR/bf16, upcast without change for the float64
math.  All reference math is float64; results are cast to float32 at the end.

The math (MOGE.md section 3), per layer, x the residual stream [T, d]:

    n1 = rmsnorm(x) * input_layernorm.weight,   rmsnorm(v) = v / sqrt(mean(v^2) + eps)
    q, k, v = n1 Wq^T + bq, n1 Wk^T + bk, n1 Wv^T + bv      (H, KV heads of hd)
    rope(q), rope(k): rotate-half (NeoX) over the whole head, position = index,
        inv_freq_i = theta^(-2i/hd), i < hd/2
    causal GQA attention (query head h reads kv head h // (H/KV)), scale 1/sqrt(hd)
    h  = x + attn Wo^T + bo
    n2 = rmsnorm(h) * post_attention_layernorm.weight
    p  = softmax(n2 Wgate^T) over all N experts
    chosen: the argmax of p in each of the M = num_experts_per_tok contiguous
            groups of N/M experts (ties -> lowest index)
    w_e = p_e * router_scale[e]   (no renormalisation)
    x  = h + shared(n2) + sum_e w_e expert_e(n2),  expert(v) = down(silu(gate v) * up v)
    logits = (rmsnorm(x) * norm.weight) lm_head^T

Redraw guard.  Routing and greedy decoding are discontinuous, so a seed is
accepted only if, for both the f32 and the bf16 weights:
  * every routing decision (prompt and the whole greedy sequence) has a
    relative gap  p_chosen - p_runner_up >= 1e-3 * p_chosen  inside its group;
  * every greedy step has a top-1 vs top-2 logit gap >= GREEDY_MARGIN;
  * the greedy continuation is not one token repeated.
Otherwise the next seed is tried; the seed used is printed.

Self-checks (they catch mistakes in the reference itself): the prompt logits
and the greedy continuation are recomputed with an incremental KV-cache
implementation (token by token, per-token expert loop, rope written out
element-wise) and must match the full recompute to 1e-10; the written
safetensors files are parsed back and must reproduce every tensor bit for bit.
"""

import argparse
import json
import math
import os
import shutil
import struct
import sys
import time

import numpy as np
import torch

DTYPE = torch.float64

CONFIG = {
    "architectures": ["PanguProMoEForCausalLM"],
    "model_type": "PanguProMoE",
    "vocab_size": 256,
    "hidden_size": 64,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "num_experts": 8,
    "num_experts_per_tok": 4,
    "moe_intermediate_size": 32,
    "shared_expert_intermediate_size": 48,
    "hidden_act": "silu",
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "max_position_embeddings": 512,
    "tie_word_embeddings": False,
    "router_aux_loss_coef": 0.001,
}

PROMPT_LEN = 24
GREEDY_LEN = 32

# Relative gap required between the chosen expert and the runner-up in its group.
MARGIN_REL = 1e-3
# Absolute gap required between the best and the second-best logit at every greedy step.
GREEDY_MARGIN = 1e-3
# Margins of the variants whose GEMM inputs are rounded (bf16 compute, W8A8):
# larger, because moge computes those inputs in f32, so a value within ~1e-6 of a
# rounding boundary may round the other way (one bf16 or int8 step, ~1e-3 on a
# logit) than in this float64 reference.
ROUNDED_ROUTE_MARGIN = 1e-2
ROUNDED_GREEDY_MARGIN = 1e-2
# The W8A8 release's static activation scale (stored, unused by moge).
W8A8_INPUT_SCALE = torch.tensor([0.02], dtype=torch.float32)
# Full-recompute vs KV-cache agreement.
SELF_CHECK_TOL = 1e-10

MAX_REDRAWS = 1000


# --------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------

def layer_names(i, cfg):
    """Tensor names of decoder layer i, with their shapes."""
    d, H, KV = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = d // H
    N, F, S = cfg["num_experts"], cfg["moe_intermediate_size"], cfg["shared_expert_intermediate_size"]
    p = f"model.layers.{i}."
    shapes = {
        p + "input_layernorm.weight": [d],
        p + "self_attn.q_proj.weight": [H * hd, d],
        p + "self_attn.q_proj.bias": [H * hd],
        p + "self_attn.k_proj.weight": [KV * hd, d],
        p + "self_attn.k_proj.bias": [KV * hd],
        p + "self_attn.v_proj.weight": [KV * hd, d],
        p + "self_attn.v_proj.bias": [KV * hd],
        p + "self_attn.o_proj.weight": [d, H * hd],
        p + "self_attn.o_proj.bias": [d],
        p + "post_attention_layernorm.weight": [d],
        p + "mlp.gate.weight": [N, d],
        p + "mlp.router_scale": [1, N],
    }
    for j in range(N):
        shapes[p + f"mlp.experts.{j}.gate_proj.weight"] = [F, d]
        shapes[p + f"mlp.experts.{j}.up_proj.weight"] = [F, d]
        shapes[p + f"mlp.experts.{j}.down_proj.weight"] = [d, F]
    shapes[p + "mlp.shared_expert.gate_proj.weight"] = [S, d]
    shapes[p + "mlp.shared_expert.up_proj.weight"] = [S, d]
    shapes[p + "mlp.shared_expert.down_proj.weight"] = [d, S]
    return shapes


def draw_weights(cfg, seed):
    """Random F32 weights, {name: float32 tensor}, plus a random prompt."""
    g = torch.Generator().manual_seed(seed)
    V, d = cfg["vocab_size"], cfg["hidden_size"]

    def normal(shape, std):
        return torch.randn(*shape, generator=g, dtype=DTYPE) * std

    w = {"model.embed_tokens.weight": normal([V, d], 1.0)}
    for i in range(cfg["num_hidden_layers"]):
        for name, shape in layer_names(i, cfg).items():
            if name.endswith("layernorm.weight"):
                t = 1.0 + normal(shape, 0.1)
            elif name.endswith(".bias"):
                t = normal(shape, 0.1)
            elif name.endswith("mlp.router_scale"):
                t = 0.5 + torch.rand(*shape, generator=g, dtype=DTYPE)
            elif name.endswith("mlp.gate.weight"):
                # Scaled up so that the routing softmax is far from flat.
                t = normal(shape, 3.0 / math.sqrt(shape[1]))
            else:
                t = normal(shape, 1.0 / math.sqrt(shape[1]))   # N(0, 1/fan_in)
            w[name] = t
    w["model.norm.weight"] = 1.0 + normal([d], 0.1)
    # Scaled up (std 2/sqrt(d)) so that the logits are far from flat.
    w["lm_head.weight"] = normal([V, d], 2.0 / math.sqrt(d))
    w = {k: v.to(torch.float32) for k, v in w.items()}
    tokens = torch.randint(0, V, (PROMPT_LEN,), generator=g, dtype=torch.int64)
    return w, tokens


def is_w8a8_projection(name):
    """The matrices stored in int8: attention and expert projections and lm_head
    (not the embedding or the router gate)."""
    return name == "lm_head.weight" or (
        name.endswith("_proj.weight") and (".self_attn." in name or ".mlp." in name))


def w8a8_release(w32):
    """The F32 weights quantized as the released W8A8 checkpoint stores them
    (vllm-ascend fields, MOGE.md section 3).  Returns (stored, dequantized):
    stored {name: tensor} to write; dequantized {name: float64} for the math.

    Per projection NAME: NAME.weight I8 [out, in], q = round(w / s) + offset
    with s = max|w[o, :]| / 127 per output row; NAME.weight_scale F32 [out, 1];
    NAME.weight_offset F32 [out, 1]; NAME.input_scale, NAME.input_offset F32
    [1] (static activation calibration, which moge does not need).  The
    dequantized weight is (q - offset) * s.  The embedding is stored BF16, the
    router gate, norms and other biases F32.  Offsets are 0 except in layer 0's
    k_proj, where rows get offset -1 (or +1) when their positive (negative)
    extreme is the one at 127 steps, so that q stays within [-128, 127] and the
    loader's offset folding is exercised.  o_proj keeps no float bias: it is
    stored as quant_bias I32 [out] in units of deq_scale F32 [out] =
    input_scale * s, the dequantized bias being quant_bias * deq_scale.
    """
    stored, deq = {}, {}
    input_scale = W8A8_INPUT_SCALE
    for name, t in w32.items():
        if name == "model.embed_tokens.weight":     # a lookup table: bf16, as moge convert writes it
            stored[name] = t.to(torch.bfloat16)
            deq[name] = stored[name].to(DTYPE)
            continue
        if not is_w8a8_projection(name):
            stored[name] = t
            continue
        base = name[: -len(".weight")]
        q_sym, scale = q8_dequantized(t.to(DTYPE))
        offset = torch.zeros_like(scale)
        if base == "model.layers.0.self_attn.k_proj":
            top = q_sym.amax(dim=1, keepdim=True) == 127
            offset = torch.where(top, -torch.ones_like(scale), torch.ones_like(scale))
        q = q_sym + offset
        assert int(q.min()) >= -128 and int(q.max()) <= 127
        stored[name] = q.to(torch.int8)
        stored[base + ".weight_scale"] = scale.to(torch.float32)
        stored[base + ".weight_offset"] = offset.to(torch.float32)
        stored[base + ".input_scale"] = input_scale.clone()
        stored[base + ".input_offset"] = torch.zeros(1, dtype=torch.float32)
        deq[name] = (q - offset) * scale
        if base.endswith("o_proj"):
            deq_scale = (input_scale.to(DTYPE) * scale[:, 0]).to(torch.float32)
            quant_bias = torch.round(w32[base + ".bias"].to(DTYPE) / deq_scale.to(DTYPE)).to(torch.int32)
            stored[base + ".deq_scale"] = deq_scale
            stored[base + ".quant_bias"] = quant_bias
            deq[base + ".bias"] = quant_bias.to(DTYPE) * deq_scale.to(DTYPE)
    for name, t in w32.items():
        if name not in deq:
            deq[name] = t.to(DTYPE)
    for name in list(stored):
        if name.endswith("o_proj.bias"):
            del stored[name]
    return stored, deq


def q8_dequantized(t64):
    """Symmetric per-output-row int8 (quant.h Q8): s = max|w[o, :]| / 127 (as f32),
    q = round(w / s) in [-127, 127]; returns (q, s [out, 1]) as float64."""
    scale = (t64.abs().amax(dim=1, keepdim=True) / 127.0).to(torch.float32).to(DTYPE)
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    return torch.clamp(torch.round(t64 / safe), -127, 127), scale


def q4_dequantized(t64):
    """Blocks of 32 along the input (quant.h Q4): d = max|block| / 7.5 rounded UP
    to a float16, q = clamp(round(w / d), -8, 7); returns q * d (float64).  A
    matrix whose width is not a multiple of 32 gets Q8 instead, as moge does."""
    out, inp = t64.shape
    if inp % 32:
        q, s = q8_dequantized(t64)
        return q * s
    blocks = t64.reshape(out, inp // 32, 32)
    want = blocks.abs().amax(dim=-1, keepdim=True) / 7.5
    d = want.to(torch.float16)                      # nearest; if below, step up one f16
    bits = d.view(torch.int16)                      # (positive: the next value is bits + 1)
    d = torch.where(d.to(DTYPE) < want, (bits + 1).view(torch.float16), d)
    d64 = d.to(DTYPE)
    safe = torch.where(d64 > 0, d64, torch.ones_like(d64))
    q = torch.clamp(torch.round(blocks / safe), -8, 7)
    return (q * d64).reshape(out, inp)


def int4_model(w32):
    """The weights moge convert --type int4 computes with (dequantized, float64):
    projections and lm_head Q4 (Q8 where the width is not a multiple of 32), the
    embedding rounded to bf16, everything else unchanged."""
    deq = {}
    for name, t in w32.items():
        if name == "model.embed_tokens.weight":
            deq[name] = t.to(torch.bfloat16).to(DTYPE)
        elif is_w8a8_projection(name):
            deq[name] = q4_dequantized(t.to(DTYPE))
        else:
            deq[name] = t.to(DTYPE)
    return deq


def snap_quantized_biases(w32):
    """Rounds each o_proj bias to what the W8A8 release stores (quant_bias in units
    of deq_scale, see w8a8_release), in place, so that the release and moge's own
    int8 conversion of the F32 model describe the same model."""
    for name in list(w32):
        if name.endswith("o_proj.bias"):
            weight = w32[name[: -len(".bias")] + ".weight"].to(DTYPE)
            _, scale = q8_dequantized(weight)
            deq_scale = (W8A8_INPUT_SCALE.to(DTYPE) * scale[:, 0]).to(torch.float32).to(DTYPE)
            w32[name] = (torch.round(w32[name].to(DTYPE) / deq_scale) * deq_scale).to(torch.float32)


def new_model_dir(model_dir, cfg, torch_dtype):
    """An empty model_dir (replaced if present) holding config.json."""
    if os.path.isdir(model_dir):
        shutil.rmtree(model_dir)
    os.makedirs(model_dir)
    config = dict(cfg)
    config["torch_dtype"] = torch_dtype
    with open(os.path.join(model_dir, "config.json"), "w") as fh:
        json.dump(config, fh, indent=2)
        fh.write("\n")


def write_single_file_model(model_dir, stored, cfg, torch_dtype):
    """config.json + one model.safetensors (no index), read back bit for bit."""
    new_model_dir(model_dir, cfg, torch_dtype)
    path = os.path.join(model_dir, "model.safetensors")
    write_safetensors(path, stored)
    back = read_safetensors(path)
    assert set(back) == set(stored)
    for n, t in stored.items():
        assert back[n].dtype == t.dtype and list(back[n].shape) == list(t.shape), n
        assert torch.equal(back[n], t), n


def to_bf16(w):
    """Round F32 weights to bfloat16 (round to nearest even)."""
    return {k: v.to(torch.bfloat16) for k, v in w.items()}


def as_f64(w):
    return {k: v.to(DTYPE) for k, v in w.items()}


# --------------------------------------------------------------------------
# Forward pass, full recompute (dense MoGE)
# --------------------------------------------------------------------------

def rmsnorm(x, weight, eps):
    return x / torch.sqrt((x * x).mean(dim=-1, keepdim=True) + eps) * weight


def rope_tables(T, hd, theta):
    """cos, sin [T, hd] for rotate-half rope at positions 0..T-1."""
    half = hd // 2
    inv_freq = theta ** (-torch.arange(half, dtype=DTYPE) * 2.0 / hd)   # [half]
    angle = torch.arange(T, dtype=DTYPE)[:, None] * inv_freq[None, :]   # [T, half]
    angle = torch.cat([angle, angle], dim=-1)                           # [T, hd]
    return torch.cos(angle), torch.sin(angle)


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def apply_rope(x, cos, sin):
    """x: [T, heads, hd]."""
    return x * cos[:, None, :] + rotate_half(x) * sin[:, None, :]


def route(p, cfg):
    """MoGE selection.  p: [T, N].  Returns (mask [T, N] 0/1, min relative gap)."""
    T, N = p.shape
    M = cfg["num_experts_per_tok"]          # Pangu: groups = experts per token
    per_group = N // M
    vals, idx = torch.sort(p.reshape(T, M, per_group), dim=-1, descending=True, stable=True)
    chosen = idx[..., 0] + (torch.arange(M) * per_group)[None, :]        # [T, M]
    mask = torch.zeros(T, N, dtype=DTYPE)
    mask.scatter_(1, chosen, 1.0)
    rel_gap = (vals[..., 0] - vals[..., 1]) / vals[..., 0]
    return mask, float(rel_gap.min())


def fake_quant_rows(x):
    """W8A8 activations: each row (last dim) rounded to int8 steps of max|row|/127
    (round half to even), returned dequantized.  Zero rows stay zero."""
    amax = x.abs().amax(dim=-1, keepdim=True)
    step = torch.where(amax > 0, amax / 127.0, torch.ones_like(amax))
    return torch.round(x / step) * step


def round_bf16(x):
    """bf16 compute: GEMM inputs rounded to bfloat16 (nearest even)."""
    return x.to(torch.bfloat16).to(DTYPE)


# What happens to the input rows of every GEMM but the router's, per compute mode.
ACT_ROUNDING = {None: lambda v: v, "bf16": round_bf16, "int8": fake_quant_rows}


def forward_full(w, tokens, cfg, act=None):
    """Float64 forward over a whole sequence.

    act: None, or how the input rows of every GEMM but the router's (attention
    and expert projections, lm_head) are rounded: "bf16" (bf16 compute) or
    "int8" (W8A8: per-row int8, see fake_quant_rows).
    Returns (logits [T, V], hidden after layer 0 [T, d], min routing gap).
    """
    fq = ACT_ROUNDING[act]
    d, H, KV = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd, N = d // H, cfg["num_experts"]
    eps = cfg["rms_norm_eps"]
    T = tokens.shape[0]
    cos, sin = rope_tables(T, hd, cfg["rope_theta"])
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    min_gap = math.inf
    hidden0 = None

    x = w["model.embed_tokens.weight"][tokens]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        a = p + "self_attn."
        n1 = rmsnorm(x, w[p + "input_layernorm.weight"], eps)
        n1q = fq(n1)
        q = (n1q @ w[a + "q_proj.weight"].T + w[a + "q_proj.bias"]).reshape(T, H, hd)
        k = (n1q @ w[a + "k_proj.weight"].T + w[a + "k_proj.bias"]).reshape(T, KV, hd)
        v = (n1q @ w[a + "v_proj.weight"].T + w[a + "v_proj.bias"]).reshape(T, KV, hd)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        k = k.repeat_interleave(H // KV, dim=1)       # head h -> kv head h // (H/KV)
        v = v.repeat_interleave(H // KV, dim=1)
        scores = torch.einsum("thd,shd->hts", q, k) / math.sqrt(hd)
        scores = scores.masked_fill(~causal, -math.inf)
        attn = torch.einsum("hts,shd->thd", torch.softmax(scores, dim=-1), v).reshape(T, H * hd)
        h = x + fq(attn) @ w[a + "o_proj.weight"].T + w[a + "o_proj.bias"]

        n2 = rmsnorm(h, w[p + "post_attention_layernorm.weight"], eps)
        m = p + "mlp."
        probs = torch.softmax(n2 @ w[m + "gate.weight"].T, dim=-1)            # [T, N]
        mask, gap = route(probs, cfg)
        min_gap = min(min_gap, gap)
        weights = probs * mask * w[m + "router_scale"]                        # [T, N]
        eg = torch.stack([w[m + f"experts.{j}.gate_proj.weight"] for j in range(N)])
        eu = torch.stack([w[m + f"experts.{j}.up_proj.weight"] for j in range(N)])
        ed = torch.stack([w[m + f"experts.{j}.down_proj.weight"] for j in range(N)])
        n2q = fq(n2)
        hid = torch.nn.functional.silu(torch.einsum("td,nfd->tnf", n2q, eg)) \
            * torch.einsum("td,nfd->tnf", n2q, eu)
        y = torch.einsum("tn,tnd->td", weights, torch.einsum("tnf,ndf->tnd", fq(hid), ed))
        s = m + "shared_expert."
        y = y + fq(torch.nn.functional.silu(n2q @ w[s + "gate_proj.weight"].T)
                   * (n2q @ w[s + "up_proj.weight"].T)) @ w[s + "down_proj.weight"].T
        x = h + y
        if i == 0:
            hidden0 = x.clone()

    logits = fq(rmsnorm(x, w["model.norm.weight"], eps)) @ w["lm_head.weight"].T
    return logits, hidden0, min_gap


def top2_gap(row):
    top = torch.topk(row, 2).values
    return float(top[0] - top[1])


def greedy_full(w, tokens, cfg, n_new, act=None):
    """Greedy decoding by full recompute at every step.

    Returns (new tokens [n_new] int64, min top-1/top-2 logit gap,
             min routing gap over the whole sequence).
    """
    seq = tokens.clone()
    out, min_logit_gap, min_route_gap = [], math.inf, math.inf
    for _ in range(n_new):
        logits, _, route_gap = forward_full(w, seq, cfg, act)
        last = logits[-1]
        nxt = int(torch.argmax(last))         # first maximal index
        min_logit_gap = min(min_logit_gap, top2_gap(last))
        min_route_gap = min(min_route_gap, route_gap)
        out.append(nxt)
        seq = torch.cat([seq, torch.tensor([nxt], dtype=torch.int64)])
    return torch.tensor(out, dtype=torch.int64), min_logit_gap, min_route_gap


# --------------------------------------------------------------------------
# Incremental forward with a KV cache (self-check only)
# --------------------------------------------------------------------------

class KVCacheModel:
    """Token-by-token forward, written independently of forward_full: rope
    element-wise at an explicit position, per-token loop over the chosen
    experts, attention over the cached keys/values."""

    def __init__(self, w, cfg):
        self.w, self.cfg = w, cfg
        L = cfg["num_hidden_layers"]
        self.k_cache = [[] for _ in range(L)]   # per layer: list of [KV, hd]
        self.v_cache = [[] for _ in range(L)]
        self.pos = 0

    def rope(self, x, pos):
        """x: [heads, hd] at one position."""
        hd = x.shape[-1]
        half = hd // 2
        out = torch.empty_like(x)
        for i in range(half):
            ang = pos * self.cfg["rope_theta"] ** (-2.0 * i / hd)
            c, s = math.cos(ang), math.sin(ang)
            out[:, i] = x[:, i] * c - x[:, i + half] * s
            out[:, i + half] = x[:, i + half] * c + x[:, i] * s
        return out

    def step(self, token):
        w, cfg = self.w, self.cfg
        d, H, KV = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
        hd, N, M = d // H, cfg["num_experts"], cfg["num_experts_per_tok"]
        eps = cfg["rms_norm_eps"]
        pos = self.pos

        def norm(v, wt):
            return v / math.sqrt(float((v * v).sum()) / v.numel() + eps) * wt

        def mlp(v, prefix):
            return w[prefix + "down_proj.weight"] @ (
                torch.nn.functional.silu(w[prefix + "gate_proj.weight"] @ v)
                * (w[prefix + "up_proj.weight"] @ v))

        x = w["model.embed_tokens.weight"][token].clone()
        for i in range(cfg["num_hidden_layers"]):
            p = f"model.layers.{i}."
            a = p + "self_attn."
            n1 = norm(x, w[p + "input_layernorm.weight"])
            q = (w[a + "q_proj.weight"] @ n1 + w[a + "q_proj.bias"]).reshape(H, hd)
            k = (w[a + "k_proj.weight"] @ n1 + w[a + "k_proj.bias"]).reshape(KV, hd)
            v = (w[a + "v_proj.weight"] @ n1 + w[a + "v_proj.bias"]).reshape(KV, hd)
            self.k_cache[i].append(self.rope(k, pos))
            self.v_cache[i].append(v)
            q = self.rope(q, pos)
            K_all = torch.stack(self.k_cache[i])      # [pos+1, KV, hd]
            V_all = torch.stack(self.v_cache[i])
            attn = torch.empty(H, hd, dtype=DTYPE)
            for hh in range(H):
                kvh = hh // (H // KV)
                sc = K_all[:, kvh, :] @ q[hh] / math.sqrt(hd)
                attn[hh] = torch.softmax(sc, dim=0) @ V_all[:, kvh, :]
            h = x + w[a + "o_proj.weight"] @ attn.reshape(-1) + w[a + "o_proj.bias"]

            m = p + "mlp."
            n2 = norm(h, w[p + "post_attention_layernorm.weight"])
            logits = w[m + "gate.weight"] @ n2
            prob = torch.exp(logits - logits.max())
            prob = prob / prob.sum()
            y = mlp(n2, m + "shared_expert.")
            per_group = N // M
            for g in range(M):
                lo = g * per_group
                best = lo
                for e in range(lo + 1, lo + per_group):
                    if prob[e] > prob[best]:
                        best = e
                y = y + prob[best] * w[m + "router_scale"][0, best] * mlp(n2, m + f"experts.{best}.")
            x = h + y

        self.pos += 1
        return norm(x, w["model.norm.weight"]) @ w["lm_head.weight"].T


def self_check_kv(w, tokens, greedy, logits_full, cfg, label):
    model = KVCacheModel(w, cfg)
    rows = [model.step(int(t)) for t in tokens]
    logits_inc = torch.stack(rows)
    err = float((logits_inc - logits_full).abs().max())
    assert err <= SELF_CHECK_TOL, f"{label}: KV-cache logits differ from full recompute by {err:g}"
    # Greedy continuation with the cache must agree with the full recompute.
    last, gen = rows[-1], []
    for _ in range(len(greedy)):
        nxt = int(torch.argmax(last))
        gen.append(nxt)
        last = model.step(nxt)
    assert gen == greedy.tolist(), f"{label}: KV-cache greedy {gen} != full {greedy.tolist()}"
    return err


# --------------------------------------------------------------------------
# Safetensors (hand-written)
# --------------------------------------------------------------------------

ST_DTYPE = {torch.float32: ("F32", "<f4"), torch.bfloat16: ("BF16", "<u2"),
            torch.int8: ("I8", "<i1"), torch.int32: ("I32", "<i4")}


def tensor_bytes(t):
    st, np_dtype = ST_DTYPE[t.dtype]
    if t.dtype == torch.bfloat16:
        arr = t.contiguous().view(torch.int16).numpy().view(np.uint16)
    else:
        arr = t.contiguous().numpy()
    return st, np.ascontiguousarray(arr.astype(np_dtype)).tobytes()


def write_safetensors(path, tensors):
    """tensors: ordered {name: tensor}.  Returns the number of data bytes."""
    header = {"__metadata__": {"format": "pt"}}
    blobs, offset = [], 0
    for name, t in tensors.items():
        st, data = tensor_bytes(t)
        header[name] = {"dtype": st, "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(text)))
        fh.write(text)
        for b in blobs:
            fh.write(b)
    return offset


def read_safetensors(path):
    """Minimal parser for the self-check: {name: tensor} in the stored dtype."""
    with open(path, "rb") as fh:
        raw = fh.read()
    (n,) = struct.unpack("<Q", raw[:8])
    assert n % 8 == 0, f"{path}: header length {n} not a multiple of 8"
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    data = raw[8 + n:]
    out, end = {}, 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        lo, hi = info["data_offsets"]
        end = max(end, hi)
        if info["dtype"] == "F32":
            t = torch.from_numpy(np.frombuffer(data[lo:hi], dtype="<f4").copy())
        elif info["dtype"] == "BF16":
            t = torch.from_numpy(np.frombuffer(data[lo:hi], dtype="<i2").copy()).view(torch.bfloat16)
        elif info["dtype"] in ("I8", "I32"):
            t = torch.from_numpy(np.frombuffer(data[lo:hi], dtype="<i1" if info["dtype"] == "I8" else "<i4").copy())
        else:
            raise ValueError(info["dtype"])
        out[name] = t.reshape(info["shape"])
    assert end == len(data), f"{path}: {len(data) - end} trailing bytes"
    return out


def shard_plan(cfg):
    """Tensor names per shard: embeddings + layer 0, one shard per middle layer,
    the last layer + final norm + lm_head."""
    L = cfg["num_hidden_layers"]
    shards = []
    for i in range(L):
        names = list(layer_names(i, cfg))
        if i == 0:
            names = ["model.embed_tokens.weight"] + names
        if i == L - 1:
            names = names + ["model.norm.weight", "lm_head.weight"]
        shards.append(names)
    return shards


def write_model(model_dir, weights, cfg, torch_dtype):
    new_model_dir(model_dir, cfg, torch_dtype)

    shards = shard_plan(cfg)
    assert sorted(n for s in shards for n in s) == sorted(weights)
    weight_map, total = {}, 0
    for k, names in enumerate(shards):
        fname = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
        total += write_safetensors(os.path.join(model_dir, fname),
                                   {n: weights[n] for n in names})
        for n in names:
            weight_map[n] = fname
    index = {"metadata": {"total_size": total},
             "weight_map": dict(sorted(weight_map.items()))}
    with open(os.path.join(model_dir, "model.safetensors.index.json"), "w") as fh:
        json.dump(index, fh, indent=2)
        fh.write("\n")

    # Read everything back through the index: names, dtypes and bits must match.
    back = {}
    for fname in sorted(set(weight_map.values())):
        part = read_safetensors(os.path.join(model_dir, fname))
        for n in part:
            assert weight_map[n] == fname
        back.update(part)
    assert set(back) == set(weights)
    for n, t in weights.items():
        b = back[n]
        assert b.dtype == t.dtype and list(b.shape) == list(t.shape), n
        if t.dtype == torch.bfloat16:
            assert torch.equal(b.view(torch.int16), t.view(torch.int16)), n
        else:
            assert torch.equal(b.view(torch.int32), t.view(torch.int32)), n


# --------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------

def evaluate(w32, tokens, cfg, act=None):
    """Everything for one weight variant (weights in their storage dtype)."""
    w = as_f64(w32)
    logits, hidden0, prompt_gap = forward_full(w, tokens, cfg, act)
    greedy, logit_gap, seq_gap = greedy_full(w, tokens, cfg, GREEDY_LEN, act)
    return dict(w=w, logits=logits, hidden0=hidden0, greedy=greedy,
                prompt_gap=prompt_gap, route_gap=min(prompt_gap, seq_gap),
                logit_gap=logit_gap)


def acceptable(res, route_margin=MARGIN_REL, greedy_margin=GREEDY_MARGIN):
    return (res["route_gap"] >= route_margin
            and res["logit_gap"] >= greedy_margin
            and len(set(res["greedy"].tolist())) > 1)


def draw(cfg, base_seed, float_only=False):
    for seed in range(base_seed, base_seed + MAX_REDRAWS):
        w32, tokens = draw_weights(cfg, seed)
        snap_quantized_biases(w32)
        wbf = to_bf16(w32)
        r32 = evaluate(w32, tokens, cfg)
        if not acceptable(r32):
            print(f"seed {seed}: rejected (f32 margins)")
            continue
        rbf = evaluate(wbf, tokens, cfg)
        if not acceptable(rbf):
            print(f"seed {seed}: rejected (bf16 margins)")
            continue
        if float_only:
            return seed, w32, wbf, None, tokens, r32, rbf, None, None, None
        rbc = evaluate(wbf, tokens, cfg, act="bf16")
        if not acceptable(rbc, ROUNDED_ROUTE_MARGIN, ROUNDED_GREEDY_MARGIN):
            print(f"seed {seed}: rejected (bf16 compute margins)")
            continue
        w8_stored, w8_deq = w8a8_release(w32)
        r8 = evaluate(w8_deq, tokens, cfg, act="int8")
        if not acceptable(r8, ROUNDED_ROUTE_MARGIN, ROUNDED_GREEDY_MARGIN):
            print(f"seed {seed}: rejected (w8a8 margins)")
            continue
        r4 = evaluate(int4_model(w32), tokens, cfg, act="int8")
        if not acceptable(r4, ROUNDED_ROUTE_MARGIN, ROUNDED_GREEDY_MARGIN):
            print(f"seed {seed}: rejected (int4 margins)")
            continue
        return seed, w32, wbf, w8_stored, tokens, r32, rbf, rbc, r8, r4
    raise RuntimeError("no seed with routing and greedy margins found")


def save_npy(path, tensor, integer=False):
    dtype = "<i4" if integer else "<f4"
    np.save(path, np.ascontiguousarray(tensor.numpy().astype(dtype)))


def continue_greedy(out, ids, steps):
    """Greedy continuation (full recompute, float64) of `ids` by the f32 model in out/f32."""
    model_dir = os.path.join(out, "f32")
    with open(os.path.join(model_dir, "config.json")) as fh:
        cfg = json.load(fh)
    with open(os.path.join(model_dir, "model.safetensors.index.json")) as fh:
        shards = sorted(set(json.load(fh)["weight_map"].values()))
    w = {}
    for shard in shards:
        w.update(read_safetensors(os.path.join(model_dir, shard)))
    tokens = torch.tensor([int(t) for t in ids.split()], dtype=torch.int64)
    new = greedy_full(as_f64(w), tokens, cfg, steps)[0]
    print(" ".join(str(int(t)) for t in new))
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--seed", type=int, default=308,
                        help="first seed to try (redraws go to seed+1, ...); the default passes every "
                             "margin at once: the variants with rounded GEMM inputs reject most seeds")
    parser.add_argument("--float-only", action="store_true",
                        help="write and check only the f32 and bf16 variants (faster redraws)")
    parser.add_argument("--vocab-size", type=int, default=CONFIG["vocab_size"],
                        help="vocabulary of the random model (to pair it with a tokenizer)")
    parser.add_argument("--continue-tokens", metavar="IDS",
                        help="instead of writing a model: print the greedy continuation of these "
                             "space-separated ids by the f32 model already in --out")
    parser.add_argument("--steps", type=int, default=8, help="tokens to continue with --continue-tokens")
    args = parser.parse_args(argv)
    if args.continue_tokens is not None:
        return continue_greedy(args.out, args.continue_tokens, args.steps)

    torch.set_num_threads(1)  # tiny problems; also keeps results reproducible
    start = time.time()
    cfg = dict(CONFIG, vocab_size=args.vocab_size)
    assert cfg["hidden_size"] % cfg["num_attention_heads"] == 0
    assert cfg["num_attention_heads"] % cfg["num_key_value_heads"] == 0
    assert cfg["num_experts"] % cfg["num_experts_per_tok"] == 0

    seed, w32, wbf, w8_stored, tokens, r32, rbf, rbc, r8, r4 = draw(cfg, args.seed, args.float_only)

    for label, res in (("f32", r32), ("bf16", rbf)):
        err = self_check_kv(res["w"], tokens, res["greedy"], res["logits"], cfg, label)
        print(f"{label}: KV-cache self-check max |diff| = {err:.3g}")

    os.makedirs(args.out, exist_ok=True)
    write_model(os.path.join(args.out, "f32"), w32, cfg, "float32")
    write_model(os.path.join(args.out, "bf16"), wbf, cfg, "bfloat16")
    if w8_stored is not None:
        write_single_file_model(os.path.join(args.out, "w8a8"), w8_stored, cfg, "float32")

    ref = os.path.join(args.out, "reference")
    if os.path.isdir(ref):
        shutil.rmtree(ref)
    os.makedirs(ref)
    save_npy(os.path.join(ref, "tokens.npy"), tokens, integer=True)
    save_npy(os.path.join(ref, "logits_f32.npy"), r32["logits"])
    save_npy(os.path.join(ref, "logits_bf16.npy"), rbf["logits"])
    save_npy(os.path.join(ref, "greedy_f32.npy"), r32["greedy"], integer=True)
    save_npy(os.path.join(ref, "greedy_bf16.npy"), rbf["greedy"], integer=True)
    variants = [("f32", r32), ("bf16", rbf)]
    if not args.float_only:
        variants += [("bf16 compute", rbc), ("w8a8", r8), ("int4", r4)]
        for name, res in (("bf16_compute", rbc), ("w8a8", r8), ("int4", r4)):
            save_npy(os.path.join(ref, f"logits_{name}.npy"), res["logits"])
            save_npy(os.path.join(ref, f"greedy_{name}.npy"), res["greedy"], integer=True)
    save_npy(os.path.join(ref, "hidden_layer0.npy"), r32["hidden0"])

    print(f"seed={seed}")
    for label, res in variants:
        lg = res["logits"]
        print(f"{label}: logits std {float(lg.std()):.3f}, min routing gap (rel) "
              f"{res['route_gap']:.3g}, min greedy logit gap {res['logit_gap']:.3g}, "
              f"greedy {res['greedy'].tolist()}")
    print(f"max |logits_f32 - logits_bf16| = {float((r32['logits'] - rbf['logits']).abs().max()):.3g}")
    for label, res in variants[2:]:
        print(f"max |logits_f32 - logits {label}| = {float((r32['logits'] - res['logits']).abs().max()):.3g}")
    print(f"wrote {args.out} in {time.time() - start:.2f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
