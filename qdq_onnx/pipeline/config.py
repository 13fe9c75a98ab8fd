"""The one way the CLI and the Keras-style API build the stages' settings objects
(PlacementConfig, CalibrationConfig, TrainConfig, FitConfig) from loose settings, and read
their defaults for help texts. Nothing here imports a stage."""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any, TypeVar

from qdq_onnx.errors import SettingError

__all__ = ["default_of", "make_config", "setting_names"]

C = TypeVar("C")


def setting_names(cls: type) -> list[str]:
    """The settings (field names) of a config class."""
    return [f.name for f in dataclasses.fields(cls)]


def default_of(cls: type, name: str) -> Any:
    """The default value of setting `name` of a config class (for help texts)."""
    field = next(f for f in dataclasses.fields(cls) if f.name == name)
    if field.default is not dataclasses.MISSING:
        return field.default
    return field.default_factory()  # type: ignore[misc]


def make_config(cls: type[C], settings: dict[str, Any], where: str = "") -> C:
    """`cls(**settings)` without the settings that are None (so the class's defaults hold);
    an unknown setting is a SettingError naming the closest known one."""
    known = setting_names(cls)
    for key in settings:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise SettingError(key, f"is not a setting{' of ' + where if where else ''}"
                                    f"{hint}; known: {', '.join(known)}")
    return cls(**{k: v for k, v in settings.items() if v is not None})
