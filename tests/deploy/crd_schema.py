"""Validate Kubernetes manifests against a CustomResourceDefinition's OpenAPI v3 schema, offline.

The API server validates a custom resource against the structural schema of the CRD version
that the resource's apiVersion names. This module converts that schema (OpenAPI 3.0 plus the
Kubernetes extensions) into JSON Schema for the `jsonschema` package, with the API server's
meaning for each extension:

- fields a schema does not declare are unknown and rejected (what `kubectl apply` does with its
  default strict field validation), unless the node has `x-kubernetes-preserve-unknown-fields`;
- `nullable: true` admits null;
- `x-kubernetes-int-or-string: true` admits an integer or a string;
- `x-kubernetes-list-type: map` / `set` require unique keys / unique items;
- `format: int32` / `int64` bound integers;
- apiVersion, kind and metadata are implied at the root (every object has them).

Not evaluated: the CEL rules in `x-kubernetes-validations` (they need a Kubernetes CEL
environment with its extension functions). Tests that care about such a rule check it directly.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Iterator

import jsonschema
import yaml

# libyaml when present: the DestinationRule CRD alone is 370 kB.
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

INT_RANGES = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}

# The parts of ObjectMeta a manifest may set; the server fills in the rest.
DNS1123_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
OBJECT_META = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "maxLength": 253, "pattern": DNS1123_SUBDOMAIN},
        "namespace": {"type": "string", "maxLength": 63, "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
        "labels": {"type": "object", "additionalProperties": {"type": "string", "maxLength": 63}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}


def convert(node: Any) -> Any:
    """Returns the JSON Schema equivalent of one structural-schema node (recursively)."""
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("properties", "patternProperties"):
            out[key] = {name: convert(sub) for name, sub in value.items()}
        elif key in ("items", "not") or (key == "additionalProperties" and isinstance(value, dict)):
            out[key] = convert(value)
        elif key in ("anyOf", "oneOf", "allOf"):
            out[key] = [convert(sub) for sub in value]
        elif key.startswith("x-kubernetes-") or key in ("nullable", "description", "default", "example"):
            continue
        else:
            out[key] = value

    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]

    if node.get("type") == "object" and not node.get("x-kubernetes-preserve-unknown-fields"):
        # Structural schemas declare either properties or additionalProperties; with neither,
        # the server prunes every field, so any field is unknown.
        if "additionalProperties" not in node:
            out["additionalProperties"] = False

    list_type = node.get("x-kubernetes-list-type")
    if list_type == "set":
        out["uniqueItems"] = True
    elif list_type == "map":
        out["x-list-map-keys"] = node.get("x-kubernetes-list-map-keys", [])

    if node.get("nullable"):
        if "type" in out:
            out["type"] = [out["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
        if "anyOf" in out and "type" not in out:
            out["anyOf"] = [*out["anyOf"], {"type": "null"}]
    return out


def _list_map_keys(validator, keys, instance, schema):
    """x-kubernetes-list-type: map — no two items may share the same key values."""
    if not isinstance(instance, list):
        return
    seen = set()
    for item in instance:
        if not isinstance(item, dict):
            continue
        key = tuple(repr(item.get(k)) for k in keys)
        if key in seen:
            yield jsonschema.ValidationError(f"duplicate entry for list-map keys {keys}: {item!r}")
        seen.add(key)


def _int_format(validator, fmt, instance, schema):
    if fmt in INT_RANGES and isinstance(instance, int) and not isinstance(instance, bool):
        low, high = INT_RANGES[fmt]
        if not low <= instance <= high:
            yield jsonschema.ValidationError(f"{instance} is out of range for format {fmt}")


# OpenAPI 3.0's schema object is, for the keywords CRDs use, JSON Schema draft 4.
_Base = jsonschema.validators.Draft4Validator
Validator = jsonschema.validators.extend(
    _Base, {"x-list-map-keys": _list_map_keys, "format": _int_format}
)


class CrdSet:
    """The CRDs of a folder, indexed by (apiVersion, kind)."""

    def __init__(self, folder: Path):
        self.schemas: dict[tuple[str, str], dict] = {}
        for path in sorted(folder.glob("*.yaml")):
            for crd in yaml.load_all(path.read_text(), Loader=_Loader):
                if not crd or crd.get("kind") != "CustomResourceDefinition":
                    continue
                group = crd["spec"]["group"]
                kind = crd["spec"]["names"]["kind"]
                for version in crd["spec"]["versions"]:
                    if version.get("served"):
                        api_version = f"{group}/{version['name']}"
                        self.schemas[(api_version, kind)] = version["schema"]["openAPIV3Schema"]

    def validator(self, api_version: str, kind: str) -> jsonschema.protocols.Validator:
        """A validator for one kind+version; KeyError when no served CRD version has it."""
        raw = self.schemas[(api_version, kind)]
        schema = convert(copy.deepcopy(raw))
        schema.setdefault("properties", {})
        schema["properties"].update(
            {
                "apiVersion": {"enum": [api_version]},
                "kind": {"enum": [kind]},
                "metadata": OBJECT_META,
            }
        )
        schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind", "metadata"})
        Validator.check_schema(schema)
        return Validator(schema)

    def errors(self, manifest: dict) -> list[str]:
        """Every schema violation of one manifest, as 'path: message' lines (empty if valid)."""
        api_version, kind = manifest.get("apiVersion"), manifest.get("kind")
        if (api_version, kind) not in self.schemas:
            return [f"no served CRD version for apiVersion={api_version!r} kind={kind!r}"]
        validator = self.validator(api_version, kind)
        found = sorted(validator.iter_errors(manifest), key=lambda e: list(e.absolute_path))
        return [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in found]


def load_documents(path: Path) -> Iterator[dict]:
    """The non-empty YAML documents of a manifest file."""
    for doc in yaml.load_all(path.read_text(), Loader=_Loader):
        if doc:
            yield doc
