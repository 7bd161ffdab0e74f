"""The base of every stage's options class, and the one place where options are parsed.

Every option has one home: a field of a stage's options class, with its type (choices as
``Literal``), its default and a one-line docstring that becomes its description in the JSON
schema, the README tables and ``config/README.md``. This package imports only pydantic, so
Snakemake can validate a configuration without importing torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from edxtomo.errors import ConfigError

Element = Annotated[str, StringConstraints(pattern=r"^[A-Z][a-z]?$")]
"""An element symbol such as ``Zn``."""

NonNegative = Annotated[float, Field(ge=0)]

ChannelWeight = NonNegative | dict[str, NonNegative]
"""A regularisation weight: one number, or numbers by channel with an optional ``default``."""


class Options(BaseModel):
    """Options of one stage: typed, with defaults, unknown keys refused, immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        # A field's docstring may wrap over lines; its description is one line of text.
        super().__pydantic_init_subclass__(**kwargs)
        for field in cls.model_fields.values():
            if field.description:
                field.description = " ".join(field.description.split())
        cls.model_rebuild(force=True)


OptionsT = TypeVar("OptionsT", bound=Options)


_TYPE_TAGS = {"float", "int", "str", "bool", "constrained-float", "constrained-str"}


def _location(loc: tuple[Any, ...]) -> str:
    """Dotted key of a pydantic error location, without the union-branch tags it adds."""
    def is_tag(part: Any) -> bool:
        return isinstance(part, str) and (part in _TYPE_TAGS or any(c in part for c in "['-"))

    keys = [str(part) for part in loc if not is_tag(part)]
    return ".".join(keys)


def parse_options(cls: type[OptionsT], values: Mapping[str, Any] | OptionsT | None,
                  where: str = "") -> OptionsT:
    """Build and validate the options class ``cls`` from a mapping (``None``: defaults).

    Parameters
    ----------
    cls : type
        A subclass of :class:`Options`.
    values : mapping, instance of cls, or None
        The configuration section.
    where : str
        Key prefix of the section in the configuration, for the message
        (``"reconstruct.sirt"``).

    Raises
    ------
    ConfigError
        One line per invalid key, naming it: ``key 'reconstruct.sirt.iterations': Input
        should be a valid integer``.
    """
    if isinstance(values, cls):
        return values
    try:
        return cls.model_validate(dict(values or {}))
    except ValidationError as exc:
        problems: dict[str, list[str]] = {}
        for error in exc.errors():
            key = ".".join(filter(None, [where, _location(error["loc"])]))
            got = f" (got {error['input']!r})" if error["type"] != "missing" else ""
            problems.setdefault(key, []).append(error["msg"] + got)
        lines = [f"key '{key}': " + ", or ".join(dict.fromkeys(msgs))
                 for key, msgs in problems.items()]
        raise ConfigError("invalid configuration: " + "; ".join(lines)) from None


def channel_weights(weight: ChannelWeight, channels: list[str], default: float) -> list[float]:
    """One regularisation weight per channel from a number or a per-channel mapping.

    Parameters
    ----------
    weight : float or mapping of str to float
        One weight for all channels, or weights by channel name; channels missing from
        the mapping get its ``default`` entry, else ``default``.
    channels : list of str
    default : float

    Returns
    -------
    list of float, one per channel
    """
    if isinstance(weight, Mapping):
        fallback = float(weight.get("default", default))
        return [float(weight.get(name, fallback)) for name in channels]
    return [float(weight)] * len(channels)


def with_chosen_weights(options: OptionsT, section: str, weights: Mapping[str, float]
                        ) -> OptionsT:
    """``options`` with ``options.<section>.weight`` fixed to ``weights`` (by channel) where it
    is ``auto``.

    A rerun on part of the data (the deep self-check's half, a count-split replicate) then
    uses the weights the full run chose instead of searching again, which costs several
    reconstructions.

    Parameters
    ----------
    options : Options
        Holding ``section`` (e.g. ``ReconstructOptions`` and ``"tv"``, ``DeepOptions`` and
        ``"mbir"``).
    section : str
    weights : mapping of str to float
        The chosen weights; empty: ``options`` as they are.
    """
    part = getattr(options, section)
    if part.weight != "auto" or not weights:
        return options
    return options.model_copy(update={section: part.model_copy(
        update={"weight": dict(weights)})})
