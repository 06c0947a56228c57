"""Reading the recognition catalogue (``schemas/recognition-catalogue.yaml`` by default)."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import yaml

from hub.errors import ConfigError
from hub.recognition.rules import Catalogue, Item
from hub.schemas import schema_file


def load_catalogue(path: Path | None = None) -> Catalogue:
    path = Path(path or schema_file("recognition-catalogue.yaml"))
    try:
        doc = yaml.safe_load(path.read_text("utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read the recognition catalogue {path}: {exc}") from exc
    schema = json.loads(schema_file("recognition-catalogue.schema.json").read_text("utf-8"))
    try:
        jsonschema.validate(doc, schema)
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(root)"
        raise ConfigError(f"{path}: {where}: {exc.message}") from exc
    items = {}
    for i in doc["items"]:
        req = i.get("requires") or {}
        items[i["code"]] = Item(
            i["code"], i["name"], i["category"], i["validity_days"], i["scope"],
            float(i["price_yuan"]), tuple(i.get("loinc") or ()), tuple(i.get("modality") or ()),
            tuple(i.get("body_site") or ()), req.get("eqa"), req.get("min_tier"),
            req.get("status") == "final")
    if len(items) != len(doc["items"]):
        raise ConfigError(f"{path}: item codes must be unique")
    negative = {n["code"]: (n["name"], n["reason"]) for n in doc.get("negative_list") or ()}
    neg_loinc = frozenset(c for n in doc.get("negative_list") or () for c in n.get("loinc", ()))
    overlap = neg_loinc & {c for it in items.values() for c in it.loinc}
    if overlap:
        raise ConfigError(f"{path}: LOINC codes both recognised and on the negative list: "
                          f"{sorted(overlap)}")
    return Catalogue(doc["mark"], items, negative, neg_loinc)
