"""Small batches: one pass of Burda et al.'s setting (784-200-200-50 tanh, dynamic binarization, batch 20, Adam with
eps 1e-4) through vae_sweep's train_epoch, at 1 and 2 threads and with the loss compiled by torch.compile, alternated
pass by pass in one process; beside it the floor the step's matmuls set at this machine's rate (each of the step's
matmul shapes and the fused Adam step timed alone)."""

from __future__ import annotations

import time

import torch

from benchmarks.common import (
    TRAIN_IMAGES,
    Context,
    Section,
    alternated,
    job_model,
    job_optimizer,
    seconds_per_call,
    spread,
    summary,
)

BATCH = 20
SIZES = (784, 200, 200, 50)  # the encoder's; the decoder mirrors it, the head gives mean and log-variance
EAGER_1, EAGER_2, COMPILED_1 = "eager, 1 thread", "eager, 2 threads", "torch.compile of the loss, 1 thread"
THREADS = {EAGER_1: 1, EAGER_2: 2, COMPILED_1: 1}
TARGET = "Burda's pass (batch 20) >= 3x faster than the code before issue 24, bitwise per thread count"


def layers() -> list[tuple[int, int]]:
    """(in, out) of each Linear layer of the model."""
    encoder = list(zip(SIZES[:-2], SIZES[1:-1], strict=True)) + [(SIZES[-2], 2 * SIZES[-1])]
    reverse = SIZES[::-1]
    return encoder + list(zip(reverse[:-1], reverse[1:], strict=True))


def matmul_shapes() -> list[tuple[int, int, int]]:
    """(m, k, n) of every matmul of one step: each layer's forward, weight gradient and input gradient (none for the
    first layer, whose input is the data)."""
    shapes = []
    for index, (size_in, size_out) in enumerate(layers()):
        shapes += [(BATCH, size_in, size_out), (size_out, BATCH, size_in)]
        if index > 0:
            shapes.append((BATCH, size_out, size_in))
    return shapes


def floor(model, optimizer) -> dict:
    """Seconds per pass of the step's matmuls and of its Adam step, each timed alone at 1 thread, and their FLOPs."""
    torch.set_num_threads(1)
    matmul_s, flops = 0.0, 0
    for m, k, n in matmul_shapes():
        a, b, out = torch.randn(m, k), torch.randn(k, n), torch.empty(m, n)
        matmul_s += seconds_per_call(lambda a=a, b=b, out=out: torch.mm(a, b, out=out), 300)
        flops += 2 * m * k * n
    for parameter in model.parameters():
        parameter.grad = torch.zeros_like(parameter)
    adam_s = seconds_per_call(optimizer.step, 100)
    steps = TRAIN_IMAGES // BATCH
    return {"matmul_pass_s": matmul_s * steps, "adam_pass_s": adam_s * steps, "pass_tflop": flops * steps / 1e12}


def variants() -> dict:
    """label -> (model, optimizer), the same initial weights; the compiled one's loss goes through torch.compile with
    the eager noise (fallback_random), so that only the fusion of its ops differs."""
    import torch._inductor.config as inductor

    inductor.fallback_random = True
    made = {}
    for label in THREADS:
        torch.manual_seed(0)
        model = job_model(latent=SIZES[-1], hidden=SIZES[1:-1], activation="tanh")
        optimizer = job_optimizer(model)
        optimizer.param_groups[0]["eps"] = 1e-4  # experiment=burda_vae's
        if label == COMPILED_1:
            model.objective = torch.compile(model.objective, dynamic=False)
        made[label] = (model, optimizer)
    return made


def measure(ctx: Context) -> dict:
    from vae_sweep.core.train import EpochSettings, train_epoch

    train, _ = ctx.data()
    torch.set_flush_denormal(True)  # as fit() does
    settings = EpochSettings(batch_size=BATCH, dynamic_binarize=True)
    made = variants()
    began = time.perf_counter()
    torch.set_num_threads(1)
    train_epoch(*made[COMPILED_1], train, settings, torch.Generator().manual_seed(0), 1.0, 0)
    compile_s = time.perf_counter() - began
    times: dict[str, list[float]] = {label: [] for label in THREADS}
    for repeat in range(ctx.args.repeats):
        for label in alternated(list(THREADS), repeat):
            torch.set_num_threads(THREADS[label])
            began = time.perf_counter()
            train_epoch(*made[label], train, settings, torch.Generator().manual_seed(repeat), 1.0, repeat)
            times[label].append((time.perf_counter() - began) * TRAIN_IMAGES / len(train))
        ctx.note_load()
    torch.set_num_threads(ctx.args.threads)
    return {
        "pass_s": {label: summary(samples) for label, samples in times.items()},
        "first_compiled_pass_s": compile_s * TRAIN_IMAGES / len(train),
        "floor": floor(*made[EAGER_1]),
        "images": len(train),
    }


def floor_s(small: dict) -> float:
    """Seconds a pass of the step's matmuls and fused Adam step take, each timed alone: no other op counted."""
    return small["floor"]["matmul_pass_s"] + small["floor"]["adam_pass_s"]


def render(small: dict, results: dict) -> list[str]:
    base = small["pass_s"][EAGER_1]["median"]
    limit = small["floor"]
    out = [
        "## Small batches: Burda et al.'s pass (batch 20)",
        "",
        f"One pass of 784-200-200-50 tanh, dynamic binarization, batch 20, Adam (eps 1e-4) through train_epoch, scaled "
        f"to {TRAIN_IMAGES:,} images from {small['images']:,}, alternated pass by pass; median (spread).",
        "",
        "| variant | s / pass | × eager 1 thread |",
        "|---|---|---|",
    ]
    for label, stats in small["pass_s"].items():
        out.append(f"| {label} | {stats['median']:.2f} ({spread(stats)}) | {stats['median'] / base:.2f} |")
    rate = limit["pass_tflop"] * 1e12 / limit["matmul_pass_s"] / 1e9
    out += [
        "",
        f"The floor at 1 thread: the step's {len(matmul_shapes())} matmuls ({limit['pass_tflop']:.3f} TFLOP a pass), "
        f"each timed alone, take {limit['matmul_pass_s']:.2f} s a pass ({rate:.0f} GFLOP/s) and the fused Adam step "
        f"{limit['adam_pass_s']:.2f} s: {floor_s(small):.2f} s before any other op, "
        f"{floor_s(small) / base:.0%} of the eager pass. The first compiled pass, "
        f"compilation included: {small['first_compiled_pass_s']:.1f} s.",
        "",
    ]
    return out


TARGET = "Burda's pass (batch 20) >= 3x faster than the eager pass at 1 thread (<= 0.33x)"


def targets(small: dict) -> list[tuple[str, bool | None]]:
    base = small["pass_s"][EAGER_1]["median"]
    label, fastest = min(((label, stats["median"]) for label, stats in small["pass_s"].items()), key=lambda x: x[1])
    measured = (
        f"{fastest / base:.2f}x ({label}, {fastest:.2f} s); the step's matmuls and Adam step alone: "
        f"{floor_s(small) / base:.2f}x ({floor_s(small):.2f} s)"
    )
    return [(measured, fastest <= base / 3)]


SECTION = Section("small_batch", measure, render, default=False, target=TARGET, targets=targets)
