"""The spec side never crashes: numbers finite (and float32 where targets use them), sizes
counted exactly against `compiler/limits.py`, nesting bounded before anything recurses,
spec files checked before they are read, lines counted one way, and every error located
in the spec's own file."""
from __future__ import annotations

import os
import stat

import pytest

from modelc import cli
from modelc.compiler import limits
from modelc.compiler.build import build_program
from modelc.errors import ModelcError, SpecError
from modelc.grammar.parser import parse, parse_file

SPEC = """\
model m
input x: f32[{dims}]
target y: f32[3] onehot
network {{
    x -> {net} => probs
}}
loss categorical_crossentropy(y, probs)
optimizer {opt}
"""


def spec(dims="4", net="dense(3, softmax)", opt="adam(lr=0.001)") -> str:
    return SPEC.format(dims=dims, net=net, opt=opt)


def error_of(text: str, filename: str = "t.model") -> SpecError:
    with pytest.raises(SpecError) as info:
        build_program(parse(text, filename))
    err = info.value
    assert err.source is not None and err.source.filename == filename
    assert err.pos is not None and err.pos.line >= 1 and err.pos.column >= 1
    return err


def column_of(text: str, line: int, needle: str) -> int:
    return text.split("\n")[line - 1].index(needle) + 1


# ---------------------------------------------------------------- 1. finite numbers

@pytest.mark.parametrize("number", ["1e309", "-1e309", "1e309/1e309", "1e308/1e-308", "1" + "0" * 400])
def test_a_number_too_large_to_hold_is_refused_where_it_is_written(number):
    text = spec(opt=f"adam(lr={number})")
    err = error_of(text)
    assert "too large for a number modelc can hold; numbers must be finite" in err.message
    assert (err.line, err.column) == (8, column_of(text, 8, number.split("/")[0]))


def test_a_fraction_with_zero_below_is_refused():
    err = error_of(spec(opt="adam(lr=1/0)"))
    assert "division by zero" in err.message and err.line == 8


def test_a_float_option_must_fit_float32():
    err = error_of(spec(opt="adam(lr=1e39)"))
    assert "float32" in err.message and "'lr'" in err.message and err.line == 8
    build_program(parse(spec(opt="adam(lr=3e38)")))          # the largest float32 is 3.4e38


def test_an_expectation_cannot_be_infinite():
    err = error_of(spec() + "expect {\n    test.loss <= 1e999\n}\n")
    assert "numbers must be finite" in err.message and err.line == 10


@pytest.mark.parametrize("digits", [20, 100])
def test_a_huge_dimension_is_too_large_not_an_overflow(digits):
    err = error_of(spec(dims="1" * digits))
    assert "too large" in err.message and (err.line, err.column) == (2, 14)


def test_huge_units_are_a_located_size_error():
    err = error_of(spec(net="dense(" + "9" * 100 + ") -> dense(3, softmax)"))
    assert "too large" not in err.message and "limit" in err.message and err.line == 5


# ---------------------------------------------------------------- 2. exact sizes against the limits

def test_a_reshape_whose_int64_product_wraps_is_refused():
    # 274177 × 67280421310721 = 2**64 + 1, which int64 arithmetic takes for 1
    err = error_of(spec(dims="1", net="reshape([274177, 67280421310721]) -> flatten -> dense(3, softmax)"))
    assert "cannot reshape" in err.message and err.line == 5


def test_an_input_over_the_element_limit_says_its_size():
    err = error_of(spec(dims="65536, 65536"))
    assert "65,536 × 65,536 = 4,294,967,296 values per sample, 16 GiB as float32" in err.message
    assert f"{limits.MAX_ELEMENTS:,}" in err.message and (err.line, err.column) == (2, 10)


def test_a_layer_output_over_the_element_limit_is_located_at_the_layer():
    text = spec(dims="65536", net="reshape([256, 256, 1]) -> conv2d(40000, 3, padding=same) "
                                  "-> flatten -> dense(3, softmax)")
    err = error_of(text)
    assert "values per sample" in err.message and err.line == 5
    assert err.column == column_of(text, 5, "conv2d")


def test_dense_of_a_hundred_million_units_is_caught_by_check(tmp_path, capsys):
    path = tmp_path / "big.model"
    path.write_text(spec(dims="784", net="dense(100000000) -> dense(3, softmax)"))
    assert cli.main(["check", str(path)]) == 2
    out = capsys.readouterr().err
    assert "784 × 100,000,000 = 78,400,000,000 weights, 292 GiB as float32" in out
    assert f"the limit is {limits.MAX_ELEMENTS:,}" in out and f"{path}:5:" in out
    assert "hint: use fewer units" in out


def test_the_total_weight_count_is_limited():
    text = spec(dims="40000", net="dense(40000) -> dense(40000) -> dense(3, softmax)")
    err = error_of(text)
    assert f"the limit is {limits.MAX_PARAMS:,} weights in all" in err.message
    assert "3,200,040,000 weights" in err.message            # 2 × 40000² and the first bias
    assert err.column == column_of(text, 5, "dense(40000) -> dense(3")


# ---------------------------------------------------------------- 3. nesting

@pytest.mark.parametrize("opener, closer", [("dense(", ")"), ("[", "]")])
def test_nesting_far_beyond_the_limit_is_located_at_the_first_level_too_deep(opener, closer):
    deep = opener * 5000 + closer * 5000
    text = spec(opt=f"adam(lr={deep})")
    err = error_of(text)
    assert f"nest at most {limits.MAX_NESTING} deep" in err.message
    start = column_of(text, 8, "adam(") + len("adam(lr=")
    assert err.line == 8 and err.column == start + len(opener) * (limits.MAX_NESTING - 1) + len(opener) - 1


def test_nesting_within_the_limit_is_no_nesting_error():
    deep = "[" * (limits.MAX_NESTING - 1) + "1" + "]" * (limits.MAX_NESTING - 1)
    err = error_of(spec(opt=f"adam(lr={deep})"))        # a list is no number: an option error
    assert "nest" not in err.message and "'lr' must be" in err.message


# ---------------------------------------------------------------- 4. spec files

def test_a_missing_spec_file_is_not_found(tmp_path):
    with pytest.raises(ModelcError, match="not found"):
        parse_file(tmp_path / "nope.model")


def test_a_directory_is_no_spec(tmp_path):
    with pytest.raises(ModelcError, match="is a directory"):
        parse_file(tmp_path)


def test_a_fifo_is_refused_without_opening_it(tmp_path):
    fifo = tmp_path / "pipe.model"
    os.mkfifo(fifo)                     # nothing ever writes: opening it to read would hang
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    with pytest.raises(ModelcError, match="is not a regular file"):
        parse_file(fifo)


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero")
def test_dev_zero_is_refused_by_check(capsys):
    assert cli.main(["check", "/dev/zero"]) == 2
    assert "is not a regular file" in capsys.readouterr().err


def test_a_file_over_the_size_limit_is_refused(tmp_path):
    path = tmp_path / "huge.model"
    path.write_text("# " + "x" * limits.MAX_SPEC_BYTES)
    with pytest.raises(ModelcError, match="specs are small text files"):
        parse_file(path)


def test_no_more_than_the_limit_and_one_byte_is_read(tmp_path, monkeypatch):
    """Even when the file is larger than its size said (it grew after the check)."""
    from modelc.grammar import files
    path = tmp_path / "grows.model"
    path.write_text("# " + "x" * 100)
    monkeypatch.setattr(files, "MAX_SPEC_BYTES", 10)
    real_stat = os.stat
    monkeypatch.setattr(files.os, "stat", lambda p: os.stat_result(
        real_stat(p)[:6] + (5,) + real_stat(p)[7:]))
    read = []
    real_fdopen = os.fdopen

    def fdopen(fd, mode):
        f = real_fdopen(fd, mode)
        original = f.read
        f.read = lambda n=-1: read.append(n) or original(n)
        return f
    monkeypatch.setattr(files.os, "fdopen", fdopen)
    with pytest.raises(ModelcError, match="specs are small text files"):
        parse_file(path)
    assert read == [11]


def test_a_file_that_is_not_utf8_is_located(tmp_path):
    path = tmp_path / "latin.model"
    path.write_bytes(spec().encode() + b"# caf\xe9\n")
    with pytest.raises(SpecError) as info:
        parse_file(path)
    err = info.value
    assert "not UTF-8" in err.message and (err.line, err.column) == (9, 6)
    assert str(err).startswith(f"{path}:9:6:")


# ---------------------------------------------------------------- 5. one definition of a line

@pytest.mark.parametrize("odd", ["\x0c", "\x85", "\u2028", "\x0b", "\x1c"])
def test_odd_line_breaks_in_comments_do_not_shift_later_lines(odd):
    text = spec().replace("model m\n", f"model m  # one{odd}two\n").replace("adam(lr=0.001)", "adam(lr=-1)")
    err = error_of(text)
    assert err.line == 8 and "8 | optimizer adam(lr=-1)" in str(err)


def test_crlf_line_ends_are_fine():
    text = spec().replace("adam(lr=0.001)", "adam(lr=-1)").replace("\n", "\r\n")
    err = error_of(text)
    shown = str(err).split("\n")
    assert err.line == 8 and shown[1].endswith("8 | optimizer adam(lr=-1)")
    assert shown[2].index("^") == shown[1].index("-1")


# ---------------------------------------------------------------- 6. the file name on later errors

@pytest.mark.parametrize("text, stage", [
    (spec(net="dense(3, softmax) -> dense(0)"), "build"),
    (spec() + "train {\n    batch 0\n}\n", "settings"),
    (spec() + "expect {\n    tset.accuracy >= 0.5\n}\n", "expectations"),
])
def test_errors_after_parsing_name_the_spec_file(tmp_path, capsys, text, stage):
    path = tmp_path / "named.model"
    path.write_text(text)
    assert cli.main(["check", str(path)]) == 2, stage
    err = capsys.readouterr().err
    assert err.startswith(f"{path}:") and "<spec>" not in err


# ---------------------------------------------------------------- 7. data source options (checked by runtime/data)

@pytest.mark.parametrize("delimiter", ['"\\n"', '"\\r"', '"\\""'])
def test_csv_refuses_a_delimiter_that_cannot_separate_fields(delimiter):
    from modelc.runtime import training
    text = spec() + f'train {{\n    data csv(path="d.csv", delimiter={delimiter})\n}}\n'
    with pytest.raises(SpecError, match="delimiter"):
        training.settings(parse(text, "t.model"))
