"""Language-model rows of ``bench_prepare.py``: Llama-shaped decoders (transformers'
``LlamaForCausalLM`` from a config, random weights, head dim 128, vocabulary 32,000, 128 tokens),
built on cpu or on the meta device, each prepared in a fresh process.

Per row: build time, prepare time (``ChannelMutator().prepare_from_supernet``), peak RSS of the
process (``ru_maxrss``: model and prepare together) and the RSS after building (the model's
own share), units found, and whether full-choice params equal the model's parameter count.
Cpu rows also time one forward on the example input. Torch-Pruning's ``DependencyGraph`` (if
installed) runs in its own process under ``--tp-limit`` seconds.

Run:  python3 benchmarks/lm_rows.py [--rows 170M-cpu,6.7B-meta] [--tp-limit 120]

Token scaling (``--token-scaling``): the same config (``--scaling-row``, default 170M-meta) at
128 and 2048 tokens, with the eager (matmul) and sdpa attention, prepared by this checkout and
by another one (``--before /work/main``: its ``razor_widgets`` is imported through PYTHONPATH),
every measurement in a fresh process, the two versions alternated; prints prepare time (the best
of ``--repeat`` runs) and peak RSS rise (peak minus RSS after build, the median) per version,
and the 2048/128 and before/after ratios.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import warnings

# name -> (hidden, layers, intermediate, heads, kv heads)
CONFIGS = {
    "170M": (1024, 8, 2816, 8, 8),
    "540M": (2048, 8, 5632, 16, 16),
    "1.2B": (2048, 22, 5632, 32, 4),  # TinyLlama-1.1B shape: 32 query heads, 4 kv heads (grouped-query attention)
    "6.7B": (4096, 32, 11008, 32, 32),
}
ROWS = ["170M-cpu", "170M-meta", "540M-cpu", "540M-meta", "1.2B-meta", "6.7B-meta"]
TOKENS = 128


def build(size: str, device: str, tokens: int = TOKENS, attention: str | None = None):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    hidden, layers, inter, heads, kv = CONFIGS[size]
    cfg = LlamaConfig(hidden_size=hidden, num_hidden_layers=layers, intermediate_size=inter,
                      num_attention_heads=heads, num_key_value_heads=kv, head_dim=128, vocab_size=32000)
    if attention is not None:
        cfg._attn_implementation = attention  # "eager": matmul + softmax; "sdpa": scaled_dot_product_attention
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(cfg).eval()
    return model, torch.randint(0, 32000, (1, tokens), device=device)


def rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # kB on Linux


def child(row: str, engine: str, tokens: int = TOKENS, attention: str | None = None) -> dict:
    """Measure one row in this (fresh) process."""
    import torch

    torch.set_num_threads(1)
    size, device = row.split("-")
    start = time.perf_counter()
    model, x = build(size, device, tokens, attention)
    out = {"row": row, "engine": engine, "build_s": time.perf_counter() - start, "rss_model_gb": rss_gb(),
           "params": sum(p.numel() for p in model.parameters())}
    if device == "cpu" and engine == "razor":
        with torch.no_grad():
            start = time.perf_counter()
            model(x)
            out["forward_s"] = time.perf_counter() - start
    warnings.simplefilter("ignore")
    start = time.perf_counter()
    if engine == "razor":
        import razor_widgets

        mutator = razor_widgets.ChannelMutator()
        mutator.prepare_from_supernet(model, example_inputs=x)
        out["prepare_s"] = time.perf_counter() - start
        out["units"] = len(mutator.mutable_units)
        out["full_params"] = mutator.resources().params
    else:
        import torch_pruning as tp

        dg = tp.DependencyGraph().build_dependency(model, example_inputs=x,
                                                   output_transform=lambda out: out.logits)
        out["units"] = len(list(dg.get_all_groups()))
        out["prepare_s"] = time.perf_counter() - start
    out["rss_peak_gb"] = rss_gb()
    return out


def run_row(row: str, engine: str, limit: float, tokens: int = TOKENS, attention: str | None = None,
            pythonpath: str | None = None) -> dict:
    """One row in a fresh process, killed after ``limit`` seconds (``pythonpath``: the checkout
    whose ``razor_widgets`` it imports)."""
    cmd = [sys.executable, __file__, "--child", row, "--engine", engine, "--tokens", str(tokens)]
    cmd += ["--attention", attention] if attention else []
    env = dict(os.environ, PYTHONPATH=pythonpath) if pythonpath else None
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=limit, env=env)
    except subprocess.TimeoutExpired:
        return {"row": row, "engine": engine, "error": f"did not finish within {limit:.0f} s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        return {"row": row, "engine": engine, "error": (done.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(lines[-1])


def fmt_row(r: dict) -> str:
    if "error" in r:
        return f"| {r['row']} | {r['engine']} | {r['error']} | | | | | |"
    fwd = f"{r['forward_s']:.2f}" if "forward_s" in r else "-"
    exact = "yes" if r.get("full_params") == r["params"] else ("-" if "full_params" not in r else "NO")
    return (f"| {r['row']} | {r['engine']} | {r['params'] / 1e6:.0f} M | {r['prepare_s']:.2f} | {fwd} | "
            f"{r['rss_peak_gb']:.2f} | {r['rss_model_gb']:.2f} | {r['units']} | {exact} |")


def token_scaling(row: str, before: str, repeat: int, limit: float) -> None:
    """Prepare ``row`` at 128 and 2048 tokens with both attentions, this checkout against
    ``before``, each in a fresh process, versions alternated; the results side by side."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    versions = {"after": here, "before": before}
    results: dict[tuple[str, str, int], list[dict]] = {}
    for rep in range(repeat):
        for attention in ("eager", "sdpa"):
            for tokens in (128, 2048):
                order = list(versions) if rep % 2 == 0 else list(versions)[::-1]
                for version in order:
                    r = run_row(row, "razor", limit, tokens, attention, versions[version])
                    results.setdefault((version, attention, tokens), []).append(r)

    def median(version: str, attention: str, tokens: int, key: str) -> float | None:
        runs = [r for r in results[version, attention, tokens] if "error" not in r]
        if not runs:
            return None
        values = sorted(r["rss_peak_gb"] - r["rss_model_gb"] if key == "rise" else r[key] for r in runs)
        return values[0] if key == "prepare_s" else values[len(values) // 2]  # machine noise only adds time

    def cell(v: float | None, digits: int = 2) -> str:
        return "failed" if v is None else f"{v:.{digits}f}"

    print(f"\nToken scaling, {row}, {repeat} run(s) per cell (time: the best; RSS: the median), before = {before}")
    print("| attention | version | prepare s 128 | prepare s 2048 | 2048/128 | peak RSS rise GB 128 "
          "| rise GB 2048 | peak RSS GB 2048 | units 128 / 2048 |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for attention in ("eager", "sdpa"):
        for version in versions:
            t128, t2048 = (median(version, attention, t, "prepare_s") for t in (128, 2048))
            ratio = t2048 / t128 if t128 and t2048 else None
            units = " / ".join(str(results[version, attention, t][0].get("units", "-")) for t in (128, 2048))
            rise = [cell(median(version, attention, t, "rise"), 3) for t in (128, 2048)]
            print(f"| {attention} | {version} | {cell(t128)} | {cell(t2048)} | {cell(ratio)} | {rise[0]} | {rise[1]} | "
                  f"{cell(median(version, attention, 2048, 'rss_peak_gb'))} | {units} |")
        for tokens in (128, 2048):
            a, b = median("after", attention, tokens, "prepare_s"), median("before", attention, tokens, "prepare_s")
            print(f"{attention}, {tokens} tokens: before/after prepare time {cell(b / a if a and b else None)}x")
    errors = [r for runs in results.values() for r in runs if "error" in r]
    for r in errors:
        print(f"error: {r['row']} {r['error']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma separated, from {', '.join(ROWS)}")
    parser.add_argument("--limit", type=float, default=300, help="seconds per razor row")
    parser.add_argument("--tp-limit", type=float, default=0, help="seconds per Torch-Pruning row (0: skip)")
    parser.add_argument("--token-scaling", action="store_true", help="128 vs 2048 tokens, before vs after")
    parser.add_argument("--scaling-row", default="170M-meta", help="the config of --token-scaling")
    parser.add_argument("--before", default="/work/main", help="checkout to compare with (--token-scaling)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per cell (--token-scaling)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--engine", default="razor", help=argparse.SUPPRESS)
    parser.add_argument("--tokens", type=int, default=TOKENS, help=argparse.SUPPRESS)
    parser.add_argument("--attention", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.engine, args.tokens, args.attention)), flush=True)
        return 0
    if args.token_scaling:
        token_scaling(args.scaling_row, args.before, args.repeat, args.limit)
        return 0
    print("| model-built on | engine | params | prepare s | forward s | peak RSS GB | RSS after build GB "
          "| units | full-choice params exact |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for row in args.rows.split(","):
        print(fmt_row(run_row(row, "razor", args.limit)), flush=True)
        if args.tp_limit > 0 and row.endswith("cpu"):
            print(fmt_row(run_row(row, "tp", args.tp_limit)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
