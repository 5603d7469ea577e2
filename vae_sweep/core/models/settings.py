"""The `model` keys every family has, and how a family's settings are read from a config node or a checkpoint's dict.

The choices of `model.objective` and `model.prior` are enums made from the registries of objectives and priors, so
that a new objective or prior is one entry in its dict.
"""

from dataclasses import dataclass, fields
from enum import Enum
from typing import Any, Callable, ClassVar, Dict, Tuple, get_type_hints

from vae_sweep.core.models.objectives import OBJECTIVES
from vae_sweep.core.models.priors import PRIORS

Objective = Enum("Objective", {name: name for name in OBJECTIVES}, module=__name__)
Prior = Enum("Prior", {name: name for name in PRIORS}, module=__name__)

Rules = Dict[str, Tuple[Callable[[Any], bool], str]]


@dataclass
class ModelSettings:
    """The keys of every family's `model` node; a family's schema adds its architecture's keys and RULES.

    RULES (key under `model.` -> (test, what is allowed)) are checked by config.validate with the other ranges.
    """

    name: str = ""  # the family; chosen with `model=<family>`, which also picks the schema
    latent: int = 2
    objective: Objective = Objective.elbo  # the training loss: elbo, or iwae with `samples` importance samples
    samples: int = 1  # k of the iwae objective; 1 is the ELBO
    prior: Prior = Prior.normal  # normal: N(0, I); vamp: a mixture of the posteriors of learned pseudo-inputs
    prior_components: int = 500  # K pseudo-inputs of the vamp prior

    RULES: ClassVar[Rules] = {
        "latent": (lambda v: v >= 1, "an integer >= 1"),
        "samples": (lambda v: v >= 1, "an integer >= 1 (1 is the ELBO)"),
        "prior_components": (lambda v: v >= 1, "an integer >= 1"),
    }


# Keys added to every family after runs existed: a config that holds them at these values trains what a config
# without them trained, so fingerprints leave them out there and old runs still match (see tracking.resume).
ADDED_DEFAULTS = {"objective": "elbo", "samples": 1, "prior": "normal", "prior_components": 500}


def read_settings(schema: type, node) -> ModelSettings:
    """The schema's dataclass from a `model` config node or its plain-dict form (a checkpoint's), defaults filling
    keys the node lacks (configs written before the key existed)."""
    hints = get_type_hints(schema)
    known = {field.name for field in fields(schema)}
    unknown = sorted(set(node) - known)
    if unknown:
        raise ValueError(f"{schema.__name__} has no key(s) {', '.join(unknown)}; it has {', '.join(sorted(known))}")
    values = {}
    for name in known & set(node):
        value, kind = node[name], hints[name]
        if isinstance(kind, type) and issubclass(kind, Enum):
            value = kind(getattr(value, "value", value))
        elif hasattr(value, "__len__") and not isinstance(value, str):
            value = list(value)
        values[name] = value
    return schema(**values)
