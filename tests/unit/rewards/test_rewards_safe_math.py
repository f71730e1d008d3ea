"""The eval-free arithmetic parser that replaces sympy's parse_expr in the grading workers."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import sympy
from hypothesis import given, settings
from hypothesis import strategies as st
from sympy.core.sympify import SympifyError

from aapo.rewards.safe_math import number_literal, parse_plain, safe_parse_expr

_AUDIT = {"on": False, "events": []}


def _hook(event: str, args: tuple) -> None:
    if _AUDIT["on"] and event in ("compile", "exec"):
        _AUDIT["events"].append(event)


sys.addaudithook(_hook)  # inert outside the fuzz test below


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3.83e35", sympy.Integer(383) * sympy.Integer(10) ** 33),
        ("1e-5", sympy.Rational(1, 100000)),
        ("-1./3", sympy.Rational(-1, 3)),
        ("-3./2", sympy.Rational(-3, 2)),
        ("2^3^2", sympy.Integer(512)),  # right-associative
        ("2**10", sympy.Integer(1024)),
        ("(1+2)*3 - 4/2", sympy.Integer(7)),
        ("6 ÷ 3 × 2", sympy.Integer(4)),
        ("0001", sympy.Integer(1)),
        (".5", sympy.Rational(1, 2)),
    ],
)
def test_exact_values(text: str, expected: sympy.Expr) -> None:
    assert sympy.simplify(parse_plain(text) - expected) == 0


def test_programming_style_functions_only_when_asked() -> None:
    value = parse_plain("np.arcsin(10/13)", functions=True)  # unevaluated, like parse_expr
    assert sympy.simplify(value - sympy.asin(sympy.Rational(10, 13))) == 0
    assert sympy.simplify(parse_plain("math.pi/2", functions=True) - sympy.pi / 2) == 0
    with pytest.raises(SympifyError):
        parse_plain("np.arcsin(10/13)")
    with pytest.raises(SympifyError):
        parse_plain("a*t", functions=True)  # variables are left to the LaTeX parser


def test_safe_parse_expr_reads_numbers_like_sympy() -> None:
    assert safe_parse_expr("0.5") == sympy.Float("0.5")
    assert safe_parse_expr("12") == sympy.Integer(12)
    assert safe_parse_expr("yotta") == sympy.Symbol("yotta")  # sympy's unit modules need this
    unevaluated = safe_parse_expr("9**9**9", evaluate=False)
    assert isinstance(unevaluated, sympy.Pow)


@pytest.mark.parametrize(
    "payload",
    [
        "__import__('os').system('true')",
        "().__class__.__bases__[0].__subclasses__()",
        "lambda: 0",
        "eval('1')",
        "exec('x=1')",
        "os.system",
        "1; import os",
        "[1, 2]",
        "x if 1 else 2",
        "'string'",
        "1e999999",  # a literal too large to build
        "(" * 500 + "1" + ")" * 500,
        "1" * 2000,
    ],
)
def test_refuses_everything_else(payload: str) -> None:
    with pytest.raises(SympifyError):
        safe_parse_expr(payload)
    with pytest.raises(SympifyError):
        parse_plain(payload, functions=True)


def test_number_literal_bounds() -> None:
    assert number_literal("1.5", exact=True) == sympy.Rational(3, 2)
    assert number_literal("1.5", exact=False) == sympy.Float("1.5")
    with pytest.raises(SympifyError):
        number_literal("1e401", exact=True)


@settings(max_examples=300, deadline=None)
@given(
    st.text(alphabet=st.sampled_from(list("0123456789.eE+-*/^()× ÷abc_'\"[]{};:,")), max_size=40)
)
def test_fuzz_never_compiles_and_fails_cleanly(text: str) -> None:
    _AUDIT["on"], _AUDIT["events"] = True, []
    try:
        parse_plain(text, functions=True)
        safe_parse_expr(text, evaluate=False)
    except (SympifyError, ZeroDivisionError):
        pass
    finally:
        _AUDIT["on"] = False
    assert _AUDIT["events"] == []


def test_worker_guards_replace_sympys_string_parser(tmp_path) -> None:
    """In a process set up like a grading worker, sympify on a string cannot run code."""
    marker = tmp_path / "pwned"
    script = textwrap.dedent(
        f"""
        import sympy, sympy.parsing.sympy_parser as sp
        from aapo.rewards import equivalence
        from aapo.rewards.safe_math import safe_parse_expr
        equivalence.install_guards()
        assert sp.parse_expr is safe_parse_expr
        for payload in ["__import__('os').system('touch {marker}')",
                        "open({str(marker)!r}, 'w')"]:
            try:
                sympy.sympify(payload)
            except Exception:
                pass
            try:
                sympy.Number(payload)
            except Exception:
                pass
        try:
            sp.eval_expr("1", {{}}, {{}})
            raise SystemExit("eval_expr still works")
        except equivalence.UnsafeEvaluation:
            pass
        print("ok")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
    assert not marker.exists()
