#!/usr/bin/env python3
"""PyTorch baseline for `moge train`: the same Pangu Pro MoE (MoGE) decoder training step, f32 on the CPU.

Written the way a PyTorch user who cares about speed would write it (not the dense every-expert
reference of tests/reference/): the experts run on the tokens routed to them only (sort by expert,
one SwiGLU per expert, index_add back), attention is batched over sequences and heads with the
query heads of one KV head stacked (GQA without repeating K and V), q/k/v and gate/up are fused
GEMMs (--no-fuse: separate ones, as in the HF layout), AdamW runs with foreach=True.

Model (MOGE.md section 3): embedding; per layer RMSNorm, q/k/v/o with biases, rotate-half RoPE,
causal GQA attention (matmuls + mask + softmax: torch 1.13 has no scaled_dot_product_attention),
residual, RMSNorm, MoGE router (softmax over all N, top-K/M in each contiguous group of N/M
experts, weight p * router_scale, no renormalisation), routed SwiGLU experts + shared expert,
residual; final RMSNorm, lm_head (tied to the embedding when the config says so), cross-entropy;
aux loss alpha * sum_i f_i P_i per layer (f detached). AdamW(lr, betas, weight_decay on matrices
and the embedding only, as moge) + clip_grad_norm_(grad_clip). Init as moge's: embedding and every
matrix N(0, 1/fan_in), biases 0, norms and router_scale 1.

Input: a moge run config ({"model": {HF config}, "train": {micro_batch, seq_len, grad_accum,
lr, weight_decay, beta1, beta2, grad_clip, ...}}); batches are random tokens in [0, vocab_size).
A step is grad_accum micro-batches of micro_batch x seq_len tokens, then clipping and AdamW, as in
`moge train`; its time includes drawing the batch.

Threads: OMP_NUM_THREADS, OPENBLAS_NUM_THREADS and MKL_NUM_THREADS are set to --threads before
torch is imported, then torch.set_num_threads(T), torch.set_num_interop_threads(1) and
openblas_set_num_threads(T). Debian's torch does its f32 GEMMs in OpenBLAS (libblas.so.3), whose
DYNAMIC_ARCH build may not know a new CPU and fall back to a slow core ("Prescott": SSE3 kernels);
the OpenBLAS core in use is printed: set OPENBLAS_CORETYPE (e.g. SkylakeX, Haswell) to choose one.

Output: progress and the sanity check on stderr; one JSON line on stdout:
  {"tokens_per_s", "step_seconds" (median of the timed steps), "step_seconds_all", "threads",
   "tokens_per_step", "openblas_core", "torch", "loss_first", "loss_last", ...}

Usage: /usr/bin/python3 bench/torch_train.py --config docs/configs/tiny-moge.json -t 2
       [--warmup 5] [--steps 20] [--sanity 30] [--no-fuse] [--seed 1]
"""

import argparse
import json
import math
import os
import statistics
import sys
import time


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="docs/configs/tiny-moge.json", help="moge run config JSON")
    p.add_argument("-t", "--threads", type=int, default=1)
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    p.add_argument("--steps", type=int, default=20, help="timed steps")
    p.add_argument("--sanity", type=int, default=0,
                   help="first train N steps on one repeated batch and check that the loss starts near "
                        "ln(vocab) and decreases (0: skip)")
    p.add_argument("--no-fuse", action="store_true", help="separate q/k/v and gate/up GEMMs (HF layout)")
    p.add_argument("--no-foreach", action="store_true", help="AdamW with foreach=False")
    p.add_argument("--blas-threads", type=int, default=0,
                   help="OpenBLAS threads (default: --threads); torch's own OpenMP threads stay --threads")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--quiet", action="store_true", help="no per-step lines on stderr")
    return p.parse_args()


ARGS = parse_args()
BLAS_THREADS = ARGS.blas_threads or ARGS.threads
os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(ARGS.threads)
os.environ["OPENBLAS_NUM_THREADS"] = str(BLAS_THREADS)

import torch  # noqa: E402  (after the thread variables)
import torch.nn.functional as F  # noqa: E402

torch.set_num_threads(ARGS.threads)
torch.set_num_interop_threads(1)


def openblas_core():
    """The OpenBLAS core torch's GEMMs run on (after setting its thread count), or None."""
    try:
        import ctypes
        lib = ctypes.CDLL("libblas.so.3")
        lib.openblas_set_num_threads(ctypes.c_int(BLAS_THREADS))
        lib.openblas_get_corename.restype = ctypes.c_char_p
        return lib.openblas_get_corename().decode()
    except (OSError, AttributeError):
        return None


def log(msg):
    print(msg, file=sys.stderr, flush=True)


class Config:
    def __init__(self, path):
        with open(path) as fh:
            run = json.load(fh)
        m, t = run["model"], run.get("train", {})
        self.vocab = m["vocab_size"]
        self.d = m["hidden_size"]
        self.layers = m["num_hidden_layers"]
        self.heads = m["num_attention_heads"]
        self.kv_heads = m.get("num_key_value_heads", self.heads)
        self.head_dim = m.get("head_dim") or self.d // self.heads
        self.experts = m["num_experts"]
        self.k = m["num_experts_per_tok"]
        self.groups = m.get("num_expert_groups", self.k)
        self.mode = m.get("routing_mode", "grouped")
        self.ff = m["moe_intermediate_size"]
        self.shared_ff = m.get("shared_expert_intermediate_size", 0)
        self.eps = m.get("rms_norm_eps", 1e-5)
        self.theta = m.get("rope_theta", 10000.0)
        self.tied = m.get("tie_word_embeddings", False)
        self.alpha = m.get("router_aux_loss_coef", 0.0)
        if self.mode != "grouped":
            raise SystemExit(f"{path}: routing_mode '{self.mode}': this baseline implements 'grouped' (MoGE) only")
        if self.experts % self.groups or self.k % self.groups or self.heads % self.kv_heads:
            raise SystemExit(f"{path}: experts, K and heads must divide into groups / KV heads")
        self.micro_batch = t.get("micro_batch", 8)
        self.seq_len = t.get("seq_len", 128)
        self.grad_accum = t.get("grad_accum", 1)
        self.lr = t.get("lr", 3e-3)
        self.weight_decay = t.get("weight_decay", 0.1)
        self.betas = (t.get("beta1", 0.9), t.get("beta2", 0.95))
        self.grad_clip = t.get("grad_clip", 1.0)


def normal_(t, fan_in):
    with torch.no_grad():
        t.normal_(0.0, 1.0 / math.sqrt(fan_in))
    return t


def linear(in_f, out_f, bias):
    lin = torch.nn.Linear(in_f, out_f, bias=bias)
    normal_(lin.weight, in_f)
    if bias:
        torch.nn.init.zeros_(lin.bias)
    return lin


class RMSNorm(torch.nn.Module):
    def __init__(self, d, eps):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class SwiGLU(torch.nn.Module):
    """down(silu(gate(x)) * up(x)); gate and up as one [2F, d] GEMM when fused."""

    def __init__(self, d, f, fuse):
        super().__init__()
        self.fuse, self.f = fuse, f
        if fuse:
            self.gate_up = linear(d, 2 * f, False)
        else:
            self.gate, self.up = linear(d, f, False), linear(d, f, False)
        self.down = linear(f, d, False)

    def forward(self, x):
        if self.fuse:
            g, u = self.gate_up(x).split(self.f, dim=-1)
        else:
            g, u = self.gate(x), self.up(x)
        return self.down(F.silu(g) * u)


class Attention(torch.nn.Module):
    def __init__(self, c, fuse):
        super().__init__()
        self.c, self.fuse = c, fuse
        self.qd, self.kvd = c.heads * c.head_dim, c.kv_heads * c.head_dim
        if fuse:
            self.qkv = linear(c.d, self.qd + 2 * self.kvd, True)
        else:
            self.q, self.k, self.v = (linear(c.d, self.qd, True), linear(c.d, self.kvd, True),
                                      linear(c.d, self.kvd, True))
        self.o = linear(self.qd, c.d, True)

    def forward(self, x, B, T, cos, sin, mask):
        c = self.c
        H, KV, hd = c.heads, c.kv_heads, c.head_dim
        G = H // KV
        if self.fuse:
            q, k, v = self.qkv(x).split([self.qd, self.kvd, self.kvd], dim=-1)
        else:
            q, k, v = self.q(x), self.k(x), self.v(x)
        q = rope(q.view(B, T, H, hd), cos, sin)                        # [B, T, H, hd]
        k = rope(k.view(B, T, KV, hd), cos, sin)
        # Query heads h = kv * G + g share KV head kv: stack them as [B, KV, G*T, hd].
        q = q.view(B, T, KV, G, hd).permute(0, 2, 3, 1, 4).reshape(B, KV, G * T, hd)
        k = k.permute(0, 2, 1, 3)                                      # [B, KV, T, hd]
        v = v.view(B, T, KV, hd).permute(0, 2, 1, 3)
        s = torch.matmul(q, k.transpose(-1, -2)).mul_(1.0 / math.sqrt(hd)) + mask  # [B, KV, G*T, T]
        out = torch.matmul(torch.softmax(s, dim=-1), v)                # [B, KV, G*T, hd]
        out = out.view(B, KV, G, T, hd).permute(0, 3, 1, 2, 4).reshape(B * T, H * hd)
        return self.o(out)


def rope(x, cos, sin):
    """Rotate-half (NeoX) RoPE over the whole head; x [B, T, heads, hd], cos/sin [T, 1, hd]."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


class MoGE(torch.nn.Module):
    def __init__(self, c, fuse):
        super().__init__()
        self.c = c
        self.gate = linear(c.d, c.experts, False)
        self.router_scale = torch.nn.Parameter(torch.ones(1, c.experts))
        self.experts = torch.nn.ModuleList([SwiGLU(c.d, c.ff, fuse) for _ in range(c.experts)])
        self.shared = SwiGLU(c.d, c.shared_ff, fuse) if c.shared_ff > 0 else None
        per_group = c.experts // c.groups
        self.register_buffer("offsets", torch.arange(c.groups).mul_(per_group).view(1, c.groups, 1), persistent=False)

    def forward(self, x):
        """y [R, d] and the aux loss; also the expert counts."""
        c = self.c
        R, N, M, K = x.shape[0], c.experts, c.groups, c.k
        probs = torch.softmax(self.gate(x), dim=-1)                    # [R, N] over all N
        with torch.no_grad():
            grouped = probs.view(R, M, N // M)
            if K == M:
                sel = grouped.argmax(-1, keepdim=True)                 # [R, M, 1]
            else:
                sel = grouped.topk(K // M, dim=-1, sorted=False).indices
            sel = (sel + self.offsets).view(R, K)                      # expert ids
            flat = sel.reshape(-1)
            order = torch.argsort(flat)                                # token-expert pairs by expert
            token = order.div(K, rounding_mode="floor")
            counts = torch.bincount(flat, minlength=N)
        weight = probs.gather(1, sel) * self.router_scale[0, sel]      # [R, K], no renormalisation
        xs = x.index_select(0, token)
        ws = weight.reshape(-1).index_select(0, order).unsqueeze(1)
        outs = [self.experts[e](part) for e, part in enumerate(xs.split(counts.tolist())) if part.shape[0] > 0]
        routed = torch.cat(outs) * ws
        base = self.shared(x) if self.shared is not None else torch.zeros_like(x)
        y = base.index_add(0, token, routed)
        f = counts.to(x.dtype) * (N / (K * R))                         # detached
        aux = c.alpha * (f * probs.mean(0)).sum()
        return y, aux


class Layer(torch.nn.Module):
    def __init__(self, c, fuse):
        super().__init__()
        self.input_norm = RMSNorm(c.d, c.eps)
        self.attn = Attention(c, fuse)
        self.post_norm = RMSNorm(c.d, c.eps)
        self.mlp = MoGE(c, fuse)

    def forward(self, x, B, T, cos, sin, mask):
        h = x + self.attn(self.input_norm(x), B, T, cos, sin, mask)
        y, aux = self.mlp(self.post_norm(h))
        return h + y, aux


class Decoder(torch.nn.Module):
    def __init__(self, c, fuse):
        super().__init__()
        self.c = c
        self.embed = torch.nn.Embedding(c.vocab, c.d)
        normal_(self.embed.weight, c.d)
        self.layers = torch.nn.ModuleList([Layer(c, fuse) for _ in range(c.layers)])
        self.norm = RMSNorm(c.d, c.eps)
        self.lm_head = None if c.tied else linear(c.d, c.vocab, False)
        self._tables = {}

    def tables(self, T):
        if T not in self._tables:
            c = self.c
            hd, G = c.head_dim, c.heads // c.kv_heads
            inv = 1.0 / (c.theta ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
            ang = torch.arange(T, dtype=torch.float64)[:, None] * inv[None, :]
            ang = torch.cat((ang, ang), dim=-1)
            cos, sin = ang.cos().float().view(T, 1, hd), ang.sin().float().view(T, 1, hd)
            causal = torch.full((T, T), float("-inf")).triu(1)
            self._tables[T] = (cos, sin, causal.repeat(G, 1))          # mask [G*T, T]
        return self._tables[T]

    def forward(self, inputs, targets):
        B, T = inputs.shape
        cos, sin, mask = self.tables(T)
        x = self.embed(inputs.reshape(-1))
        aux = x.new_zeros(())
        for layer in self.layers:
            x, a = layer(x, B, T, cos, sin, mask)
            aux = aux + a
        head = self.embed.weight if self.lm_head is None else self.lm_head.weight
        logits = F.linear(self.norm(x), head)
        ce = F.cross_entropy(logits, targets.reshape(-1))
        return ce, aux


def make_optimizer(model, c, foreach):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if p.dim() >= 2 and not name.endswith("router_scale") else no_decay).append(p)
    return torch.optim.AdamW([{"params": decay, "weight_decay": c.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}],
                             lr=c.lr, betas=c.betas, eps=1e-8, foreach=foreach)


def train_step(model, opt, c, batches):
    """One optimizer step over grad_accum micro-batches; returns the mean loss (ce + aux)."""
    opt.zero_grad(set_to_none=True)
    total = 0.0
    for inputs, targets in batches:
        ce, aux = model(inputs, targets)
        loss = (ce + aux) / c.grad_accum
        loss.backward()
        total += float(loss)
    if c.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), c.grad_clip)
    opt.step()
    return total


def random_batches(c, gen):
    out = []
    for _ in range(c.grad_accum):
        tokens = torch.randint(0, c.vocab, (c.micro_batch, c.seq_len + 1), generator=gen)
        out.append((tokens[:, :-1], tokens[:, 1:]))
    return out


def sanity(c, steps):
    """Loss at step 0 near ln(vocab) and falling when one batch is trained on repeatedly."""
    torch.manual_seed(ARGS.seed)
    model = Decoder(c, not ARGS.no_fuse)
    opt = make_optimizer(model, c, not ARGS.no_foreach)
    batch = random_batches(c, torch.Generator().manual_seed(ARGS.seed + 7))
    losses = [train_step(model, opt, c, batch) for _ in range(steps)]
    ln_v = math.log(c.vocab)
    log(f"sanity: ln(vocab) {ln_v:.4f}, loss at step 0 {losses[0]:.4f}, after {steps} steps on one repeated "
        f"batch {losses[-1]:.4f} (" + " ".join(f"{x:.3f}" for x in losses[:: max(1, steps // 10)]) + ")")
    ok = abs(losses[0] - ln_v) < 1.0 and losses[-1] < losses[0] - 0.5
    log("sanity: " + ("ok" if ok else "FAILED"))
    return ok, losses


def main():
    c = Config(ARGS.config)
    core = openblas_core()
    log(f"torch {torch.__version__}, threads {torch.get_num_threads()} (interop {torch.get_num_interop_threads()}), "
        f"OpenBLAS threads {BLAS_THREADS}, OpenBLAS core {core}, OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}")
    result = {}
    if ARGS.sanity > 0:
        ok, losses = sanity(c, ARGS.sanity)
        result.update(sanity_ok=ok, sanity_losses=[round(x, 5) for x in losses])
        if not ok:
            print(json.dumps(result))
            return 1

    torch.manual_seed(ARGS.seed)
    model = Decoder(c, not ARGS.no_fuse)
    opt = make_optimizer(model, c, not ARGS.no_foreach)
    params = sum(p.numel() for p in model.parameters())
    tokens = c.grad_accum * c.micro_batch * c.seq_len
    log(f"model: {params:,} parameters; step: {c.grad_accum} x {c.micro_batch} x {c.seq_len} = {tokens} tokens")
    gen = torch.Generator().manual_seed(ARGS.seed)
    times, losses = [], []
    for step in range(ARGS.warmup + ARGS.steps):
        t0 = time.perf_counter()
        loss = train_step(model, opt, c, random_batches(c, gen))
        dt = time.perf_counter() - t0
        losses.append(loss)
        if step >= ARGS.warmup:
            times.append(dt)
        if not ARGS.quiet:
            log(f"step {step + 1:3d}{' (warm-up)' if step < ARGS.warmup else ''}: loss {loss:.4f}, "
                f"{dt * 1e3:.1f} ms, {tokens / dt:.0f} tok/s")
    med = statistics.median(times)
    result.update(tokens_per_s=round(tokens / med, 1), step_seconds=round(med, 6),
                  step_seconds_all=[round(t, 6) for t in times], threads=ARGS.threads, blas_threads=BLAS_THREADS,
                  omp_wait_policy=os.environ.get("OMP_WAIT_POLICY"), tokens_per_step=tokens,
                  warmup=ARGS.warmup, steps=ARGS.steps, parameters=params, fused=not ARGS.no_fuse,
                  foreach=not ARGS.no_foreach, openblas_core=core,
                  openblas_coretype=os.environ.get("OPENBLAS_CORETYPE"), torch=torch.__version__,
                  loss_first=round(losses[0], 5), loss_last=round(losses[-1], 5))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
