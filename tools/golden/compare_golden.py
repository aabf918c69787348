#!/usr/bin/env python3
"""Compare two golden-fixture trees written by make_golden.py (e.g. a CPU run against a GPU run).

Usage: python tools/golden/compare_golden.py DIR_A DIR_B
Prints, per family and file, whether tensor names/dtypes/shapes agree and the max abs / max relative
(to max |a|) difference of every float tensor; exits 1 on a structural mismatch or on a difference above --rtol.
"""
import argparse
import json
import os
import sys

import torch
from safetensors.torch import load_file

FILES = ["model.safetensors", "fused/model.safetensors", "expected.safetensors"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--rtol", type=float, default=1e-5, help="max allowed |a-b| / max|a| per tensor")
    args = ap.parse_args()
    bad = False
    fams = sorted(d for d in os.listdir(args.a) if os.path.isfile(os.path.join(args.a, d, "meta.json")))
    for fam in fams:
        ma = json.load(open(os.path.join(args.a, fam, "meta.json")))
        mb = json.load(open(os.path.join(args.b, fam, "meta.json")))
        print(f"== {fam}: seed {ma['seed']} vs {mb['seed']}")
        if ma["seed"] != mb["seed"]:
            bad = True
        for fn in FILES:
            pa, pb = os.path.join(args.a, fam, fn), os.path.join(args.b, fam, fn)
            if not os.path.exists(pa) and not os.path.exists(pb):
                continue
            if not (os.path.exists(pa) and os.path.exists(pb)):
                print(f"  {fn}: present in only one tree")
                bad = True
                continue
            ta, tb = load_file(pa), load_file(pb)
            if set(ta) != set(tb):
                print(f"  {fn}: key sets differ: {sorted(set(ta) ^ set(tb))[:10]}")
                bad = True
                continue
            worst, worst_k, n_exact = 0.0, "", 0
            for k in ta:
                a, b = ta[k], tb[k]
                if a.dtype != b.dtype or a.shape != b.shape:
                    print(f"  {fn}: {k}: {a.dtype}{list(a.shape)} vs {b.dtype}{list(b.shape)}")
                    bad = True
                    continue
                if torch.equal(a, b):
                    n_exact += 1
                    continue
                if not a.is_floating_point():
                    print(f"  {fn}: {k}: integer tensors differ")
                    bad = True
                    continue
                d = (a.double() - b.double()).abs().max().item()
                r = d / max(a.double().abs().max().item(), 1e-30)
                if r > worst:
                    worst, worst_k = r, k
            print(f"  {fn}: {len(ta)} tensors, {n_exact} bit-identical, worst rel diff {worst:.3e} {worst_k}")
            if worst > args.rtol:
                bad = True
        for key in ("step_losses_f64", "step_grad_norms_f64"):
            d = max(abs(x - y) / abs(x) for x, y in zip(ma[key], mb[key]))
            print(f"  meta {key}: max rel diff {d:.3e}")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
