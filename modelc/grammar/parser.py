"""Spec text -> `ast.Spec`, and every syntax mistake -> one located `SpecError`.

Lark does the parsing (LALR, contextual lexer, grammar in `modelc.lark`); this
module builds the AST from Lark's tree and, above all, turns Lark's exceptions
into messages a person can act on: plain words for what was expected and
found, the spot, and a suggestion where one is likely. Lark's own terminal
names never reach the user.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from lark import Lark, Token, Transformer, Tree, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken, VisitError

from modelc.errors import ModelcError, SpecError, did_you_mean, unknown
from modelc.grammar import ast

__all__ = ["parse", "parse_file"]

DTYPES = {"f32": "f32", "float32": "f32", "float": "f32",
          "int": "int", "i32": "int", "int32": "int", "i64": "int", "int64": "int"}

# Top-level statements in the order a spec usually has them.
STATEMENTS = ("model", "input", "target", "network", "loss", "optimizer", "metrics", "train", "expect")
SINGLE = ("model", "network", "loss", "optimizer", "metrics", "train", "expect")
KEYWORDS = {word.upper(): word for word in STATEMENTS + ("classes", "onehot")}

OPENERS = {"LBRACE": "}", "CALL_OPEN": ")", "LPAR": ")", "LSQB": "]"}
CLOSERS = {"RBRACE", "RPAR", "RSQB"}
VALUE_START = {"NAME", "NUMBER", "STRING", "LSQB"}

# Plain words for the terminals that need no context to describe.
WORDS = {
    "ARROW": "'->'", "BIND": "'=>'", "CMP": "a comparison (>=, >, <=, <, ==)", "EQUAL": "'='",
    "COLON": "':'", "COMMA": "','", "DOT": "'.'", "SLASH": "'/'", "LPAR": "'('", "CALL_OPEN": "'('",
    "RPAR": "')'", "LSQB": "'['", "RSQB": "']'", "LBRACE": "'{'", "RBRACE": "'}'",
    "NAME": "a name", "NUMBER": "a number", "STRING": "a string", "$END": "end of file",
    **{term: f"'{word}'" for term, word in KEYWORDS.items()},
}
# Shown only when nothing more useful is expected: a bare `relu` may take
# arguments and a number may be a fraction, but that is rarely the point.
MINOR = {"CALL_OPEN", "SLASH"}


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
        for tok in stream:
            if tok.type == "LPAR" and prev is not None and prev.type == "NAME" and prev.end_line == tok.line:
                tok = Token.new_borrow_pos("CALL_OPEN", tok.value, tok)
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
        raise _syntax_error(e, source) from None


def parse_file(path) -> ast.Spec:
    """Read and parse a `.model` file; an unreadable file is a `ModelcError`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")     # tolerate a byte-order mark
    except FileNotFoundError:
        raise ModelcError(f"spec file '{path}' not found", hint=f"looked for {path.absolute()}") from None
    except IsADirectoryError:
        raise ModelcError(f"'{path}' is a directory, not a spec file") from None
    except UnicodeDecodeError as e:
        raise ModelcError(f"spec file '{path}' is not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise ModelcError(f"cannot read spec file '{path}': {e.strerror or e}") from None
    return parse(text, str(path))


# ---------------------------------------------------------------- tree -> AST

def _tok_pos(tok: Token) -> ast.Pos:
    return ast.Pos(tok.line, tok.column, tok.end_line, tok.end_column)


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
        lines = self.spec_source.text.splitlines() or [""]
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
        return ast.Number(top / bottom, text, pos)


def _number_value(text: str) -> int | float:
    """An int when written as one (`10`, `-1`), else a float (`0.5`, `1e-3`)."""
    return int(text) if text.lstrip("-").isdigit() else float(text)


# ---------------------------------------------------------------- syntax errors

def _leaves(item):
    """The tokens of a parser-stack item, in order (a Token or a Tree of them)."""
    if isinstance(item, Token):
        yield item
    elif isinstance(item, Tree):
        for child in item.children:
            yield from _leaves(child)


def _units(items):
    """Stack items with Lark's helper trees (`__x_star_0`, holding a `setting*` so far) opened up."""
    for item in items:
        if isinstance(item, Tree) and str(item.data).startswith("_"):
            yield from _units(item.children)
        else:
            yield item


def _first(item) -> Token | None:
    return next(_leaves(item), None)


def _last(item) -> Token | None:
    tokens = list(_leaves(item))
    return tokens[-1] if tokens else None


def _join(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def _starts_line(tok: Token, text: str) -> bool:
    line_start = text.rfind("\n", 0, tok.start_pos) + 1
    return text[line_start:tok.start_pos].strip() == ""


class _Context:
    """What the parser had seen when it stopped: enough to word the error."""

    def __init__(self, e: UnexpectedInput, text: str):
        self.text = text
        interactive = getattr(e, "interactive_parser", None)
        self.stack = list(interactive.parser_state.value_stack) if interactive else []
        self.accepts = set(interactive.accepts()) if interactive else set(getattr(e, "expected", ()) or ())
        self.prev = _last(self.stack[-1]) if self.stack else None     # the token before the error
        self.opener_index = self._innermost_open()
        self.opener = self.stack[self.opener_index] if self.opener_index is not None else None
        self.section = None
        if self.opener is not None and self.opener.type == "LBRACE" and self.opener_index > 0:
            self.section = str(self.stack[self.opener_index - 1])

    def _innermost_open(self) -> int | None:
        """Stack index of the innermost bracket still open. A closed pair is
        usually reduced into a tree, but the closer may still sit on the stack."""
        depth = 0
        for i in range(len(self.stack) - 1, -1, -1):
            item = self.stack[i]
            if isinstance(item, Token) and item.type in CLOSERS:
                depth += 1
            elif isinstance(item, Token) and item.type in OPENERS:
                if depth == 0:
                    return i
                depth -= 1
        return None

    def expected(self) -> str:
        """The expected terminals in a few plain, grouped words."""
        accepts = set(self.accepts)
        statements = {k for k in accepts if KEYWORDS.get(k) in STATEMENTS}
        accepts -= statements
        phrases: dict[str, str] = {}
        if VALUE_START <= accepts:
            accepts -= VALUE_START
            phrases["NAME"] = "a value (a number, name, string, list or call)"
        elif "NAME" in accepts:
            phrases["NAME"] = self._name_phrase(accepts)
            accepts.discard("NAME")
            if self.section == "network":
                accepts.discard("LPAR")      # a tuple source is part of "a new chain"
        if statements:
            accepts.discard("$END")          # "a new statement" covers stopping here
        if len(accepts) + len(phrases) + bool(statements) > 1:
            accepts -= MINOR
        phrases.update((t, WORDS.get(t, t.lower())) for t in accepts)
        order = list(WORDS)
        words = [phrases[t] for t in sorted(phrases, key=lambda t: order.index(t) if t in order else 0)]
        if statements:
            words.append("a new statement (" + ", ".join(STATEMENTS) + ")")
        return _join(words) if words else "nothing more"

    def _name_phrase(self, accepts: set[str]) -> str:
        prev = self.prev.type if self.prev is not None else None
        if prev == "ARROW":
            return "a layer such as dense(64, relu)"
        if prev == "BIND":
            return "a name for the value, as in '=> h'"
        if prev == "LOSS":
            return "a loss such as sparse_categorical_crossentropy(digit, probs)"
        if prev == "OPTIMIZER":
            return "an optimizer such as adam(lr=0.001)"
        if prev == "COLON" and self.section is None:
            return "a type such as f32[28, 28]"
        if prev == "DOT":
            return "a metric name such as accuracy"
        if prev == "METRICS" or (prev == "COMMA" and self.opener is None):
            return "a metric name such as accuracy"
        if self.section == "network" and "LPAR" in accepts:
            return "a new chain such as 'image -> dense(10)'"
        if self.section == "train" and "RBRACE" in accepts:
            return "a setting such as 'batch 32'"
        if self.section == "expect" and "RBRACE" in accepts:
            return "an expectation such as 'test.accuracy >= 0.97'"
        return "a name"


def _describe(tok: Token) -> str:
    if tok.type == "NUMBER":
        return f"the number {tok}"
    if tok.type == "STRING":
        return f"the string {tok}"
    return f"'{tok}'"


def _where(tok: Token) -> str:
    return f"line {tok.line}, column {tok.column}"


def _syntax_error(e: UnexpectedInput, source: ast.Source) -> SpecError:
    """One Lark exception -> one SpecError in plain words, with a hint where we can guess one."""
    ctx = _Context(e, source.text)
    if isinstance(e, UnexpectedCharacters):
        error = _bad_character(e, ctx)
    elif isinstance(e, UnexpectedToken) and e.token.type != "$END":
        error = _bad_token(e.token, ctx)
    else:   # Lark's end token carries the span of the last real token
        last = getattr(e, "token", None) or ctx.prev
        error = _end_of_file(ast.Pos(last.end_line, last.end_column) if last else ast.Pos(1, 1), ctx)
    return error.located(source)


def _bad_character(e: UnexpectedCharacters, ctx: _Context) -> SpecError:
    char = ctx.text[e.pos_in_stream]
    pos = ast.Pos(e.line, e.column, e.line, e.column + 1)
    if char == '"':
        return SpecError("unterminated string", pos, hint="close the string with '\"' on the same line")
    hint = None
    rest = ctx.text[e.pos_in_stream + 1:].lstrip(" \t")
    if (char == "-" and rest.startswith(">")) or char == "→":
        hint = "write the arrow as '->', with no space inside"
    elif char == "'":
        hint = 'strings use double quotes: "like this"'
    elif char == "!" and "CMP" in ctx.accepts:
        hint = "compare with >=, >, <=, < or =="
    return SpecError(f"unexpected character {char!r}; expected {ctx.expected()}", pos, hint=hint)


def _end_of_file(pos: ast.Pos, ctx: _Context) -> SpecError:
    opener = ctx.opener
    if opener is not None and opener.type == "LBRACE":
        return SpecError(f"unexpected end of file: the {ctx.section} section is not closed; add '}}'", pos,
                         hint=f"the '{{' at {_where(opener)} has no matching '}}'")
    if opener is not None:
        return SpecError(f"unexpected end of file: the '{opener}' at {_where(opener)} is not closed; "
                         f"add '{OPENERS[opener.type]}'", pos)
    return SpecError(f"unexpected end of file; expected {ctx.expected()}", pos)


def _bad_token(tok: Token, ctx: _Context) -> SpecError:
    pos = _tok_pos(tok)
    found = _describe(tok)
    message = f"expected {ctx.expected()} but found {found}"
    accepts, prev = ctx.accepts, ctx.prev

    stray = _statement_inside_section(tok, ctx)
    if stray is not None:
        return stray

    # A word where a keyword fits: most likely a misspelt statement or option.
    keywords = [KEYWORDS[k] for k in accepts if k in KEYWORDS]
    if tok.type == "NAME" and keywords:
        statement_start = _starts_line(tok, ctx.text) and any(w in STATEMENTS for w in keywords)
        if statement_start or "COMMA" not in accepts:
            guess = did_you_mean(str(tok), STATEMENTS if statement_start else keywords)
            what = "statement" if statement_start else "word"
            if guess:
                return SpecError(f"unknown {what} '{tok}'; {guess}", pos)
            return SpecError(f"unknown {what} '{tok}'; expected {ctx.expected()}", pos)

    hint = None
    if tok.type == "COLON" and "EQUAL" in accepts:
        hint = "write keyword arguments as key=value, e.g. lr=0.001"
    elif tok.type == "CMP" and tok in (">", ">=") and "ARROW" in accepts:
        hint = "did you mean '->'? layers are connected with '->'"
    elif "CMP" in accepts and tok.type in ("BIND", "EQUAL"):
        after = ctx.text[tok.end_pos:tok.end_pos + 1]
        hint = "did you mean '>='?" if tok.type == "BIND" else (
            "did you mean '<='?" if after == "<" else "did you mean '=='?")
    elif tok.type == "CALL_OPEN" and prev is not None and prev.type == "NAME":
        before = ctx.stack[-2] if len(ctx.stack) > 1 else None
        if isinstance(before, Token) and before.type == "BIND":
            return SpecError(f"'=> {prev}' names a value; it takes no arguments", pos,
                             hint=f"to apply a layer, write '-> {prev}(...)'")
        if "ARROW" in accepts:
            return SpecError(f"expected '->' before '{prev}'", _tok_pos(prev),
                             hint=f"connect layers with '->', as in '-> {prev}(...)'")
    elif tok.type in VALUE_START and "COMMA" in accepts and prev is not None and prev.end_line == tok.line:
        hint = f"is a ',' missing before {found}?"
    elif ctx.opener is not None and OPENERS[ctx.opener.type] != "}" and accepts & {"RPAR", "RSQB"}:
        hint = f"the '{ctx.opener}' at {_where(ctx.opener)} is not closed; add '{OPENERS[ctx.opener.type]}'"
    elif tok.type == "RPAR" and ctx.opener is not None and ctx.opener.type == "LPAR" and accepts == {"COMMA"}:
        hint = "a tuple source has two or more names, as in (a, b) -> add; write one source without parentheses"
    elif callee := _paren_on_next_line(ctx):
        hint = f"to give '{callee}' arguments, put the '(' on the same line: {callee}(...)"
    elif tok.type == "NUMBER" and accepts == {"NAME"}:
        hint = "names start with a letter or '_'"
    elif ctx.section == "network" and tok.type == "RBRACE" and {"ARROW", "BIND"} <= accepts:
        hint = "a chain needs at least one layer, as in 'image -> dense(10)'"
    elif tok.type == "LPAR" and "CALL_OPEN" in accepts:
        hint = "put a call's '(' on the same line as its name"
    return SpecError(message, pos, hint=hint)


def _paren_on_next_line(ctx: _Context) -> Token | None:
    """The layer whose '(' went on the next line and so opened a tuple source, if any."""
    if ctx.opener is None or ctx.opener.type != "LPAR" or not ctx.opener_index:
        return None
    item = ctx.stack[ctx.opener_index - 1]
    while isinstance(item, Tree):       # down the last children to the chain's last link
        if item.data == "call":
            name, args = item.children
            return name if args is None and name.end_line < ctx.opener.line else None
        children = [c for c in item.children if c is not None]
        item = children[-1] if children and item.data != "bind" else None
    return None


def _statement_inside_section(tok: Token, ctx: _Context) -> SpecError | None:
    """`loss ...` inside `network { ... }`: the section was never closed.

    Inside braces a keyword is just a name, so the parser only stops later.
    When it stops on the line of a statement keyword that starts a line and
    was read as a train setting or is the lone word just before the error,
    blame the first such keyword. `train.loss` in `expect`, or a chain from
    a value called `input`, have more on the stack and are not blamed.
    """
    if ctx.opener is None or ctx.opener.type != "LBRACE":
        return None
    items = list(_units(ctx.stack[ctx.opener_index + 1:]))
    led = [_first(item) for n, item in enumerate(items)
           if (isinstance(item, Token) and n == len(items) - 1)
           or (isinstance(item, Tree) and item.data == "setting")]
    led = [first for first in led if first is not None and first.type == "NAME"
           and str(first) in STATEMENTS and _starts_line(first, ctx.text)]
    if not led or not any(first.line == tok.line for first in led):
        return None
    return SpecError(f"the {ctx.section} section is not closed before '{led[0]}'", _tok_pos(led[0]),
                     hint=f"add '}}' to close the '{{' at {_where(ctx.opener)}")
