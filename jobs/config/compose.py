"""The one Hydra composition path: every config composed from ``jobs/conf`` goes through here.

It owns the conf folder (:data:`CONF_DIR`, read at call time, so that a test may point it elsewhere), Hydra's
set-up (``initialize_config_dir`` with :data:`VERSION_BASE`), the registration of the schemas in Hydra's
ConfigStore under the names the YAMLs give as their first default (:data:`SCHEMA_NAMES`: ``stage_schema``,
``sweep_schema``; so Hydra itself rejects unknown keys and ill-typed values while composing), the mapping of
Hydra's and OmegaConf's exceptions to an error class the caller chooses (:func:`hydra_errors`: the message names
the key or the override), and the parsing of override strings (:func:`parse_overrides`, over Hydra's own parser:
the values come out as Hydra reads them, quotes removed).

Callers: ``jobs.config.stage.compose`` (one stage config), ``jobs.sweep.expand.compose_sweep`` (a sweep
definition), ``jobs.sweep.expand.PointComposer`` (a stage config per set of group choices, and the override
parser), ``jobs.config.cluster.load_profile`` (the profile files) and ``jobs.cli.demo`` (finding ``data.root``).

Imports no other ``jobs`` module (the callers pass the schema: ``jobs.config.stage`` and ``jobs.config.cluster``
import this one), and Hydra only when it is used.
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from jobs.config.structured import plain_dict

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
# Hydra's defaults of this version (no 1.1 compatibility behaviour).
VERSION_BASE = None
# A config file's name inside a group folder: no path separator, no glob.
CONFIG_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
# The ConfigStore name of each schema a YAML starts from (its first default: `- stage_schema`, `- /sweep_schema`),
# by the schema's class name (jobs.config.stage.StageConfig, jobs.config.sweep.SweepConfig).
SCHEMA_NAMES = {"StageConfig": "stage_schema", "SweepConfig": "sweep_schema"}


def conf_path(*parts: str) -> Path:
    """A path inside the conf folder (``conf_path("sweep", "demo.yaml")``)."""
    return CONF_DIR.joinpath(*parts)


def group_options(group: str) -> list[str]:
    """The config names of a group folder, sorted (``group_options("cluster")`` -> ``["example_gpu", ...]``)."""
    return sorted(p.stem for p in conf_path(group).glob("*.yaml"))


def register_schema(schema: type) -> str:
    """Store ``schema`` in Hydra's ConfigStore under its :data:`SCHEMA_NAMES` name (idempotent: every composition
    does it); returns the name."""
    from hydra.core.config_store import ConfigStore

    name = SCHEMA_NAMES[schema.__name__]
    ConfigStore.instance().store(name=name, node=schema)
    return name


def _override_message(text: str, e: Exception) -> str:
    return f"bad override {text!r}: {e}"


@contextlib.contextmanager
def hydra_errors(error: type[ValueError], prefix: str = "") -> Iterator[None]:
    """Hydra's and OmegaConf's exceptions raised inside the block, as ``error`` (``from None``) with ``prefix``
    before the message (e.g. ``"sweep 'tiny': "``):

    * an override that does not parse: ``bad override '<text>': <Hydra's message>``;
    * a missing mandatory value: ``config key '<a.b>' is required``;
    * a composition failure (unknown key, missing config file, ill-typed value): Hydra's message, then its
      cause's (which names the key);
    * any other Hydra or OmegaConf exception: its message (OmegaConf's name the full key);
    * a YAML file that does not parse: the YAML parser's message (it names the file and the line).

    Anything else (our own ``ValueError`` subclasses among them) passes through unchanged.
    """
    from hydra.errors import ConfigCompositionException, HydraException, OverrideParseException

    try:
        yield
    except OverrideParseException as e:
        raise error(prefix + _override_message(e.override, e)) from None
    except MissingMandatoryValue as e:
        raise error(f"{prefix}config key '{e.full_key}' is required") from None
    except ConfigCompositionException as e:
        raise error(prefix + (f"{e}: {e.__cause__}" if e.__cause__ else str(e))) from None
    except (HydraException, OmegaConfBaseException, yaml.YAMLError) as e:
        raise error(f"{prefix}{e}") from None


def compose_config(config_name: str, overrides: Sequence[str] = (), *, schema: type, error: type[ValueError],
                   label: str, prefix: str = "") -> dict[str, Any]:
    """``<conf>/<config_name>.yaml`` composed by Hydra's compose API with ``overrides``, interpolations resolved, as
    a plain dict (not yet checked against anything but ``schema``, the dataclass the YAML starts from).

    Errors: ``error`` (see :func:`hydra_errors`, with ``prefix``); a config that is not a mapping is refused naming
    ``label``.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    register_schema(schema)
    with hydra_errors(error, prefix):
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base=VERSION_BASE):
            raw = hydra_compose(config_name=config_name, overrides=list(overrides))
            return plain_dict(raw, label=label, error=error)


@dataclass(frozen=True)
class Override:
    """One override string as Hydra reads it.

    ``key``: the dotted key or the config group, without ``+``/``++``/``~`` and ``@package``; ``value``: the
    parsed value (quotes removed, numbers, booleans, lists and dicts typed; None for ``~key``; a Hydra sweep
    object for ``a,b``/``range(...)``); ``kind``: ``set`` (``key=v``), ``add`` (``+key=v``), ``force_add``
    (``++key=v``) or ``delete`` (``~key``, ``~key=v``).
    """

    text: str
    key: str
    value: Any
    kind: str
    package: str | None = None
    sweep: bool = False

    @property
    def sets_value(self) -> bool:
        """Whether it sets one value (``key=v``, ``+key=v``, ``++key=v``): not a delete, not a sweep."""
        return self.kind != "delete" and not self.sweep


@functools.cache
def _parser() -> Any:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create()


_KINDS = {"CHANGE": "set", "ADD": "add", "FORCE_ADD": "force_add", "DEL": "delete"}


def parse_overrides(overrides: Sequence[str], *, error: type[ValueError] = ValueError) -> list[Override]:
    """Each override parsed by Hydra's override grammar (the one Hydra's compose applies); one that does not
    parse raises ``error``: ``bad override '<text>': <Hydra's message>``."""
    out: list[Override] = []
    for text in overrides:
        try:
            (ov,) = _parser().parse_overrides([text])
        except Exception as e:  # Hydra's OverrideParseException (it wraps a grammar function's error: int(x))
            raise error(_override_message(text, e)) from None
        out.append(Override(text=text, key=ov.key_or_group, value=ov.value(), kind=_KINDS[ov.type.name],
                            package=ov.package, sweep=ov.is_sweep_override()))
    return out
