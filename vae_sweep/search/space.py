"""A search's space, written in Hydra's own sweep grammar and read with Hydra's override parser, as Optuna
distributions: `interval(a, b)` a float range, `int(interval(a, b))` an integer one, `tag(log, ...)` on a log scale,
`range(start, stop[, step])` integers (or a choice of its floats), `choice(...)` / `a,b,c` a categorical choice.

Each dimension also turns the value Optuna proposes back into the override a job is composed with.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from vae_sweep.config import flatten
from vae_sweep.errors import ConfigError

SPACE = "search.space."
_PRIMITIVE = (bool, int, float, str)
_ABSENT = object()


@dataclass
class Dimension:
    key: str  # the config key it sets: 'model.latent'
    text: str  # as the user wrote it: 'tag(log, int(interval(2, 256)))'
    distribution: BaseDistribution
    override_values: tuple[str, ...] = ()  # a choice's values as override text, in the order of its choices

    def override(self, value: Any) -> str:
        """The override that sets this dimension to a value Optuna proposed: 'model.hidden=[512,256]'."""
        if self.override_values:
            choices = self.distribution.choices
            return f"{self.key}={self.override_values[choices.index(value)]}"
        return f"{self.key}={value!r}" if isinstance(value, float) else f"{self.key}={value}"

    @property
    def log(self) -> bool:
        return bool(getattr(self.distribution, "log", False))

    def grid_values(self) -> list:
        """The values a grid sampler walks; only finite dimensions have them."""
        distribution = self.distribution
        if isinstance(distribution, CategoricalDistribution):
            return list(distribution.choices)
        if isinstance(distribution, IntDistribution) and not distribution.log:
            return list(range(distribution.low, distribution.high + 1, distribution.step))
        raise ConfigError(
            f"search.sampler=grid needs finite dimensions (choice or range); {SPACE}{self.key}={self.text} is an "
            "interval: use choice(...) or range(...), or another sampler (tpe, random, cmaes)."
        )


def _where(key: str, text: str) -> str:
    return f"{SPACE}{key}={text}"


def _interval(key: str, text: str, sweep: IntervalSweep) -> BaseDistribution:
    low, high = sweep.start, sweep.end
    log = "log" in sweep.tags
    if not low < high:
        raise ConfigError(
            f"{_where(key, text)}: the interval is empty or inverted; allowed: interval(low, high), low < high."
        )
    if log and low <= 0:
        raise ConfigError(
            f"{_where(key, text)}: a log scale needs bounds > 0; allowed: tag(log, interval(low, high)), low > 0."
        )
    if isinstance(low, int) and isinstance(high, int):
        return IntDistribution(low, high, log=log)
    return FloatDistribution(float(low), float(high), log=log)


def dimension(override: Override, key: str) -> Dimension:
    """One dimension from a parsed `key=<sweep>` override."""
    text = override.input_line.partition("=")[2] if override.input_line else str(override.value())
    if not override.is_sweep_override():
        raise ConfigError(
            f"{_where(key, text)} is a single value, not a dimension; allowed: interval(a, b), int(interval(a, b)), "
            f"range(start, stop), choice(a, b, ...), optionally in tag(log, ...); to fix {key}, pass {key}={text}."
        )
    sweep = override.value()
    if isinstance(sweep, IntervalSweep):
        return Dimension(key, text, _interval(key, text, sweep))
    values = list(override.sweep_iterator())
    if not values:
        raise ConfigError(
            f"{_where(key, text)}: the range is empty; allowed: range(start, stop[, step]) with values in it."
        )
    if "log" in sweep.tags:
        raise ConfigError(f"{_where(key, text)}: tag(log, ...) applies to interval(...) only.")
    if isinstance(sweep, RangeSweep) and all(isinstance(value, int) for value in values):
        step = values[1] - values[0] if len(values) > 1 else 1
        if step > 0:
            return Dimension(key, text, IntDistribution(values[0], values[-1], step=step))
    if isinstance(sweep, (ChoiceSweep, RangeSweep)):
        labels = tuple(override.sweep_string_iterator())
        # Optuna's choices must be plain values; a list such as [512,256] is chosen by its text instead.
        plain = all(isinstance(value, _PRIMITIVE) for value in values)
        return Dimension(key, text, CategoricalDistribution(values if plain else labels), labels)
    raise ConfigError(f"{_where(key, text)}: not a dimension this search understands.")


def _config_has(config: DictConfig, key: str) -> bool:
    return OmegaConf.select(config, key, default=_ABSENT, throw_on_missing=False) is not _ABSENT


def read_space(config: DictConfig, overrides: Sequence[Override], parser: OverridesParser) -> list[Dimension]:
    """The dimensions of `search.space` in the config (a preset's) and on the command line (which win), checked."""
    written: dict[str, Override] = {}
    space = OmegaConf.to_container(config.search.space, resolve=False) or {}
    for key, value in flatten(space).items():
        written[key] = parser.parse_override(f"{key}={value}")
    for override in overrides:
        if override.key_or_group.startswith(SPACE):
            key = override.key_or_group.removeprefix(SPACE)
            written[key] = override
    dimensions = []
    for key, override in written.items():
        if not _config_has(config, key):
            raise ConfigError(
                f"{SPACE}{key}: {key} is not a key of the config; `python -m vae_sweep --cfg job` lists them."
            )
        dimensions.append(dimension(override, key))
    if not dimensions:
        raise ConfigError(
            "search.space is empty; add dimensions such as 'search.space.model.latent=tag(log, int(interval(2, 256)))'"
            " or a preset such as search=latent_lr."
        )
    return dimensions
