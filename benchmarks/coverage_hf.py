"""Coverage sweep over Hugging Face transformers families, each built tiny from config.

For every family of ``hf_families.FAMILIES`` (random weights, nothing downloaded; the HF model
as it is, its hidden states next to the logits following the pruned model):

1. ``ChannelMutator().prepare_from_supernet(model, inputs)`` with dict inputs (``input_ids``,
   ``attention_mask``; ``decoder_input_ids`` for encoder-decoders, ``pixel_values`` for ViT);
2. full choices: every output tensor bit-identical (``torch.equal``) to an unprepared deepcopy's;
3. two random choice sets (``torch.manual_seed(k)``, ``sample_choices()``): the ``to_static()``
   model's logits close to the masked model's (rtol 1e-4, atol 1e-5; ``to_static`` itself checks the
   other outputs on their kept channels) and ``mutator.resources()`` equal to
   ``count_resources(static, inputs)`` in params and MACs;
4. every unit at half its channels: ``to_static``'s reload check (``hf_export.check_reload``: the
   model rebuilt from the new config and the export's state dict) finds the same outputs ("round
   trip": yes / "no" with what differs / "n/a" when the export warned that its config cannot say
   the sizes); a real ``save_pretrained`` -> ``from_pretrained`` cross-checks a "yes";
5. what is prunable, by ``unit_role``: heads, KV groups, hidden size, MLP, experts.

Torch-Pruning 1.6.1 side by side (``--tp``, where it is installed; ``--tp-from coverage_hf.md`` copies
the column of an earlier table instead), on the model wrapped to return its logits only
(``LogitsOnly``): ``MetaPruner`` with magnitude
importance, ``pruning_ratio=0.5``, ``global_pruning=False``, the LM head / classifier ignored
and ``num_heads`` given from the attention modules' q/k/v projections, run in a child process
with a time limit of 30 s from the moment the model is built (it hangs on grouped KV heads); its
row says whether ``step()`` finished, whether the pruned model still runs, and the params it kept.

Run:  nice -n 10 python3 benchmarks/coverage_hf.py [--families llama,bert] [--tp | --tp-from PATH] [--output PATH]
"""
from __future__ import annotations

import argparse
import copy
import datetime
import multiprocessing as mp
import platform
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch

from razor_widgets import ChannelMutator, count_resources
from razor_widgets.analysis.unit_labels import unit_role
from razor_widgets.export.hf_export import HFConfigWarning

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hf_families import FAMILIES, Family, build, example_inputs  # noqa: E402

from common import versions  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = ROOT / "benchmarks" / "coverage_hf.md"
ROLES = ("heads", "kv_groups", "hidden", "mlp", "experts")
TP_SECONDS = 30  # for MetaPruner and step(), after the child has built the model
READY_SECONDS = 300


@dataclass
class Row:
    family: str
    params: int = 0
    units: int = 0
    mutable: int = 0
    roles: str = ""
    round_trip: str = ""
    seconds: float = 0.0
    result: str = ""
    tp: str = "not run"


def _logits(model, inputs) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).logits


def _same_outputs(model, original, inputs) -> bool:
    with torch.no_grad():
        out, expected = model(**inputs), original(**inputs)
    return list(out.keys()) == list(expected.keys()) and all(
        torch.equal(out[k], expected[k]) for k in out.keys() if isinstance(out[k], torch.Tensor))


def check(family: Family) -> Row:
    """Steps 1-5 of the module docstring for one family."""
    row = Row(family.name)
    start = time.perf_counter()
    stage = "build"
    try:
        model, inputs = build(family), example_inputs(family)
        row.params = sum(p.numel() for p in model.parameters())
        original = copy.deepcopy(model)
        stage = "prepare"
        mutator = ChannelMutator()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mutator.prepare_from_supernet(model, inputs)
        row.units, row.mutable = len(mutator.units), len(mutator.mutable_units)
        kinds = Counter(unit_role(u).kind for u in mutator.mutable_units)
        row.roles = ", ".join(f"{kinds[k]} {k}" for k in ROLES if kinds[k]) or "none"
        stage = "full choices"
        if not _same_outputs(model, original, inputs):
            raise AssertionError("full choices are not bit-identical")
        for seed in range(2):
            stage = f"random choices {seed}"
            torch.manual_seed(seed)
            mutator.set_choices(mutator.sample_choices())
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", HFConfigWarning)
                static = mutator.to_static()
            torch.testing.assert_close(_logits(static, inputs), _logits(model, inputs), rtol=1e-4, atol=1e-5)
            predicted, counted = mutator.resources(), count_resources(static, inputs)
            if (predicted.params, predicted.macs) != (counted.params, counted.macs):
                raise AssertionError(f"counts {predicted.params}/{predicted.macs} != {counted.params}/{counted.macs}")
        stage = "round trip"
        row.round_trip = _round_trip(mutator, inputs)
        row.result = "pass"
    except Exception as exc:  # noqa: BLE001 (a sweep: the row says why)
        first = (str(exc).strip().splitlines() or [""])[0][:160]
        row.result = f"FAIL at {stage}: {type(exc).__name__}: {first}"
        traceback.print_exc(limit=2)
    row.seconds = time.perf_counter() - start
    return row


def _round_trip(mutator: ChannelMutator, inputs: dict) -> str:
    mutator.set_choices({u.name: 0.5 for u in mutator.mutable_units})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", HFConfigWarning)
        static = mutator.to_static()
    differs = getattr(static.config, "razor_widgets_reload_differs", None)
    if differs:
        return f"no (reload check: {differs.split(' (')[0]})"
    if any(issubclass(w.category, HFConfigWarning) for w in caught):
        return "n/a (the config cannot say it: warned)"
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        static.save_pretrained(folder)
        reloaded = type(static).from_pretrained(folder).eval()
    same = torch.equal(_logits(static, inputs), _logits(reloaded, inputs))
    return "yes" if same else "no: other logits after reload, which the reload check missed"


# -- Torch-Pruning, side by side --------------------------------------------------------------------
def _tp_child(name: str, queue: mp.Queue) -> None:
    import torch_pruning as tp

    family = next(f for f in FAMILIES if f.name == name)
    model, inputs = build(family, logits_only=True), example_inputs(family)
    before = sum(p.numel() for p in model.parameters())
    queue.put("ready")  # imports and the build are done: the time limit starts now
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            heads = {}
            for module in model.modules():
                for attr in ("q_proj", "query", "q"):
                    proj = getattr(module, attr, None)
                    count = next((getattr(module, a) for a in ("num_heads", "num_attention_heads", "n_heads")
                                  if isinstance(getattr(module, a, None), int)), None)
                    if isinstance(proj, torch.nn.Linear) and count:
                        heads[proj] = count
            ignored = [m for n, m in model.named_modules() if n.endswith(("lm_head", "classifier", "decoder"))
                       and isinstance(m, torch.nn.Linear)]
            pruner = tp.pruner.MetaPruner(model, example_inputs=inputs, importance=tp.importance.MagnitudeImportance(),
                                          pruning_ratio=0.5, ignored_layers=ignored, num_heads=heads)
            pruner.step()
        after = sum(p.numel() for p in model.parameters())
        try:
            with torch.no_grad():
                model(**inputs)
            runs = "runs"
        except Exception as exc:  # noqa: BLE001
            runs = f"pruned model crashes ({type(exc).__name__})"
        queue.put(f"step done, {runs}, params {after / before:.0%} of {before:,}")
    except Exception as exc:  # noqa: BLE001
        queue.put(f"fails: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:80]}")


def torch_pruning(name: str) -> str:
    ctx = mp.get_context("fork")  # no second import of torch and transformers
    queue = ctx.Queue()
    child = ctx.Process(target=_tp_child, args=(name, queue), daemon=True)
    child.start()
    try:
        ready = queue.get(timeout=READY_SECONDS)
    except Exception:  # noqa: BLE001 (queue.Empty: the child never got as far as the pruner)
        ready = None
    try:
        result = queue.get(timeout=TP_SECONDS) if ready == "ready" else None
    except Exception:  # noqa: BLE001 (queue.Empty)
        result = f"no result in {TP_SECONDS} s (hangs in grouping or pruning)"
    if child.is_alive():
        child.kill()
    child.join()
    return result or f"child exited with {child.exitcode} before pruning"


def write_report(rows: list[Row], path: Path, seconds: float, command: str) -> None:
    passed = sum(r.result == "pass" for r in rows)
    lines = [
        "# Coverage sweep: Hugging Face families, tiny, from config", "",
        f"Generated by `benchmarks/coverage_hf.py` on {datetime.datetime.now():%Y-%m-%d %H:%M}.", "",
        f"- machine: {platform.machine()}, {mp.cpu_count()} CPUs; {versions()}",
        f"- transformers {__import__('transformers').__version__}; threads {torch.get_num_threads()}",
        "- every family: hidden 64, MLP 128, 2 layers, 4 heads (2 KV heads where grouped), vocabulary 128, "
        "8 tokens, batch 2; the HF model's own outputs (Torch-Pruning: logits only, `LogitsOnly`)",
        f"- command: `{command}`; total time {seconds:.0f} s",
        f"- **{passed} of {len(rows)}** families pass (prepare, full choices bit-identical, export = masked "
        "and exact counts at two random choice sets)", "",
        "`prunable`: the mutable units by what they are (`unit_role`): heads, KV groups (a KV head with its "
        "query heads), the hidden size (residual stream), MLP widths, experts. A family with fewer than it has "
        "keeps the rest fixed, each with its reason (`razor-widgets units` or `mutator.units`). "
        "`round trip`: every unit at half, export, `to_static`'s reload check (the model rebuilt from the new "
        "config, as `from_pretrained` does) gives the same outputs; a yes is cross-checked by a real "
        "`save_pretrained` -> `from_pretrained`. "
        "`Torch-Pruning`: 1.6.1 `MetaPruner` at ratio 0.5 on the same model (see the script's docstring).", "",
        "| family | params | units | mutable | prunable | round trip | s | result | Torch-Pruning |",
        "| --- | ---: | ---: | ---: | --- | --- | ---: | --- | --- |",
    ]
    for r in rows:
        lines.append(f"| {r.family} | {r.params:,} | {r.units} | {r.mutable} | {r.roles} | {r.round_trip} | "
                     f"{r.seconds:.1f} | {r.result} | {r.tp} |")
    path.write_text("\n".join(lines) + "\n")


def tp_column(path: Path) -> dict[str, str]:
    """Family -> the Torch-Pruning cell of an earlier ``coverage_hf.md`` (its last column)."""
    cells = [line.strip().strip("|").split(" | ") for line in path.read_text().splitlines() if line.startswith("| ")]
    return {row[0].strip(): row[-1].strip() for row in cells[1:] if len(row) > 2}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default="", help="comma-separated names (default: all)")
    parser.add_argument("--tp", action="store_true", help="run Torch-Pruning side by side")
    parser.add_argument("--tp-from", type=Path, help="copy the Torch-Pruning column of an earlier table")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    __import__("transformers").utils.logging.disable_progress_bar()
    names = [n for n in args.families.split(",") if n]
    unknown = [n for n in names if n not in {f.name for f in FAMILIES}]
    if unknown:
        parser.error(f"unknown families: {', '.join(unknown)}")
    earlier_tp = tp_column(args.tp_from) if args.tp_from else {}
    start = time.perf_counter()
    rows = []
    for family in FAMILIES:
        if names and family.name not in names:
            continue
        row = check(family)
        if args.tp:
            row.tp = torch_pruning(family.name)
        elif args.tp_from:
            row.tp = earlier_tp.get(family.name, "not in the earlier table")
        print(f"{row.family:12s} {row.roles:45s} {row.round_trip:20s} {row.result} | TP: {row.tp}", flush=True)
        rows.append(row)
    write_report(rows, args.output, time.perf_counter() - start, "python3 " + " ".join(sys.argv))
    print(f"{sum(r.result == 'pass' for r in rows)} of {len(rows)} pass; report: {args.output}")


if __name__ == "__main__":
    main()
