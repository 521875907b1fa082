"""Strict request input: JSON bodies and query strings checked against small schemas.

A schema both checks input and describes it to OpenAPI (`json_schema()`), so the
published document cannot drift from what the server enforces. Unknown fields, wrong
types, duplicate keys, NaN/Infinity, over-long strings and NUL characters are 400s.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from authd.rest.errors import bad_request

Kind = Literal["string", "integer", "number", "boolean", "string-list"]


@dataclass(frozen=True)
class Field:
    """One body field or query parameter."""

    name: str
    kind: Kind = "string"
    required: bool = False
    description: str = ""
    min_length: int = 0
    max_length: int = 256
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] | None = None
    max_items: int = 32
    pattern: str | None = None  # ECMA-262 and Python alike: keep to plain classes

    def check(self, value: Any) -> Any:
        """The value if it fits, else a 400 naming the field (never echoing the value)."""
        if self.kind == "string":
            return self._check_str(value, self.name)
        if self.kind == "boolean":
            if not isinstance(value, bool):
                raise bad_request(f"{self.name}: must be a boolean")
            return value
        if self.kind in ("integer", "number"):
            ok = (
                isinstance(value, int)
                if self.kind == "integer"
                else isinstance(value, (int, float))
            )
            if isinstance(value, bool) or not ok:
                raise bad_request(f"{self.name}: must be an {self.kind}")
            if self.minimum is not None and value < self.minimum:
                raise bad_request(f"{self.name}: must be at least {self.minimum:g}")
            if self.maximum is not None and value > self.maximum:
                raise bad_request(f"{self.name}: must be at most {self.maximum:g}")
            return value
        if not isinstance(value, list):
            raise bad_request(f"{self.name}: must be a list of strings")
        if len(value) > self.max_items:
            raise bad_request(f"{self.name}: at most {self.max_items} items")
        return [self._check_str(v, f"{self.name}[]") for v in value]

    def _check_str(self, value: Any, label: str) -> str:
        if not isinstance(value, str):
            raise bad_request(f"{label}: must be a string")
        if not self.min_length <= len(value) <= self.max_length:
            raise bad_request(f"{label}: length must be {self.min_length}..{self.max_length}")
        if "\x00" in value:
            raise bad_request(f"{label}: must not contain NUL")
        if self.choices is not None and value not in self.choices:
            raise bad_request(f"{label}: must be one of {', '.join(self.choices)}")
        if self.pattern is not None and _compiled(self.pattern).search(value) is None:
            raise bad_request(f"{label}: does not have the required form")
        return value

    def json_schema(self) -> dict[str, Any]:
        if self.kind == "string-list":
            item: dict[str, Any] = {
                "type": "string",
                "maxLength": self.max_length,
                "minLength": self.min_length,
            }
            if self.pattern is not None:
                item["pattern"] = self.pattern
            return {
                "type": "array",
                "items": item,
                "maxItems": self.max_items,
                "description": self.description,
            }
        schema: dict[str, Any] = {"type": self.kind}
        if self.description:
            schema["description"] = self.description
        if self.kind == "string":
            schema["minLength"] = self.min_length
            schema["maxLength"] = self.max_length
            if self.pattern is not None:
                schema["pattern"] = self.pattern
            if self.choices is not None:
                schema["enum"] = list(self.choices)
        if self.minimum is not None:
            schema["minimum"] = self.minimum
        if self.maximum is not None:
            schema["maximum"] = self.maximum
        return schema


@functools.cache
def _compiled(pattern: str) -> re.Pattern[str]:
    """Patterns are few and fixed (route declarations): compile each once, skipping
    the `re` module's cache lookup on every request."""
    return re.compile(pattern)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            # Never echo a key: a secret pasted in the wrong place would come back.
            raise bad_request("a key appears twice in the body")
        out[key] = value
    return out


def _no_constants(name: str) -> Any:
    raise bad_request("NaN and Infinity are not JSON")


# Built once: `json.loads` with keyword arguments builds a new decoder on every call.
_DECODER = json.JSONDecoder(object_pairs_hook=_no_duplicates, parse_constant=_no_constants)


@dataclass(frozen=True)
class BodySchema:
    """A JSON object body: exactly these fields, no others. `any_of` lists alternative
    sets of required fields (documented as JSON Schema `anyOf`, enforced here too)."""

    fields: tuple[Field, ...]
    any_of: tuple[tuple[str, ...], ...] = ()

    def parse(self, raw: bytes) -> dict[str, Any]:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise bad_request("body is not UTF-8") from None
        try:
            doc = _DECODER.decode(text)
        except ValueError:
            raise bad_request("body is not valid JSON") from None
        except RecursionError:
            raise bad_request("body is nested too deeply") from None
        if not isinstance(doc, dict):
            raise bad_request("body must be a JSON object")
        return self.check(doc)

    def check(self, doc: Mapping[str, Any]) -> dict[str, Any]:
        known = {f.name: f for f in self.fields}
        if any(k not in known for k in doc):
            # Name what is allowed, never what was sent (it may be a pasted secret).
            raise bad_request(f"unknown field; allowed: {', '.join(known)}")
        out: dict[str, Any] = {}
        for f in self.fields:
            if f.name not in doc:
                if f.required:
                    raise bad_request(f"{f.name}: required")
                continue
            out[f.name] = f.check(doc[f.name])
        if self.any_of and not any(all(n in out for n in alt) for alt in self.any_of):
            wanted = " or ".join("+".join(alt) for alt in self.any_of)
            raise bad_request(f"required: {wanted}")
        return out

    def json_schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {
            "type": "object",
            "additionalProperties": False,
            "properties": {f.name: f.json_schema() for f in self.fields},
            "required": [f.name for f in self.fields if f.required],
        }
        if self.any_of:
            schema["anyOf"] = [{"required": list(alt)} for alt in self.any_of]
        return schema


@dataclass(frozen=True)
class QuerySchema:
    """Query-string parameters: each at most once, none unknown, converted to its kind."""

    fields: tuple[Field, ...]

    def parse(self, args: Mapping[bytes, Sequence[bytes]]) -> dict[str, Any]:
        known = {f.name: f for f in self.fields}
        out: dict[str, Any] = {}
        for raw_key, values in args.items():
            try:
                key = raw_key.decode("utf-8")
                texts = [v.decode("utf-8") for v in values]
            except UnicodeDecodeError:
                raise bad_request("query string is not UTF-8") from None
            f = known.get(key)
            if f is None:
                allowed = ", ".join(known) or "none"
                raise bad_request(f"unknown query parameter; allowed: {allowed}")
            if len(texts) != 1:
                raise bad_request(f"{key}: give it once")
            out[key] = f.check(self._convert(f, texts[0]))
        for f in self.fields:
            if f.required and f.name not in out:
                raise bad_request(f"{f.name}: required")
        return out

    @staticmethod
    def _convert(f: Field, text: str) -> Any:
        if f.kind == "integer":
            # int() accepts " 1_0 "; a query parameter is plain ASCII digits or nothing.
            if not (text.isascii() and text.lstrip("-").isdigit()) or len(text) > 18:
                raise bad_request(f"{f.name}: must be an integer")
            return int(text)
        if f.kind == "number":
            try:
                value = float(text)
            except ValueError:
                raise bad_request(f"{f.name}: must be a number") from None
            if value != value or value in (float("inf"), float("-inf")):
                raise bad_request(f"{f.name}: must be a finite number")
            return value
        if f.kind == "boolean":
            if text not in ("true", "false"):
                raise bad_request(f"{f.name}: must be true or false")
            return text == "true"
        return text

    def parameters(self) -> list[dict[str, Any]]:
        return [
            {
                "name": f.name,
                "in": "query",
                "required": f.required,
                "schema": f.json_schema(),
                "description": f.description,
            }
            for f in self.fields
        ]
