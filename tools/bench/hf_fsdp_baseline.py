#!/usr/bin/env python3
"""Transformers baseline on several GPUs for the expert-parallel benchmark: the same geometry as `moetune bench`,
random init, bf16 parameters, AdamW with bf16 states (recipe (a)), sdpa attention, experts `grouped_mm`, sharded with
FSDP2 (`fully_shard` per decoder layer, then the root), one sequence per GPU, labels = input ids, no clipping; warm-up
steps then the mean of timed steps. Start with torchrun (one process per GPU):
  torchrun --nproc-per-node 2 tools/bench/hf_fsdp_baseline.py --geometry qwen3-30b-a3b --layers 16
Rank 0 prints one JSON line: tokens/s per GPU, step time, peak allocated memory (the maximum over ranks)."""
import argparse
import json
import os

import torch
import torch.distributed as dist
import transformers
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

from hf_baseline import geometry, timed_steps


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--geometry", default="qwen3-30b-a3b")
    parser.add_argument("--layers", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=4096)
    parser.add_argument("--batch-size", type=int, default=1, help="sequences per GPU")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--experts", default="grouped_mm")
    args = parser.parse_args()

    local_rank = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl")
    rank, world = dist.get_rank(), dist.get_world_size()
    config = geometry(args.geometry, args.layers)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="sdpa", dtype=torch.bfloat16)
    model.set_experts_implementation(args.experts)
    model.train()
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.bfloat16)
    for layer in model.model.layers:
        fully_shard(layer, mp_policy=policy)
    fully_shard(model, mp_policy=policy)
    try:
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
    except (RuntimeError, TypeError):
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, foreach=True)
    generator = torch.Generator(device="cuda").manual_seed(rank)
    ids = torch.randint(0, config.vocab_size, (args.batch_size, args.seq_len), device="cuda", generator=generator)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    step_s, loss = timed_steps(model, optimizer, ids, args.warmup, args.steps, before_step=dist.barrier)
    step_s = torch.tensor(step_s, device="cuda")
    peak = torch.tensor(torch.cuda.max_memory_allocated() / 2**30, device="cuda")
    dist.all_reduce(step_s, op=dist.ReduceOp.MAX)
    dist.all_reduce(peak, op=dist.ReduceOp.MAX)
    if rank == 0:
        tokens_per_gpu = args.batch_size * args.seq_len / step_s.item()
        print(json.dumps({"system": f"transformers {transformers.__version__} FSDP2 x{world} ({args.experts})",
                          "geometry": args.geometry, "layers": config.num_hidden_layers, "seq_len": args.seq_len,
                          "batch_size_per_gpu": args.batch_size, "gpus": world, "tokens_per_s": tokens_per_gpu,
                          "tokens_per_s_per_gpu": tokens_per_gpu, "step_s": step_s.item(),
                          "peak_allocated_gib": peak.item(), "loss": float(loss)}), flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
