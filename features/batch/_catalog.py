"""The creators' catalog: read and check it, derive the feature spec, encode its items.

The catalog (written by ``carryon simulate``) holds creator configuration only: niche,
CTA variants and micro-bonuses. Item features are encoded here once, through the spec,
so the batch tables, the encoded ``catalog.json`` the trainers read and the edge all
score a variant or a bonus with the same numbers.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from features.config import FeatureConfig
from features.errors import DataError, InputUnreadableError
from features.spec import BONUS_KINDS, CTA_STYLES, Feature, FeatureSpec

CATALOG_SCHEMA = 1
_FIX = "regenerate it with `carryon simulate`"

# Item feature name -> the catalog field it encodes, per item kind.
VARIANT_FIELDS: dict[str, str] = {
    "variant_style": "style", "variant_discount": "discount", "variant_urgency": "urgency",
}
BONUS_FIELDS: dict[str, str] = {
    "bonus_kind": "kind", "bonus_value": "value", "bonus_requires_pickup": "requires_pickup",
}


@dataclass(frozen=True)
class Catalog:
    """A checked catalog: the raw JSON plus the name it was read from (for messages)."""

    raw: dict[str, Any]
    source: str

    @property
    def creators(self) -> list[dict[str, Any]]:
        creators: list[dict[str, Any]] = self.raw["creators"]
        return creators

    @property
    def niches(self) -> tuple[str, ...]:
        return tuple(sorted({str(c["niche"]) for c in self.creators}))


def _require(obj: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str,
             source: str) -> Any:
    if key not in obj:
        raise DataError(f"{source}: {where}.{key} is missing; {_FIX}")
    value = obj[key]
    if isinstance(value, bool) and kind in (int, float, (int, float)):
        value = int(value)
    if not isinstance(value, kind):
        raise DataError(f"{source}: {where}.{key} has the wrong type ({value!r}); {_FIX}")
    return value


def load_catalog(path: Path) -> Catalog:
    """Read and check the catalog; errors name the file, the field and the fix."""
    source = path.name
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) else "not UTF-8"
        raise InputUnreadableError(
            f"{path}: cannot read the catalog ({reason}); run `carryon simulate` to write it"
        ) from e
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputUnreadableError(f"{path}: the catalog is not valid JSON ({e}); {_FIX}") from e
    if not isinstance(raw, dict):
        raise DataError(f"{source}: the catalog must be a JSON object; {_FIX}")
    if raw.get("schema") != CATALOG_SCHEMA:
        raise DataError(
            f"{source}: schema must be {CATALOG_SCHEMA}, got {raw.get('schema')!r}; {_FIX}"
        )
    creators = _require(raw, "creators", list, "catalog", source)
    if not creators:
        raise DataError(f"{source}: catalog.creators is empty; {_FIX}")
    seen: set[str] = set()
    for i, creator in enumerate(creators):
        where = f"creators[{i}]"
        if not isinstance(creator, dict):
            raise DataError(f"{source}: {where} must be an object; {_FIX}")
        cid = _require(creator, "creator_id", str, where, source)
        if cid in seen:
            raise DataError(f"{source}: {where}.creator_id {cid!r} appears twice; {_FIX}")
        seen.add(cid)
        _require(creator, "niche", str, where, source)
        for list_key, id_key, fields in (("variants", "variant", VARIANT_FIELDS),
                                         ("bonuses", "bonus_id", BONUS_FIELDS)):
            items = _require(creator, list_key, list, where, source)
            ids: set[str] = set()
            for j, item in enumerate(items):
                item_where = f"{where}.{list_key}[{j}]"
                if not isinstance(item, dict):
                    raise DataError(f"{source}: {item_where} must be an object; {_FIX}")
                item_id = _require(item, id_key, str, item_where, source)
                if item_id in ids:
                    raise DataError(f"{source}: {item_where}.{id_key} {item_id!r} appears twice; {_FIX}")
                ids.add(item_id)
                for field in fields.values():
                    kind: type | tuple[type, ...] = str if field in ("style", "kind") else (int, float)
                    _require(item, field, kind, item_where, source)
    return Catalog(raw, source)


def build_spec(catalog: Catalog, config: FeatureConfig) -> FeatureSpec:
    """The spec: niches from the catalog, the fixed styles and kinds, the label window."""
    return FeatureSpec.build(catalog.niches, CTA_STYLES, BONUS_KINDS, config.label_window_s)


def _f32(value: float) -> float:
    """The float32 value as a Python float (exact in JSON and when cast back)."""
    return float(np.float32(value))


def encode_item(
    features: tuple[Feature, ...], item: Mapping[str, Any], fields: Mapping[str, str],
) -> list[float]:
    """Encode a variant's or a bonus's catalog fields into its item features, in spec order."""
    return [_f32(f.encode(item.get(fields[f.name]))) for f in features]


def encoded_catalog(catalog: Catalog, spec: FeatureSpec) -> dict[str, Any]:
    """The catalog with each variant's and bonus's item features encoded by the spec."""
    creators = []
    for creator in catalog.creators:
        creators.append({
            **creator,
            "creator_niche_code": _f32(spec["creator_niche"].encode(creator["niche"])),
            "variants": [{**v, "features": encode_item(spec.cta_item, v, VARIANT_FIELDS)}
                         for v in creator["variants"]],
            "bonuses": [{**b, "features": encode_item(spec.bonus_item, b, BONUS_FIELDS)}
                        for b in creator["bonuses"]],
        })
    return {
        "schema": CATALOG_SCHEMA,
        "spec_hash": spec.hash,
        "cta_item_names": [f.name for f in spec.cta_item],
        "bonus_item_names": [f.name for f in spec.bonus_item],
        "creators": creators,
    }


def _item_frame(
    catalog: Catalog, features: tuple[Feature, ...], list_key: str, id_key: str,
    fields: Mapping[str, str],
) -> pl.DataFrame:
    rows = [
        (c["creator_id"], item[id_key], *encode_item(features, item, fields))
        for c in catalog.creators for item in c[list_key]
    ]
    names = ["creator_id", id_key, *(f.name for f in features)]
    schema = {n: (pl.String() if i < 2 else pl.Float32()) for i, n in enumerate(names)}
    return pl.DataFrame(rows, schema=schema, orient="row")


def variant_frame(catalog: Catalog, spec: FeatureSpec) -> pl.DataFrame:
    """creator_id, variant and the encoded CTA item features, one row per variant."""
    return _item_frame(catalog, spec.cta_item, "variants", "variant", VARIANT_FIELDS)


def bonus_frame(catalog: Catalog, spec: FeatureSpec) -> pl.DataFrame:
    """creator_id, bonus_id and the encoded bonus item features, one row per bonus."""
    return _item_frame(catalog, spec.bonus_item, "bonuses", "bonus_id", BONUS_FIELDS)


def niche_frame(catalog: Catalog, spec: FeatureSpec) -> pl.DataFrame:
    """creator_id and the encoded creator_niche."""
    feature = spec["creator_niche"]
    return pl.DataFrame(
        {"creator_id": [c["creator_id"] for c in catalog.creators],
         "creator_niche": [_f32(feature.encode(c["niche"])) for c in catalog.creators]},
        schema={"creator_id": pl.String(), "creator_niche": pl.Float32()},
    )
