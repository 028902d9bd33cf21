"""docs/reference/config.md, from config.yaml's pydantic models (``config.schema.PluginConfig``):
every key at every level with what it accepts, its default, bounds and meaning.

What a key accepts is read from the editor schema (``editor_schemas.json_schema("config")``),
the models' JSON Schema widened to every form iochost reads; comparing it with the models'
own schema tells which spellings are iocmng's, so this page knows no spelling by itself."""

from __future__ import annotations

import json
from typing import Any

from iochost.config.schema import PluginConfig
from iochost.editor_schemas import CONSTRAINT_NAMES, any_case, json_schema
from iochost.reference.markdown import anchor, cell, code, heading, table, text

Schema = dict[str, Any]
ROOT = "Top level"
# Bounds as the page writes them, in JSON Schema's names.
BOUNDS = {"minimum": "≥ {}", "exclusiveMinimum": "> {}", "maximum": "≤ {}", "exclusiveMaximum": "< {}",
          "minLength": "of length ≥ {}", "maxLength": "of length ≤ {}"}
TYPES = {"string": "text", "number": "number", "integer": "integer", "boolean": "`true` or `false`", "null": "empty"}


def _plain(schema: Schema) -> Schema:
    """Constraint names as JSON Schema spells them (pydantic writes ``ge`` on a member of an optional)."""
    return {CONSTRAINT_NAMES.get(key, key): value for key, value in schema.items()}


def _any_case(schema: Schema) -> list[str] | None:
    """The words of ``enum`` when ``schema`` is the editor schema's "one of these words, any case"."""
    members = schema.get("anyOf", [])
    if len(members) == 2 and "enum" in members[0] and members[1].get("pattern") == any_case(members[0]["enum"]):
        return [str(word) for word in members[0]["enum"]]
    return None


def _ref(schema: Schema) -> str | None:
    return schema["$ref"].rsplit("/", 1)[-1] if "$ref" in schema else None


def forms(schema: Schema) -> list[str]:
    """What ``schema`` accepts, one phrase per alternative."""
    schema = _plain(schema)
    words = _any_case(schema)
    if words is not None:
        return ["one of " + ", ".join(code(word) for word in words) + " (any case)"]
    if (name := _ref(schema)) is not None:
        return [f"[{name}](#{anchor(name)})"]
    if "anyOf" in schema:
        return [phrase for member in schema["anyOf"] for phrase in forms(member)]
    if "enum" in schema:
        return ["one of " + ", ".join(code(str(value)) for value in schema["enum"])]
    kind = schema.get("type")
    if kind == "object":
        values = schema.get("additionalProperties")
        return ["a mapping of names to " + " or ".join(forms(values)) if isinstance(values, dict) else "a mapping"]
    if kind == "array":
        return ["a list of " + " or ".join(forms(schema.get("items", {})))]
    if kind is None:
        return ["any value"]
    phrase = TYPES[kind]
    if schema.get("pattern") == r"^\s*$":
        return ["blank text"]
    bounds = [template.format(schema[key]) for key, template in BOUNDS.items() if key in schema]
    if "pattern" in schema:
        bounds.append(f"matching {code(schema['pattern'])}")
    return [phrase + (" " + ", ".join(bounds) if bounds else "")]


def _enum(schema: Schema) -> set[str]:
    """Every enumerated word ``schema`` lists, at any depth of ``anyOf``."""
    found = {str(value) for value in schema.get("enum", [])}
    for member in schema.get("anyOf", []):
        found |= _enum(member)
    return found


def _has(schema: Schema, test: Any) -> bool:
    return bool(test(schema)) or any(_has(member, test) for member in schema.get("anyOf", []))


def iocmng(key: str, widened: Schema, strict: Schema | None) -> str:
    """The forms of ``key`` the editor schema takes and the models' own schema does not."""
    if strict is None:
        return "iocmng's key"
    notes = []
    strict_words, widened_words = _enum(strict), _enum(widened)
    if strict_words and widened_words - strict_words:
        notes.append("also " + ", ".join(code(word) for word in sorted(widened_words - strict_words)))
    if strict_words and _has(widened, lambda s: _any_case(s) is not None):
        notes.append("any case")
    if _has(widened, _is_list) and not _has(strict, _is_list):
        notes.append(" or ".join(phrase for phrase in forms(widened) if phrase.startswith("a list")))
    return "; ".join(notes)


def _is_list(schema: Schema) -> bool:
    return schema.get("type") == "array"


def _default(key: str, schema: Schema, required: list[str]) -> str:
    if key in required:
        return "required"
    if "default" not in schema:
        return "empty" if _has(_plain(schema), lambda s: s.get("type") in ("object", "array") or "$ref" in s) \
            else "not set"
    value = schema["default"]
    if value is None:
        return "not set"
    if value == "":
        return "empty text"
    return code(value if isinstance(value, str) else json.dumps(value))


def _order(widened: Schema) -> list[str]:
    """The sections, each after the first one that refers to it (the page reads top down)."""
    names: list[str] = []

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            name = _ref(node)
            if name is not None and name not in names:
                names.append(name)
                visit(widened["$defs"][name])
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(widened["properties"])
    return names + [name for name in widened["$defs"] if name not in names]


def _meaning(schema: Schema, strict: Schema | None, definitions: dict[str, Schema]) -> str:
    """The key's description, else the first sentence of the section it opens."""
    described = schema.get("description") or (strict or {}).get("description")
    if not described:
        names = [name for name in _refs(schema) if definitions[name].get("description")]
        described = " ".join(definitions[names[0]]["description"].split()).split(". ")[0] if names else ""
    return str(described).replace("``", "`")


def _refs(schema: Schema) -> list[str]:
    """The sections ``schema`` refers to directly or through ``anyOf``, ``items``."""
    name = _ref(schema)
    found = [name] if name is not None else []
    for member in [*schema.get("anyOf", []), *([schema["items"]] if "items" in schema else [])]:
        found += _refs(member)
    return found


def _section(title: str, widened: Schema, strict: Schema | None, definitions: dict[str, Schema]) -> list[str]:
    strict_properties = strict["properties"] if strict is not None else {}
    required = widened.get("required", [])
    rows = []
    for key, schema in widened["properties"].items():
        description = _meaning(schema, strict_properties.get(key), definitions)
        rows.append([code(key), cell(" or ".join(forms(schema))), _default(key, schema, required), cell(description),
                     "" if strict is None else iocmng(key, schema, strict_properties.get(key))])
    lines = ["", f"## {title}", ""]
    if widened.get("description"):
        lines += [text(widened["description"].replace("``", "`")), ""]
    if strict is None:
        lines += ["This whole form is iocmng's; iochost reads it as the form it stands for.", ""]
    extra = widened.get("additionalProperties")
    lines.append("A key not listed is accepted." if extra is True or extra is None else
                 "A key not listed is refused.")
    return lines + ["", *table(["key", "accepts", "default", "meaning", "iocmng"], rows)]


def page() -> str:
    """config.yaml's keys, one section per level, top level first."""
    widened = json_schema("config")
    strict = PluginConfig.model_json_schema(mode="validation")
    lines = [
        *heading("config.yaml", "iochost.config.schema.PluginConfig"),
        "Each section below is one level of the file, the top level first. *accepts* is every form",
        "iochost reads; *iocmng* names the forms it reads only because iocmng wrote them so. The same",
        "facts as a JSON Schema for editors: [config.schema.json](../schemas/config.schema.json)",
        "(`iochost schema config`).",
    ]
    definitions = widened["$defs"]
    lines += _section(ROOT, widened, strict, definitions)
    for name in _order(widened):
        lines += _section(name, definitions[name], strict["$defs"].get(name), definitions)
    return "\n".join(lines) + "\n"
