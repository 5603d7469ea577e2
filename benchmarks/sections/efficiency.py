"""Efficiency: model FLOPs per second of each loop in the epoch section, as a fraction of the dense float32 matmul
rate (torch.mm) at the same threads."""

from __future__ import annotations

import statistics

from benchmarks.common import (
    MATMUL_SIZE,
    MODELS,
    TEST_IMAGES,
    TRAIN_IMAGES,
    Context,
    Section,
    matmul_operands,
    matmul_sample,
    spread,
    summary,
)

EFFICIENCY_MODEL = MODELS[1][0]
TARGET = ">= 60% of the dense float32 matmul rate, default model at latent 100"


def measure(ctx: Context) -> dict:
    mm = matmul_operands()
    samples = []
    for _ in range(max(9, ctx.args.repeats)):
        samples.append(matmul_sample(*mm))
    ctx.note_load()
    result = {"matmul_size": MATMUL_SIZE, "matmul_flops": summary(samples)}
    epoch = ctx.sections.get("epoch")
    if not epoch or "models" not in epoch:
        result["note"] = "run with the epoch section to relate epoch times to this rate"
        return result
    # Rate: the median of all matmul samples of this run (standalone and interleaved between epochs).
    all_samples = samples + epoch["interleaved_matmul_flops"]["samples"]
    rate = statistics.median(all_samples)
    result["matmul_flops_all"] = summary(all_samples)
    per_model = {}
    for label, figures in epoch["models"].items():
        forward = figures["forward_flops_per_image"]
        flops = 3 * forward * TRAIN_IMAGES + forward * TEST_IMAGES
        per_model[label] = {}
        for loop in ("ours", "conventional"):
            achieved = flops / figures[loop]["epoch"]["median"]
            per_model[label][loop] = {"flops_per_s": achieved, "fraction_of_matmul": achieved / rate}
        per_model[label]["epoch_flops"] = flops
    result["models"] = per_model
    return result


def targets(efficiency: dict) -> list[tuple[str, bool | None]]:
    models = efficiency.get("models", {})
    if EFFICIENCY_MODEL not in models:
        return []
    fraction = models[EFFICIENCY_MODEL]["ours"]["fraction_of_matmul"]
    return [(f"{100 * fraction:.0f}%", fraction >= 0.60)]


def render(efficiency: dict, results: dict) -> list[str]:
    rate, size = efficiency.get("matmul_flops_all", efficiency["matmul_flops"]), efficiency["matmul_size"]
    out = [
        "## 3. Efficiency against the dense matmul rate",
        "",
        f"Dense float32 `torch.mm` {size}×{size}, {results['machine']['threads']} thread(s): "
        f"**{rate['median'] / 1e9:.1f} GFLOP/s** {spread(rate)} (median of {rate['n']} samples, standalone and "
        "interleaved between the epochs above). Model FLOPs per epoch = 3 × forward FLOPs × 60 000 (forward + "
        "backward) + forward FLOPs × 10 000 (test), forward FLOPs = Σ 2·in·out over the Linear layers; "
        "elementwise work, the loss and Adam are not counted.",
        "",
    ]
    if "models" in efficiency:
        out += ["| model | FLOPs/epoch | vae_sweep | % of matmul | conventional | % of matmul |"]
        out += ["|---|---|---|---|---|---|"]
        for label, m in efficiency["models"].items():
            ours, conv = m["ours"], m["conventional"]
            out.append(
                f"| {label} | {m['epoch_flops'] / 1e9:.0f} G | {ours['flops_per_s'] / 1e9:.1f} GFLOP/s "
                f"| {100 * ours['fraction_of_matmul']:.0f}% | {conv['flops_per_s'] / 1e9:.1f} GFLOP/s "
                f"| {100 * conv['fraction_of_matmul']:.0f}% |"
            )
    else:
        out.append(efficiency.get("note", ""))
    out.append("")
    return out


SECTION = Section("efficiency", measure, render, target=TARGET, targets=targets)
