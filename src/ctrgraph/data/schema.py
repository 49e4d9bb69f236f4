"""Field kinds and roles: the typed description of one CTR instance.

Every recipe returns a :class:`Schema`; models and graph builders find what they need by *role*
(``user``, ``item``, ``behavior`` ...) rather than by data-set-specific names.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from enum import Enum

from ..errors import ConfigError


class Kind(str, Enum):
    """How a field is stored and embedded."""

    CATEGORICAL = "categorical"  # one id per instance -> [B]
    MULTI_VALUED = "multi_valued"  # a set/list of ids (genres) -> [B, L], pooled by models
    SEQUENCE = "sequence"  # an ordered sequence (behaviour history) -> [B, L], most recent last
    NUMERIC = "numeric"  # one float per instance -> [B]; embedded as v_j * x_j


class Role(str, Enum):
    """What a field means, so that graph code finds users, items and behaviours generically."""

    USER = "user"
    ITEM = "item"
    USER_ATTR = "user_attr"
    ITEM_ATTR = "item_attr"
    CONTEXT = "context"
    BEHAVIOR = "behavior"
    QUERY = "query"
    QUERY_BEHAVIOR = "query_behavior"
    LABEL = "label"


@dataclass(frozen=True)
class Field:
    """One column of the encoded data set.

    Attributes:
        name: column name (key of the batch dict).
        kind: storage kind, see :class:`Kind`.
        role: meaning, see :class:`Role`.
        vocab: name of the vocabulary / embedding table. Defaults to ``name``; sequence fields
            share the table of the field they hold (``hist_item_id`` has ``vocab="item_id"``).
        max_len: maximum length of a multi-valued or sequence field (padded with 0 after the
            values: ``[v_1, ..., v_n, 0, ..., 0]``, most recent last for sequences).
        target: for behaviour sequences, the candidate field the sequence is compared with
            (DIN's attention query): ``hist_item_id.target = "item_id"``.
        group: for sequences parallel to a main behaviour sequence (the category or timestamp
            of each behaviour), the name of that main sequence.
        embed: False for raw-valued fields that models must not embed (timestamps, ids kept
            for graph building or evaluation only). Such fields keep their raw values.
    """

    name: str
    kind: Kind
    role: Role
    vocab: str | None = None
    max_len: int = 0
    target: str | None = None
    group: str | None = None
    embed: bool = True

    @property
    def table(self) -> str:
        """The vocabulary / embedding table name."""
        return self.vocab or self.name

    @property
    def is_sequence_like(self) -> bool:
        return self.kind in (Kind.MULTI_VALUED, Kind.SEQUENCE)

    @property
    def encoded(self) -> bool:
        """True when raw values are mapped through a vocabulary (categorical ids)."""
        return self.embed and self.kind != Kind.NUMERIC

    def to_dict(self) -> dict:
        d = asdict(self)
        d["kind"] = self.kind.value
        d["role"] = self.role.value
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Field":
        known = {"name", "kind", "role", "vocab", "max_len", "target", "group", "embed"}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"field {d.get('name', '?')!r}: unknown key(s) {sorted(unknown)}; known: {sorted(known)}")
        try:
            kind = Kind(d["kind"])
        except (KeyError, ValueError):
            raise ConfigError(
                f"field {d.get('name', '?')!r}: kind must be one of {[k.value for k in Kind]}, got {d.get('kind')!r}"
            ) from None
        try:
            role = Role(d["role"])
        except (KeyError, ValueError):
            raise ConfigError(
                f"field {d.get('name', '?')!r}: role must be one of {[r.value for r in Role]}, got {d.get('role')!r}"
            ) from None
        return cls(
            name=str(d["name"]),
            kind=kind,
            role=role,
            vocab=d.get("vocab"),
            max_len=int(d.get("max_len", 0) or 0),
            target=d.get("target"),
            group=d.get("group"),
            embed=bool(d.get("embed", True)),
        )


@dataclass(frozen=True)
class Schema:
    """An ordered collection of fields with exactly one label field."""

    fields: tuple[Field, ...]
    label: str = "label"
    description: str = ""
    meta: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        names = [f.name for f in self.fields]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ConfigError(f"schema: duplicate field name(s) {sorted(dup)}")
        if self.label not in names:
            raise ConfigError(f"schema: label field {self.label!r} is not among the fields {names}")
        by = {f.name: f for f in self.fields}
        for f in self.fields:
            if f.is_sequence_like and f.max_len <= 0:
                raise ConfigError(f"field {f.name!r}: {f.kind.value} fields need max_len > 0")
            if f.target is not None and f.target not in by:
                raise ConfigError(f"field {f.name!r}: target {f.target!r} is not a field")
            if f.group is not None:
                g = by.get(f.group)
                if g is None or g.kind != Kind.SEQUENCE:
                    raise ConfigError(f"field {f.name!r}: group {f.group!r} must name a sequence field")
                if f.max_len != g.max_len:
                    raise ConfigError(f"field {f.name!r}: max_len must equal its group's ({g.max_len})")
        for f in self.fields:
            if f.embed and f.kind != Kind.NUMERIC:
                kinds = {g.embed for g in self.fields if g.table == f.table}
                if len(kinds) > 1:
                    raise ConfigError(f"vocabulary {f.table!r} is shared by embedded and raw fields")

    # ----- lookups -------------------------------------------------------------------------
    def __getitem__(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)

    def __contains__(self, name: str) -> bool:
        return any(f.name == name for f in self.fields)

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.fields]

    def by_role(self, *roles: Role) -> list[Field]:
        return [f for f in self.fields if f.role in roles]

    def first(self, role: Role) -> Field | None:
        fs = self.by_role(role)
        return fs[0] if fs else None

    @property
    def features(self) -> list[Field]:
        """Fields models embed (all but the label and raw-valued fields)."""
        return [f for f in self.fields if f.role != Role.LABEL and f.embed]

    @property
    def tables(self) -> list[str]:
        """Vocabulary names of encoded fields, in first-use order."""
        out: list[str] = []
        for f in self.fields:
            if f.encoded and f.role != Role.LABEL and f.table not in out:
                out.append(f.table)
        return out

    def sequence_groups(self) -> dict[str, list[Field]]:
        """Main behaviour sequence -> [main, parallel sequences...]."""
        groups: dict[str, list[Field]] = {}
        for f in self.fields:
            if f.kind == Kind.SEQUENCE and f.group is None:
                groups[f.name] = [f]
        for f in self.fields:
            if f.group is not None:
                groups[f.group].append(f)
        return groups

    def replace(self, **kw) -> "Schema":
        return replace(self, **kw)

    def to_json(self) -> str:
        return json.dumps(
            {"label": self.label, "description": self.description, "meta": self.meta,
             "fields": [f.to_dict() for f in self.fields]},
            indent=1,
        )

    @classmethod
    def from_json(cls, text: str) -> "Schema":
        d = json.loads(text)
        return cls(tuple(Field.from_dict(x) for x in d["fields"]), label=d["label"],
                   description=d.get("description", ""), meta=d.get("meta", {}))


@dataclass
class FeatureSpec:
    """The data contract a model and its embedding provider are built from: the schema and the size
    of each vocabulary (known from a run directory's saved vocabularies, without the data set)."""

    schema: Schema
    vocab_sizes: dict[str, int]

    @property
    def features(self) -> list[Field]:
        return self.schema.features

    def behavior_groups(self) -> list[list[Field]]:
        """Embedded behaviour sequence groups: [[main, parallel...], ...] (only fields with embed=True)."""
        out = []
        for main, members in self.schema.sequence_groups().items():
            emb = [m for m in members if m.embed]
            if emb and self.schema[main].embed:
                out.append(emb)
        return out

    def non_sequence_features(self) -> list[Field]:
        return [f for f in self.features if f.kind != Kind.SEQUENCE]
