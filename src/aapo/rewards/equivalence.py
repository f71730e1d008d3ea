"""Is an extracted answer mathematically equal to the gold? math-verify, made safe to feed.

Runs inside the grading worker processes (`grading_worker.py`), never in the trainer: it
imports sympy / math-verify, patches sympy's string parser, and may be killed at any time.

What is parsed, and how:
- gold (trusted data): a programming-style number (`3.83e35`, `-1./3`, `np.arcsin(10/13)`)
  is read by `safe_math.parse_plain`; anything else as LaTeX, `\\boxed{gold}` first and
  `$gold$` second (math-verify's normalisation: `\\text{}`, units, `\\%`, ...). An empty parse
  is a `GoldAnswerError`. Parsed golds are cached, so each distinct gold is parsed once per
  worker.
- prediction (untrusted): a boxed answer as LaTeX (`\\boxed{answer}`); `<answer>` content with
  math-verify's LaTeX and plain-number extractors (the last `$...$`, "final answer is ...",
  a number in prose), and as one LaTeX expression when those find nothing. An e-notation
  literal (`3.83e35`) is read as a number on both sides, since LaTeX reads `e` as a symbol.
- comparison: `math_verify.verify(gold, prediction)` with its defaults.

Why this is safe on model output: sympy's `parse_expr` (compile + eval) is reached from
latex2sympy through `sympy.Number(text)` and from math-verify's plain-expression extractor.
`install_guards` replaces it with `safe_math.safe_parse_expr` (numbers, operators, bare names
as symbols; no calls, no attributes), makes sympy's `eval_expr` raise, and adds an audit hook
that turns any compile/exec of source text into an error while a prediction is handled (a few
library code generators excepted, see `_audit`). math-verify's own signal-based timeouts are
disabled: the worker enforces its own (`grading_worker.py`).

Left out: multiple-choice letters, relative tolerance for physics answers, unit conversion.
"""

from __future__ import annotations

import logging
import re
import sys
from collections import OrderedDict
from typing import Any

from aapo.rewards.errors import GoldAnswerError
from aapo.rewards.safe_math import E_NOTATION_RE, parse_plain, safe_parse_expr

_GUARD: dict[str, Any] = {"active": False, "tripped": 0, "last": ""}
# Modules sympy imports lazily and that call sympify(str) at import time: imported before the
# parser is swapped (found by diffing sys.modules over the grader cases and benchmark golds).
_PRELOAD = (
    "sympy.physics.units",
    "sympy.physics.matrices",
    "sympy.sets.handlers.functions",
    "sympy.sets.handlers.issubset",
    "sympy.sets.setexpr",
    "sympy.integrals.manualintegrate",
)
_ALLOWED_CALLERS: set[str] = set()
_GOLD_CACHE: OrderedDict[str, list[Any]] = OrderedDict()
GOLD_CACHE_SIZE = 50_000
_SPACED_THOUSANDS = re.compile(r"-?\d{1,3}(?: \d{3})+(?:\.\d+)?")
_PROGRAMMING_STYLE = re.compile(r"\d[eE][+-]?\d|\d\.(?!\d)|[A-Za-z_]\w*\s*\(|\*\*")


class UnsafeEvaluation(RuntimeError):
    """Raised by the audit hook when text would be compiled while handling model output."""


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if not _GUARD["active"] or event not in ("compile", "exec"):
        return
    # Any compile of source text, or exec of code built from a string, is refused while a
    # prediction is being handled; imports of installed modules exec code from real files.
    code = args[0] if args else None
    if event == "exec" and not getattr(code, "co_filename", "<").startswith("<"):
        return
    # Code generators that build source from library identifiers, never from input text:
    # sympy.polys' monomial arithmetic for n generators, and dataclass / namedtuple /
    # forward-reference creation when sympy imports a module lazily (manualintegrate).
    if sys._getframe(1).f_code.co_filename in _ALLOWED_CALLERS:
        return
    # Recorded as well as raised: math-verify swallows exceptions inside parse and verify.
    _GUARD["tripped"] += 1
    _GUARD["last"] = f"{event} called from {sys._getframe(1).f_code.co_filename}"
    raise UnsafeEvaluation(f"{event} while grading model output")


def install_guards(audit: bool = True) -> None:
    """Route every string->sympy parse through `safe_parse_expr`, warm up, then add the
    audit hook (after the warm-up, so lazy imports inside sympy have already happened)."""
    import importlib

    import latex2sympy2_extended.latex2sympy2 as l2s
    import math_verify.parser as mv_parser
    import sympy.parsing
    import sympy.parsing.sympy_parser as sympy_parser

    def refuse_eval(*args: Any, **kwargs: Any) -> Any:
        raise UnsafeEvaluation("sympy eval_expr is disabled in the grading worker")

    for module in _PRELOAD:
        importlib.import_module(module)
    sympy_parser.parse_expr = safe_parse_expr  # sympify() imports it from here per call
    sympy_parser.eval_expr = refuse_eval  # any reference to the old parse_expr now fails
    sympy.parsing.parse_expr = safe_parse_expr
    mv_parser.parse_expr = safe_parse_expr
    mv_parser.parse_expr_cached.cache_clear()
    l2s.parse_expr = safe_parse_expr
    logging.getLogger("math_verify").setLevel(logging.CRITICAL)
    logging.getLogger("latex2sympy2_extended").setLevel(logging.CRITICAL)
    _warm_up()
    if audit:
        import collections
        import dataclasses
        import typing

        import sympy.polys.monomials

        for module in (sympy.polys.monomials, dataclasses, collections, typing):
            _ALLOWED_CALLERS.add(str(module.__file__))
        sys.addaudithook(_audit)


def _parse(text: str, configs: list[Any]) -> list[Any]:
    from math_verify import parse

    return parse(text, extraction_config=configs, parsing_timeout=None, raise_on_error=False)


def _latex_config(boxed_first: bool = False) -> Any:
    from math_verify import LatexExtractionConfig

    return LatexExtractionConfig(boxed_match_priority=0) if boxed_first else LatexExtractionConfig()


def parse_gold(gold: str) -> list[Any]:
    """Parsed gold (math-verify's list form), cached. Raises GoldAnswerError when it is empty,
    has unbalanced braces, or nothing parses. A gold read only as text (math-verify's string
    fallback, e.g. `m_{\\max }=n^{2}-n-1`) is kept: it is then matched by its normalised string."""
    cached = _GOLD_CACHE.get(gold)
    if cached is not None:
        _GOLD_CACHE.move_to_end(gold)
        return cached
    text = gold.strip()
    if text.endswith(".") and not text.endswith(".."):  # `(-\infty, 0) \cup\{1\}.`
        text = text[:-1].rstrip()
    parsed: list[Any] = []
    if not text:
        raise GoldAnswerError(gold, "empty")
    unescaped = text.replace("\\\\", "").replace("\\{", "").replace("\\}", "")
    if unescaped.count("{") != unescaped.count("}"):
        raise GoldAnswerError(gold, "unbalanced braces")
    if "\\" not in text and _PROGRAMMING_STYLE.search(text):
        try:
            parsed = [parse_plain(text, functions=True), text]
        except Exception:  # not plain arithmetic after all: read it as LaTeX
            parsed = []
    if not parsed:
        parsed = _parse("\\boxed{" + text + "}", [_latex_config(boxed_first=True)])
    if not parsed:
        parsed = _parse("$" + text + "$", [_latex_config()])
    if not parsed:
        raise GoldAnswerError(gold)
    _GOLD_CACHE[gold] = parsed
    if len(_GOLD_CACHE) > GOLD_CACHE_SIZE:
        _GOLD_CACHE.popitem(last=False)
    return parsed


def parse_prediction(text: str, source: str) -> list[Any]:
    """Parsed prediction (possibly empty) for an answer found by `answers.extract_answer`."""
    from math_verify import ExprExtractionConfig

    text = text.strip()
    while text.endswith("\\\\"):  # a trailing LaTeX line break: `\boxed{185\\}`
        text = text[:-2].rstrip()
    if source == "boxed" and text.endswith(".") and not text.endswith(".."):
        text = text[:-1].rstrip()  # sentence punctuation inside the box, as for golds
    if _SPACED_THOUSANDS.fullmatch(text):  # `1 000` (SI thousands separator)
        text = text.replace(" ", "")
    if E_NOTATION_RE.fullmatch(text):
        return [parse_plain(text), text]
    if source == "boxed":
        return _parse("\\boxed{" + text + "}", [_latex_config(boxed_first=True)])
    found = _parse(text, [_latex_config(), ExprExtractionConfig()])
    if not found and "$" not in text:
        found = _parse("$" + text + "$", [_latex_config()])
    return found


def is_equivalent(answer: str, source: str, gold: str) -> bool:
    """True when the extracted answer equals the gold. Raises on grader failures."""
    from math_verify import verify

    gold_parsed = parse_gold(gold)
    tripped = _GUARD["tripped"]
    _GUARD["active"] = True
    try:
        predicted = parse_prediction(answer, source)
        equal = bool(predicted) and verify(
            gold_parsed, predicted, timeout_seconds=None, raise_on_error=False
        )
    finally:
        _GUARD["active"] = False
    if _GUARD["tripped"] != tripped:
        raise UnsafeEvaluation(f"refused {_GUARD['last']} while grading model output")
    return bool(equal)


def check_gold(gold: str) -> None:
    """Parse the gold and grade `\\boxed{gold}` against it; raise GoldAnswerError if either
    fails (an unparseable gold, or one whose parse does not even match itself)."""
    parse_gold(gold)
    if not is_equivalent(gold, "boxed", gold):
        raise GoldAnswerError(gold, "does not match itself when graded as `\\boxed{gold}`")


def _warm_up() -> None:
    """Touch the lazily imported parts of sympy before the audit hook is armed."""
    for gold, answer in (("\\frac{1}{2}", "0.5"), ("[1, 2)", "[1,2)"), ("x^2+1", "1+x^2")):
        is_equivalent(answer, "boxed", gold)
    is_equivalent("The answer is $(1, 2)$ or 3", "answer_tag", "(1,2)")
    is_equivalent("\\begin{pmatrix}1&0\\\\0&1\\end{pmatrix}", "boxed", "x \\geq 5")
    _GOLD_CACHE.clear()
