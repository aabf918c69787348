#!/usr/bin/env python3
"""Transformers baseline for `moetune bench`: the same geometry, random init, bf16 parameters, fused AdamW with bf16
states (recipe (a)), sdpa attention, labels = input ids, no clipping; warm-up steps then the mean of timed steps.
Prints one JSON line per run. Runs on the GPU machine (torch + transformers installed there)."""
import argparse
import gc
import json
import time

import torch
import transformers


def geometry(name, layers):
    if name.startswith("qwen3-30b-a3b"):
        return transformers.Qwen3MoeConfig(
            vocab_size=151936, hidden_size=2048, num_attention_heads=32, num_key_value_heads=4, head_dim=128,
            num_experts=128, num_experts_per_tok=8, moe_intermediate_size=768, norm_topk_prob=True,
            num_hidden_layers=layers or (8 if name.endswith("slice") else 48), output_router_logits=True,
            router_aux_loss_coef=0.001, rope_theta=1e6, rms_norm_eps=1e-6, tie_word_embeddings=False)
    if name == "olmoe-1b-7b":
        return transformers.OlmoeConfig(
            vocab_size=50304, hidden_size=2048, intermediate_size=1024, num_hidden_layers=layers or 16,
            num_attention_heads=16, num_key_value_heads=16, num_experts=64, num_experts_per_tok=8, norm_topk_prob=False,
            router_aux_loss_coef=0.01, output_router_logits=True, rope_theta=1e4, rms_norm_eps=1e-5,
            tie_word_embeddings=False)
    raise SystemExit(f"unknown geometry {name}")


def timed_steps(model, optimizer, ids, warmup, steps, before_step=None):
    """Runs warmup + steps training steps on one batch (labels = input ids); returns (mean step seconds of the timed
    steps, last loss). before_step, if given, runs before each step's clock starts (e.g. a barrier across ranks)."""
    times = []
    for step in range(warmup + steps):
        torch.cuda.synchronize()
        if before_step:
            before_step()
        start = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        if step >= warmup:
            times.append(time.perf_counter() - start)
    return sum(times) / len(times), loss


def run(args, experts):
    config = geometry(args.geometry, args.layers)
    torch.manual_seed(0)
    torch.cuda.init()
    gc.collect()  # what an earlier run in this process left must not count as free memory already taken
    torch.cuda.empty_cache()
    free_before = torch.cuda.mem_get_info()[0]  # moetune bench's measure: device memory taken from here on
    with torch.device("cuda"):
        model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="sdpa", dtype=torch.bfloat16)
    model.set_experts_implementation(experts)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
    ids = torch.randint(0, config.vocab_size, (args.batch_size, args.seq_len), device="cuda")
    torch.cuda.reset_peak_memory_stats()
    step_s, loss = timed_steps(model, optimizer, ids, args.warmup, args.steps)
    torch.cuda.synchronize()
    # The caching allocator keeps its peak reservation (nothing calls empty_cache during the steps), so this is the
    # peak of device memory in use, libraries' workspaces and loaded kernels included, as moetune bench reports it.
    device_in_use = free_before - torch.cuda.mem_get_info()[0]
    result = {"system": f"transformers {transformers.__version__} ({experts})", "geometry": args.geometry,
              "layers": config.num_hidden_layers, "seq_len": args.seq_len, "batch_size": args.batch_size,
              "tokens_per_s": args.batch_size * args.seq_len / step_s, "step_s": step_s,
              "peak_allocated_gib": torch.cuda.max_memory_allocated() / 2**30,
              "peak_reserved_gib": torch.cuda.max_memory_reserved() / 2**30, "device_in_use_gib": device_in_use / 2**30,
              "loss": float(loss)}
    print(json.dumps(result), flush=True)
    del model, optimizer
    torch.cuda.empty_cache()


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--geometry", default="qwen3-30b-a3b-slice")
    parser.add_argument("--layers", type=int, default=0)
    parser.add_argument("--seq-len", type=int, default=4096)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--experts", default="grouped_mm", help="comma-separated experts implementations")
    args = parser.parse_args()
    for experts in args.experts.split(","):
        try:
            run(args, experts)
        except torch.OutOfMemoryError as error:
            print(json.dumps({"system": f"transformers ({experts})", "geometry": args.geometry, "error": "out of memory",
                              "detail": str(error)[:200]}), flush=True)
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
