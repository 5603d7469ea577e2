"""RESULTS.md from results.json: the machine, the targets, each section as it renders itself, and failed sections."""

from __future__ import annotations

from pathlib import Path

from benchmarks.sections import SECTIONS, TARGET_ORDER


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("**met**" if ok else "**not met**")


def header(results: dict) -> list[str]:
    machine, sections = results["machine"], results["sections"]
    out = ["# vae_sweep benchmark results", ""]
    out.append(f"Written by `python -m benchmarks {' '.join(results['argv'])}` on {machine['date']}.")
    runs: dict[tuple, list[str]] = {}
    for name, section in sections.items():
        if "measured" in section:
            by = section["measured"]
            runs.setdefault((by["date"], " ".join(by["argv"]), by["code"]), []).append(name)
    if len(runs) > 1:
        out.append("Sections were measured in separate runs (start time, command, code):")
        out.append("")
        for (date, command, code), names in sorted(runs.items()):
            out.append(f"- {', '.join(names)}: {date}, `python -m benchmarks {command}`, code {code}")
    out.append("")
    out.append("How to make the epoch faster (variants measured against the code): [SPEEDUPS.md](SPEEDUPS.md).")
    out.append("")
    out += [
        "| machine | |",
        "|---|---|",
        f"| CPU | {machine['cpu']} |",
        f"| cores | {machine['cores']} (usable by this process: {machine['usable_cores']}) |",
        f"| torch | {machine['torch']} (torchvision {machine['torchvision']}), Python {machine['python']} |",
        f"| torch threads | {machine['threads']} (set explicitly with torch.set_num_threads) |",
        f"| code | {machine['git']} |",
        f"| load average (1 min) | start {machine['load_start']:.2f}, during {machine['load_min']:.2f}"
        f"–{machine['load_max']:.2f}, end {machine['load_end']:.2f} |",
        f"| total benchmark time | {machine['total_s'] / 60:.1f} min |",
        "",
    ]
    if results["quick"]:
        out += [
            "**Quick (smoke) run**: in-process figures are measured on the first 10 000 train / 2 000 test images and "
            "scaled to a full epoch; fewer repetitions; one sweep setting with 1 epoch; memory without the end-of-run "
            "evaluation. Use a full run for figures to rely on.",
            "",
        ]
    out += [
        "Every figure is the median over the repetitions; ± is half the range (max − min) relative to the median, "
        "a direct measure of how noisy this (shared) machine was during the run. Compared variants were alternated "
        "within the run (ABAB…, order flipped each repetition).",
        "",
    ]
    return out


def targets(sections: dict) -> list[str]:
    out = ["## Targets", "", "| target | measured | |", "|---|---|---|"]
    for section in TARGET_ORDER:
        if section.name in sections:
            for figure, ok in section.targets(sections[section.name]):
                out.append(f"| {section.target} | {figure} | {verdict(ok)} |")
    out.append("")
    return out


def failures(sections: dict) -> list[str]:
    failed = {name: s["error"] for name, s in sections.items() if "error" in s}
    if not failed:
        return []
    out = ["## Sections that failed", ""]
    for name, error in failed.items():
        out += [f"### {name}", "", "```", error.strip(), "```", ""]
    return out


# Sections that standalone benchmarks (python -m benchmarks.busy, .search, .pruning) keep at the end of RESULTS.md, and
# the test suite's timings, measured by hand (two pytest runs side by side): a rerun of the benchmarks keeps them.
STANDALONE = (
    "## Busy machine", "## Search", "## Pruning: which setting keeps the winner",
    "## The test suite (target: the README's test command ≤ 8 min on 2 cores)",
)  # fmt: skip


def _split_standalone(text: str) -> tuple[str, dict[str, str]]:
    """The file's own part, and each standalone section's text by heading."""
    starts = sorted((text.index(h), h) for h in STANDALONE if h in text)
    if not starts:
        return text, {}
    kept = {}
    for (start, heading), following in zip(starts, [*(s for s, _ in starts[1:]), len(text)], strict=True):
        kept[heading] = text[start:following].rstrip("\n") + "\n"
    return text[: starts[0][0]], kept


def _join(main: str, standalone: dict[str, str]) -> str:
    parts = [main.rstrip("\n") + "\n"] + [standalone[h] for h in STANDALONE if h in standalone]
    return "\n".join(parts)


def replace_section(path: Path, heading: str, section: str) -> None:
    """Write a standalone benchmark's section into RESULTS.md, leaving the rest of the file as it is."""
    main, standalone = _split_standalone(path.read_text() if path.exists() else "")
    path.write_text(_join(main, {**standalone, heading: section}))


def write_markdown(results: dict, path: Path) -> None:
    # A failed section has no figures to show: it is listed at the end with its traceback instead.
    shown = {name: section for name, section in results["sections"].items() if "error" not in section}
    out = header(results) + targets(shown)
    for section in SECTIONS:
        if section.name in shown:
            out += section.render(shown[section.name], results)
    out += failures(results["sections"])
    _, standalone = _split_standalone(path.read_text() if path.exists() else "")
    path.write_text(_join("\n".join(out), standalone))
