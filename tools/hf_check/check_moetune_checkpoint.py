#!/usr/bin/env python3
"""Loads a checkpoint written by moetune with Transformers' from_pretrained and compares its logits with the logits
moetune itself computed for the same tokens (`moetune eval --dump-logits`). Prints one JSON line; exits 1 on mismatch."""
import argparse
import json
import sys

import torch
import transformers
from safetensors.torch import load_file


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("checkpoint")
    parser.add_argument("logits", help="safetensors from `moetune eval --dump-logits` (logits, input_ids)")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="max |diff| / max |logit|")
    args = parser.parse_args()
    dumped = load_file(args.logits)
    model = transformers.AutoModelForCausalLM.from_pretrained(args.checkpoint, dtype=torch.float32,
                                                              attn_implementation="eager")
    model.set_experts_implementation("eager")
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=dumped["input_ids"]).logits
    error = (logits - dumped["logits"]).abs().max().item() / dumped["logits"].abs().max().item()
    result = {"checkpoint": args.checkpoint, "architecture": model.config.architectures, "max_rel_error": error,
              "ok": error <= args.tolerance}
    print(json.dumps(result))
    sys.exit(0 if result["ok"] else 1)


if __name__ == "__main__":
    main()
