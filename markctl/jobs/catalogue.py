"""Parts catalogue: where and on what each component of each model is marked.

An import depot marks many weapons of few models; the surface of a model's frame (material,
marking zone, existing marks, keep-outs, wall thickness) and where it sits in the machine's
fixture are the same for every weapon of that model. The catalogue says so once::

    [parts.frame]                      # any model
    material = "steel"
    wall_thickness_mm = 3.0
    zone = [[0, 0], [40, 0], [40, 12], [0, 12]]
    existing_marks = [[[0, 8], [18, 8], [18, 12], [0, 12]]]
    [parts.frame.options]
    origin_mm = [20, 20]               # the fixture: component frame origin in the machine frame

    [parts."G17".frame]                # a model-specific entry wins over the generic one
    material = "glass-filled-polymer"
    ...

``component`` keys are those of :class:`markctl.layouts.request.Component` (``name`` comes from the
manifest); ``options`` those of :class:`markctl.layouts.request.MarkOptions`.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from markctl.errors import ConfigError

__all__ = ["Catalogue", "PartTemplate"]


@dataclass(frozen=True, slots=True)
class PartTemplate:
    component: Mapping[str, Any]
    options: Mapping[str, Any]
    source: str


class Catalogue:
    """Templates keyed by (model or ``*``, component)."""

    def __init__(self, entries: Mapping[tuple[str, str], PartTemplate], source: str = "<catalogue>") -> None:
        self._entries = dict(entries)
        self.source = source

    @classmethod
    def from_toml(cls, text: str, source: str = "<catalogue>") -> Catalogue:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{source}: not valid TOML: {exc}") from exc
        parts = data.get("parts")
        if not isinstance(parts, dict) or not parts:
            raise ConfigError(f"{source}: needs a [parts.<component>] table")
        entries: dict[tuple[str, str], PartTemplate] = {}
        for key, value in parts.items():
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: parts.{key} must be a table")
            if _is_part(value):
                entries[("*", key.lower())] = _template(value, f"{source}: parts.{key}")
            else:  # a model: its sub-tables are components
                for component, sub in value.items():
                    if not isinstance(sub, dict) or not _is_part(sub):
                        raise ConfigError(
                            f"{source}: parts.{key}.{component} must describe a component surface"
                        )
                    entries[(key.upper(), component.lower())] = _template(
                        sub, f"{source}: parts.{key}.{component}"
                    )
        return cls(entries, source)

    @classmethod
    def load(cls, path: str | Path) -> Catalogue:
        file = Path(path)
        try:
            return cls.from_toml(file.read_text("utf-8"), str(file))
        except OSError as exc:
            raise ConfigError(f"{file}: cannot read: {exc.strerror}") from exc

    def lookup(self, model: str | None, component: str) -> PartTemplate:
        """The model-specific template, else the generic one; ConfigError names what is missing."""
        found = self._entries.get(((model or "").upper(), component)) or self._entries.get(("*", component))
        if found is None:
            raise ConfigError(
                f"{self.source}: no surface for component {component!r}"
                + (f" of model {model!r}" if model else ""),
                hint=f'add [parts.{component}] or [parts."{model}".{component}]'
                if model
                else f"add [parts.{component}]",
            )
        return found


def _is_part(table: Mapping[str, Any]) -> bool:
    return "zone" in table or "material" in table


def _template(table: Mapping[str, Any], where: str) -> PartTemplate:
    component = {k: v for k, v in table.items() if k != "options"}
    options = table.get("options", {})
    if not isinstance(options, dict):
        raise ConfigError(f"{where}.options must be a table")
    return PartTemplate(component, options, where)
