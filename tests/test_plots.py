"""Pictures: the network as DOT (every layer a node, every input an edge, labels escaped) and as
Graphviz's PNG/SVG, and the training curves read from every history layout and drawn."""
from __future__ import annotations

import copy
import json
import math
import re
import shutil
import struct
import sys
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import modelc
from modelc.callbacks import CSVLogger, ReduceLROnPlateau
from modelc.compiler.build import build_program
from modelc.compiler.layers import LAYERS
from modelc.errors import ModelcError
from modelc.grammar.parser import parse_file
from modelc.plots import curves, network
from modelc.runtime.progress import History, write_history

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted((ROOT / "specs").glob("*.model"))
HAS_DOT = shutil.which("dot") is not None
NODE = re.compile(r'^  ("(?:[^"\\]|\\.)*") \[label=<(.*)>\];$')
EDGE = re.compile(r'^  ("(?:[^"\\]|\\.)*") -> ("(?:[^"\\]|\\.)*");$')


def program_of(name: str):
    return build_program(parse_file(str(ROOT / "specs" / f"{name}.model")))


def unquote(text: str) -> str:
    assert text[0] == text[-1] == '"'
    return re.sub(r"\\(.)", r"\1", text[1:-1])


def parse_dot(text: str) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """The nodes (name -> HTML label) and edges of to_dot's text; every line must be understood."""
    lines = text.splitlines()
    assert lines[0].startswith("digraph ") and lines[-1] == "}"
    nodes, edges = {}, []
    for line in lines[1:-1]:
        if m := NODE.match(line):
            nodes[unquote(m.group(1))] = m.group(2)
        elif m := EDGE.match(line):
            edges.append((unquote(m.group(1)), unquote(m.group(2))))
        else:
            assert re.match(r"^  (graph|node|edge) \[.*\];$", line), line
    return nodes, edges


def shape_text(value) -> str:
    return "(None, " + ", ".join(str(d) for d in value.shape[1:]) + ")"


@pytest.mark.parametrize("spec", SPECS, ids=[p.stem for p in SPECS])
def test_dot_has_every_layer_and_every_input(spec):
    program = build_program(parse_file(str(spec)))
    text = network.to_dot(program)
    assert network.to_dot(program) == text
    nodes, edges = parse_dot(text)
    assert list(nodes) == [program.input.name] + [layer.name for layer in program.layers]
    assert edges == [(source, layer.name) for layer in program.layers for source in layer.inputs]
    assert set(a for a, _ in edges) <= set(nodes)
    assert "(InputLayer)" in nodes[program.input.name] and shape_text(program.input) in nodes[program.input.name]
    for layer in program.layers:
        label = nodes[layer.name]
        assert f"<b>{layer.name}</b> ({LAYERS[layer.kind].type})" in label
        assert f"Output shape: {shape_text(layer.output)}" in label
        count = sum(int(np.prod(p.shape)) for p in layer.params)
        assert (f"Params: {count:,}" in label) == (count > 0)


def test_functional_joins_are_edges():
    nodes, edges = parse_dot(network.to_dot(program_of("functional")))
    assert set(edges) == {("x", "hidden1"), ("hidden1", "hidden2"), ("hidden1", "joined"),
                          ("hidden2", "joined"), ("joined", "output")}
    assert "(Concatenate)" in nodes["joined"] and "Output shape: (None, 5)" in nodes["joined"]
    assert "Params: 12" in nodes["hidden1"]          # 3 x 3 weights + 3 biases


def odd_program():
    """functional.model with a layer name no spec allows: quotes, a backslash, HTML's specials."""
    program = copy.copy(program_of("functional"))
    odd = 'a<b>&"c\'d\\'
    program.layers = [replace(layer, name=odd if layer.name == "hidden2" else layer.name,
                              inputs=[odd if s == "hidden2" else s for s in layer.inputs])
                      for layer in program.layers]
    return program, odd


def test_labels_and_names_are_escaped():
    program, odd = odd_program()
    text = network.to_dot(program)
    nodes, edges = parse_dot(text)
    assert odd in nodes and (odd, "joined") in edges and ("hidden1", odd) in edges
    assert "<b>a&lt;b&gt;&amp;&quot;c&#x27;d\\</b> (Dense)" in nodes[odd]
    if HAS_DOT:          # and Graphviz reads it as meant
        svg = ET.fromstring(network._render(text, "svg", "odd.svg"))
        texts = "".join(t.text or "" for t in svg.iter("{http://www.w3.org/2000/svg}text"))
        assert odd in texts


@pytest.mark.skipif(not HAS_DOT, reason="Graphviz's dot is not installed")
def test_png_and_svg_are_rendered(tmp_path):
    program = program_of("functional")
    said = network.draw(program, tmp_path / "net.png")
    assert "PNG" in said and "functional" in said
    data = (tmp_path / "net.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert 150 < width < height < 2000           # top to bottom: taller than wide
    network.draw(program, tmp_path / "net.svg")
    svg = ET.parse(tmp_path / "net.svg").getroot()
    texts = [t.text for t in svg.iter("{http://www.w3.org/2000/svg}text")]
    assert {"hidden1", "hidden2", "joined", "output", "x"} <= set(texts)
    network.draw(program, tmp_path / "net.pdf")
    assert (tmp_path / "net.pdf").read_bytes()[:5] == b"%PDF-"


def test_without_graphviz_dot_is_written_and_pictures_say_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    program = program_of("functional")
    assert "DOT" in network.draw(program, tmp_path / "net.gv")
    assert (tmp_path / "net.gv").read_text() == network.to_dot(program)
    with pytest.raises(ModelcError) as caught:
        network.draw(program, tmp_path / "net.png")
    assert "Graphviz" in caught.value.message and "PNG" in caught.value.message
    for words in ("apt install graphviz", "brew install graphviz", "conda install graphviz", ".dot"):
        assert words in caught.value.hint
    assert not (tmp_path / "net.png").exists()


def test_a_failing_dot_reports_its_stderr(tmp_path, monkeypatch):
    fake = tmp_path / "bin" / "dot"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'Error: syntax error in line 3' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(fake.parent))
    with pytest.raises(ModelcError, match="syntax error in line 3"):
        network.draw(program_of("functional"), tmp_path / "net.svg")
    assert not (tmp_path / "net.svg").exists()


def test_network_unknown_extension_lists_the_known_ones(tmp_path):
    with pytest.raises(ModelcError) as caught:
        network.draw(program_of("functional"), tmp_path / "net.jpg")
    assert "'.jpg'" in caught.value.message
    assert all(ext in caught.value.hint for ext in (".dot", ".gv", ".svg", ".png", ".pdf"))


# ---- curves -------------------------------------------------------------------------------

NAN = math.nan


def rows_with(validation=True, lr=False, nan_at=None, epochs=6):
    rows = []
    for e in range(1, epochs + 1):
        row = {"epoch": e, "loss": 1.0 / e, "accuracy": 1 - 0.5 / e}
        if validation:
            row.update(val_loss=1.2 / e, val_accuracy=1 - 0.6 / e)
        if lr:
            row["learning_rate"] = 0.01 * 0.5 ** (e // 2)
        row["seconds"] = 0.01
        rows.append(row)
    if nan_at is not None:
        rows[nan_at - 1]["loss"] = NAN
    return rows


def png_size(path) -> tuple[int, int]:
    data = Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_panels_put_loss_first_and_the_learning_rate_last():
    assert curves.panels(rows_with(lr=True)) == ["loss", "accuracy", "learning_rate"]
    sorted_like_csv = [{"epoch": 1, "accuracy": 0.5, "learning_rate": 0.1, "loss": 1.0, "mae": 2.0,
                        "val_accuracy": 0.4, "val_loss": 1.1, "val_only": 3.0}]
    assert curves.panels(sorted_like_csv) == ["loss", "accuracy", "mae", "only", "learning_rate"]


@pytest.mark.parametrize("validation, lr, nan_at, title", [
    (True, False, None, "blobs (numpy)"), (False, False, 3, None), (True, True, 2, "lr")])
def test_curves_png_has_the_expected_size(tmp_path, validation, lr, nan_at, title):
    rows = rows_with(validation, lr, nan_at)
    curves.draw(rows, tmp_path / "c.png", title=title, test={"loss": 0.2, "accuracy": 0.9})
    count = len(curves.panels(rows))
    columns, lines = 2, math.ceil(count / 2)
    inches = (curves.PANEL_INCHES[0] * columns, curves.PANEL_INCHES[1] * lines + (curves.TITLE_INCHES if title else 0))
    assert png_size(tmp_path / "c.png") == tuple(round(i * curves.DPI) for i in inches)


def test_one_panel_and_nothing_finite_still_draw(tmp_path):
    curves.draw([{"epoch": 1, "loss": 0.5}], tmp_path / "one.png")
    assert png_size(tmp_path / "one.png") == tuple(round(i * curves.DPI) for i in curves.SINGLE_INCHES)
    curves.draw([{"epoch": 1, "loss": NAN}, {"epoch": 2, "loss": None}], tmp_path / "diverged.png")
    assert png_size(tmp_path / "diverged.png") == tuple(round(i * curves.DPI) for i in curves.SINGLE_INCHES)


def test_curves_svg_and_pdf(tmp_path):
    curves.draw(rows_with(), tmp_path / "c.svg", title="t & <u>")
    assert ET.parse(tmp_path / "c.svg").getroot().tag.endswith("svg")
    curves.draw(rows_with(), tmp_path / "c.pdf")
    assert (tmp_path / "c.pdf").read_bytes()[:5] == b"%PDF-"
    with pytest.raises(ModelcError, match="unknown extension '.jpg'") as caught:
        curves.draw(rows_with(), tmp_path / "c.jpg")
    assert ".png" in caught.value.hint
    with pytest.raises(ModelcError, match="no epochs"):
        curves.draw([], tmp_path / "c.png")


SPEC = """\
model tiny
input  point: f32[2]
target blob: int[] classes 3
network {
    point -> dense(8, relu) -> dense(3, softmax) => probs
}
loss      sparse_categorical_crossentropy(blob, probs)
optimizer adam(lr=0.01)
metrics   accuracy
"""


def same(a, b) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-6)


def test_histories_written_by_a_run_read_back(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 2)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0)
    model = modelc.compile(SPEC, "numpy", seed=0)
    reduce = ReduceLROnPlateau(monitor="loss", factor=0.5, patience=1, min_delta=10.0)
    history = model.fit(x, y, epochs=4, batch_size=16, verbose=0, validation_split=0.25, seed=0,
                        callbacks=[reduce, CSVLogger(tmp_path / "h.csv")])
    test = model.evaluate(x, y, verbose=0, return_dict=True)
    write_history(tmp_path / "h.json", history, model=model.name, target=model.target, test=test)

    from_json = curves.read_history(tmp_path / "h.json")
    assert from_json.title == "tiny (numpy)" == curves.curve_title(model.name, model.target)
    assert from_json.test == pytest.approx(test)
    assert [r["epoch"] for r in from_json.rows] == [1, 2, 3, 4]
    for got, want in zip(from_json.rows, history.epochs):
        assert list(got) == list(want) and all(same(got[k], want[k]) for k in want)

    from_csv = curves.read_history(tmp_path / "h.csv")
    assert from_csv.title is None and from_csv.test is None
    assert [r["epoch"] for r in from_csv.rows] == [1, 2, 3, 4]          # CSVLogger's 0-based, read 1-based
    for got, want in zip(from_csv.rows, history.epochs):
        assert set(got) == set(want) - {"seconds"}
        assert all(same(got[k], want[k]) for k in got)
    assert curves.panels(from_csv.rows) == ["loss", "accuracy", "learning_rate"]
    curves.draw(from_csv.rows, tmp_path / "c.png", title=from_json.title, test=from_json.test)
    assert png_size(tmp_path / "c.png")[0] == round(2 * curves.PANEL_INCHES[0] * curves.DPI)


def test_json_with_nulls_and_keras_history_dict(tmp_path):
    history = History(epochs=[{"epoch": 1, "loss": 0.5, "seconds": 0.1}, {"epoch": 2, "loss": NAN, "seconds": 0.1}],
                      diverged="the loss is nan at epoch 2")
    write_history(tmp_path / "d.json", history, model="m", diverged=str(history.diverged))
    assert json.loads((tmp_path / "d.json").read_text())["epochs"][1]["loss"] is None
    read = curves.read_history(tmp_path / "d.json")
    assert read.title == "m" and math.isnan(read.rows[1]["loss"]) and read.rows[0]["loss"] == 0.5

    (tmp_path / "k.json").write_text(json.dumps({"loss": [0.9, 0.5, None], "val_loss": [1.0, 0.7, 0.6]}))
    read = curves.read_history(tmp_path / "k.json")
    assert [r["epoch"] for r in read.rows] == [1, 2, 3] and read.rows[1] == {"epoch": 2, "loss": 0.5, "val_loss": 0.7}
    assert math.isnan(read.rows[2]["loss"])


def test_csv_with_another_separator_and_missing_values(tmp_path):
    (tmp_path / "h.csv").write_text("epoch;accuracy;loss;val_loss\n0;0.5;0.9;NA\n1;0.7;nan;\n2;0.8;0.3;0.4\n")
    rows = curves.read_history(tmp_path / "h.csv").rows
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert math.isnan(rows[0]["val_loss"]) and math.isnan(rows[1]["loss"]) and math.isnan(rows[1]["val_loss"])
    assert rows[2] == {"epoch": 3, "accuracy": 0.8, "loss": 0.3, "val_loss": 0.4}


@pytest.mark.parametrize("name, text, words", [
    ("h.json", "{not json", "not valid JSON"),
    ("h.json", '{"epochs": [1, 2]}', "epochs[0] is not an object"),
    ("h.json", '{"epochs": [{"epoch": 1, "loss": "low"}]}', "'low', not a number"),
    ("h.json", '{"epochs": [{"epoch": 1.5, "loss": 1}]}', "not a whole epoch"),
    ("h.json", '{"loss": [1, 2], "val_loss": [1]}', "different lengths"),
    ("h.json", '{"model": "m"}', "no per-epoch history"),
    ("h.json", '{"epochs": []}', "holds no epochs"),
    ("h.csv", "loss,accuracy\n1,2\n", "not a header `epoch,...`"),
    ("h.csv", "epoch,loss\n0,1,2\n", "line 2 has 3 values"),
    ("h.csv", "epoch,loss\n0,high\n", "line 2 'loss' is 'high'"),
    ("h.csv", "epoch,loss\n", "holds no epochs"),
    ("h.txt", "epoch,loss\n0,1\n", "unknown extension '.txt'"),
])
def test_unreadable_histories_say_what_is_wrong(tmp_path, name, text, words):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ModelcError) as caught:
        curves.read_history(path)
    assert words in caught.value.message and str(path) in caught.value.message
    assert caught.value.hint


def test_missing_and_odd_history_files(tmp_path):
    with pytest.raises(ModelcError, match="not found") as caught:
        curves.read_history(tmp_path / "gone.json")
    assert "--history" in caught.value.hint
    (tmp_path / "dir.csv").mkdir()
    with pytest.raises(ModelcError, match="is a directory"):
        curves.read_history(tmp_path / "dir.csv")
    (tmp_path / "bin.csv").write_bytes(b"epoch,loss\n0,\xff\xfe\n")
    with pytest.raises(ModelcError, match="cannot read the history"):
        curves.read_history(tmp_path / "bin.csv")


def test_missing_matplotlib_says_how_to_install_it(tmp_path, monkeypatch):
    for name in ("matplotlib", "matplotlib.backends.backend_agg", "matplotlib.figure", "matplotlib.ticker"):
        monkeypatch.setitem(sys.modules, name, None)
    for attempt in (curves.require_matplotlib, lambda: curves.draw(rows_with(), tmp_path / "c.png")):
        with pytest.raises(ModelcError, match="needs the Python package matplotlib") as caught:
            attempt()
        assert "pip install 'modelc[plot]'" in caught.value.hint
    assert not (tmp_path / "c.png").exists()
