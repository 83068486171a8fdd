"""Reading one Keras object's config (a layer, a loss, an optimizer) option by option.

Each option is either taken (translated), required to hold a value modelc can express, or
known to change nothing modelc computes; whatever is left at the end must be null (an option
Keras writes but leaves unset), or the object is refused naming the option and its value.
So an option modelc does not know is a message, never a silently different model.
"""
from __future__ import annotations

import json
from typing import Any

from modelc.errors import ModelcError

MISSING = object()


def shown(value: Any) -> str:
    """A config value as the message shows it: JSON, cut short."""
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class Options:
    """The config of the Keras object `what` ("layer 'dense_1' (Dense)"), to be read up."""

    def __init__(self, what: str, config: Any, ignored: tuple[str, ...] = ()):
        if not isinstance(config, dict):
            raise ModelcError(f"{what}: its config is {shown(config)}, not an object",
                              hint="the file is damaged; save the model again with Keras")
        self.what = what
        self.left = {k: v for k, v in config.items() if k not in ignored}
        self.notes: list[str] = []

    def refuse(self, key: str, value: Any, supported: str) -> ModelcError:
        return ModelcError(f"{self.what}: modelc cannot express {key}={shown(value)}", hint=supported)

    def take(self, key: str, default: Any = MISSING) -> Any:
        if key in self.left:
            return self.left.pop(key)
        if default is MISSING:
            raise ModelcError(f"{self.what}: its config has no '{key}'",
                              hint="the file is damaged or was written by another Keras; save it again with Keras 3")
        return default

    def number(self, key: str, default: Any = MISSING, whole: bool = False) -> float | int:
        value = self.take(key, default)
        ok = (isinstance(value, int) if whole else isinstance(value, (int, float))) and not isinstance(value, bool)
        if not ok:
            raise self.refuse(key, value, f"'{key}' must be a {'whole number' if whole else 'number'}")
        return value

    def require(self, key: str, allowed: tuple, supported: str, default: Any = MISSING) -> Any:
        """The option, which must be one of `allowed` (a list compares as a tuple)."""
        value = self.take(key, default)
        if (tuple(value) if isinstance(value, list) else value) not in allowed:
            raise self.refuse(key, value, supported)
        return value

    def unset(self, *keys: str, why: str) -> None:
        """Options modelc has no counterpart for: each must be null (or absent)."""
        for key in keys:
            value = self.take(key, None)
            if value is not None:
                raise self.refuse(key, value, why)

    def drop(self, *keys: str) -> None:
        """Options that change nothing modelc computes (a seed for a draw modelc makes itself)."""
        for key in keys:
            self.left.pop(key, None)

    def finish(self) -> None:
        """Every option read: what is left must be null."""
        for key, value in self.left.items():
            if value is not None:
                raise self.refuse(key, value, "modelc has no such option; build the model without it")
