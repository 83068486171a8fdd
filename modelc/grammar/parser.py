"""Spec text -> `ast.Spec`, and every syntax mistake -> one located `SpecError`.

Lark does the parsing (LALR, contextual lexer, grammar in `modelc.lark`); this
module builds the AST from Lark's tree and checks what the grammar cannot: finite
numbers, sizes, and how deeply calls and lists nest (before anything recurses).
`syntax_errors.py` words Lark's exceptions; `files.py` reads spec files.
"""
from __future__ import annotations

import json
import math
import sys
from functools import lru_cache
from pathlib import Path

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import UnexpectedInput, VisitError

from modelc.compiler import limits
from modelc.compiler.limits import MAX_ELEMENTS, MAX_NESTING
from modelc.errors import SpecError, unknown
from modelc.grammar import ast
from modelc.grammar.files import read_spec
from modelc.grammar.syntax_errors import STATEMENTS, syntax_error
from modelc.grammar.syntax_errors import tok_pos as _tok_pos

__all__ = ["parse", "parse_file"]

DTYPES = {"f32": "f32", "float32": "f32", "float": "f32",
          "int": "int", "i32": "int", "int32": "int", "i64": "int", "int64": "int"}

# Top-level statements that a spec has at most once.
SINGLE = ("model", "network", "loss", "optimizer", "metrics", "train", "expect")
NESTING = ("CALL_OPEN", "LPAR", "LSQB")       # what MAX_NESTING counts: calls, tuples and lists


class _CallParens:
    """Post-lexer: tell a call's '(' from a tuple's '(' and keep words whole.

    A '(' right after a name on the same line opens that call's arguments
    (`dense(64)`, `dense (64)`); any other '(' opens a tuple source. Without
    this, `-> relu` followed by `(h, g) -> add` on the next line is a
    shift/reduce conflict that LALR would silently resolve as `relu(h, g)`.
    NAME is in every lexer state so that `networks` is one unexpected word
    rather than the keyword `network` followed by `s`.
    """

    always_accept = ("NAME", "LPAR")

    def process(self, stream):
        prev = None
        depth = 0
        for tok in stream:
            if tok.type == "LPAR" and prev is not None and prev.type == "NAME" and prev.end_line == tok.line:
                tok = Token.new_borrow_pos("CALL_OPEN", tok.value, tok)
            if tok.type in NESTING:
                depth += 1
                if depth > MAX_NESTING:
                    raise SpecError(f"calls and lists nest at most {MAX_NESTING} deep; this "
                                    f"'{tok}' opens level {depth}", _tok_pos(tok),
                                    hint="a spec needs only a few levels; close the brackets sooner")
            elif tok.type in ("RPAR", "RSQB") and depth:
                depth -= 1
            prev = tok
            yield tok


@lru_cache(maxsize=None)
def _lark() -> Lark:
    """Build the parser once; the grammar is package data beside this file."""
    grammar = (Path(__file__).with_name("modelc.lark")).read_text(encoding="utf-8")
    return Lark(grammar, parser="lalr", lexer="contextual", postlex=_CallParens(),
                propagate_positions=True, maybe_placeholders=True)


# ---------------------------------------------------------------- public API

def parse(text: str, filename: str = "<spec>") -> ast.Spec:
    """Parse spec text; raise one `SpecError` (with the source attached) on any mistake."""
    source = ast.Source(text, filename)
    try:
        tree = _lark().parse(text)
        return _Build(source).transform(tree)
    except VisitError as e:
        if isinstance(e.orig_exc, SpecError):
            raise e.orig_exc.located(source) from None
        raise
    except UnexpectedInput as e:
        raise syntax_error(e, source) from None
    except SpecError as e:      # from the post-lexer
        raise e.located(source) from None


def parse_file(path) -> ast.Spec:
    """Read (within the limits of `files.read_spec`) and parse a `.model` file."""
    text, filename = read_spec(path)
    return parse(text, filename)


# ---------------------------------------------------------------- tree -> AST

def _meta_pos(meta) -> ast.Pos:
    return ast.Pos(meta.line, meta.column, meta.end_line, meta.end_column)


def _ident(tok: Token) -> ast.Ident:
    return ast.Ident(str(tok), _tok_pos(tok))


def _present(children) -> list:
    """Drop the None placeholders Lark puts for absent `[optional]` parts."""
    return [c for c in children if c is not None]


@v_args(meta=True)
class _Build(Transformer):
    """Lark tree -> AST dataclasses; checks the few things the grammar cannot.

    Statement rules return `(keyword, value, pos)` so that `start` can assemble
    the `Spec`, catch repeated statements and say what is missing.
    """

    def __init__(self, source: ast.Source):
        super().__init__(visit_tokens=False)
        self.spec_source = source

    def _keyword_pos(self, meta, word: str) -> ast.Pos:
        return ast.Pos(meta.line, meta.column, meta.line, meta.column + len(word))

    # statements
    def start(self, meta, statements):
        first: dict[str, ast.Pos] = {}
        parts: dict[str, list] = {word: [] for word in STATEMENTS}
        for word, value, pos in statements:
            if word in SINGLE and word in first:
                where = first[word]
                raise SpecError(f"a second '{word}' statement; the first is at line {where.line}",
                                pos, hint=f"a spec has one '{word}'; remove or merge one of them")
            first.setdefault(word, pos)
            parts[word].append(value)
        if not parts["model"]:
            raise SpecError("the spec has no 'model' statement", ast.Pos(1, 1),
                            hint="start the file with 'model <name>', e.g. 'model mnist'")
        if not parts["input"]:
            raise SpecError("the spec declares no input", self._end(),
                            hint="add a line such as 'input image: f32[28, 28]'")
        if not parts["network"]:
            first_input = parts["input"][0].name.name
            raise SpecError("the spec has no 'network' section", self._end(),
                            hint=f"add 'network {{ {first_input} -> dense(10) }}' with the layers")

        def one(word):
            return parts[word][0] if parts[word] else None

        return ast.Spec(name=one("model"), inputs=parts["input"], targets=parts["target"],
                        network=one("network"), loss=one("loss"), optimizer=one("optimizer"),
                        metrics=one("metrics") or [], train=one("train") or [],
                        expect=one("expect") or [], source=self.spec_source, pos=ast.Pos(1, 1))

    def _end(self) -> ast.Pos:
        """The end of the file, for things that are missing altogether."""
        lines = self.spec_source.lines()
        return ast.Pos(len(lines), len(lines[-1]) + 1)

    def model_stmt(self, meta, children):
        return "model", _ident(children[0]), self._keyword_pos(meta, "model")

    def input_stmt(self, meta, children):
        name, type_ = children
        return "input", ast.InputDecl(_ident(name), type_, _meta_pos(meta)), self._keyword_pos(meta, "input")

    def target_stmt(self, meta, children):
        name, type_, *options = children
        decl = ast.TargetDecl(_ident(name), type_, pos=_meta_pos(meta))
        for option, value, pos in options:
            if option == "onehot":
                if decl.onehot:
                    raise SpecError("'onehot' is given twice", pos)
                decl.onehot = True
            else:
                if decl.classes is not None:
                    raise SpecError("'classes' is given twice", pos)
                if not isinstance(value.value, int) or value.value < 1:
                    raise SpecError("'classes' must be a positive whole number", value.pos,
                                    hint="e.g. 'classes 10'")
                decl.classes = value
        return "target", decl, self._keyword_pos(meta, "target")

    def onehot(self, meta, children):
        return "onehot", True, _meta_pos(meta)

    def classes(self, meta, children):
        tok = children[0]
        return "classes", ast.Number(_number_value(tok), str(tok), _tok_pos(tok)), _meta_pos(meta)

    def tensor_type(self, meta, children):
        dtype, *dims = _present(children)
        if str(dtype) not in DTYPES:
            raise unknown("dtype", str(dtype), DTYPES, _tok_pos(dtype))
        for dim in dims:
            if not isinstance(dim.value, int) or dim.value < 1:
                raise SpecError(f"a dimension must be a positive whole number, not {dim.text}", dim.pos,
                                hint="shapes are per sample, e.g. f32[28, 28]; use f32[] for a scalar")
            if dim.value > MAX_ELEMENTS:
                raise SpecError(f"the dimension {limits.count(dim.value)} is too large; a tensor holds at most "
                                f"{MAX_ELEMENTS:,} values per sample", dim.pos,
                                hint="shapes are per sample, e.g. f32[28, 28]")
        return ast.TensorType(DTYPES[str(dtype)], tuple(d.value for d in dims), _meta_pos(meta))

    def network_stmt(self, meta, chains):
        if not chains:
            raise SpecError("the network section is empty", _meta_pos(meta),
                            hint="add a chain of layers, e.g. 'image -> flatten -> dense(10, softmax) => probs'")
        return "network", chains, self._keyword_pos(meta, "network")

    def chain(self, meta, children):
        sources, *links = children
        return ast.Chain(sources, links, _meta_pos(meta))

    def source(self, meta, names):
        return [_ident(n) for n in names]

    def link(self, meta, children):
        return children[0]

    def bind(self, meta, children):
        return ast.Bind(_ident(children[0]), _meta_pos(meta))

    def loss_stmt(self, meta, children):
        return "loss", children[0], self._keyword_pos(meta, "loss")

    def optimizer_stmt(self, meta, children):
        return "optimizer", children[0], self._keyword_pos(meta, "optimizer")

    def metrics_stmt(self, meta, calls):
        return "metrics", list(calls), self._keyword_pos(meta, "metrics")

    def train_stmt(self, meta, settings):
        return "train", settings, self._keyword_pos(meta, "train")

    def setting(self, meta, children):
        key, value = children
        return ast.Setting(_ident(key), value, _meta_pos(meta))

    def expect_stmt(self, meta, entries):
        return "expect", entries, self._keyword_pos(meta, "expect")

    def expectation(self, meta, children):
        split, metric, op, value = children
        return ast.Expectation(_ident(split), _ident(metric), str(op), value, _meta_pos(meta))

    # calls and values
    def call(self, meta, children):
        name, args = children
        return ast.Call(_ident(name), args or [], _meta_pos(meta))

    applied = call

    def arguments(self, meta, children):
        args = [a for a in children if isinstance(a, ast.Arg)]
        seen_keyword = None
        for arg in args:
            if arg.key is not None:
                seen_keyword = arg
            elif seen_keyword is not None:
                raise SpecError("a positional argument after a keyword argument", arg.pos,
                                hint=f"put positional arguments first, before '{seen_keyword.key.name}='")
        return args

    def arg(self, meta, children):
        return ast.Arg(None, children[0], _meta_pos(meta))

    def keyword_arg(self, meta, children):
        key, value = children
        return ast.Arg(_ident(key), value, _meta_pos(meta))

    def name(self, meta, children):
        word = str(children[0])
        if word in ("true", "false"):
            return ast.Bool(word == "true", _meta_pos(meta))
        return _ident(children[0])

    def string(self, meta, children):
        tok = children[0]
        try:
            value = json.loads(tok, strict=False)
        except ValueError:
            raise SpecError("bad escape in string", _tok_pos(tok),
                            hint='strings understand \\" \\\\ \\n \\t and \\uXXXX') from None
        return ast.String(value, _tok_pos(tok))

    def list(self, meta, children):
        return ast.ListLit(_present(children), _meta_pos(meta))

    def number(self, meta, children):
        text = self.spec_source.text[meta.start_pos:meta.end_pos]
        pos = _meta_pos(meta)
        values = [_number_value(t) for t in children]
        if len(values) == 1:
            return ast.Number(values[0], text, pos)
        top, bottom = values
        if bottom == 0:
            raise SpecError(f"division by zero in '{text}'", pos, hint="a fraction needs a non-zero denominator")
        try:
            value = top / bottom
        except OverflowError:
            value = math.inf
        if not math.isfinite(value):
            raise _too_large(text, pos)
        return ast.Number(value, text, pos)


def _number_value(tok: Token) -> int | float:
    """An int when written as one (`10`, `-1`), exactly, else a float (`0.5`, `1e-3`); a number
    too large to hold as a float (`1e309`, or an integer of 400 digits) is a located error."""
    text = str(tok)
    value = int(text) if text.lstrip("-").isdigit() else float(text)
    try:
        finite = math.isfinite(value)       # an int too large for a float overflows here
    except OverflowError:
        finite = False
    if not finite:
        raise _too_large(text, _tok_pos(tok))
    return value


def _too_large(text: str, pos: ast.Pos) -> SpecError:
    shown = text if len(text) <= 24 else f"the {len(text)}-character number {text[:8]}..."
    return SpecError(f"{shown} is too large for a number modelc can hold; numbers must be finite", pos,
                     hint=f"a number is at most about {sys.float_info.max:.3g} in size")
