"""Keras's callbacks for `Model.fit`: `from modelc.callbacks import EarlyStopping`.

They live in `modelc.runtime.callbacks`; this is the name a Keras user reaches for."""
from modelc.runtime.callbacks import (CSVLogger, Callback, EarlyStopping, ModelCheckpoint, ReduceLROnPlateau,
                                      TerminateOnNaN)

__all__ = ["Callback", "CSVLogger", "EarlyStopping", "ModelCheckpoint", "ReduceLROnPlateau", "TerminateOnNaN"]
