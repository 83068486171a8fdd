"""The parser: the AST it builds, and the errors it gives for malformed specs."""
from __future__ import annotations

import pytest

from modelc.errors import ModelcError, SpecError
from modelc.grammar import ast, parse, parse_file
from modelc.grammar import parser as parser_module

MNIST = """\
# specs/mnist.model: the MNIST MLP from the Keras tutorials
model mnist

input  image: f32[28, 28]        # one sample; the batch axis is implicit
target digit: int[] classes 10   # sparse integer labels 0..9

network {
    image -> flatten
          -> dense(64, relu, init=he_normal)
          -> dense(64, relu)
          -> dense(10, softmax)        => probs
}

loss      sparse_categorical_crossentropy(digit, probs)
optimizer adam(lr=0.001)
metrics   accuracy

train {
    data     mnist(scale=1/255)
    batch    32
    epochs   10
    seed     0
    validate test
}

expect {
    test.accuracy >= 0.97
}
"""

GRAPH = """\
model graph
input  image: float32[28, 28]
input  extra: f32[]
target digit: i32[] classes 10
target label: f32[10] onehot classes 10
target y: f32[1]

network {
    image -> flatten
          -> dense(64, relu, init=he_normal)
          -> dense(64, relu) => h        # a bind in the middle of a chain
          -> dense(10, softmax)          => probs
    (h, probs) -> concat(axis=-1) -> dense(3) => other
    h -> dropout(0.2) -> softmax(temperature=0.6) => t
}

loss      huber(y, other, delta=1.0)
optimizer adam(lr=1e-3)
metrics   accuracy, mae
train {
    batch    32
    shuffle  true
    validate split(0.1)
    schedule exponential_decay(rate=0.96, steps=1000)
    data     npz("data/x.npz", x="x\\ty", y=[1, -2, .5])
    data     csv("iris.csv", label=-1, header=false)
}
expect {
    test.accuracy >= 0.97
    train.loss < 0.5
    val.mae <= 0.1
}
"""


def names(idents):
    return [i.name.name if isinstance(i, ast.Call) else i.name for i in idents]


# ---------------------------------------------------------------- the AST

def test_mnist_spec():
    spec = parse(MNIST, "mnist.model")
    assert spec.name.name == "mnist"
    assert spec.name.pos == ast.Pos(2, 7, 2, 12)
    assert spec.source == ast.Source(MNIST, "mnist.model")

    (image,) = spec.inputs
    assert image.name.name == "image" and image.type.dtype == "f32" and image.type.shape == (28, 28)
    assert image.pos.line == 4 and image.type.pos.column == 15

    (digit,) = spec.targets
    assert digit.type.dtype == "int" and digit.type.shape == ()
    assert digit.classes.value == 10 and digit.classes.pos == ast.Pos(5, 29, 5, 31)
    assert not digit.onehot

    (chain,) = spec.network
    assert names(chain.sources) == ["image"]
    calls = [link for link in chain.links if isinstance(link, ast.Call)]
    assert [c.name.name for c in calls] == ["flatten", "dense", "dense", "dense"]
    assert calls[0].args == [] and calls[0].pos == ast.Pos(8, 14, 8, 21)
    dense = calls[1]
    assert dense.pos.line == 9 and dense.pos.column == 14
    assert dense.positional[0].value.value == 64
    assert dense.positional[1].value == ast.Ident("relu", ast.Pos(9, 24, 9, 28))
    (init,) = dense.keywords
    assert init.key.name == "init" and init.value.name == "he_normal"
    bind = chain.links[-1]
    assert isinstance(bind, ast.Bind) and bind.name.name == "probs" and bind.name.pos == ast.Pos(11, 43, 11, 48)

    assert spec.loss.name.name == "sparse_categorical_crossentropy"
    assert names(a.value for a in spec.loss.args) == ["digit", "probs"]
    assert spec.optimizer.name.name == "adam"
    lr = spec.optimizer.keywords[0].value
    assert lr.value == 0.001 and isinstance(lr.value, float) and lr.text == "0.001"
    assert names(spec.metrics) == ["accuracy"]

    settings = {s.key.name: s.value for s in spec.train}
    assert list(settings) == ["data", "batch", "epochs", "seed", "validate"]
    scale = settings["data"].keywords[0].value
    assert scale.text == "1/255" and scale.value == pytest.approx(1 / 255) and isinstance(scale.value, float)
    assert scale.pos == ast.Pos(19, 26, 19, 31)
    assert settings["batch"].value == 32 and isinstance(settings["batch"].value, int)
    assert settings["validate"] == ast.Ident("test", ast.Pos(23, 14, 23, 18))

    (expectation,) = spec.expect
    assert (expectation.split.name, expectation.metric.name, expectation.op) == ("test", "accuracy", ">=")
    assert expectation.value.value == 0.97 and expectation.pos.line == 27


def test_graph_spec():
    spec = parse(GRAPH)
    assert [(i.name.name, i.type.dtype, i.type.shape) for i in spec.inputs] == [
        ("image", "f32", (28, 28)), ("extra", "f32", ())]
    digit, label, y = spec.targets
    assert (digit.type.dtype, digit.classes.value, digit.onehot) == ("int", 10, False)
    assert (label.type.shape, label.classes.value, label.onehot) == ((10,), 10, True)
    assert (y.classes, y.onehot) == (None, False)

    first, merge, branch = spec.network
    kinds = [type(link).__name__ for link in first.links]
    assert kinds == ["Call", "Call", "Call", "Bind", "Call", "Bind"]
    assert first.links[3].name.name == "h"

    assert names(merge.sources) == ["h", "probs"] and merge.sources[1].pos == ast.Pos(13, 9, 13, 14)
    concat = merge.links[0]
    axis = concat.keywords[0]
    assert axis.key.name == "axis" and axis.value.value == -1 and axis.value.text == "-1"
    assert merge.links[-1].name.name == "other"

    dropout, softmax, bind = branch.links
    assert dropout.positional[0].value.value == 0.2
    assert softmax.keywords[0].value.value == 0.6 and bind.name.name == "t"

    assert spec.loss.keywords[0].value.value == 1.0
    assert spec.optimizer.keywords[0].value.value == 0.001
    assert names(spec.metrics) == ["accuracy", "mae"]

    settings = [(s.key.name, s.value) for s in spec.train]
    assert settings[1][1] == ast.Bool(True, settings[1][1].pos)
    split = settings[2][1]
    assert isinstance(split, ast.Call) and split.name.name == "split" and split.positional[0].value.value == 0.1
    schedule = settings[3][1]
    assert [(a.key.name, a.value.value) for a in schedule.args] == [("rate", 0.96), ("steps", 1000)]
    npz = settings[4][1]
    assert npz.positional[0].value == ast.String("data/x.npz", npz.positional[0].value.pos)
    x, items = npz.keywords
    assert x.value.value == "x\ty"
    assert isinstance(items.value, ast.ListLit)
    assert [(n.value, n.text) for n in items.value.items] == [(1, "1"), (-2, "-2"), (0.5, ".5")]
    csv = settings[5][1]
    assert csv.keywords[0].value.value == -1 and csv.keywords[1].value == ast.Bool(False, csv.keywords[1].value.pos)

    assert [(e.split.name, e.metric.name, e.op, e.value.value) for e in spec.expect] == [
        ("test", "accuracy", ">=", 0.97), ("train", "loss", "<", 0.5), ("val", "mae", "<=", 0.1)]


def test_minimal_spec_leaves_the_rest_empty():
    spec = parse("model m input x: f32[2] network { x -> dense(1) }")   # newlines are not needed
    assert spec.loss is None and spec.optimizer is None
    assert spec.metrics == [] and spec.train == [] and spec.expect == [] and spec.targets == []


def test_statements_in_any_order():
    spec = parse("network { x -> relu }\nmetrics mse\ninput x: f32[1]\nmodel late\n")
    assert spec.name.name == "late" and names(spec.metrics) == ["mse"]


@pytest.mark.parametrize("written, dtype", [
    ("f32", "f32"), ("float32", "f32"), ("float", "f32"),
    ("int", "int"), ("i32", "int"), ("int32", "int"), ("i64", "int"), ("int64", "int")])
def test_dtype_aliases(written, dtype):
    spec = parse(f"model m\ninput x: {written}[3]\nnetwork {{ x -> relu }}\n")
    assert spec.inputs[0].type.dtype == dtype


@pytest.mark.parametrize("written, value", [
    ("3", 3), ("-1", -1), ("0.001", 0.001), (".5", 0.5), ("1e-3", 0.001), ("2E3", 2000.0),
    ("-2.5e-1", -0.25), ("1/255", 1 / 255), ("-1/4", -0.25), ("3 / 4", 0.75)])
def test_numbers(written, value):
    spec = parse(f"model m\ninput x: f32[1]\nnetwork {{ x -> dense(units={written}) }}\n")
    number = spec.network[0].links[0].args[0].value
    assert number.value == pytest.approx(value) and number.text == written
    assert isinstance(number.value, int) == (type(value) is int)


def test_keywords_are_contextual():
    """A keyword is a keyword only where a statement or option may start."""
    spec = parse("""\
model model
input input: f32[3]
input inputs: f32[3]
target target: int[] classes 3
target modelx: f32[3] onehot
network {
    input -> dense(10) => model
    target -> dense(3)
    (input, model) -> concat -> dense(3) => train
    loss -> add => test
}
loss mse(target, test)
metrics loss, train
train {
    seed 0
    model 1
    validate test
}
expect {
    test.accuracy >= 0.9
    train.loss < 0.5
    input.target == 1
}
""")
    assert spec.name.name == "model"
    assert names(i.name for i in spec.inputs) == ["input", "inputs"]
    assert names(t.name for t in spec.targets) == ["target", "modelx"]
    assert [names(c.sources) for c in spec.network] == [["input"], ["target"], ["input", "model"], ["loss"]]
    assert names(spec.metrics) == ["loss", "train"]
    assert [s.key.name for s in spec.train] == ["seed", "model", "validate"]
    assert [e.split.name for e in spec.expect] == ["test", "train", "input"]


def test_tuple_source_after_a_bare_layer():
    """`-> relu` then `(h, g)` on the next line starts a chain; `dense (3)` is still a call."""
    spec = parse("""\
model m
input x: f32[4]
network {
    x -> relu => h
    h -> tanh
    (h, x) -> add
    x -> dense (3) => y
}
""")
    assert [names(c.sources) for c in spec.network] == [["x"], ["h"], ["h", "x"], ["x"]]
    assert spec.network[1].links[0].args == []
    assert spec.network[3].links[0].positional[0].value.value == 3


def test_parse_file(tmp_path):
    path = tmp_path / "mnist.model"
    path.write_text(MNIST)
    spec = parse_file(path)
    assert spec.name.name == "mnist" and spec.source.filename == str(path)
    path.write_text(MNIST.replace("-> flatten", "-> flatten $"))
    with pytest.raises(SpecError) as info:
        parse_file(str(path))
    assert str(info.value).startswith(f"{path}:8:22: error: unexpected character '$'")


def test_parse_file_missing(tmp_path):
    with pytest.raises(ModelcError) as info:
        parse_file(tmp_path / "nope.model")
    assert not isinstance(info.value, SpecError)
    assert "nope.model" in str(info.value) and "not found" in str(info.value)
    with pytest.raises(ModelcError, match="directory"):
        parse_file(tmp_path)


def test_parser_is_built_once():
    assert parser_module._lark() is parser_module._lark()


# ---------------------------------------------------------------- errors

HEAD = "model m\ninput image: f32[28, 28]\ntarget digit: int[] classes 10\n"   # lines 1-3
NET = "network {\n    image -> flatten -> dense(10, softmax) => probs\n}\n"       # lines 4-6


def net(*chain_lines: str) -> str:
    """HEAD, then a network whose chains are on lines 5, 6, ..."""
    return HEAD + "network {\n" + "".join(f"    {line}\n" for line in chain_lines) + "}\n"


def after(*lines: str) -> str:
    """A valid HEAD + NET, then the given lines from line 7 on."""
    return HEAD + NET + "".join(f"{line}\n" for line in lines)


MALFORMED = [
    # (id, text, line, column, fragment of the message or hint)
    ("stray character", net("image -> flatten $ dense(10)"), 5, 22, "unexpected character '$'"),
    ("stray character expects", net("image -> flatten $ dense(10)"), 5, 22, "expected '->', '=>', '}'"),
    ("cut short mid-network", HEAD + "network {\n    image -> flatten\n          -> dense(10)\n", 6, 23,
     "unexpected end of file: the network section is not closed; add '}'"),
    ("cut short mid-call", HEAD + "network {\n    image -> dense(10", 5, 22,
     "the '(' at line 5, column 19 is not closed; add ')'"),
    ("cut short in train", after("train {", "    batch 32"), 8, 13, "the train section is not closed"),
    ("unclosed paren", net("image -> dense(64, relu -> dense(10)"), 5, 29,
     "the '(' at line 5, column 19 is not closed; add ')'"),
    ("unclosed list", after("train {", "    data foo(shape=[1, 2)", "}"), 8, 25,
     "the '[' at line 8, column 20 is not closed; add ']'"),
    ("missing arrow between layers", net("image -> flatten dense(64)"), 5, 22, "expected '->' before 'dense'"),
    ("> instead of ->", net("image > flatten"), 5, 11, "did you mean '->'?"),
    ("> instead of -> mid-chain", net("image -> flatten > dense(3)"), 5, 22, "did you mean '->'?"),
    ("- > with a space", net("image - > flatten"), 5, 11, "write the arrow as '->'"),
    ("=> where -> was meant", net("image -> flatten => dense(10)"), 5, 30, "'=> dense' names a value"),
    ("missing comma", net("image -> dense(64 relu)"), 5, 23, "is a ',' missing before 'relu'?"),
    ("missing comma in metrics", after("metrics accuracy mae"), 7, 18, "is a ',' missing before 'mae'?"),
    (": for = in kwargs", after("optimizer adam(lr: 0.001)"), 7, 18, "write keyword arguments as key=value"),
    ("unterminated string", after("train {", '    data npz("x.npz)', "}"), 8, 14, "unterminated string"),
    ("single quotes", after("train {", "    data npz('x.npz')", "}"), 8, 14, "strings use double quotes"),
    ("bad escape", after("train {", '    data npz("a\\qb")', "}"), 8, 14, "bad escape in string"),
    ("duplicate loss", after("loss mse(digit, probs)", "loss mae(digit, probs)"), 8, 1,
     "a second 'loss' statement; the first is at line 7"),
    ("duplicate model", after("model other"), 7, 1, "a second 'model' statement; the first is at line 1"),
    ("duplicate network", after("network { image -> relu }"), 7, 1, "a second 'network' statement"),
    ("missing model", "input image: f32[2]\n" + NET, 1, 1, "no 'model' statement"),
    ("missing network", HEAD + "loss mse(digit, probs)\n", 4, 23, "the spec has no 'network' section"),
    ("missing input", "model m\n" + NET, 4, 2, "the spec declares no input"),
    ("empty file", "", 1, 1, "no 'model' statement"),
    ("only comments", "# nothing here\n", 1, 1, "no 'model' statement"),
    ("misspelt section keyword", HEAD + "netwrok {\n    image -> flatten\n}\n", 4, 1,
     "unknown statement 'netwrok'; did you mean 'network'?"),
    ("keyword with a suffix", HEAD + "networks {\n    image -> flatten\n}\n", 4, 1, "did you mean 'network'?"),
    ("misspelt target option", "model m\ninput x: f32[2]\ntarget d: int[] clases 10\n" + NET, 3, 17,
     "unknown word 'clases'; did you mean 'classes'?"),
    ("bad dtype", "model m\ninput image: f23[28, 28]\n" + NET, 2, 14, "unknown dtype 'f23'; did you mean 'f32'?"),
    ("negative dimension", "model m\ninput image: f32[-2]\n" + NET, 2, 18, "positive whole number"),
    ("fraction over zero", after("train {", "    data mnist(scale=1/0)", "}"), 8, 22, "division by zero in '1/0'"),
    ("=> as comparator", after("expect {", "    test.accuracy => 0.97", "}"), 8, 19, "did you mean '>='?"),
    ("= as comparator", after("expect {", "    test.accuracy = 0.97", "}"), 8, 19, "did you mean '=='?"),
    ("!= as comparator", after("expect {", "    test.accuracy != 0.97", "}"), 8, 19,
     "unexpected character '!'; expected a comparison (>=, >, <=, <, ==)"),
    ("<=> as comparator", after("expect {", "    train.loss <=> 0.5", "}"), 8, 18,
     "expected a number but found '>'"),
    ("error in a chain from a value named input",
     "model m\ninput input: f32[2]\nnetwork {\n    input -> dense(10) > x\n}\n", 4, 24, "did you mean '->'?"),
    ("expectation without split", after("expect {", "    accuracy >= 0.9", "}"), 8, 14, "expected '.'"),
    ("empty network", HEAD + "network {\n}\n", 4, 1, "the network section is empty"),
    ("chain with no links", net("image"), 6, 1, "a chain needs at least one layer"),
    ("chain starting with ->", net("-> dense(10)"), 5, 5, "a new chain such as 'image -> dense(10)'"),
    ("number where a name is needed", "model 3\n", 1, 7, "expected a name but found the number 3"),
    ("number as bind name", net("image -> dense(10) => 3"), 5, 27, "expected a name for the value"),
    ("number in tuple source", net("(image, 3) -> add"), 5, 13, "expected a name but found the number 3"),
    ("tuple of one", net("(image) -> add"), 5, 11, "a tuple source has two or more names"),
    ("call paren on the next line", net("image -> dense", "(10)"), 6, 6, "put the '(' on the same line"),
    ("positional after keyword", after("optimizer adam(lr=0.1, 3)"), 7, 24,
     "a positional argument after a keyword argument"),
    ("loss without a call", after("loss"), 7, 5, "expected a loss such as"),
    ("setting without a value", after("train {", "    batch", "}"), 9, 1, "expected a value"),
    ("network not closed before loss", HEAD + "network {\n    image -> dense(10)\nloss mse(digit, probs)\n", 6, 1,
     "the network section is not closed before 'loss'"),
    ("train not closed before expect", after("train {", "    batch 32", "loss mse(digit, probs)", "expect {", "}"),
     9, 1, "the train section is not closed before 'loss'"),
    ("extra closing brace", after("}"), 7, 1, "expected a new statement (model, input"),
    ("missing colon in input", "model m\ninput image f32[2]\n" + NET, 2, 13, "expected ':' but found 'f32'"),
    ("classes not a whole number", "model m\ninput x: f32[2]\ntarget d: int[] classes 2.5\n" + NET, 3, 25,
     "'classes' must be a positive whole number"),
    ("unicode arrow", net("image → flatten"), 5, 11, "unexpected character '→'"),
]


@pytest.mark.parametrize("text, line, column, fragment", [case[1:] for case in MALFORMED],
                         ids=[case[0] for case in MALFORMED])
def test_malformed(text, line, column, fragment):
    with pytest.raises(SpecError) as info:
        parse(text, "bad.model")
    err = info.value
    shown = str(err)
    assert (err.line, err.column) == (line, column), shown
    assert fragment in shown, shown
    assert err.source == ast.Source(text, "bad.model")
    assert shown.startswith(f"bad.model:{line}:{column}: error: ")
    caret_line = shown.splitlines()[2]
    assert caret_line.strip().startswith("^") and caret_line.index("^") == len(f"{line:>4} | ") + column - 1
    for leak in ("__ANON", "RULE", "Token(", "$END", "CALL_OPEN", "LPAR", "NAME"):
        assert leak not in shown, shown


def test_every_cut_and_deletion_gives_a_clean_error():
    """Truncate the MNIST spec anywhere, or drop any one character: a SpecError, never a crash or a leak."""
    for i in range(0, len(MNIST), 3):
        for text in (MNIST[:i], MNIST[:i] + MNIST[i + 1:]):
            try:
                parse(text)
            except SpecError as err:
                shown = str(err)
                assert err.pos is not None and err.pos.line >= 1 and "^" in shown, shown
                assert not any(leak in shown for leak in ("__ANON", "RULE", "Token(", "$END")), shown
