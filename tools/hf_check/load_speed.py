#!/usr/bin/env python3
"""How fast a Hugging Face checkpoint loads: the disk itself, Transformers, and moetune's streaming loader, on one Qwen3-MoE
slice-sized random bf16 checkpoint written by Transformers' save_pretrained (sharded at its default 5GB).

  python3 tools/hf_check/load_speed.py [--folder DIR] [--load-benchmark build/load_benchmark] [--layers 8]

The folder is created (random init on the GPU, save_pretrained) when it holds no config.json. Each load is measured cold
(page cache emptied first: `echo 3 > /proc/sys/vm/drop_caches` when root may, else posix_fadvise(DONTNEED) on each
shard; the JSON says which worked and how much of the checkpoint was still cached afterwards) and warm (files in the page
cache). Measured: (a) dd-style sequential reads of the shard files (16 MiB reads), (b) Transformers
`from_pretrained(DIR, device_map="cuda", dtype=torch.bfloat16)` until the weights are on the GPU, (c) moetune's
`load_benchmark DIR` (examples/load_benchmark.cpp) into the GPU (bf16 through pinned staging, as `moetune train --device
cuda` loads) and into the fp32 host arena, and warm into a scratch buffer ("discard": read + convert only). Prints one JSON line with every number. Runs on the GPU machine (torch + transformers there)."""
import argparse
import ctypes
import gc
import glob
import json
import mmap
import os
import subprocess
import sys
import time


def qwen3_slice_config(layers):
    import transformers
    # The geometry of tools/bench/hf_baseline.py and `moetune bench --geometry qwen3-30b-a3b-slice`.
    return transformers.Qwen3MoeConfig(
        vocab_size=151936, hidden_size=2048, num_attention_heads=32, num_key_value_heads=4, head_dim=128,
        num_experts=128, num_experts_per_tok=8, moe_intermediate_size=768, norm_topk_prob=True,
        num_hidden_layers=layers, output_router_logits=True, router_aux_loss_coef=0.001, rope_theta=1e6,
        rms_norm_eps=1e-6, tie_word_embeddings=False)


def create_checkpoint(folder, layers):
    import torch
    import transformers
    start = time.perf_counter()
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = transformers.AutoModelForCausalLM.from_config(qwen3_slice_config(layers), dtype=torch.bfloat16)
    model.save_pretrained(folder, max_shard_size="5GB")
    params = sum(p.numel() for p in model.parameters())
    del model
    gc.collect()
    torch.cuda.empty_cache()
    return time.perf_counter() - start, params


def shard_files(folder):
    return sorted(glob.glob(os.path.join(folder, "*.safetensors")))


_libc = ctypes.CDLL(None, use_errno=True)
_libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_ubyte)]


def resident_fraction(paths):
    """Fraction of the files' pages in the page cache (mincore on a private mapping)."""
    page = os.sysconf("SC_PAGE_SIZE")
    resident = total = 0
    for path in paths:
        size = os.path.getsize(path)
        if size == 0:
            continue
        with open(path, "rb") as f, mmap.mmap(f.fileno(), size, access=mmap.ACCESS_COPY) as mapping:
            anchor = ctypes.c_char.from_buffer(mapping)
            pages = (size + page - 1) // page
            vector = (ctypes.c_ubyte * pages)()
            if _libc.mincore(ctypes.addressof(anchor), size, vector) == 0:
                resident += sum(v & 1 for v in vector)
                total += pages
            del anchor
    return resident / total if total else None


def drop_caches(paths):
    """Empties the page cache of `paths`; returns what worked."""
    report = {"drop_caches": False, "drop_caches_error": None, "fadvise": False}
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        report["drop_caches"] = True
    except OSError as error:
        report["drop_caches_error"] = str(error)
    try:
        for path in paths:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
        report["fadvise"] = True
    except (OSError, AttributeError):
        pass
    report["resident_after"] = resident_fraction(paths)
    return report


def read_files(paths, chunk=16 << 20):
    """dd if=FILE of=/dev/null bs=16M, for every file; returns (bytes, seconds)."""
    buffer = bytearray(chunk)
    view = memoryview(buffer)
    total = 0
    start = time.perf_counter()
    for path in paths:
        with open(path, "rb", buffering=0) as f:
            while True:
                n = f.readinto(view)
                if not n:
                    break
                total += n
    return total, time.perf_counter() - start


def transformers_load(folder):
    import torch
    import transformers
    torch.cuda.synchronize()
    start = time.perf_counter()
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, device_map="cuda", dtype=torch.bfloat16)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    del model
    gc.collect()
    torch.cuda.empty_cache()
    return seconds


def moetune_load(binary, folder, env, *extra):
    done = subprocess.run([binary, folder, *extra], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"{binary} exited {done.returncode}: {done.stderr.strip()[-500:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", default="/tmp/moetune_load_speed/qwen3-slice")
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--load-benchmark", default="build/load_benchmark", help="examples/load_benchmark.cpp binary")
    parser.add_argument("--lib-dir", default="", help="prepended to LD_LIBRARY_PATH for the binary (bundle libraries)")
    parser.add_argument("--threads", type=int, default=0, help="moetune worker threads (0: its default)")
    parser.add_argument("--skip-transformers", action="store_true")
    args = parser.parse_args()

    result = {"folder": args.folder}
    if not os.path.exists(os.path.join(args.folder, "config.json")):
        os.makedirs(args.folder, exist_ok=True)
        result["create_s"], result["params"] = create_checkpoint(args.folder, args.layers)
    paths = shard_files(args.folder)
    result["shards"] = len(paths)
    result["bytes"] = sum(os.path.getsize(p) for p in paths)
    gb = result["bytes"] / 1e9

    # (a) the disk: cold, then warm.
    result["cold_cache"] = drop_caches(paths)
    _, seconds = read_files(paths)
    result["disk_read_cold_gb_per_s"] = gb / seconds
    _, seconds = read_files(paths)
    result["disk_read_warm_gb_per_s"] = gb / seconds

    # (b) Transformers.
    if not args.skip_transformers:
        try:
            import transformers
            result["transformers_version"] = transformers.__version__
            drop_caches(paths)
            result["transformers_cold_s"] = transformers_load(args.folder)
            result["transformers_warm_s"] = transformers_load(args.folder)
            result["transformers_cold_gb_per_s"] = gb / result["transformers_cold_s"]
            result["transformers_warm_gb_per_s"] = gb / result["transformers_warm_s"]
        except Exception as error:  # report and go on to moetune
            result["transformers_error"] = f"{type(error).__name__}: {error}"

    # (c) moetune's streaming loader.
    env = dict(os.environ)
    if args.lib_dir:
        env["LD_LIBRARY_PATH"] = args.lib_dir + (":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
    threads = ["--threads", str(args.threads)] if args.threads else []
    try:
        drop_caches(paths)
        cold = moetune_load(args.load_benchmark, args.folder, env, *threads)
        warm = moetune_load(args.load_benchmark, args.folder, env, "--repeat", "2", *threads)
        discard = moetune_load(args.load_benchmark, args.folder, env, "--sink", "discard", "--repeat", "2", *threads)
        drop_caches(paths)
        gpu_cold = moetune_load(args.load_benchmark, args.folder, env, "--sink", "gpu", *threads)
        gpu_warm = moetune_load(args.load_benchmark, args.folder, env, "--sink", "gpu", "--repeat", "2", *threads)
        result.update({
            "moetune_gpu_cold_s": gpu_cold["seconds"], "moetune_gpu_cold_gb_per_s": gpu_cold["gb_per_s"],
            "moetune_gpu_warm_s": gpu_warm["seconds"], "moetune_gpu_warm_gb_per_s": gpu_warm["gb_per_s"],
            "moetune_gpu_peak_rss_gb": gpu_warm["peak_rss_gb"],
            "moetune_cold_s": cold["seconds"], "moetune_cold_gb_per_s": cold["gb_per_s"],
            "moetune_warm_s": warm["seconds"], "moetune_warm_gb_per_s": warm["gb_per_s"],
            "moetune_discard_warm_gb_per_s": discard["gb_per_s"], "moetune_threads": cold["threads"],
            "moetune_expert_layout": cold["expert_layout"], "moetune_arena_gb": cold["arena_gb"],
            "moetune_peak_rss_gb": warm["peak_rss_gb"], "moetune_discard_peak_rss_gb": discard["peak_rss_gb"]})
    except Exception as error:
        result["moetune_error"] = f"{type(error).__name__}: {error}"

    print(json.dumps(result))
    return 0 if "moetune_error" not in result else 1


if __name__ == "__main__":
    sys.exit(main())
