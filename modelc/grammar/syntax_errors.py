"""Lark's syntax exceptions -> one located `SpecError` in plain words.

What was expected and what was found, the spot, and a suggestion where one is
likely (a misspelt statement, a missing ',' or bracket, a '(' on the next
line). Lark's own terminal names never reach the user.
"""
from __future__ import annotations

from lark import Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken

from modelc.errors import SpecError, did_you_mean
from modelc.grammar import ast

# Top-level statements in the order a spec usually has them.
STATEMENTS = ("model", "input", "target", "network", "loss", "optimizer", "metrics", "train", "expect")
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


def tok_pos(tok: Token) -> ast.Pos:
    return ast.Pos(tok.line, tok.column, tok.end_line, tok.end_column)



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


def syntax_error(e: UnexpectedInput, source: ast.Source) -> SpecError:
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
    pos = tok_pos(tok)
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
            return SpecError(f"expected '->' before '{prev}'", tok_pos(prev),
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
    return SpecError(f"the {ctx.section} section is not closed before '{led[0]}'", tok_pos(led[0]),
                     hint=f"add '}}' to close the '{{' at {_where(ctx.opener)}")
