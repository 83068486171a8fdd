"""A grammar fuzzer: whatever the spec text, `modelc check` ends in success or a located
error, never a traceback.

Three property tests (hypothesis, derandomized, each within its share of a time box):
specs generated over the grammar (`modelc/grammar/modelc.lark`) with known and junk
names, extreme numbers, strings, lists, deep nesting and odd characters; mutations of
every spec in `specs/`; and a few hundred of both through `modelc.cli.main(["check"])`.
Every crash found is saved in `tests/data/fuzz/specs/` (named by the exception and the
place it was raised), and a plain test runs each corpus file through check.
"""
from __future__ import annotations

import contextlib
import io
import random
import re
import time
import traceback
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelc import cli
from modelc.compiler.build import build_program
from modelc.compiler.catalog import LOSSES, METRICS, OPTIMIZERS, SCHEDULES
from modelc.compiler.layers import LAYER_ALIASES, LAYERS
from modelc.errors import ModelcError, SpecError
from modelc.grammar.parser import parse
from modelc.runtime import data as data_sources
from modelc.runtime import training

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "data" / "fuzz" / "specs"
SPECS = sorted((ROOT / "specs").glob("*.model"))
FILENAME = "fuzz.model"

# The time box of the three property tests, in seconds (the whole file: about 75 s here).
BUDGET = {"generated": 30.0, "mutated": 30.0, "cli": 12.0}
CASES = {"generated": 6000, "mutated": 6000, "cli": 300}

# ---------------------------------------------------------------- running one case

# Corpus cases whose crash is outside the spec side's files: {file name: the cause and where}.
KNOWN = {}


def check(text: str) -> None:
    """What `modelc check` runs on one spec; a ModelcError must be located in its file."""
    try:
        program = build_program(parse(text, FILENAME))
        train = training.settings(program.spec)
        training.check_expectations_static(program.spec, program.shown_names, train)
    except SpecError as err:
        assert_located(err, text)
    except ModelcError as err:
        assert str(err).startswith("error: ") and err.message


def assert_located(err: SpecError, text: str) -> None:
    assert err.source is not None and err.source.filename == FILENAME, (err.source, str(err))
    assert err.pos is not None, str(err)
    lines = err.source.lines()
    assert 1 <= err.pos.line <= len(lines), (err.pos, len(lines), str(err))
    assert 1 <= err.pos.column <= len(lines[err.pos.line - 1]) + 1, (err.pos, str(err))
    shown = str(err)
    assert shown.startswith(f"{FILENAME}:{err.pos.line}:{err.pos.column}: error: ") and "<spec>" not in shown


def run_case(text: str) -> None:
    """`check`, and on any other exception save the spec to the corpus and fail, showing it."""
    try:
        check(text)
    except Exception as exc:         # noqa: BLE001 - any exception but a located error is the bug
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        where = f"{Path(frame.filename).stem}-{frame.lineno}"
        name = f"crash-{type(exc).__name__}-{where}.model"
        CORPUS.mkdir(parents=True, exist_ok=True)
        (CORPUS / name).write_text(text, encoding="utf-8", errors="surrogatepass")
        pytest.fail(f"{type(exc).__name__}: {exc}\nsaved as {CORPUS / name}\n--- spec ---\n{text}\n---\n"
                    + "".join(traceback.format_exception(exc)), pytrace=False)


class _Box:
    """Each property test stops doing work once its share of the time box is spent."""
    started: dict[str, float] = {}

    @classmethod
    def open(cls, name: str) -> bool:
        start = cls.started.setdefault(name, time.monotonic())
        return time.monotonic() - start < BUDGET[name]


def _settings(name: str):
    return settings(max_examples=CASES[name], derandomize=True, deadline=None, database=None,
                    suppress_health_check=list(HealthCheck), print_blob=False)


# ---------------------------------------------------------------- generating specs over the grammar

def _option_names():
    defs = list(LAYERS.values()) + list(LOSSES.values()) + list(OPTIMIZERS.values()) + list(METRICS.values())
    names = {p.name for d in defs for p in d.params}
    names |= {p.name for params in SCHEDULES.values() for p in params}
    names |= {p.name for s in data_sources.DATA_SOURCES.values() for p in s.params}
    return sorted(names | {"activation", "lr", "from_logits", "temperature"})


LAYER_NAMES = sorted(LAYERS) + sorted(LAYER_ALIASES)
CALLEES = sorted(set(LAYER_NAMES) | set(LOSSES) | set(OPTIMIZERS) | set(METRICS) | set(SCHEDULES)
                 | set(data_sources.DATA_SOURCES) | {"split", "true", "false", "test", "none"})
SOURCES = sorted(data_sources.DATA_SOURCES)
OPTIONS = _option_names()
WORDS = ("model", "input", "target", "network", "loss", "optimizer", "metrics", "train", "expect",
         "classes", "onehot", "f32", "int", "float32", "i64", "x", "y", "probs", "h")
EXTREMES = ("0", "-0", "1", "-1", "2", "3", "10", ".5", "0.5", "1e-3", "1/255", "1/3", "1/0", "0/0", "-1/0",
            "1e309", "-1e309", "1e309/1e309", "1e308/1e-308", "1e-400", "3.4028235e38", "3.5e38", "1e39",
            "2147483647", "2147483648", "4294967296", "9223372036854775808", "9" * 40, "1" + "0" * 100,
            "1" + "0" * 400, "100000000", "65536", "46341", "0.99", "1.0", "1e38")

ODD = "\x00\x01\x07\x0b\x0c\x1b\x7f\x85\xa0\u2028\u2029\ufeff\U0001f600é→—\\\"'#{}()[]"
SEPARATORS = (" ", "\n", "  ", "\n\n", "\t", "\r\n", " # note\n", "\x0c", "\n# \x85\u2028 é\n")
PLAIN_LAYERS = ("flatten", "relu", "softmax", "dropout(0.5)", "dense(3, softmax)", "dense(1, sigmoid)",
                "batch_normalization", "reshape([2, 2, 1])", "conv2d(4, 3, relu, padding=same)", "max_pooling2d",
                "global_average_pooling2d", "layer_normalization", "tanh", "dense(16, relu)")


class Grammar:
    """Random text over the grammar of `modelc.lark`, from one seeded generator: mostly specs of
    the usual shape (so that build, settings and expectations run), with statements left out,
    repeated, shuffled or replaced by junk, and junk of every kind inside them."""

    def __init__(self, rng: random.Random):
        self.r = rng
        self.wild = rng.random() < 0.5      # a tame spec has sane values, but for one hazard
        self.hazards = 0 if self.wild else 1

    def hazard(self, p: float) -> bool:
        """Junk with chance p in a wild spec; in a tame one, at most one piece of junk."""
        if self.wild:
            return self.r.random() < p
        if self.hazards and self.r.random() < p / 4:
            self.hazards -= 1
            return True
        return False

    def pick(self, *choices):
        return self.r.choice(choices)

    def odd_text(self, n=8) -> str:
        r = self.r
        return "".join(r.choice(ODD) if r.random() < 0.3 else chr(r.choice((r.randint(32, 126), r.randint(0, 0x2FFF))))
                       for _ in range(r.randint(0, n))).replace("\n", " ")

    def name(self) -> str:
        r = self.r
        if not self.hazard(0.5):
            return r.choice(CALLEES)
        if r.random() < 0.4:
            return r.choice(WORDS)
        first = r.choice("abcdefghijklmnopqrstuvwxyzABCXYZ_")
        return first + "".join(r.choice("abcdefghijklmnopqrstuvwxyz0123456789_") for _ in range(r.randint(0, 10)))

    def number(self) -> str:
        r = self.r
        if not self.hazard(0.5):
            return r.choice(("1", "2", "3", "0.5", "0.1", "0.001", "1/255", "0.9", "10", "32", "0"))
        roll = r.random()
        if roll < 0.5:
            return r.choice(EXTREMES)
        if roll < 0.7:
            return str(r.randint(-10 ** r.randint(1, 30), 10 ** r.randint(1, 30)))
        if roll < 0.85:
            return repr(r.uniform(-1, 1) * 10.0 ** r.randint(-320, 308)).replace("e+", "e")
        return f"{r.randint(-99, 99)}/{r.randint(-99, 99)}"

    def string(self) -> str:
        if not self.hazard(0.6):
            return self.pick('","', '";"', '"data.csv"', '"x"')
        if self.r.random() < 0.5:
            return self.pick('""', '"\\n"', '"\\r"', '"\\""', '"\\u0000"', '"\\q"', '";;"')
        return '"' + self.odd_text().replace("\\", "\\\\").replace('"', '\\"') + '"'

    def value(self, depth=0) -> str:
        r = self.r
        roll = r.random()
        if self.hazard(0.04):
            opener = self.pick("[", "dense(", "(", "relu(")
            n = r.randint(0, 80)
            return opener * n + "1" + ({"[": "]"}.get(opener, ")") * n if r.random() < 0.8 else "")
        if depth > 3 or roll < 0.6:
            return self.pick(self.number, self.number, self.string, self.name)()
        if roll < 0.8:
            return "[" + ", ".join(self.value(depth + 1) for _ in range(r.randint(0, 4))) + "]"
        return self.call(depth + 1)

    def option(self) -> str:
        return self.r.choice(OPTIONS) if self.r.random() < 0.8 else self.name()

    def call(self, depth=0, callee=None) -> str:
        r = self.r
        args = [self.value(depth) if r.random() < 0.5 else f"{self.option()}={self.value(depth)}"
                for _ in range(r.randint(0, 4))]
        if not self.hazard(0.3):        # positional arguments first
            args.sort(key=lambda a: re.match(r"\A\w+=", a) is not None)
        return f"{callee or self.name()}({', '.join(args)})"

    def tensor(self) -> str:
        r = self.r
        dims = [r.choice(EXTREMES) if self.hazard(0.3) else str(r.randint(1, 40)) for _ in range(r.randint(1, 3))]
        dtype = self.pick("f32", "int", "float32", "i32", "f64", "x") if self.hazard(0.3) else "f32"
        return f"{dtype}[{', '.join(dims)}]"

    def target(self) -> str:
        if not self.wild:
            return "target y: f32[3] onehot" if self.r.random() < 0.7 else "target y: int[] classes 3"
        if not self.hazard(0.4):
            return self.pick("target y: int[] classes 3", "target y: f32[3] onehot", "target y: f32[1]",
                             "target y: int[] classes 2")
        options = [self.pick("onehot", "classes 3", "classes 1", "classes 1e309", "classes 0", "classes -2",
                             f"classes {self.number()}") for _ in range(self.r.randint(0, 2))]
        return f"target y: {self.tensor()} " + " ".join(options)

    def layer(self) -> str:
        r = self.r
        roll = r.random()
        size = r.choice(EXTREMES) if self.hazard(0.3) else str(r.randint(1, 64))
        if roll < 0.45:
            return r.choice(PLAIN_LAYERS)
        if roll < 0.6:
            return f"dense({size}, {self.pick('relu', 'softmax', 'sigmoid', 'linear', 'tanh')})"
        if roll < 0.75:
            return f"{self.pick('conv2d', 'max_pooling2d', 'average_pooling2d')}({size}, {self.number()})"
        if roll < 0.9 or not self.hazard(0.5):
            return self.call(callee=r.choice(LAYER_NAMES))
        return self.call()

    def chain(self) -> str:
        if not self.wild and self.r.random() < 0.7:     # the usual shape: x -> ... => probs, 3 classes
            links = " -> ".join(self.layer() for _ in range(self.r.randint(0, 3)))
            return f"x -> {links + ' -> ' if links else ''}flatten -> dense(3, softmax) => probs"
        source = self.pick("x", "x", "x", "(x, x)", "(x, h)", "h", "y", "nope")
        links = " -> ".join(self.layer() for _ in range(self.r.randint(1, 5)))
        return f"{source} -> {links} => {self.pick('probs', 'probs', 'probs', 'h', 'x')}"

    def section(self, word, lines) -> str:
        return word + " {\n    " + "\n    ".join(lines) + "\n}"

    def setting(self) -> str:
        r = self.r
        if r.random() < 0.3:
            return "data " + self.call(callee=r.choice(SOURCES))
        key = r.choice(list(training.SETTINGS) + ["batch_size", "lr", "junk"])
        return f"{key} {self.value()}"

    def expectation(self) -> str:
        return (f"{self.pick('test', 'val', 'train', 'tset')}.{self.pick('accuracy', 'loss', 'acc', 'mae', 'junk')} "
                f"{self.pick('>=', '>', '<=', '<', '==')} {self.number()}")

    def statements(self) -> list[str]:
        r = self.r
        return [
            f"model {self.name()}", f"input x: {self.tensor()}", self.target(),
            self.section("network", [self.chain() for _ in range(r.choice((0, 1, 1, 2, 3) if self.wild else (1, 1, 2)))]),
            f"loss {r.choice(('categorical_crossentropy',) * 3 + tuple(sorted(LOSSES)))}(y, probs)"
            if not self.hazard(0.3) else f"loss {self.call()}",
            f"optimizer {r.choice(sorted(OPTIMIZERS))}(lr={self.number()})" if not self.hazard(0.5)
            else "optimizer " + self.call(callee=r.choice(sorted(OPTIMIZERS)) if r.random() < 0.8 else None),
            "metrics " + ("accuracy" if not self.hazard(0.5) else ", ".join(
                r.choice(sorted(METRICS)) if r.random() < 0.7 else self.call() for _ in range(r.randint(1, 3)))),
            self.section("train", [self.setting() for _ in range(r.randint(0, 4))]),
            self.section("expect", [self.expectation() for _ in range(r.randint(0, 3))]),
        ]

    def junk_statement(self) -> str:
        r = self.r
        if r.random() < 0.3:
            return f"# {self.odd_text(20)}"
        if r.random() < 0.5:
            return self.pick(*self.statements())
        return " ".join(self.pick(self.name, self.number, self.string,
                                  lambda: r.choice("{}()[]->=>.,:/"))() for _ in range(r.randint(0, 6)))

    def spec(self) -> str:
        r = self.r
        parts = self.statements()
        for _ in range(r.choice((0, 1, 2, 3)) if self.wild else 0):
            i = r.randrange(len(parts))
            action = self.pick("drop", "add", "swap", "replace")
            if action == "drop" and len(parts) > 1:
                parts.pop(i)
            elif action == "add":
                parts.insert(i, self.junk_statement())
            elif action == "swap":
                j = r.randrange(len(parts))
                parts[i], parts[j] = parts[j], parts[i]
            else:
                parts[i] = self.junk_statement()
        return "".join(part + r.choice(SEPARATORS) for part in parts)


# ---------------------------------------------------------------- mutating the specs of specs/

TOKEN = re.compile(r"\s+|#[^\n]*|\"(?:[^\"\\\n]|\\.)*\"|-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|\w+|->|=>|>=|<=|==|.",
                   re.S)
SPEC_TOKENS = [TOKEN.findall(p.read_text(encoding="utf-8")) for p in SPECS]


def mutate(rng: random.Random) -> str:
    """A spec of specs/ with 1-4 mutations: tokens deleted, duplicated, swapped, numbers made
    extreme, words replaced, random characters inserted, the text truncated."""
    g = Grammar(rng)
    tokens = list(rng.choice(SPEC_TOKENS))
    for _ in range(rng.randint(1, 4)):
        if not tokens:
            break
        i = rng.randrange(len(tokens))
        action = g.pick("delete", "duplicate", "swap", "number", "number", "insert", "truncate", "name")
        if action == "delete":
            del tokens[i]
        elif action == "duplicate":
            tokens.insert(i, tokens[i])
        elif action == "swap":
            j = rng.randrange(len(tokens))
            tokens[i], tokens[j] = tokens[j], tokens[i]
        elif action == "number":
            numbers = [k for k, t in enumerate(tokens) if t[:1].isdigit() or t[:2] in ("-1", "-0", ".5")]
            if numbers:
                tokens[rng.choice(numbers)] = g.number()
        elif action == "insert":
            tokens.insert(i, g.pick(g.odd_text, g.value, g.name, lambda: rng.choice(ODD))())
        elif action == "truncate":
            tokens = tokens[:i]
        else:
            words = [k for k, t in enumerate(tokens) if t[:1].isalpha()]
            if words:
                tokens[rng.choice(words)] = g.name()
    return "".join(tokens)


seeds = st.integers(0, 2 ** 64 - 1)


# ---------------------------------------------------------------- the properties

@_settings("generated")
@given(seeds)
def test_generated_specs_check_or_fail_located(seed):
    if _Box.open("generated"):
        run_case(Grammar(random.Random(seed)).spec())


@_settings("mutated")
@given(seeds)
def test_mutated_specs_check_or_fail_located(seed):
    if _Box.open("mutated"):
        run_case(mutate(random.Random(seed)))


@_settings("cli")
@given(seeds, st.binary(max_size=3), st.integers(0, 400))
def test_check_command_exits_0_or_2(tmp_path_factory, seed, raw, at):
    if not _Box.open("cli"):
        return
    rng = random.Random(seed)
    text = Grammar(rng).spec() if rng.random() < 0.5 else mutate(rng)
    data = text.encode("utf-8", errors="surrogatepass")
    data = data[:at] + raw + data[at:]               # bytes that may not be UTF-8
    path = tmp_path_factory.mktemp("cli") / FILENAME
    path.write_bytes(data)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(["check", str(path)])
    assert code in (0, 2), (code, data, err.getvalue())
    assert "Traceback" not in err.getvalue()
    if code == 2:
        assert err.getvalue().startswith((f"{path}:", "error: ")), err.getvalue()


# ---------------------------------------------------------------- the corpus of past crashes

def _corpus():
    for path in sorted(CORPUS.glob("*.model")):
        marks = [pytest.mark.xfail(strict=True, reason=KNOWN[path.name])] if path.name in KNOWN else []
        yield pytest.param(path, id=path.stem, marks=marks)


@pytest.mark.parametrize("path", list(_corpus()))
def test_past_crash_checks_or_fails_located(path):
    check(path.read_bytes().decode("utf-8", errors="surrogatepass"))


def test_the_corpus_holds_cases():
    assert len(list(CORPUS.glob("*.model"))) >= 5
