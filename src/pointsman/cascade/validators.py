"""Deterministic validators: checks of an answer that need no model.

* `JsonValidator`: the answer obeys the requested `response_format` (valid JSON; the JSON schema when one
  is given) — a failure is a defect.
* `ToolCallValidator`: every tool call names a tool the request offered and its arguments are a JSON
  object valid against that tool's parameter schema — a failure is a defect.
* `FinishValidator`: the answer is not empty and was not cut off (`finish_reason == "length"`) — defects.
* `RefusalValidator`: the answer is not a refusal ("I'm sorry, but I can't ...") — a defect, since a
  stronger model may answer (and a refusal the strong model repeats costs one more call, not a wrong answer).
* `ArithmeticValidator`: equations written in the answer ("16 - 3 = 13") recompute. A wrong one is
  evidence, not proof (a model may write an intermediate it corrects later), so it lowers the score to
  `wrong_score`, measured on GSM8K (all 1,319 answers of RouteLLM's data): of Mixtral's answers with an
  equation that does not recompute, 8 of 99 were right (0.08); of GPT-4's, 4 of 8.

The pure functions (`arithmetic_errors`, `is_refusal`) are also answer features for the learned verifier.
"""

from __future__ import annotations

import ast
import functools
import operator
import re
from typing import Any

import orjson

from pointsman.cascade.base import AnswerContext, Verdict, Verifier
from pointsman.text import is_refusal

__all__ = ["JsonValidator", "ToolCallValidator", "FinishValidator", "RefusalValidator", "ArithmeticValidator",
           "arithmetic_errors", "is_refusal", "VALIDATORS"]


# -- JSON and tool calls ---------------------------------------------------------------------------------
@functools.lru_cache(maxsize=256)
def _schema_validator(schema_json: bytes) -> Any:
    import jsonschema  # only requests that ask for a JSON schema pay for this import

    schema = orjson.loads(schema_json)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def _schema_errors(instance: Any, schema: Any) -> str | None:
    """The first schema violation, or None. A schema that is itself invalid is not the answer's fault."""
    if not isinstance(schema, dict) or not schema:
        return None
    import jsonschema

    try:
        validator = _schema_validator(orjson.dumps(schema, option=orjson.OPT_SORT_KEYS))
    except (jsonschema.SchemaError, TypeError, ValueError):
        return None
    error = next(iter(validator.iter_errors(instance)), None)
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path) or "(root)"
    return f"{where}: {error.message}"[:200]


def _strip_fence(text: str) -> str:
    """Models often wrap JSON in a ```json fence even in JSON mode; the content is what counts."""
    stripped = text.strip()
    if stripped.startswith("```") and stripped.endswith("```"):
        stripped = stripped[3:-3]
        if stripped.startswith("json"):
            stripped = stripped[4:]
    return stripped.strip()


class JsonValidator(Verifier):
    name = "json"

    async def check(self, item: AnswerContext) -> Verdict | None:
        fmt = item.route.body.get("response_format")
        if not isinstance(fmt, dict) or fmt.get("type") not in ("json_object", "json_schema") or item.tool_calls:
            return None
        try:
            value = orjson.loads(_strip_fence(item.text))
        except orjson.JSONDecodeError as exc:
            return Verdict(self.name, 0.0, "invalid_json", str(exc)[:200])
        if fmt["type"] == "json_object" and not isinstance(value, dict):
            return Verdict(self.name, 0.0, "invalid_json", "JSON mode asks for an object")
        if fmt["type"] == "json_schema":
            spec = fmt.get("json_schema")
            problem = _schema_errors(value, spec.get("schema") if isinstance(spec, dict) else None)
            if problem:
                return Verdict(self.name, 0.0, "schema_violation", problem)
        return Verdict(self.name, 1.0, detail="valid JSON")


class ToolCallValidator(Verifier):
    name = "tools"

    async def check(self, item: AnswerContext) -> Verdict | None:
        if not item.tool_calls:
            return None
        offered = {}
        for tool in item.route.body.get("tools") or []:
            function = tool.get("function") if isinstance(tool, dict) else None
            if isinstance(function, dict) and isinstance(function.get("name"), str):
                offered[function["name"]] = function.get("parameters")
        for call in item.tool_calls:
            function = call.get("function") if isinstance(call.get("function"), dict) else {}
            name = function.get("name")
            if name not in offered:
                return Verdict(self.name, 0.0, "unknown_tool", f"the answer calls {name!r}, which the request did not offer")
            try:
                arguments = orjson.loads(function.get("arguments") or "{}")
            except orjson.JSONDecodeError as exc:
                return Verdict(self.name, 0.0, "invalid_tool_arguments", f"{name}: {exc}"[:200])
            if not isinstance(arguments, dict):
                return Verdict(self.name, 0.0, "invalid_tool_arguments", f"{name}: arguments must be a JSON object")
            problem = _schema_errors(arguments, offered[name])
            if problem:
                return Verdict(self.name, 0.0, "invalid_tool_arguments", f"{name}: {problem}")
        return Verdict(self.name, 1.0, detail=f"{len(item.tool_calls)} valid tool call(s)")


class FinishValidator(Verifier):
    name = "finish"

    async def check(self, item: AnswerContext) -> Verdict | None:
        if item.finish_reason == "length":
            return Verdict(self.name, 0.0, "truncated", "the answer hit its token limit")
        if item.finish_reason == "content_filter":
            return Verdict(self.name, 0.0, "content_filter", "the provider filtered the answer")
        if not item.text.strip() and not item.tool_calls:
            return Verdict(self.name, 0.0, "empty", "the answer is empty")
        return None


# -- refusals ----------------------------------------------------------------------------------------------
class RefusalValidator(Verifier):
    name = "refusal"

    async def check(self, item: AnswerContext) -> Verdict | None:
        if item.text and is_refusal(item.text):
            return Verdict(self.name, 0.0, "refusal", item.text[:80])
        return None


# -- arithmetic --------------------------------------------------------------------------------------------
_NUMBER = r"\d[\d,]*(?:\.\d+)?%?"
_OP = r"(?:[-+*/×÷]|\s[xX]\s|(?<=\d)\s*x\s*(?=[\d($]))"
_TERM = rf"[\($]*\s*\$?{_NUMBER}\s*\)*"
_EXPR = rf"{_TERM}(?:\s*{_OP}\s*{_TERM})*"
# "16 - 3 = 13", chains "5 * 2 = 10 + 3 = 13"; currency signs and percentages allowed
_CHAIN = re.compile(rf"{_EXPR}(?:\s*=\s*-?{_EXPR})+")
_CALCULATOR_NOTE = re.compile(r"<<[^<>]{0,200}>>")
_HAS_OP = re.compile(rf"\d\s*\)*\s*{_OP}")
_TAIL_WITH_UNKNOWNS = re.compile(rf"\s*{_OP}\s*[A-Za-z]")
_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def _evaluate(node: ast.AST) -> float:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        return float(node.value)
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        return _OPS[type(node.op)](_evaluate(node.left), _evaluate(node.right))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_evaluate(node.operand)
    raise ValueError("not arithmetic")


def _number(text: str) -> float:
    text = text.replace(",", "")
    return float(text[:-1]) / 100 if text.endswith("%") else float(text)


def _value(expression: str) -> float:
    source = re.sub(_OP, lambda m: "*" if m.group(0).strip() in ("x", "X", "×") else m.group(0).strip().replace("÷", "/"),
                    expression.replace("$", ""))
    source = re.sub(_NUMBER, lambda m: repr(_number(m.group(0))), source).strip()
    if source.count("(") != source.count(")"):  # a parenthesis opened before the match or closed after it
        source = source.strip("()").strip()
    return _evaluate(ast.parse(source, mode="eval"))


def _close(claimed: float, actual: float) -> bool:
    """Equal up to the rounding a written answer does (3.33 for 10/3, 33% for 1/3, 4 for 3.5)."""
    tolerance = max(abs(actual) * 0.01, 0.011)
    return abs(actual - claimed) <= tolerance or round(actual) == claimed


def arithmetic_errors(text: str) -> tuple[int, int]:
    """(equations checked, equations that do not recompute) in an answer's text.

    An equation is a chain of numeric expressions joined by "="; it is wrong when one step's value
    differs from the next beyond rounding. Chains touching letters (algebra: "3x + 9 = 87", "21 - 3 = 2 * S")
    are skipped: they cannot be recomputed without solving.
    """
    checked = wrong = 0
    # markdown-escaped operators, and GSM8K-style calculator notes "<<2*3=6>>" (restated, not reasoning)
    text = _CALCULATOR_NOTE.sub(" ", text.replace("\\*", "*").replace("\u00d7", "*").replace("\u00f7", "/"))
    for match in _CHAIN.finditer(text):
        chain = match.group(0)
        if not _HAS_OP.search(chain):
            continue
        start = match.start() + len(chain) - len(chain.lstrip())
        before = text[:start].rstrip()[-1:]
        touching = text[start - 1:start] if start else ""
        if touching.isalnum() or touching in (".", ",") or (before and before in "-+*/=^\\"):
            continue  # the tail of a longer expression or of algebra: not recomputable here
        end = match.end() - (len(chain) - len(chain.rstrip()))
        if _TAIL_WITH_UNKNOWNS.match(text, end) or text[end:end + 1].isalpha():
            continue
        try:
            values = [_value(part) for part in re.split(r"\s*=\s*", chain.strip())]
        except (ValueError, SyntaxError, ZeroDivisionError, OverflowError, RecursionError):
            continue
        checked += 1
        if any(not _close(b, a) and not _close(b * 100, a) and not _close(b, a * 100)
               for a, b in zip(values, values[1:])):
            wrong += 1
    return checked, wrong


class ArithmeticValidator(Verifier):
    name = "arithmetic"

    def __init__(self, wrong_score: float = 0.08) -> None:
        self.wrong_score = wrong_score

    async def check(self, item: AnswerContext) -> Verdict | None:
        checked, wrong = arithmetic_errors(item.text)
        if wrong:
            return Verdict(self.name, self.wrong_score, detail=f"{wrong} of {checked} equations do not recompute")
        return None


VALIDATORS: dict[str, type[Verifier]] = {
    "json": JsonValidator, "tools": ToolCallValidator, "finish": FinishValidator,
    "refusal": RefusalValidator, "arithmetic": ArithmeticValidator,
}


def register_verifier(name: str) -> Any:
    """Class decorator: a verifier (a `Verifier` with a no-argument constructor) cascades can name in
    `cascade.verifiers`. Without registering, a policy can name it by import path, `package.module:Class`."""
    def add(cls: type[Verifier]) -> type[Verifier]:
        VALIDATORS[name] = cls
        return cls
    return add


def verifier_class(name: str) -> type[Verifier] | None:
    """A registered verifier, or one named by import path; None if `name` is neither."""
    if name in VALIDATORS:
        return VALIDATORS[name]
    if ":" in name:
        import importlib

        module, _, attr = name.partition(":")
        try:
            return getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"cascade.verifiers: {name!r} cannot be imported: {exc}") from None
    return None
