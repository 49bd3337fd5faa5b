"""The bench report's JSON Schema (``report.schema.json``) and the reader that holds reports to it.

The validator covers the draft 2020-12 keywords the schema uses (type, properties, required,
additionalProperties, items, enum, const, minimum, exclusiveMinimum, minLength, minItems,
maxProperties, pattern, anyOf, if/then, local ``$ref``) with the standard library only, so
devices and the build machine check reports the same way without the jsonschema package.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

from benchmarks.device._errors import BenchError

SCHEMA_FILE = Path(__file__).with_name("report.schema.json")
SCHEMA_VERSION = 1
REPORT_KIND = "carryon-bench-report"

_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,), "array": (list,), "string": (str,), "boolean": (bool,), "null": (type(None),),
    "integer": (int,), "number": (int, float),
}


@cache
def report_schema() -> dict[str, Any]:
    try:
        schema: dict[str, Any] = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    except OSError as e:
        raise BenchError(f"{SCHEMA_FILE.name}: the bench report schema is missing from the installed package "
                         f"({e.strerror}); reinstall carryon") from e
    return schema


def _is(value: object, name: str) -> bool:
    if isinstance(value, bool) and name in ("integer", "number"):
        return False
    if name == "integer" and isinstance(value, float):
        return value.is_integer()
    return isinstance(value, _TYPES[name])


def _kind(value: object) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null",
            int: "integer", float: "number"}.get(type(value), type(value).__name__)


def _resolve(ref: str, root: dict[str, Any]) -> dict[str, Any]:
    if not ref.startswith("#/"):
        raise ValueError(f"only local $ref is supported, got {ref!r}")
    node: Any = root
    for part in ref[2:].split("/"):
        node = node[part]
    return dict(node)


def validate(value: object, schema: dict[str, Any], root: dict[str, Any] | None = None, at: str = "$") -> list[str]:
    """Every violation of ``schema`` by ``value``, each as ``path: what is wrong``."""
    root = schema if root is None else root
    if "$ref" in schema:
        return validate(value, _resolve(schema["$ref"], root), root, at)
    errors: list[str] = []
    if "type" in schema:
        names = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_is(value, n) for n in names):
            return [f"{at}: expected {' or '.join(names)}, got {_kind(value)}"]
    if "const" in schema and value != schema["const"]:
        errors.append(f"{at}: must be {schema['const']!r}, got {value!r}")
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{at}: must be one of {schema['enum']}, got {value!r}")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{at}: must be >= {schema['minimum']}, got {value!r}")
        if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
            errors.append(f"{at}: must be > {schema['exclusiveMinimum']}, got {value!r}")
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            errors.append(f"{at}: must have at least {schema['minLength']} characters")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append(f"{at}: {value!r} does not match {schema['pattern']}")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            errors.append(f"{at}: must have at least {schema['minItems']} items, got {len(value)}")
        if "items" in schema:
            for i, item in enumerate(value):
                errors += validate(item, schema["items"], root, f"{at}[{i}]")
    if isinstance(value, dict):
        errors += _object(value, schema, root, at)
    if "anyOf" in schema and all(validate(value, s, root, at) for s in schema["anyOf"]):
        options = [e for s in schema["anyOf"] for e in validate(value, s, root, at)]
        errors.append(f"{at}: matches none of the allowed forms ({'; '.join(options)})")
    if "if" in schema and not validate(value, schema["if"], root, at) and "then" in schema:
        errors += validate(value, schema["then"], root, at)
    return errors


def _object(value: dict[str, Any], schema: dict[str, Any], root: dict[str, Any], at: str) -> list[str]:
    errors = [f"{at}: required field {key!r} is missing" for key in schema.get("required", ()) if key not in value]
    if "maxProperties" in schema and len(value) > schema["maxProperties"]:
        errors.append(f"{at}: must have at most {schema['maxProperties']} fields, got {len(value)}")
    properties = schema.get("properties", {})
    extra = schema.get("additionalProperties", True)
    for key, item in value.items():
        if key in properties:
            errors += validate(item, properties[key], root, f"{at}.{key}")
        elif extra is False:
            errors.append(f"{at}: unexpected field {key!r}")
        elif isinstance(extra, dict):
            errors += validate(item, extra, root, f"{at}.{key}")
    return errors


def check_report(report: object, source: str) -> dict[str, Any]:
    """Return ``report`` if it is a valid schema-1 bench report, else raise :class:`BenchError`."""
    if not isinstance(report, dict) or report.get("kind") != REPORT_KIND:
        raise BenchError(f"{source}: not a carryon bench report (field 'kind' is not {REPORT_KIND!r}); "
                         "pass a report written by `carryon bench run`")
    if report.get("schema") != SCHEMA_VERSION:
        raise BenchError(f"{source}: report schema {report.get('schema')!r} is not supported (this carryon reads "
                         f"schema {SCHEMA_VERSION}); rerun the job with this version of carryon")
    errors = validate(report, report_schema())
    if errors:
        more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
        raise BenchError(f"{source}: invalid bench report: {'; '.join(errors[:3])}{more}; "
                         "rerun `carryon bench run` rather than editing the report")
    return report


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def load_report(path: str | Path) -> dict[str, Any]:
    """Read and validate a bench report; raise :class:`BenchError` naming the file, the field and the fix."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise BenchError(f"{path}: cannot read the bench report ({e.strerror}); check the path") from e
    except UnicodeDecodeError as e:
        raise BenchError(f"{path}: not a bench report (not UTF-8 text)") from e
    try:
        report = json.loads(text, parse_constant=_no_constant)
    except ValueError as e:
        raise BenchError(f"{path}: not a bench report (invalid JSON: {e})") from e
    return check_report(report, str(path))
