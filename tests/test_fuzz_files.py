"""A file fuzzer: mutated checkpoints and data files end in success or a ModelcError, never another
exception and never a hang.

Valid small files (a checkpoint of a tiny spec, .npz, .npy, .csv, IDX files)
are mutated by hypothesis (bytes flipped, truncated, zip members added, removed
or renamed, .npy headers rewritten, the checkpoint's JSON metadata given random
values) and loaded through `checkpoint.load` + `check_matches`, or through the
data sources + binding. Deterministic (`derandomize=True`); about a minute in
all. A case that crashes is saved to tests/data/fuzz/files/ (named
`<loader>-<digest>.<ext>`) and `test_saved_crashes_stay_fixed` replays the folder.
"""
from __future__ import annotations

import hashlib
import io
import json
import signal
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from modelc.compiler.build import build_program
from modelc.errors import ModelcError
from modelc.grammar.parser import parse
from modelc.runtime import binding, checkpoint
from modelc.runtime import data
from modelc.runtime.data.idx import gzip_bytes, idx_bytes

CORPUS = Path(__file__).parent / "data" / "fuzz" / "files"
SECONDS_PER_CASE = 5
FUZZ = settings(derandomize=True, deadline=None, max_examples=400, database=None,
                suppress_health_check=list(HealthCheck))

SPEC = """\
model tiny
input  x: f32[4]
target label: int[] classes 3
network {
    x -> dense(3, softmax) => probs
}
loss      sparse_categorical_crossentropy(label, probs)
optimizer adam(lr=0.01)
"""
PROGRAM = build_program(parse(SPEC, "tiny.model"))


# ---------------------------------------------------------------- the loaders under test

def _load_checkpoint(path: Path) -> None:
    ck = checkpoint.load(path)
    checkpoint.check_matches(ck, path, PROGRAM)
    checkpoint.state_matches(ck, PROGRAM)


def _bind(splits) -> None:
    for split in (splits.train, splits.test):
        if split is not None:
            binding.bind(PROGRAM, split.x, split.y, "fuzzed data")


def _load_npz(path: Path) -> None:
    _bind(data.load(data.source_call("npz", path=str(path), x_test="x", y_test="y")))


def _load_npz_onehot(path: Path) -> None:
    data.load(data.source_call("npz", path=str(path), onehot=True))


def _load_csv(path: Path) -> None:
    _bind(data.load(data.source_call("csv", path=str(path), header=True)))
    data.load(data.source_call("csv", path=str(path), classes=3, header=True, onehot=True))


def _load_idx(path: Path) -> None:
    """`path` is one of the four IDX files; its folder holds the other three, valid."""
    folder = path.parent
    for name, blob in _idx_seeds().items():
        if name != path.name and not (folder / name).exists():
            (folder / name).write_bytes(blob)
    _bind(data.load(data.source_call("idx", path=str(folder), flatten=True)))


LOADERS = {"checkpoint": _load_checkpoint, "npz": _load_npz, "npzonehot": _load_npz_onehot,
           "csv": _load_csv, "idx": _load_idx}


def _ring(*_):
    raise TimeoutError(f"a load took longer than {SECONDS_PER_CASE} s")


def attempt(loader: str, blob: bytes, folder: Path, name: str) -> None:
    """Load `blob` written as `name`; a non-ModelcError (or a hang) is saved to the corpus and fails."""
    case = folder / hashlib.sha256(blob + name.encode()).hexdigest()[:12]
    case.mkdir(parents=True, exist_ok=True)
    path = case / name
    path.write_bytes(blob)
    old = signal.signal(signal.SIGALRM, _ring)
    signal.alarm(SECONDS_PER_CASE)
    try:
        LOADERS[loader](path)
    except ModelcError:
        pass
    except BaseException as e:
        CORPUS.mkdir(parents=True, exist_ok=True)
        saved = CORPUS / f"{loader}-{hashlib.sha256(blob).hexdigest()[:12]}-{name}"
        saved.write_bytes(blob)
        raise AssertionError(f"{loader} raised {type(e).__name__}: {e} (saved as {saved})") from e
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


# ---------------------------------------------------------------- valid seeds

def _checkpoint_seed() -> bytes:
    out = io.BytesIO()
    params = {p.value.name: np.full(p.value.shape, 0.25, np.float32) for p in PROGRAM.params}
    state = {v.name: np.zeros(v.shape, np.float32) for v in PROGRAM.state}
    arrays = {checkpoint.PARAM_PREFIX + k: v for k, v in params.items()}
    arrays.update({checkpoint.STATE_PREFIX + k: v for k, v in state.items()})
    meta = {"format": checkpoint.FORMAT, "version": checkpoint.VERSION, "spec_hash": PROGRAM.spec_hash,
            "step": 4, "epoch": 1, "history": [{"loss": 0.5}], "lr_scale": 1.0, "callbacks": {},
            "shuffle_seed": 0}
    arrays[checkpoint.META_KEY] = np.array(json.dumps(meta))
    np.savez(out, **arrays)
    return out.getvalue()


def _npz_seed(compressed: bool = False) -> bytes:
    out = io.BytesIO()
    rng = np.random.default_rng(0)
    (np.savez_compressed if compressed else np.savez)(out, x=rng.standard_normal((5, 4)),
                                                      y=np.array([0, 1, 2, 1, 0]))
    return out.getvalue()


CSV_SEED = b"a,b,c,d,label\n1,2,3,4,0\n5,6,7,8,2\n0.5,1e3,-2,0,1\n"


def _idx_seeds() -> dict[str, bytes]:
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (3, 2, 2), dtype=np.uint8)
    return {"train-images-idx3-ubyte.gz": gzip_bytes(idx_bytes(images), "train-images-idx3-ubyte"),
            "train-labels-idx1-ubyte": idx_bytes(np.array([0, 2, 1], np.uint8))}


# ---------------------------------------------------------------- mutations

def _json_values():
    scalars = st.one_of(st.none(), st.booleans(), st.integers(-2 ** 70, 2 ** 70),
                        st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8))
    return st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                         st.dictionaries(st.text(max_size=4), inner, max_size=3)),
                        max_leaves=6)


def _bytes_mutation():
    """Flip bytes and/or truncate: a function of the original bytes."""
    return st.tuples(st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), max_size=6),
                     st.one_of(st.none(), st.integers(0, 1 << 16)))


def _apply_bytes(blob: bytes, mutation) -> bytes:
    flips, cut = mutation
    b = bytearray(blob)
    for index, value in flips:
        if b:
            b[index % len(b)] = value
    return bytes(b if cut is None else b[:cut % (len(b) + 1)])


_NPY_HEADERS = st.sampled_from([
    "{'descr': '<f8', 'fortran_order': False, 'shape': (99999999999,), }",
    "{'descr': '<c16', 'fortran_order': False, 'shape': (2,), }",
    "{'descr': '|O', 'fortran_order': False, 'shape': (2,), }",
    "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,), }",
    "{'descr': '<U3', 'fortran_order': True, 'shape': (), }",
    "{'descr': '<f4', 'fortran_order': 1, 'shape': (-1,), }",
    "{'descr': 'zz', 'fortran_order': False, 'shape': (1,), }",
    "{'descr': '>i8', 'fortran_order': False, 'shape': (0, 4), }",
    "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
    "not python",
])


def _npy_with_header(header: str, body: bytes) -> bytes:
    text = header.encode("latin1", "replace") + b"\n"
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text + body


@st.composite
def zip_mutation(draw):
    """A list of member edits: ("add", name, bytes) | ("remove", i) | ("rename", i, name) |
    ("header", i, header) | ("bytes", i, mutation) | ("meta", key, value)."""
    names = st.text(alphabet="abcdefghijklmnop/._-_", min_size=0, max_size=12)
    edit = st.one_of(
        st.tuples(st.just("add"), names, st.binary(max_size=64)),
        st.tuples(st.just("remove"), st.integers(0, 30)),
        st.tuples(st.just("rename"), st.integers(0, 30), names),
        st.tuples(st.just("header"), st.integers(0, 30), _NPY_HEADERS),
        st.tuples(st.just("bytes"), st.integers(0, 30), _bytes_mutation()),
        st.tuples(st.just("meta"), st.sampled_from(["step", "epoch", "history", "lr_scale", "callbacks",
                                                    "shuffle_seed", "format", "version", "spec_hash",
                                                    "model", "new"]), _json_values()),
    )
    return draw(st.lists(edit, min_size=1, max_size=4)), draw(st.sampled_from([zipfile.ZIP_STORED,
                                                                              zipfile.ZIP_DEFLATED]))


def _apply_zip(blob: bytes, mutation) -> bytes:
    edits, compression = mutation
    with zipfile.ZipFile(io.BytesIO(blob)) as z:
        parts = [[n, z.read(n)] for n in z.namelist()]
    for edit in edits:
        kind = edit[0]
        if kind == "add":
            parts.append([edit[1] or "x", edit[2]])
        elif parts and kind == "remove":
            parts.pop(edit[1] % len(parts))
        elif parts and kind == "rename":
            parts[edit[1] % len(parts)][0] = edit[2] or "y"
        elif parts and kind == "header":
            part = parts[edit[1] % len(parts)]
            part[1] = _npy_with_header(edit[2], part[1][-32:])
        elif parts and kind == "bytes":
            part = parts[edit[1] % len(parts)]
            part[1] = _apply_bytes(part[1], edit[2])
        elif kind == "meta":
            for part in parts:
                if part[0] == checkpoint.META_KEY + ".npy":
                    try:
                        meta = json.loads(str(np.load(io.BytesIO(part[1]))))
                        meta[edit[1]] = edit[2]
                        text = json.dumps(meta)
                    except Exception:     # already damaged by an earlier edit: leave it so
                        continue
                    out = io.BytesIO()
                    np.save(out, np.array(text))
                    part[1] = out.getvalue()
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression) as z, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)        # duplicate names are one of the mutations
        for name, content in parts:
            z.writestr(name, content)
    return out.getvalue()


# ---------------------------------------------------------------- the fuzzers

@FUZZ
@given(mutation=zip_mutation())
def test_fuzz_checkpoint_members(tmp_path_factory, mutation):
    attempt("checkpoint", _apply_zip(CHECKPOINT, mutation), tmp_path_factory.mktemp("c"), "w.npz")


@FUZZ
@given(mutation=_bytes_mutation())
def test_fuzz_checkpoint_bytes(tmp_path_factory, mutation):
    attempt("checkpoint", _apply_bytes(CHECKPOINT, mutation), tmp_path_factory.mktemp("c"), "w.npz")


@FUZZ
@given(mutation=zip_mutation(), compressed=st.booleans(), onehot=st.booleans())
def test_fuzz_npz_members(tmp_path_factory, mutation, compressed, onehot):
    blob = _apply_zip(NPZ_COMPRESSED if compressed else NPZ, mutation)
    attempt("npzonehot" if onehot else "npz", blob, tmp_path_factory.mktemp("n"), "d.npz")


@FUZZ
@given(mutation=_bytes_mutation(), compressed=st.booleans(), single=st.booleans())
def test_fuzz_npz_and_npy_bytes(tmp_path_factory, mutation, compressed, single):
    seed = NPY if single else NPZ_COMPRESSED if compressed else NPZ
    attempt("npz", _apply_bytes(seed, mutation), tmp_path_factory.mktemp("n"), "d.npy" if single else "d.npz")


@FUZZ
@given(mutation=_bytes_mutation(), extra=st.text(max_size=20))
def test_fuzz_csv(tmp_path_factory, mutation, extra):
    blob = _apply_bytes(CSV_SEED, mutation) + extra.encode("utf-8", "surrogatepass")
    attempt("csv", blob, tmp_path_factory.mktemp("v"), "d.csv")


@FUZZ
@given(mutation=_bytes_mutation(), which=st.sampled_from(sorted(_idx_seeds())))
def test_fuzz_idx_files(tmp_path_factory, mutation, which):
    attempt("idx", _apply_bytes(_idx_seeds()[which], mutation), tmp_path_factory.mktemp("i"), which)


CHECKPOINT = _checkpoint_seed()
NPZ = _npz_seed()
NPZ_COMPRESSED = _npz_seed(compressed=True)


def _npy_seed() -> bytes:
    out = io.BytesIO()
    np.save(out, np.arange(6.0).reshape(2, 3))
    return out.getvalue()


NPY = _npy_seed()


# ---------------------------------------------------------------- the corpus of past crashes

def _corpus() -> list[Path]:
    return sorted(p for p in CORPUS.glob("*") if p.is_file() and p.name.split("-")[0] in LOADERS)


def test_seeds_load(tmp_path):
    """The unmutated seeds load, so a fuzz case that fails to load failed because of its mutation."""
    def write(blob: bytes, name: str) -> Path:
        (tmp_path / name).write_bytes(blob)
        return tmp_path / name

    _load_checkpoint(write(CHECKPOINT, "w.npz"))
    _load_npz(write(NPZ, "d.npz"))
    _load_npz(write(NPZ_COMPRESSED, "c.npz"))
    _load_csv(write(CSV_SEED, "d.csv"))
    _load_idx(write(_idx_seeds()["train-labels-idx1-ubyte"], "train-labels-idx1-ubyte"))


@pytest.mark.parametrize("case", _corpus(), ids=lambda p: p.name)
def test_saved_crashes_stay_fixed(tmp_path, case):
    loader, _, name = case.name.split("-", 2)
    attempt(loader, case.read_bytes(), tmp_path, name)
