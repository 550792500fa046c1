"""Public LLM shapes on the meta device: prepare time, peak RSS and exact params (issue 29 goals).

Rows (each in a fresh process, 128 tokens, ``torch.set_num_threads(1)``):
``llama-3.1-405B`` (float32, the goal: < 20 s and < 2 GB peak), ``llama-3-70B``, ``deepseek-v3``
(transformers' DeepseekV3Config defaults: 61 layers, 256 routed experts, bfloat16: the goal is
exact params), ``mixtral-8x22B`` in bfloat16 and in float32 (which must fail with the hint to
build it in bfloat16). Prints one table; ``exact``: the live count equals ``sum(p.numel())``.
Run:  python3 benchmarks/lm_public_shapes.py [--rows deepseek-v3,...] [--limit 600]
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
import warnings

LLAMA = {  # hidden, layers, intermediate, heads, kv heads, vocab
    "llama-3.1-405B": (16384, 126, 53248, 128, 8, 128256),
    "llama-3-70B": (8192, 80, 28672, 64, 8, 128256),
}
ROWS = ["llama-3-70B", "llama-3.1-405B", "mixtral-8x22B-bf16", "mixtral-8x22B-fp32", "deepseek-v3"]
TOKENS = 128


def build(row: str):
    import torch
    import transformers

    if row in LLAMA:
        hidden, layers, inter, heads, kv, vocab = LLAMA[row]
        config = transformers.LlamaConfig(hidden_size=hidden, num_hidden_layers=layers, intermediate_size=inter,
                                          num_attention_heads=heads, num_key_value_heads=kv, head_dim=128,
                                          vocab_size=vocab)
        model_class, dtype = transformers.LlamaForCausalLM, torch.float32
    elif row.startswith("mixtral"):
        config = transformers.MixtralConfig(hidden_size=6144, num_hidden_layers=56, intermediate_size=16384,
                                            num_attention_heads=48, num_key_value_heads=8, vocab_size=32768,
                                            num_local_experts=8, num_experts_per_tok=2)
        model_class = transformers.MixtralForCausalLM
        dtype = torch.bfloat16 if row.endswith("bf16") else torch.float32
    else:
        config = transformers.DeepseekV3Config()
        model_class, dtype = transformers.DeepseekV3ForCausalLM, torch.bfloat16
    with torch.device("meta"):
        model = model_class(config).to(dtype).eval()
    return model, torch.randint(0, config.vocab_size, (1, TOKENS))


def rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # kB on Linux


def child(row: str) -> dict:
    import torch

    import razor_widgets

    torch.set_num_threads(1)
    start = time.perf_counter()
    model, x = build(row)
    out = {"row": row, "build_s": time.perf_counter() - start, "rss_model_gb": rss_gb(),
           "params": sum(p.numel() for p in model.parameters())}
    warnings.simplefilter("ignore")
    start, cpu = time.perf_counter(), time.process_time()
    mutator = razor_widgets.ChannelMutator()
    try:
        mutator.prepare_from_supernet(model, example_inputs=x)
    except razor_widgets.TraceError as exc:
        out["error"] = str(exc)[-300:]
        return out
    out["prepare_s"], out["prepare_cpu_s"] = time.perf_counter() - start, time.process_time() - cpu
    res = mutator.resources()
    out.update(units=len(mutator.mutable_units), full_params=res.params,
               active_params=getattr(res, "active_params", None),  # None on a checkout before issue 29
               rss_peak_gb=rss_gb())
    return out


def run_row(row: str, limit: float) -> dict:
    try:
        done = subprocess.run([sys.executable, __file__, "--child", row], capture_output=True, text=True,
                              timeout=limit)
    except subprocess.TimeoutExpired:
        return {"row": row, "error": f"did not finish within {limit:.0f} s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        return {"row": row, "error": (done.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(lines[-1])


def fmt(r: dict) -> str:
    if "prepare_s" not in r:
        return f"| {r['row']} | {r.get('params', 0) / 1e9:.1f} B | error: {r['error']} | | | | | |"
    exact = "yes" if r["full_params"] == r["params"] else "NO"
    active = f"{r['active_params'] / 1e9:.1f} B" if r.get("active_params") else "-"
    return (f"| {r['row']} | {r['params'] / 1e9:.1f} B | {r['prepare_s']:.1f} | {r['prepare_cpu_s']:.1f} | "
            f"{r['rss_peak_gb']:.2f} | "
            f"{r['units']} | {exact} | {active} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default=",".join(ROWS))
    parser.add_argument("--limit", type=float, default=600.0, help="seconds per row")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child)))
        return 0
    print("| shape (meta) | params | prepare s (wall) | prepare s (cpu) | peak RSS GB | units | exact params "
          "| active params |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: |")
    for row in args.rows.split(","):
        print(fmt(run_row(row, args.limit)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
