"""A small arithmetic parser that builds sympy objects without Python's eval.

sympy's `parse_expr`/`sympify` compile the text and `eval` it. math-verify and
latex2sympy2_extended reach that path for model output: every number latex2sympy reads goes
through `sympy.Number(text)` -> `sympify(text)`, and math-verify's plain-expression extraction
calls `parse_expr` on what it found. This module gives those call sites a parser that
understands only numbers, `+ - * / ^ **` (and `×`, `÷`), parentheses and, when asked, bare
names as symbols or a short list of numeric functions written in programming style
(`np.arcsin(10/13)`), and fails on anything else. `equivalence.install_guards` swaps it in
for `parse_expr` inside the grading worker processes only, never in the caller's process.

Left out: other function calls, implicit multiplication, complex literals and the rest of
what `parse_expr` accepts: the LaTeX parser handles those without eval, and an expression
we cannot read here simply does not parse.
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Any

import sympy
from sympy.core.sympify import SympifyError

from aapo.messages import shown

MAX_TEXT_CHARS = 1000
MAX_DEPTH = 60
MAX_LITERAL_EXPONENT = 400  # 1e999999999 would make Fraction build a billion-digit integer

_NUMBER = r"(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"
_TOKEN = re.compile(
    rf"\s*(?:(?P<num>{_NUMBER})|(?P<name>(?:np\.|numpy\.|math\.)?[A-Za-z_]\w*)"
    r"|(?P<op>\*\*|[-+*/^()×÷]))"
)
# Programming-style numeric golds in the benchmark data (Minerva: `3.83e35`, `-1./3`).
LITERAL_RE = re.compile(rf"[+-]?{_NUMBER}")
E_NOTATION_RE = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)[eE][+-]?\d{1,3}")

_FUNCTIONS = {
    "sin": sympy.sin,
    "cos": sympy.cos,
    "tan": sympy.tan,
    "arcsin": sympy.asin,
    "asin": sympy.asin,
    "arccos": sympy.acos,
    "acos": sympy.acos,
    "arctan": sympy.atan,
    "atan": sympy.atan,
    "exp": sympy.exp,
    "log": sympy.log,
    "ln": sympy.log,
    "sqrt": sympy.sqrt,
}
_CONSTANTS = {"pi": sympy.pi}


def number_literal(text: str, *, exact: bool) -> sympy.Number:
    """`123` -> Integer, `1.5`/`3.83e35`/`1.` -> Rational (exact) or Float (as sympy reads it)."""
    mantissa, _, exponent = text.lower().partition("e")
    if exponent and abs(int(exponent)) > MAX_LITERAL_EXPONENT:
        raise SympifyError(f"exponent too large in {shown(text)}")
    if not exponent and "." not in mantissa:
        return sympy.Integer(int(mantissa))  # int() refuses more than 4300 digits
    if exact:
        return sympy.Rational(Fraction(text))
    return sympy.Float(text)  # mpmath reads the string; no eval


class _Parser:
    """Recursive descent: expr := term (+|- term)*; term := unary (*|/ unary)*;
    unary := (+|-) unary | power; power := atom (^ unary)?; atom := number | (expr) | f(expr)."""

    def __init__(
        self, text: str, *, evaluate: bool, exact: bool, functions: bool, symbols: bool
    ) -> None:
        self.tokens = self._tokenize(text)
        self.pos = 0
        self.depth = 0
        self.evaluate = evaluate
        self.exact = exact
        self.functions = functions
        self.symbols = symbols

    @staticmethod
    def _tokenize(text: str) -> list[tuple[str, str]]:
        tokens, pos = [], 0
        text = text.rstrip()
        while pos < len(text):
            match = _TOKEN.match(text, pos)
            if match is None:
                raise SympifyError(f"unexpected character at {pos}")
            kind = match.lastgroup or ""
            tokens.append((kind, match.group(kind)))
            pos = match.end()
        return tokens

    def _peek(self) -> str | None:
        return self.tokens[self.pos][1] if self.pos < len(self.tokens) else None

    def _take(self) -> tuple[str, str]:
        if self.pos >= len(self.tokens):
            raise SympifyError("unexpected end of input")
        self.pos += 1
        return self.tokens[self.pos - 1]

    def _expect(self, value: str) -> None:
        if self._take()[1] != value:
            raise SympifyError(f"expected {shown(value)}")

    def parse(self) -> Any:
        result = self._expr()
        if self.pos != len(self.tokens):
            raise SympifyError("trailing input")
        return result

    def _expr(self) -> Any:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise SympifyError("expression nested too deeply")
        left = self._term()
        while self._peek() in ("+", "-"):
            op = self._take()[1]
            right = self._term()
            if op == "-":
                right = sympy.Mul(-1, right, evaluate=self.evaluate)
            left = sympy.Add(left, right, evaluate=self.evaluate)
        self.depth -= 1
        return left

    def _term(self) -> Any:
        left = self._unary()
        while self._peek() in ("*", "/", "×", "÷"):
            op = self._take()[1]
            right = self._unary()
            if op in ("/", "÷"):
                right = sympy.Pow(right, -1, evaluate=self.evaluate)
            left = sympy.Mul(left, right, evaluate=self.evaluate)
        return left

    def _unary(self) -> Any:
        if self._peek() in ("+", "-"):
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise SympifyError("expression nested too deeply")
            sign = self._take()[1]
            operand = self._unary()
            self.depth -= 1
            if sign == "+":
                return operand
            if isinstance(operand, sympy.Number):
                return -operand
            return sympy.Mul(-1, operand, evaluate=self.evaluate)
        return self._power()

    def _power(self) -> Any:
        base = self._atom()
        if self._peek() in ("^", "**"):
            self._take()
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise SympifyError("expression nested too deeply")
            exponent = self._unary()  # right-associative: 2^3^2 = 2^(3^2)
            self.depth -= 1
            return sympy.Pow(base, exponent, evaluate=self.evaluate)
        return base

    def _atom(self) -> Any:
        kind, value = self._take()
        if kind == "num":
            return number_literal(value, exact=self.exact)
        if value == "(":
            inner = self._expr()
            self._expect(")")
            return inner
        if kind == "name" and self.functions:
            bare = value.rsplit(".", 1)[-1]
            if bare in _CONSTANTS:
                return _CONSTANTS[bare]
            if bare in _FUNCTIONS and self._peek() == "(":
                self._take()
                argument = self._expr()
                self._expect(")")
                return _FUNCTIONS[bare](argument, evaluate=self.evaluate)
        if kind == "name" and self.symbols and "." not in value and self._peek() != "(":
            return sympy.Symbol(value)
        raise SympifyError(f"unexpected token {shown(value)}")


def parse_plain(
    text: str,
    *,
    evaluate: bool = False,
    exact: bool = True,
    functions: bool = False,
    symbols: bool = False,
) -> Any:
    """Parse plain arithmetic (see the module docstring); raise SympifyError otherwise.

    `functions` admits the numeric functions and `pi`; `symbols` reads a bare name as a
    Symbol (sympy's own modules call `sympify("yotta")` when they are imported).
    """
    if len(text) > MAX_TEXT_CHARS:
        raise SympifyError("text too long")
    parser = _Parser(text, evaluate=evaluate, exact=exact, functions=functions, symbols=symbols)
    return parser.parse()


def safe_parse_expr(
    s: str,
    local_dict: dict | None = None,
    transformations: Any = None,
    global_dict: dict | None = None,
    evaluate: bool = True,
) -> Any:
    """Drop-in for `sympy.parsing.sympy_parser.parse_expr` that never evaluates Python.

    Numbers read the way sympy reads them (decimals as Float), so math-verify's results do
    not change for the inputs it legitimately sends here. Variables are refused.
    """
    del local_dict, transformations, global_dict  # no names are ever looked up
    return parse_plain(s, evaluate=evaluate, exact=False, symbols=True)
