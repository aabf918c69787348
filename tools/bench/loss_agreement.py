#!/usr/bin/env python3
"""Loss agreement between Transformers and moetune's GPU engine: the same initial weights (a bf16 checkpoint written by
Transformers' save_pretrained), the same 20 batches in the same order, the same recipe (bf16 parameters, AdamW with
bf16 states, constant learning rate, no clipping). Writes agreement.json and agreement.png (the two curves) to --out."""
import argparse
import json
import os
import subprocess

import numpy as np
import torch
import transformers


def make_batches(vocab, steps, batch, seq, seed=0):
    """A learnable synthetic language: a sparse random Markov chain over the vocabulary."""
    rng = np.random.default_rng(seed)
    successors = rng.integers(0, vocab, size=(vocab, 4))
    rows = []
    for _ in range(steps * batch):
        token = int(rng.integers(0, vocab))
        row = [token]
        for _ in range(seq - 1):
            token = int(successors[token, rng.integers(0, 4)]) if rng.random() > 0.05 else int(rng.integers(0, vocab))
            row.append(token)
        rows.append(row)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--moetune", default="build/moetune")
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=1024)
    parser.add_argument("--lr", type=float, default=3e-4)
    args = parser.parse_args()
    work = os.path.join(args.out, "agreement_work")
    os.makedirs(work, exist_ok=True)

    config = transformers.Qwen3MoeConfig(
        vocab_size=8192, hidden_size=1024, num_attention_heads=16, num_key_value_heads=4, head_dim=64, num_experts=32,
        num_experts_per_tok=4, moe_intermediate_size=512, norm_topk_prob=True, num_hidden_layers=4,
        output_router_logits=True, router_aux_loss_coef=0.001, rope_theta=1e6, rms_norm_eps=1e-6,
        tie_word_embeddings=False, max_position_embeddings=4096)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="sdpa", dtype=torch.bfloat16)
    checkpoint = os.path.join(work, "init")
    model.save_pretrained(checkpoint)
    rows = make_batches(config.vocab_size, args.steps, args.batch_size, args.seq_len)
    data = os.path.join(work, "batches.jsonl")
    with open(data, "w") as f:
        for row in rows:
            f.write(json.dumps({"input_ids": row}) + "\n")

    model.set_experts_implementation("grouped_mm")
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0, fused=True)
    hf_losses = []
    for step in range(args.steps):
        ids = torch.tensor(rows[step * args.batch_size:(step + 1) * args.batch_size], device="cuda")
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        hf_losses.append(float(loss))
    del model, optimizer
    torch.cuda.empty_cache()

    run = os.path.join(work, "moetune_run")
    command = [args.moetune, "train", "--device", "cuda", "--model", checkpoint, "--data", data,
               "--seq-len", str(args.seq_len), "--batch-size", str(args.batch_size), "--steps", str(args.steps),
               "--lr", str(args.lr), "--schedule", "constant", "--warmup", "0", "--max-grad-norm", "0",
               "--shuffle", "off", "--weight-decay", "0", "--recipe", "bf16", "--output", run]
    subprocess.run(command, check=True)
    with open(os.path.join(run, "metrics.jsonl")) as f:
        moetune_losses = [json.loads(line)["loss"] for line in f]

    diffs = [abs(a - b) / b for a, b in zip(moetune_losses, hf_losses)]
    result = {"steps": args.steps, "transformers": hf_losses, "moetune": moetune_losses,
              "max_rel_diff": max(diffs), "mean_rel_diff": sum(diffs) / len(diffs), "command": " ".join(command)}
    with open(os.path.join(args.out, "agreement.json"), "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps({k: v for k, v in result.items() if k != "command"}))
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        plt.figure(figsize=(7, 4))
        plt.plot(range(1, args.steps + 1), hf_losses, "o-", label=f"Transformers {transformers.__version__}")
        plt.plot(range(1, args.steps + 1), moetune_losses, "s--", label="moetune (CUDA, bf16)")
        plt.xlabel("step")
        plt.ylabel("training loss")
        plt.title("Same weights, same batches, bf16 AdamW")
        plt.legend()
        plt.grid(alpha=0.3)
        plt.savefig(os.path.join(args.out, "agreement.png"), dpi=110, bbox_inches="tight")
    except ImportError:
        pass


if __name__ == "__main__":
    main()
