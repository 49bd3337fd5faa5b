"""The operator allowlist: the (domain, operator, opset) set the edge runtime accepts, kept in one file.

``load_allowlist()`` reads ``export/operators.json`` (shipped as package data); ``check_operators``
refuses any model that uses an operator outside it, imports a domain or opset beyond it, or keeps
tensors in external data files. ``Allowlist.to_dict()`` is what travels in every bundle's manifest
as the runtime capability the bundle needs. Device-side: imports only onnx and the standard library.
"""

from __future__ import annotations

import importlib.resources
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

ALLOWLIST_FILE = "operators.json"
SCHEMA = 1
_PACKAGE = __name__.rpartition(".")[0] or "export"
DEFAULT_SOURCE = f"{_PACKAGE}/{ALLOWLIST_FILE}"


class AllowlistFileError(ValueError):
    """The allowlist file is missing, unreadable or malformed."""


class OperatorNotAllowed(ValueError):
    """A model uses operators, opsets or storage the edge runtime does not accept."""


def _domain(name: str) -> str:
    return name or "ai.onnx"


@dataclass(frozen=True)
class Allowlist:
    """Per domain: the highest opset a model may import and the operators it may use."""

    opsets: Mapping[str, int]
    operators_by_domain: Mapping[str, frozenset[str]]
    min_onnxruntime: str
    source: str = DEFAULT_SOURCE

    @property
    def operators(self) -> frozenset[tuple[str, str, int]]:
        """Every allowed (domain, op_type, opset) triple."""
        return frozenset(
            (domain, op, self.opsets[domain]) for domain, ops in self.operators_by_domain.items() for op in ops
        )

    def allows(self, domain: str, op_type: str, opset: int) -> bool:
        domain = _domain(domain)
        limit = self.opsets.get(domain)
        return limit is not None and 1 <= opset <= limit and op_type in self.operators_by_domain.get(domain, ())

    def to_dict(self) -> dict[str, Any]:
        """The allowlist as JSON-ready data (same layout as the file, plus its source name)."""
        return {
            "schema": SCHEMA,
            "source": self.source,
            "min_onnxruntime": self.min_onnxruntime,
            "domains": {
                domain: {"opset": self.opsets[domain], "operators": sorted(self.operators_by_domain[domain])}
                for domain in sorted(self.opsets)
            },
        }

    @classmethod
    def from_dict(cls, data: Any, source: str = DEFAULT_SOURCE) -> Allowlist:
        """Parse the file's (or a bundle manifest's) allowlist; errors name ``source`` and the field."""

        def bad(field: str, problem: str) -> AllowlistFileError:
            return AllowlistFileError(f"{source}: field {field!r} {problem}; fix the allowlist file")

        if not isinstance(data, dict):
            raise bad("(top level)", "must be a JSON object")
        if data.get("schema") != SCHEMA:
            raise bad("schema", f"must be {SCHEMA}, got {data.get('schema')!r}")
        min_ort = data.get("min_onnxruntime")
        if not isinstance(min_ort, str) or not all(p.isdigit() for p in min_ort.split(".")):
            raise bad("min_onnxruntime", f"must be a version string like '1.20', got {min_ort!r}")
        domains = data.get("domains")
        if not isinstance(domains, dict) or not domains:
            raise bad("domains", "must be a non-empty object of domain -> {opset, operators}")
        opsets: dict[str, int] = {}
        ops: dict[str, frozenset[str]] = {}
        for name, entry in domains.items():
            if not isinstance(entry, dict):
                raise bad(f"domains.{name}", "must be an object with 'opset' and 'operators'")
            opset = entry.get("opset")
            if not isinstance(opset, int) or isinstance(opset, bool) or opset < 1:
                raise bad(f"domains.{name}.opset", f"must be a positive integer, got {opset!r}")
            names = entry.get("operators")
            if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
                raise bad(f"domains.{name}.operators", "must be a non-empty list of operator names")
            if len(set(names)) != len(names):
                raise bad(f"domains.{name}.operators", "lists an operator twice")
            domain = _domain(name)
            if domain in opsets:
                raise bad(f"domains.{name}", "repeats a domain ('' and 'ai.onnx' are the same)")
            opsets[domain] = opset
            ops[domain] = frozenset(names)
        return cls(opsets=opsets, operators_by_domain=ops, min_onnxruntime=min_ort, source=source)


def load_allowlist(path: Path | None = None) -> Allowlist:
    """The packaged allowlist, or the one at ``path`` (its source is recorded by file name only)."""
    source = DEFAULT_SOURCE if path is None else Path(path).name
    try:
        if path is None:
            text = importlib.resources.files(_PACKAGE).joinpath(ALLOWLIST_FILE).read_text(encoding="utf-8")
        else:
            text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise AllowlistFileError(
            f"{source}: cannot read the operator allowlist ({exc.strerror}); fix: reinstall carryon "
            f"(the file is package data) or pass an existing file"
        ) from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AllowlistFileError(f"{source}: not valid JSON (line {exc.lineno}: {exc.msg}); fix the file") from exc
    return Allowlist.from_dict(data, source)


def _graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("g"):
                yield from _graphs(attr.g)
            for sub in attr.graphs:
                yield from _graphs(sub)


def _tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("sparse_tensor"):
                yield attr.sparse_tensor.values
                yield attr.sparse_tensor.indices


def _all_nodes(model: onnx.ModelProto) -> Iterator[onnx.NodeProto]:
    for graph in _graphs(model.graph):
        yield from graph.node
    for function in model.functions:
        yield from function.node


def check_operators(model: onnx.ModelProto, allowlist: Allowlist, name: str = "model") -> None:
    """Raise ``OperatorNotAllowed`` naming every operator, opset import or external tensor the edge refuses."""
    imports = {_domain(op.domain): op.version for op in model.opset_import}
    problems: list[str] = []
    for domain, version in sorted(imports.items()):
        limit = allowlist.opsets.get(domain)
        if limit is None:
            problems.append(f"opset import {domain} {version} (domain not in the allowlist)")
        elif version > limit:
            problems.append(f"opset import {domain} {version} (allowlist stops at {limit})")
    offending: set[str] = set()
    for node in _all_nodes(model):
        domain = _domain(node.domain)
        version = imports.get(domain, 0)
        if not allowlist.allows(domain, node.op_type, version):
            at = f"at opset {version}" if version else "(domain not imported)"
            offending.add(f"{domain}:{node.op_type} {at}")
    problems.extend(f"operator {entry}" for entry in sorted(offending))
    external = sorted(
        {
            t.name or "(unnamed)"
            for graph in _graphs(model.graph)
            for t in _tensors(graph)
            if t.data_location == onnx.TensorProto.EXTERNAL
        }
    )
    problems.extend(f"tensor {t!r} stored as external data" for t in external)
    if problems:
        raise OperatorNotAllowed(
            f"{name} is outside the edge runtime's operator allowlist ({allowlist.source}): "
            + "; ".join(problems)
            + f". Fix: export with allowed operators only (ai.onnx <= {allowlist.opsets.get('ai.onnx')}, "
            "tensors embedded in the model), or add the operator to the allowlist file if every supported "
            f"onnxruntime (>= {allowlist.min_onnxruntime}) runs it."
        )
