"""CEL: compiling and evaluating ``when`` and ``key`` expressions.

Wraps ``common-expression-language`` (a Rust CEL) behind two functions so the
rest of the engine sees one error type with a message a user can act on, and so
compiled programs are cached (the same few expressions are evaluated often).
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

import cel

# The names an expression may use: parameters, earlier steps, the execution.
ROOT_VARIABLES = frozenset({"params", "steps", "execution"})

# Scanned left to right: a string literal is consumed whole (so "steps.x" inside one
# is not a reference); `steps.name(` is a macro call such as steps.exists(...), and
# `params.steps.x` is a field of something else.
_STEP_REFERENCE = re.compile(
    r"""(?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')"""
    r"""|(?<![.\w])steps\s*(?:\.\s*(?P<dot>[A-Za-z_][A-Za-z0-9_]*)(?![\w(]|\s*\()"""
    r"""|\[\s*(?:"(?P<dq>[^"]*)"|'(?P<sq>[^']*)')\s*\])"""
)


class CelError(Exception):
    """An expression that does not compile or cannot be evaluated."""


@lru_cache(maxsize=4096)
def compile_expression(source: str) -> cel.Program:
    """Compile ``source``; raise ``CelError`` with the compiler's message."""
    try:
        return cel.compile(source)
    except Exception as exc:  # the binding raises ValueError, and others on odd input
        raise CelError(str(exc).strip()) from None


def evaluate(source: str, variables: dict[str, Any]) -> Any:
    """Evaluate ``source`` over ``variables``; raise ``CelError`` on any failure."""
    program = compile_expression(source)
    try:
        return program.execute(variables)
    except Exception as exc:
        raise CelError(f"{source!r}: {type(exc).__name__}: {exc}") from None


def evaluate_bool(source: str, variables: dict[str, Any]) -> bool:
    """Evaluate a condition; a non-boolean result is an error, not a truthiness guess."""
    result = evaluate(source, variables)
    if not isinstance(result, bool):
        # The type only: the value may be a secret parameter.
        raise CelError(f"{source!r} gave a {type(result).__name__}, not a bool")
    return result


def referenced_steps(source: str) -> set[str]:
    """Step names an expression reads through ``steps.x`` or ``steps["x"]``."""
    found = set()
    for match in _STEP_REFERENCE.finditer(source):
        name = match.group("dot") or match.group("dq") or match.group("sq")
        if name:
            found.add(name)
    return found
