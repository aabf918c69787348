#!/usr/bin/env python3
"""Golden fixtures for moetune: tiny random HF MoE models + expected forward/backward/training results.

Usage:
    python tools/golden/make_golden.py --out tests/golden [--device cpu|cuda] [--families qwen3_moe mixtral ...]

Requires only torch, transformers (v5), safetensors and numpy.

For every family this writes tests/golden/<family>/:
    config.json, generation_config.json, model.safetensors   -- model.save_pretrained(..., safe_serialization=True), fp32
    fused/config.json, fused/model.safetensors               -- (qwen3_moe, mixtral) in-memory fused expert layout
    expected.safetensors                                     -- inputs, logits, losses, grads, training trajectory
    meta.json                                                -- everything needed to reproduce the training
and tests/golden/versions.json + tests/golden/README.md.

Precision: the checkpoint is fp32. All reference numbers are computed in float64 from exactly those fp32
values (from_pretrained(fp32) then .double()). HF's modeling code contains explicit float32 casts (RMSNorm,
attention/router softmax, RoPE, the CE loss's logits.float(), the aux-loss accumulators) which would silently
round a float64 run back to fp32 precision; while the reference model runs we alias torch.float32/torch.float and
Tensor.float() to float64 (`true_fp64`), and a TorchDispatchMode check proves that no float32 tensor is produced in
the reference forward+backward. Results are stored as float32 (plus float64 copies of the scalars in meta.json).
For calibration the same pipeline is also run (a) natively in HF fp32 and (b) in HF float64 without the alias;
their differences to the fixture are recorded in meta.json["cross_checks"].
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import copy
import json
import math
import os
import platform
import shutil
import sys

import numpy as np
import torch
import transformers
import safetensors
from safetensors import safe_open
from safetensors.torch import save_file
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from transformers import (
    MixtralConfig,
    MixtralForCausalLM,
    OlmoeConfig,
    OlmoeForCausalLM,
    Qwen2MoeConfig,
    Qwen2MoeForCausalLM,
    Qwen3MoeConfig,
    Qwen3MoeForCausalLM,
    get_cosine_schedule_with_warmup,
    get_linear_schedule_with_warmup,
)

_F32 = torch.float32  # captured before any aliasing
_F64 = torch.float64

# ----------------------------------------------------------------------------------------------------------------------
# Shared settings
# ----------------------------------------------------------------------------------------------------------------------
B, T = 2, 16
S = 8  # training steps (each on a different batch)
VOCAB = 96
LR = 1e-2
BETAS = (0.9, 0.95)
EPS = 1e-8
WEIGHT_DECAY = 0.1
MAX_GRAD_NORM = 2.5  # grad norms of these models are ~2-4: most (not all) steps are clipped
WARMUP_STEPS = 2
INIT_STD = 0.1
NORM_PERTURB = 0.1
BIAS_STD = 0.1
ROUTER_MARGIN_MIN = 5e-5  # min gap between k-th and (k+1)-th router prob accepted (else next seed)
FP32_CROSSCHECK_RTOL = 1e-4  # HF-fp32 step losses must match the fixture this well (else next seed)
MAX_SEED_ATTEMPTS = 50


def _common(**kw):
    base = dict(
        vocab_size=VOCAB,
        initializer_range=INIT_STD,
        tie_word_embeddings=False,
        output_router_logits=True,
        attn_implementation="eager",
        experts_implementation="eager",
        max_position_embeddings=64,
    )
    base.update(kw)
    return base


FAMILIES = {
    "qwen3_moe": dict(
        model_cls=Qwen3MoeForCausalLM,
        config_cls=Qwen3MoeConfig,
        config=_common(
            hidden_size=32,
            intermediate_size=40,  # dense MLP of the mlp_only layer
            moe_intermediate_size=12,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=12,  # != hidden/heads (8)
            num_experts=8,
            num_experts_per_tok=2,
            norm_topk_prob=True,
            decoder_sparse_step=1,
            mlp_only_layers=[0],
            router_aux_loss_coef=0.02,
            rms_norm_eps=1e-6,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
            use_sliding_window=False,
        ),
        schedule="cosine",
        fused=True,
        seed=1000,
    ),
    "mixtral": dict(
        model_cls=MixtralForCausalLM,
        config_cls=MixtralConfig,
        config=_common(
            hidden_size=32,
            intermediate_size=16,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            num_local_experts=6,
            num_experts_per_tok=2,
            sliding_window=6,  # < T, so the windowed mask matters
            router_aux_loss_coef=0.02,
            router_jitter_noise=0.0,
            rms_norm_eps=1e-5,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        ),
        schedule="linear",
        fused=True,
        seed=2000,
    ),
    "olmoe": dict(
        model_cls=OlmoeForCausalLM,
        config_cls=OlmoeConfig,
        config=_common(
            hidden_size=32,
            intermediate_size=16,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            num_experts=8,
            num_experts_per_tok=3,
            norm_topk_prob=False,
            clip_qkv=1.2,
            router_aux_loss_coef=0.02,
            rms_norm_eps=1e-5,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
            pad_token_id=1,  # HF default for OLMoE -> nn.Embedding(padding_idx=1)
            bos_token_id=None,
            eos_token_id=2,  # default 50279 is outside the tiny vocab
        ),
        schedule="cosine",
        fused=False,
        seed=3000,
    ),
    "qwen2_moe": dict(
        model_cls=Qwen2MoeForCausalLM,
        config_cls=Qwen2MoeConfig,
        config=_common(
            hidden_size=32,
            intermediate_size=40,  # dense MLP of the mlp_only layer
            moe_intermediate_size=16,
            shared_expert_intermediate_size=24,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=2,
            num_experts=6,
            num_experts_per_tok=2,
            norm_topk_prob=False,
            decoder_sparse_step=1,
            mlp_only_layers=[1],  # layers 0 and 2 are MoE, layer 1 dense
            qkv_bias=True,
            use_sliding_window=False,
            router_aux_loss_coef=0.02,
            rms_norm_eps=1e-6,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        ),
        schedule="linear",
        fused=False,
        seed=4000,
    ),
}


# ----------------------------------------------------------------------------------------------------------------------
# float64 helpers
# ----------------------------------------------------------------------------------------------------------------------
def _tensor_float_as_double(self, memory_format=torch.preserve_format):
    return self.to(_F64, memory_format=memory_format)


_ORIG_TENSOR_FLOAT = torch.Tensor.float


@contextlib.contextmanager
def true_fp64(enabled: bool = True):
    """Alias torch.float32 / torch.float / Tensor.float() to float64 while HF modeling code runs."""
    if not enabled:
        yield
        return
    torch.float32 = _F64
    torch.float = _F64
    torch.Tensor.float = _tensor_float_as_double
    try:
        yield
    finally:
        torch.float32 = _F32
        torch.float = _F32
        torch.Tensor.float = _ORIG_TENSOR_FLOAT


class Fp32Detector(TorchDispatchMode):
    """Counts aten ops that produce float32 tensors."""

    def __init__(self):
        super().__init__()
        self.hits = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.dtype == _F32:
                self.hits[str(func)] += 1
        return out


# ----------------------------------------------------------------------------------------------------------------------
# model construction
# ----------------------------------------------------------------------------------------------------------------------
def make_model(fam: str, seed: int):
    spec = FAMILIES[fam]
    torch.manual_seed(seed)
    cfg = spec["config_cls"](**copy.deepcopy(spec["config"]))
    model = spec["model_cls"](cfg)  # fp32, HF init with initializer_range
    perturbed = []
    with torch.no_grad():
        for mname, mod in model.named_modules():
            cls = type(mod).__name__
            if cls.endswith("RMSNorm"):
                mod.weight.copy_(1.0 + NORM_PERTURB * torch.randn_like(mod.weight))
                perturbed.append(f"{mname}.weight (1+{NORM_PERTURB}*randn)")
            if isinstance(mod, torch.nn.Linear) and mod.bias is not None:
                mod.bias.copy_(BIAS_STD * torch.randn_like(mod.bias))
                perturbed.append(f"{mname}.bias ({BIAS_STD}*randn)")
            if isinstance(mod, torch.nn.Embedding) and mod.padding_idx is not None:
                # HF zero-inits the padding row; make it nonzero so padding_idx grad semantics are visible
                mod.weight[mod.padding_idx].copy_(INIT_STD * torch.randn_like(mod.weight[mod.padding_idx]))
                perturbed.append(f"{mname}.weight[{mod.padding_idx}] (padding row, {INIT_STD}*randn)")
        for n, p in model.named_parameters():
            if torch.all(p == 0) or torch.all(p == 1):
                raise RuntimeError(f"parameter {n} is constant after init/perturbation")
    return model, perturbed


def load_model(fam: str, folder: str):
    spec = FAMILIES[fam]
    return spec["model_cls"].from_pretrained(
        folder, dtype=torch.float32, attn_implementation="eager", experts_implementation="eager"
    )


def rope_to_fp64(model):
    """Recompute RoPE inv_freq in float64 (HF computes it in fp32 at init; same formula)."""
    info = []
    for name, mod in model.named_modules():
        if type(mod).__name__.endswith("RotaryEmbedding"):
            assert mod.rope_type == "default", mod.rope_type
            with true_fp64():
                inv, scale = mod.compute_default_rope_parameters(mod.config)
            inv = inv.to(device=mod.inv_freq.device, dtype=_F64)
            assert inv.dtype == _F64 and scale == 1.0
            assert torch.allclose(inv, mod.inv_freq.to(_F64), rtol=1e-6, atol=0), (inv, mod.inv_freq)
            info.append(dict(module=name, max_rel_diff_vs_hf_fp32_buffer=float(((inv - mod.inv_freq) / inv).abs().max())))
            mod.inv_freq = inv.clone()
            mod.original_inv_freq = inv.clone()
    return info


# ----------------------------------------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------------------------------------
def make_batch(gen: torch.Generator, pad_id: int, first: bool):
    """Structured sequences (arithmetic progressions mod V-3, offset 3) with some random noise tokens, so training
    has something to learn. Labels = input_ids with -100 at a few places + a padded tail in one row."""
    lo = 3
    span = VOCAB - lo
    start = torch.randint(0, span, (B, 1), generator=gen)
    stride = torch.randint(1, 4, (B, 1), generator=gen)
    ids = lo + (start + stride * torch.arange(T)[None, :]) % span
    noise = torch.rand(B, T, generator=gen) < 0.15
    ids = torch.where(noise, torch.randint(lo, VOCAB, (B, T), generator=gen), ids)
    labels = ids.clone()
    if first:
        prompt_len, pad_row, pad_len = 3, 1, 5
    else:
        prompt_len = int(torch.randint(0, 4, (1,), generator=gen))
        pad_row = int(torch.randint(0, B, (1,), generator=gen))
        pad_len = int(torch.randint(0, 6, (1,), generator=gen))
    # "prompt" masking at the start of the other row
    labels[1 - pad_row, :prompt_len] = -100
    # padded tail: pad tokens in the input, -100 in the labels
    if pad_len > 0:
        ids[pad_row, T - pad_len:] = pad_id
        labels[pad_row, T - pad_len:] = -100
    # a single isolated ignored position in the middle of the padded row
    labels[pad_row, T // 2 - 1] = -100
    return ids.long(), labels.long()


# ----------------------------------------------------------------------------------------------------------------------
# one full pipeline: grad at init + S training steps
# ----------------------------------------------------------------------------------------------------------------------
def decay_rule_groups(model):
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        (decay if p.ndim >= 2 else no_decay).append(n)
    return decay, no_decay


def router_margins(router_logits, k):
    m = math.inf
    for rl in router_logits:
        p = torch.softmax(rl.detach().to(_F64), dim=-1)
        srt = torch.sort(p, dim=-1, descending=True).values
        m = min(m, float((srt[:, k - 1] - srt[:, k]).min()))
    return m


def ce_from_logits(logits, labels):
    V = logits.shape[-1]
    return torch.nn.functional.cross_entropy(
        logits[:, :-1, :].reshape(-1, V), labels[:, 1:].reshape(-1), ignore_index=-100, reduction="mean"
    )


def run_pipeline(model, fam, batches, eval_batch, fp64_alias: bool, device, want_detector=False):
    spec = FAMILIES[fam]
    cfg = model.config
    k = cfg.num_experts_per_tok
    res = {}
    clamp = collections.Counter()
    clamp_margin = [math.inf]
    hooks = []
    if fam == "olmoe":
        clip = cfg.clip_qkv

        def mk(tag):
            def hook(mod, inp, out):
                a = out.detach().abs()
                clamp[tag] += int((a > clip).sum())
                clamp[tag + "_total"] += a.numel()
                clamp_margin[0] = min(clamp_margin[0], float((a - clip).abs().min()))

            return hook

        for i, layer in enumerate(model.model.layers):
            hooks.append(layer.self_attn.q_norm.register_forward_hook(mk("q")))
            hooks.append(layer.self_attn.k_norm.register_forward_hook(mk("k")))
            hooks.append(layer.self_attn.v_proj.register_forward_hook(mk("v")))

    # ---- gradient at the initial weights
    model.train()
    model.zero_grad(set_to_none=True)
    ids, labels = (t.to(device) for t in eval_batch)
    det = Fp32Detector() if want_detector else contextlib.nullcontext()
    with det:
        with true_fp64(fp64_alias):
            out = model(input_ids=ids, labels=labels, use_cache=False, output_router_logits=True)
            out.loss.backward()
    if want_detector:
        res["fp32_ops"] = dict(det.hits)
    with true_fp64(fp64_alias):
        ce = ce_from_logits(out.logits.detach(), labels)
    res["logits"] = out.logits.detach()
    res["loss"] = out.loss.detach()
    res["aux_loss"] = out.aux_loss.detach()
    res["ce_loss"] = ce
    res["loss_identity_err"] = float(
        (out.loss.detach() - (ce + cfg.router_aux_loss_coef * out.aux_loss.detach())).abs()
    )
    res["margin_init"] = router_margins(out.router_logits, k)
    res["n_router_layers"] = len(out.router_logits)
    grads, no_grad = {}, []
    for n, p in model.named_parameters():
        if p.grad is None:
            no_grad.append(n)
            grads[n] = torch.zeros_like(p)
        else:
            grads[n] = p.grad.detach().clone()
    res["grads"] = grads
    res["params_without_grad"] = no_grad
    res["clamp_init"] = dict(clamp)

    # ---- training
    model.zero_grad(set_to_none=True)
    decay, no_decay = decay_rule_groups(model)
    pmap = dict(model.named_parameters())
    groups = [
        {"params": [pmap[n] for n in decay], "weight_decay": WEIGHT_DECAY},
        {"params": [pmap[n] for n in no_decay], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=LR, betas=BETAS, eps=EPS, weight_decay=WEIGHT_DECAY, foreach=False)
    if spec["schedule"] == "cosine":
        sched = get_cosine_schedule_with_warmup(opt, num_warmup_steps=WARMUP_STEPS, num_training_steps=S)
    else:
        sched = get_linear_schedule_with_warmup(opt, num_warmup_steps=WARMUP_STEPS, num_training_steps=S)
    losses, norms, lrs, margins = [], [], [], []
    for s in range(S):
        ids, labels = (t.to(device) for t in batches[s])
        opt.zero_grad(set_to_none=True)
        with true_fp64(fp64_alias):
            out = model(input_ids=ids, labels=labels, use_cache=False, output_router_logits=True)
            out.loss.backward()
        margins.append(router_margins(out.router_logits, k))
        gn = torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
        losses.append(float(out.loss.detach()))
        norms.append(float(gn))
    res["step_losses"] = losses
    res["step_grad_norms"] = norms
    res["step_lrs"] = lrs
    res["step_router_margins"] = margins
    res["final_params"] = {n: p.detach().clone() for n, p in model.named_parameters()}
    res["clamp_total"] = dict(clamp)
    res["clamp_min_distance_to_clip"] = clamp_margin[0]
    res["groups"] = (decay, no_decay)
    for h in hooks:
        h.remove()
    return res


def check_sliding_window(model, ids, window):
    """Which keys does query i see? Read layer-0 eager attention probabilities (exact zeros where masked)."""
    model.eval()
    with torch.no_grad(), true_fp64():
        out = model(input_ids=ids, use_cache=False, output_attentions=True)
    att = out.attentions[0]  # [B, H, T, T]
    vis = (att != 0).all(dim=0).all(dim=0)
    anyvis = (att != 0).any(dim=0).any(dim=0)
    assert torch.equal(vis, anyvis), "visibility differs between heads/batch rows"
    Tn = ids.shape[1]
    i = torch.arange(Tn)[:, None]
    j = torch.arange(Tn)[None, :]
    rule = (j <= i) & (j > i - window)
    ok = bool(torch.equal(vis.cpu(), rule))
    rows = {int(q): [int(x) for x in torch.nonzero(vis[q]).flatten()] for q in (0, window - 1, window, Tn - 1)}
    model.train()
    return ok, rows


# ----------------------------------------------------------------------------------------------------------------------
def maxdiff(a, b):
    a = a.detach().to("cpu", _F64)
    b = b.detach().to("cpu", _F64)
    d = (a - b).abs().max()
    scale = b.abs().max().clamp_min(1e-30)
    return float(d), float(d / scale)


def compare(ref, other):
    out = {}
    out["logits_max_abs"], out["logits_max_rel_to_maxabs"] = maxdiff(other["logits"], ref["logits"])
    out["loss_abs"] = abs(float(other["loss"]) - float(ref["loss"]))
    out["aux_loss_abs"] = abs(float(other["aux_loss"]) - float(ref["aux_loss"]))
    worst = (0.0, "")
    for n in ref["grads"]:
        _, r = maxdiff(other["grads"][n], ref["grads"][n])
        if r > worst[0]:
            worst = (r, n)
    out["grad_worst_rel_to_maxabs"] = worst[0]
    out["grad_worst_param"] = worst[1]
    rel = [abs(a - b) / abs(b) for a, b in zip(other["step_losses"], ref["step_losses"])]
    out["step_loss_max_rel"] = max(rel)
    out["step_grad_norm_max_rel"] = max(
        abs(a - b) / abs(b) for a, b in zip(other["step_grad_norms"], ref["step_grad_norms"])
    )
    worst = (0.0, "")
    for n in ref["final_params"]:
        _, r = maxdiff(other["final_params"][n], ref["final_params"][n])
        if r > worst[0]:
            worst = (r, n)
    out["final_param_worst_rel_to_maxabs"] = worst[0]
    out["final_param_worst"] = worst[1]
    out["final_param_max_abs"] = max(maxdiff(other["final_params"][n], ref["final_params"][n])[0]
                                     for n in ref["final_params"])
    return out


def safetensors_keys(path):
    with safe_open(path, "pt") as f:
        return {k: (f.get_slice(k).get_dtype(), list(f.get_slice(k).get_shape())) for k in sorted(f.keys())}


def generate_family(fam, out_root, device, verbose=True):
    spec = FAMILIES[fam]
    folder = os.path.join(out_root, fam)
    for attempt in range(MAX_SEED_ATTEMPTS):
        seed = spec["seed"] + attempt
        print(f"\n=== {fam}: seed {seed} (attempt {attempt})", flush=True)
        model32, perturbed = make_model(fam, seed)
        if os.path.isdir(folder):
            shutil.rmtree(folder)
        os.makedirs(folder)
        model32.save_pretrained(folder, safe_serialization=True)
        ref_sd = {k: v.detach().clone() for k, v in model32.state_dict().items()}
        if spec["fused"]:
            fdir = os.path.join(folder, "fused")
            os.makedirs(fdir)
            save_file({k: v.contiguous() for k, v in ref_sd.items()}, os.path.join(fdir, "model.safetensors"),
                      metadata={"format": "pt"})
            shutil.copyfile(os.path.join(folder, "config.json"), os.path.join(fdir, "config.json"))

        # reload from the fp32 checkpoint (exercises HF's per-expert -> fused conversion)
        loaded = load_model(fam, folder)
        roundtrip_ok = all(torch.equal(loaded.state_dict()[k], v) for k, v in ref_sd.items()) and set(
            loaded.state_dict()) == set(ref_sd)
        if not roundtrip_ok:
            raise RuntimeError(f"{fam}: save_pretrained/from_pretrained round trip changed weights")
        fused_roundtrip_ok = None
        if spec["fused"]:
            lf = load_model(fam, os.path.join(folder, "fused"))
            fused_roundtrip_ok = all(torch.equal(lf.state_dict()[k], v) for k, v in ref_sd.items())
            del lf

        cfg = loaded.config
        pad_id = cfg.pad_token_id if cfg.pad_token_id is not None else 0
        gen = torch.Generator().manual_seed(seed)
        eval_batch = make_batch(gen, pad_id, first=True)
        batches = [make_batch(gen, pad_id, first=(s == 0)) for s in range(S)]

        m64 = copy.deepcopy(loaded).to(device).double()
        rope_info = rope_to_fp64(m64)
        m64_native = copy.deepcopy(loaded).to(device).double()
        m32 = copy.deepcopy(loaded).to(device)

        # float32-cast audit (HF native double vs aliased double) on the initial forward/backward
        ref = run_pipeline(m64, fam, batches, eval_batch, True, device, want_detector=True)
        if ref["fp32_ops"]:
            raise RuntimeError(f"{fam}: float32 ops remain in the aliased float64 run: {ref['fp32_ops']}")
        nat = run_pipeline(m64_native, fam, batches, eval_batch, False, device, want_detector=True)
        audit_native = nat["fp32_ops"]
        f32 = run_pipeline(m32, fam, batches, eval_batch, False, device)
        cmp_native = compare(ref, nat)
        cmp_f32 = compare(ref, f32)

        min_margin = min([ref["margin_init"]] + ref["step_router_margins"])
        ok = min_margin >= ROUTER_MARGIN_MIN and cmp_f32["step_loss_max_rel"] <= FP32_CROSSCHECK_RTOL
        if fam == "olmoe":
            ok = ok and all(ref["clamp_init"].get(t, 0) > 0 for t in ("q", "k", "v"))
            ok = ok and ref["clamp_min_distance_to_clip"] > 1e-5
        n_clipped = sum(1 for g in ref["step_grad_norms"] if g > MAX_GRAD_NORM)
        ok = ok and n_clipped > S // 2
        print(f"  min router margin {min_margin:.3e}, fp32 step-loss max rel {cmp_f32['step_loss_max_rel']:.2e}, "
              f"clipped {n_clipped}/{S}", flush=True)
        if ok:
            break
        print("  -> rejected, trying next seed", flush=True)
    else:
        raise RuntimeError(f"{fam}: no acceptable seed found")

    # sliding-window semantics (mixtral)
    sw = None
    if fam == "mixtral":
        sw_ok, sw_rows = check_sliding_window(m64, eval_batch[0].to(device), cfg.sliding_window)
        sw = dict(window=cfg.sliding_window, rule="key j visible to query i iff i - window < j <= i",
                  verified=sw_ok, visible_keys_for_query=sw_rows)
        if not sw_ok:
            raise RuntimeError("sliding window semantics differ from the documented rule")

    # --------------- write expected.safetensors
    f32c = lambda t: t.detach().to("cpu", _F32).contiguous()
    exp = {
        "input_ids": eval_batch[0].contiguous(),
        "labels": eval_batch[1].contiguous(),
        "logits": f32c(ref["logits"]),
        "loss": f32c(ref["loss"]).reshape(()),
        "ce_loss": f32c(ref["ce_loss"]).reshape(()),
        "aux_loss": f32c(ref["aux_loss"]).reshape(()),
    }
    for n, g in ref["grads"].items():
        exp["grad." + n] = f32c(g)
    exp["train_input_ids"] = torch.stack([b[0] for b in batches]).contiguous()
    exp["train_labels"] = torch.stack([b[1] for b in batches]).contiguous()
    exp["step_losses"] = torch.tensor(ref["step_losses"], dtype=_F32)
    exp["step_grad_norms"] = torch.tensor(ref["step_grad_norms"], dtype=_F32)
    exp["step_lrs"] = torch.tensor(ref["step_lrs"], dtype=_F32)
    save_file(exp, os.path.join(folder, "expected.safetensors"), metadata={"format": "pt"})
    for root, _, files in os.walk(folder):
        for fn in files:
            os.chmod(os.path.join(root, fn), 0o644)

    # --------------- meta.json
    decay, no_decay = ref["groups"]
    # cross-check the decay rule against HF Trainer's default rule
    trainer_rule_match = None
    try:
        from transformers.trainer_pt_utils import get_parameter_names

        hf_decay = get_parameter_names(
            loaded, [torch.nn.LayerNorm], [r"bias", r"layernorm", r"rmsnorm", r"(?:^|\.)norm(?:$|\.)", r"_norm(?:$|\.)"]
        )
        trainer_rule_match = sorted(hf_decay) == sorted(decay)
    except Exception as e:  # pragma: no cover
        trainer_rule_match = f"not checked ({type(e).__name__})"

    params = [[n, list(p.shape)] for n, p in loaded.named_parameters()]
    ckpt_keys = safetensors_keys(os.path.join(folder, "model.safetensors"))
    meta = {
        "family": fam,
        "model_class": spec["model_cls"].__name__,
        "model_type": cfg.model_type,
        "seed": seed,
        "shapes": {"B": B, "T": T, "S": S, "vocab_size": cfg.vocab_size},
        "files": {
            "checkpoint": "model.safetensors + config.json (save_pretrained, fp32, per-expert layout)",
            "fused_checkpoint": "fused/model.safetensors + fused/config.json" if spec["fused"] else None,
            "expected": "expected.safetensors",
        },
        "precision": (
            "fp32 checkpoint; reference computed in float64 from the fp32 values, with HF's internal float32 casts "
            "aliased to float64 (no float32 op in forward/backward, verified); stored as float32. float64 values "
            "of the scalars are in this file (*_f64)."
        ),
        "forward": {
            "call": "model(input_ids=input_ids, labels=labels, use_cache=False, output_router_logits=True)",
            "mode": "model.train() (dropout 0, router_jitter_noise 0 -> deterministic)",
            "attention_mask": None,
            "position_ids": "0..T-1 for every row (default)",
            "attn_implementation": "eager",
            "experts_implementation": "eager",
        },
        "loss": {
            "total": "loss = ce_loss + router_aux_loss_coef * aux_loss",
            "router_aux_loss_coef": cfg.router_aux_loss_coef,
            "ce_loss": (
                "HF ForCausalLMLoss: logits[:, t] predicts labels[:, t+1]; cross_entropy mean over all targets "
                "!= -100 in the whole batch (labels[:, 0] never used as a target; last position has no target)."
            ),
            "aux_loss": (
                "HF load_balancing_loss_func over the router logits of all MoE layers (dense layers excluded), "
                "no attention mask => all B*T tokens incl. padding count. Per layer: p = softmax(router_logits), "
                "sel = topk(p, k).indices. Accumulated over layers: cnt[e] = #(sel == e) summed over layers and "
                "tokens, psum[e] = sum over layers and tokens of p[:, e]; R = n_moe_layers * B * T; "
                "aux = E * sum_e (cnt[e] / R) * (psum[e] / R). Gradient flows only through psum."
            ),
            "n_moe_layers": ref["n_router_layers"],
            "loss_f64": float(ref["loss"]),
            "ce_loss_f64": float(ref["ce_loss"]),
            "aux_loss_f64": float(ref["aux_loss"]),
            "check_abs_err_loss_minus_ce_plus_coef_aux": ref["loss_identity_err"],
        },
        "optimizer": {
            "type": "torch.optim.AdamW",
            "foreach": False,
            "fused": False,
            "capturable": False,
            "amsgrad": False,
            "maximize": False,
            "lr": LR,
            "betas": list(BETAS),
            "eps": EPS,
            "weight_decay": WEIGHT_DECAY,
            "update_rule": (
                "per param, step t=1,2,..: p *= (1 - lr*wd); m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g*g; "
                "bc1 = 1-b1^t; bc2 = 1-b2^t; p -= (lr/bc1) * m / (sqrt(v)/sqrt(bc2) + eps). "
                "State (m, v, t) is updated even when lr == 0 (first warmup step)."
            ),
        },
        "param_groups": {
            "rule": "weight_decay 0.1 for parameters with ndim >= 2, 0.0 for ndim < 2 (biases, norm weights)",
            "matches_hf_trainer_default_decay_rule": trainer_rule_match,
            "decay": decay,
            "no_decay": no_decay,
        },
        "clipping": {
            "max_grad_norm": MAX_GRAD_NORM,
            "function": "torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm) (norm_type 2)",
            "rule": "total = sqrt(sum over all params of sum(g^2)); g *= min(1, max_norm / (total + 1e-6))",
            "steps_clipped": sum(1 for g in ref["step_grad_norms"] if g > MAX_GRAD_NORM),
        },
        "schedule": {
            "name": "cosine" if spec["schedule"] == "cosine" else "linear",
            "function": "transformers.get_cosine_schedule_with_warmup" if spec["schedule"] == "cosine"
            else "transformers.get_linear_schedule_with_warmup",
            "num_warmup_steps": WARMUP_STEPS,
            "num_training_steps": S,
            "num_cycles": 0.5 if spec["schedule"] == "cosine" else None,
            "lr_lambda": (
                "s < warmup: s / max(1, warmup); else cosine: max(0, 0.5*(1+cos(pi*2*num_cycles*progress))), "
                "progress = (s-warmup)/max(1, total-warmup)" if spec["schedule"] == "cosine" else
                "s < warmup: s / max(1, warmup); else max(0, (total - s) / max(1, total - warmup))"
            ),
            "lr_used_at_step_f64": ref["step_lrs"],
        },
        "step_loop": [
            "optimizer.zero_grad()",
            "loss = model(input_ids=train_input_ids[s], labels=train_labels[s]).loss",
            "loss.backward()",
            "step_grad_norms[s] = clip_grad_norm_(params, max_grad_norm)",
            "optimizer.step()",
            "scheduler.step()",
            "step_losses[s] = loss (computed before the s-th update)",
        ],
        "expected_extra": {
            "step_lrs": "[S] learning rate used by optimizer.step() at step s",
        },
        "final_param_stats_f64": {
            "meaning": "per parameter after all S steps: [sum, sqrt(sum of squares), max |x|] (float64)",
            "values": {n: [float(p.sum()), float(p.norm()), float(p.abs().max())]
                       for n, p in ((n, p.detach().to("cpu", _F64)) for n, p in ref["final_params"].items())},
        },
        "step_losses_f64": ref["step_losses"],
        "step_grad_norms_f64": ref["step_grad_norms"],
        "router_min_topk_margin": {
            "init": ref["margin_init"],
            "per_step": ref["step_router_margins"],
            "meaning": "min over tokens/layers of p_(k) - p_(k+1) (sorted router probs); large => fp32 picks same experts",
        },
        "params_without_grad": ref["params_without_grad"],
        "named_parameters": params,
        "checkpoint_tensors": ckpt_keys,
        "fused_checkpoint_tensors": safetensors_keys(os.path.join(folder, "fused", "model.safetensors"))
        if spec["fused"] else None,
        "hf_roundtrip": {
            "from_pretrained(per-expert checkpoint) == in-memory weights": roundtrip_ok,
            "from_pretrained(fused checkpoint) == in-memory weights": fused_roundtrip_ok,
        },
        "init_perturbations": perturbed,
        "rope": {"inv_freq": "recomputed in float64 (HF buffer is fp32-computed)", "modules": rope_info},
        "cross_checks": {
            "hf_fp32_native_vs_fixture": cmp_f32,
            "hf_float64_without_alias_vs_fixture": cmp_native,
            "hf_float64_without_alias_fp32_ops": audit_native,
        },
    }
    if fam == "olmoe":
        meta["clip_qkv"] = {
            "clip": cfg.clip_qkv,
            "applied_to": "q after q_norm, k after k_norm, v after v_proj (before head split / RoPE)",
            "clamped_counts_initial_forward": ref["clamp_init"],
            "clamped_counts_all_forwards": ref["clamp_total"],
            "min_distance_of_any_value_to_clip": ref["clamp_min_distance_to_clip"],
        }
    if getattr(cfg, "pad_token_id", None) is not None:
        meta["padding_idx"] = {
            "pad_token_id": cfg.pad_token_id,
            "note": "nn.Embedding(padding_idx=pad_token_id): the embedding row of the pad token gets NO gradient "
                    "(grad row is exactly 0); AdamW weight decay still applies to it. Pad tokens occur in the inputs.",
        }
    if sw is not None:
        meta["sliding_window"] = sw
    with open(os.path.join(folder, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)

    # --------------- console report
    if verbose:
        print(f"--- {fam} ({spec['model_cls'].__name__}), seed {seed}")
        print("named_parameters:")
        for n, shp in params:
            print(f"  {n:60s} {shp}")
        print("checkpoint tensors (save_pretrained):")
        for k_, (dt, shp) in ckpt_keys.items():
            print(f"  {k_:60s} {dt} {shp}")
        print(f"loss {float(ref['loss']):.10f}  ce {float(ref['ce_loss']):.10f}  aux {float(ref['aux_loss']):.10f}")
        print("step_losses     ", " ".join(f"{x:.6f}" for x in ref["step_losses"]))
        print("step_grad_norms ", " ".join(f"{x:.4f}" for x in ref["step_grad_norms"]))
        print("step_lrs        ", " ".join(f"{x:.5f}" for x in ref["step_lrs"]))
        print(f"clipped steps {meta['clipping']['steps_clipped']}/{S} (max_grad_norm {MAX_GRAD_NORM})")
        print(f"params without grad: {ref['params_without_grad']}")
        print(f"router min top-k margin: init {ref['margin_init']:.3e}, steps min {min(ref['step_router_margins']):.3e}")
        print(f"decay rule == HF Trainer rule: {trainer_rule_match}")
        print(f"roundtrip ok: {roundtrip_ok}, fused roundtrip ok: {fused_roundtrip_ok}")
        if fam == "olmoe":
            print(f"clip_qkv {cfg.clip_qkv}: clamped (initial forward) {ref['clamp_init']}")
            print(f"                 clamped (all forwards)    {ref['clamp_total']}")
        if sw is not None:
            print(f"sliding window: {sw}")
        print(f"HF fp32 native vs fixture: {json.dumps(cmp_f32)}")
        print(f"HF float64 w/o alias vs fixture: {json.dumps(cmp_native)}")
        print(f"HF float64 w/o alias: fp32-producing ops: {audit_native}")
    return meta


def dir_size(path):
    tot = 0
    for root, _, files in os.walk(path):
        for f in files:
            tot += os.path.getsize(os.path.join(root, f))
    return tot


README = """# Golden fixtures (Hugging Face Transformers reference)

Generated by `tools/golden/make_golden.py`; do not edit by hand. Regenerate with

    {command}

Produced with: torch {torch}, transformers {transformers}, safetensors {safetensors}, numpy {numpy},
python {python}, device `{device}` ({device_name}). See `versions.json`.

One folder per family ({families}), each holding
- `config.json`, `generation_config.json`, `model.safetensors`: `model.save_pretrained(folder, safe_serialization=True)`
  of a tiny random fp32 model (per-expert checkpoint layout, e.g. `mlp.experts.0.gate_proj.weight`,
  Mixtral: `block_sparse_moe.experts.0.w1.weight`).
- `fused/` (qwen3_moe, mixtral): the same weights under the in-memory names
  (`mlp.experts.gate_up_proj` [E, 2I, H] = cat(gate, up) along dim 1, `mlp.experts.down_proj` [E, H, I]),
  written by `safetensors.torch.save_file(model.state_dict())`.
- `expected.safetensors`: `input_ids`, `labels` (I64 [B,T]), `logits` [B,T,V], `loss`, `ce_loss`, `aux_loss`,
  `grad.<param>` (gradient of `loss` at the initial weights, in-memory parameter names), `train_input_ids`,
  `train_labels` (I64 [S,B,T]), `step_losses`, `step_grad_norms`, `step_lrs` [S]. All float tensors are float32.
- `meta.json`: optimizer, param groups, clipping, schedule, loss definitions, float64 scalars, seeds, cross-checks.

Compare two generated trees (e.g. CPU vs GPU run): `python tools/golden/compare_golden.py tests/golden OTHER_DIR`
(a CPU and an H200 run of the same script gave bit-identical fixtures).

Numerics: the reference is computed in float64 from the fp32 checkpoint values. HF's explicit float32 casts
(RMSNorm, softmax, router softmax, RoPE, CE `logits.float()`, aux-loss accumulators) are aliased to float64 during
the reference run, and a dispatch-mode audit verifies that no float32 op remains. `meta.json["cross_checks"]`
holds the differences of a plain HF fp32 run to the fixture, i.e. the error budget of a correct fp32
implementation.
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", choices=["cpu", "cuda"], default=None)
    ap.add_argument("--families", nargs="+", choices=list(FAMILIES), default=list(FAMILIES))
    args = ap.parse_args()
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    transformers.logging.set_verbosity_error()
    os.makedirs(args.out, exist_ok=True)

    versions = {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "safetensors": safetensors.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "device": device,
        "device_name": torch.cuda.get_device_name(0) if device == "cuda" else platform.processor() or platform.machine(),
        "cuda": torch.version.cuda if device == "cuda" else None,
        "command": "python tools/golden/make_golden.py " + " ".join(sys.argv[1:]),
    }
    print("versions:", json.dumps(versions))
    for fam in args.families:
        generate_family(fam, args.out, device)

    present = sorted(d for d in FAMILIES if os.path.isfile(os.path.join(args.out, d, "meta.json")))
    versions["families_generated_this_run"] = args.families
    versions["families_present"] = present
    with open(os.path.join(args.out, "versions.json"), "w") as f:
        json.dump(versions, f, indent=1)
    with open(os.path.join(args.out, "README.md"), "w") as f:
        f.write(README.format(families=", ".join(present), **versions))
    print("\nsizes:")
    for d in present:
        print(f"  {d:10s} {dir_size(os.path.join(args.out, d)) / 1024:8.1f} KiB")
    print(f"  total      {dir_size(args.out) / 1024:8.1f} KiB")


if __name__ == "__main__":
    main()
