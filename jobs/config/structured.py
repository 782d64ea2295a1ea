"""Merging a plain (possibly partial) dict onto a dataclass schema, with errors that name the dotted key.

The one place that maps OmegaConf's structured-merge errors (unknown key, ill-typed value, missing
mandatory value) to a ``ValueError`` subclass the caller chooses: stage configs (``jobs.config.stage``), cluster
profiles (``jobs.config.cluster``) and sweep definitions (``jobs.sweep.expand``) all go through it.
"""

from __future__ import annotations

from typing import Any, TypeVar, cast

from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, MissingMandatoryValue, OmegaConfBaseException, ValidationError

T = TypeVar("T")


def merge_onto(schema: type[T], data: dict[str, Any], *, label: str, error: type[ValueError] = ValueError) -> T:
    """``schema``'s defaults merged with ``data``, as a ``schema`` instance.

    Raises ``error`` with ``"<label>: unknown key 'a.b'"``, ``"<label> key 'a.b': <why>"`` or
    ``"<label> key 'a.b' is required"``.
    """
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), OmegaConf.create(data))
        obj = OmegaConf.to_object(merged)
    except ConfigKeyError as e:
        raise error(f"{label}: unknown key '{e.full_key}'") from None
    except ValidationError as e:
        raise error(f"{label} key '{e.full_key}': {e.msg}") from None
    except MissingMandatoryValue as e:
        raise error(f"{label} key '{e.full_key}' is required") from None
    except OmegaConfBaseException as e:  # pragma: no cover - any other omegaconf complaint
        raise error(f"{label}: {e}") from None
    assert isinstance(obj, schema)
    return obj


def plain_dict(node: Any, *, label: str, error: type[ValueError] = ValueError) -> dict[str, Any]:
    """A composed or loaded OmegaConf mapping as a plain dict, interpolations resolved (OmegaConf's errors
    pass through). Its keys are config keys, so strings. Anything else (a YAML list) raises ``error`` naming
    ``label`` (the file or config)."""
    data = OmegaConf.to_container(node, resolve=True)
    if not isinstance(data, dict):
        raise error(f"{label}: expected a mapping of config keys, got a {type(data).__name__}")
    return cast(dict[str, Any], data)
