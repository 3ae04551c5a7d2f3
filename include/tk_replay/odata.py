"""The OData query engine of the replay server: ``$filter``, ``$orderby``, paging, ``$select``, ``$expand``.

Requests name properties in the served profile's names; rows are stored with canonical names. A
:class:`View` ties a profile to the dataset and does the translation both ways. Everything a client can
get wrong raises :class:`ODataError` with the status and a message in the style of the real API
(ASP.NET OData), which the server wraps in ``{"error": {"code": "", "message": …}}``.
"""

from __future__ import annotations

import bisect
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from include.loaders.api_metadata import EntityTypeInfo
from include.loaders.api_profiles import ApiProfile
from include.tk_replay.dataset import Dataset, guid_sort_key

_INVALID = "The query specified in the URI is not valid. "
SUPPORTED_OPTIONS = {
    "$filter",
    "$orderby",
    "$top",
    "$skip",
    "$select",
    "$expand",
    "$count",
    "$skiptoken",
    "$format",
}


INDEXED_ORDER = "ApiGewijzigdOp,Id"
"""The ``$orderby`` of the loaders' pages (nextLink and keyset alike): sorted when the server starts, as a
database keeps an index, so the first page of a large set answers as fast as the next ones."""


class ODataError(Exception):
    """A request the server refuses: ``status`` and the message of the OData error body."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


# --- tokenizer ---------------------------------------------------------------------------------------
_TOKEN_RE = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<typed>(?:guid|datetimeoffset|datetime|date|time|duration|binary)'[^']*')
  | (?P<string>'(?:[^']|'')*')
  | (?P<guid>[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}(?![\w-]))
  | (?P<datetime>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d{1,7})?)?(?:Z|[+-]\d{2}:\d{2}))
  | (?P<date>\d{4}-\d{2}-\d{2}(?![\w:]))
  | (?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?[mMdDlLfF]?(?![\w-]))
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<sym>[(),/:])
    """,
    re.VERBOSE,
)

_CMP = {"eq", "ne", "gt", "ge", "lt", "le"}
_CMP_NAMES = {
    "eq": "Equal",
    "ne": "NotEqual",
    "gt": "GreaterThan",
    "ge": "GreaterThanOrEqual",
    "lt": "LessThan",
    "le": "LessThanOrEqual",
}
_FUNCS = {"contains", "startswith", "endswith", "tolower", "toupper"}
_NUMERIC = {"Edm.Int16", "Edm.Int32", "Edm.Int64", "Edm.Decimal", "Edm.Double", "Edm.Single", "Edm.Byte"}


@dataclass
class _Tok:
    kind: str
    text: str
    pos: int


def _tokenize(text: str) -> list[_Tok]:
    out: list[_Tok] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN_RE.match(text, pos)
        if not m:
            raise ODataError(400, f"{_INVALID}Syntax error at position {pos} in '{text}'.")
        kind = m.lastgroup or ""
        if kind == "typed":
            raise ODataError(
                400,
                f"{_INVALID}Unrecognized 'Edm.String' literal '{m.group()}' at '{pos}' in '{text}'. "
                "Write GUIDs and dates unquoted.",
            )
        if kind != "ws":
            out.append(_Tok(kind, m.group(), pos))
        pos = m.end()
    return out


# --- compiled expressions: fn(row, lambda_row) -> value, with a static EDM type -----------------------
Fn = Callable[[dict[str, Any], Any], Any]


@dataclass
class _Expr:
    fn: Fn
    type: str  # Edm.* or "null"
    literal: bool = False


class _Parser:
    def __init__(self, text: str, view: View, info: EntityTypeInfo):
        self.text = text
        self.toks = _tokenize(text)
        self.i = 0
        self.view = view
        self.info = info
        self.lambda_var: str | None = None
        self.lambda_info: EntityTypeInfo | None = None

    # token helpers
    def peek(self, k: int = 0) -> _Tok | None:
        j = self.i + k
        return self.toks[j] if j < len(self.toks) else None

    def error(self, tok: _Tok | None = None) -> ODataError:
        pos = tok.pos if tok else len(self.text)
        return ODataError(400, f"{_INVALID}Syntax error at position {pos} in '{self.text}'.")

    def take(self, text: str | None = None, kind: str | None = None) -> _Tok:
        tok = self.peek()
        if tok is None or (text is not None and tok.text != text) or (kind is not None and tok.kind != kind):
            raise self.error(tok)
        self.i += 1
        return tok

    def at(self, text: str) -> bool:
        tok = self.peek()
        return tok is not None and tok.kind in ("ident", "sym") and tok.text == text

    # grammar
    def parse(self) -> Fn:
        expr = self.parse_or()
        if self.peek() is not None:
            raise self.error(self.peek())
        if expr.type != "Edm.Boolean":
            raise ODataError(
                400, f"{_INVALID}The $filter expression must evaluate to a single boolean value."
            )
        fn = expr.fn
        return lambda row: fn(row, None) is True

    def parse_or(self) -> _Expr:
        left = self.parse_and()
        while self.at("or"):
            self.i += 1
            right = self.parse_and()
            lf, rf = left.fn, right.fn
            left = _Expr(lambda r, v, lf=lf, rf=rf: lf(r, v) is True or rf(r, v) is True, "Edm.Boolean")
        return left

    def parse_and(self) -> _Expr:
        left = self.parse_not()
        while self.at("and"):
            self.i += 1
            right = self.parse_not()
            lf, rf = left.fn, right.fn
            left = _Expr(lambda r, v, lf=lf, rf=rf: lf(r, v) is True and rf(r, v) is True, "Edm.Boolean")
        return left

    def parse_not(self) -> _Expr:
        if self.at("not"):
            self.i += 1
            inner = self.parse_not().fn
            return _Expr(lambda r, v: inner(r, v) is not True, "Edm.Boolean")
        return self.parse_cmp()

    def parse_cmp(self) -> _Expr:
        left = self.parse_primary()
        tok = self.peek()
        if tok is not None and tok.kind == "ident" and tok.text in _CMP:
            self.i += 1
            right = self.parse_primary()
            return self.compare(left, tok.text, right)
        return left

    def compare(self, left: _Expr, op: str, right: _Expr) -> _Expr:
        lt, rt = left.type, right.type
        typ = lt if lt != "null" else rt
        ok = lt == rt or "null" in (lt, rt) or (lt in _NUMERIC and rt in _NUMERIC)
        if not ok:
            raise ODataError(
                400,
                f"{_INVALID}A binary operator with incompatible types was detected. Found operand types "
                f"'{lt}' and '{rt}' for operator kind '{_CMP_NAMES[op]}'.",
            )
        norm = self.view.normalizer(typ)
        lf, rf = left.fn, right.fn
        if right.literal:
            const = rf({}, None)
            try:
                const = None if const is None else norm(const)
            except ValueError:
                raise ODataError(
                    400, f"{_INVALID}The literal '{const}' is not a valid {typ} value."
                ) from None
            rf = lambda r, v, c=const: c  # noqa: E731
            rnorm: Callable[[Any], Any] = lambda x: x  # noqa: E731
        else:
            rnorm = norm
        cmp = _OPS[op]

        def fn(r: dict[str, Any], v: Any) -> bool:
            a = lf(r, v)
            b = rf(r, v)
            if a is None or b is None:
                if op == "eq":
                    return a is None and b is None
                if op == "ne":
                    return (a is None) != (b is None)
                return False  # ordering against null is never true
            return cmp(norm(a), rnorm(b))

        return _Expr(fn, "Edm.Boolean")

    def parse_primary(self) -> _Expr:
        tok = self.peek()
        if tok is None:
            raise self.error()
        if tok.text == "(" and tok.kind == "sym":
            self.i += 1
            inner = self.parse_or()
            self.take(")")
            return inner
        self.i += 1
        if tok.kind == "string":
            s = tok.text[1:-1].replace("''", "'")
            return _Expr(lambda r, v, s=s: s, "Edm.String", True)
        if tok.kind == "guid":
            g = tok.text.lower()
            return _Expr(lambda r, v, g=g: g, "Edm.Guid", True)
        if tok.kind == "datetime":
            d = tok.text
            return _Expr(lambda r, v, d=d: d, "Edm.DateTimeOffset", True)
        if tok.kind == "date":
            d = tok.text
            return _Expr(lambda r, v, d=d: d, "Edm.Date", True)
        if tok.kind == "number":
            txt = tok.text.rstrip("mMdDlLfF")
            num: float | int = float(txt) if any(c in txt for c in ".eE") else int(txt)
            return _Expr(lambda r, v, n=num: n, "Edm.Int32" if isinstance(num, int) else "Edm.Decimal", True)
        if tok.kind == "ident":
            if tok.text in ("true", "false"):
                b = tok.text == "true"
                return _Expr(lambda r, v, b=b: b, "Edm.Boolean", True)
            if tok.text == "null":
                return _Expr(lambda r, v: None, "null", True)
            if tok.text in _FUNCS and self.at("("):
                return self.parse_func(tok.text)
            return self.parse_path(tok)
        raise self.error(tok)

    def parse_func(self, name: str) -> _Expr:
        self.take("(")
        args = [self.parse_or()]
        while self.at(","):
            self.i += 1
            args.append(self.parse_or())
        self.take(")")
        for a in args:
            if a.type not in ("Edm.String", "null"):
                raise ODataError(
                    400, f"{_INVALID}No function signature for the function with name '{name}' matches."
                )
        if name in ("tolower", "toupper") and len(args) == 1:
            f = args[0].fn
            conv = str.lower if name == "tolower" else str.upper
            return _Expr(lambda r, v: None if f(r, v) is None else conv(f(r, v)), "Edm.String")
        if name in ("contains", "startswith", "endswith") and len(args) == 2:
            a, b = args[0].fn, args[1].fn
            op = {"contains": lambda x, y: y in x, "startswith": str.startswith, "endswith": str.endswith}[
                name
            ]

            def fn(r: dict[str, Any], v: Any) -> bool:
                x, y = a(r, v), b(r, v)
                return False if x is None or y is None else op(x, y)

            return _Expr(fn, "Edm.Boolean")
        raise ODataError(400, f"{_INVALID}No function signature for the function with name '{name}' matches.")

    def parse_path(self, tok: _Tok) -> _Expr:
        name = tok.text
        if self.lambda_var is not None and name == self.lambda_var:
            self.take("/")
            prop = self.take(kind="ident")
            assert self.lambda_info is not None
            getter = self.view.getter(self.lambda_info, prop.text)
            typ = self.view.prop_type(self.lambda_info, prop.text)
            if self.at("/"):
                raise ODataError(400, f"{_INVALID}Only one level of navigation inside any/all is supported.")
            return _Expr(lambda r, v: None if v is None else getter(v), typ)
        info = self.info
        if name in info.navigations:
            self.take("/")
            target = self.view.dataset.schema.entity_sets.get(info.navigations[name])
            nxt = self.take(kind="ident")
            if nxt.text in ("any", "all") and self.at("("):
                return self.parse_lambda(name, nxt.text, target)
            if name in info.collections or target is None:
                raise ODataError(
                    400,
                    f"{_INVALID}The parent value for a property access of a property '{nxt.text}' is not a "
                    "single value. Property access can only be applied to a single value.",
                )
            getter = self.view.getter(target, nxt.text)
            typ = self.view.prop_type(target, nxt.text)
            ds, set_name, nav = self.view.dataset, info.name, name

            def via_nav(r: dict[str, Any], v: Any) -> Any:
                t = ds.navigate(set_name, r, nav)
                return None if t is None else getter(t)

            return _Expr(via_nav, typ)
        getter = self.view.getter(info, name)
        typ = self.view.prop_type(info, name)
        return _Expr(lambda r, v: getter(r), typ)

    def parse_lambda(self, nav: str, kind: str, target: EntityTypeInfo | None) -> _Expr:
        if self.lambda_var is not None:
            raise ODataError(
                400, f"{_INVALID}Nested any/all lambdas are not supported (one level deep only)."
            )
        if target is None or nav not in self.info.collections:
            raise ODataError(400, f"{_INVALID}'{nav}' is not a collection navigation property.")
        self.take("(")
        ds, set_name = self.view.dataset, self.info.name
        if self.at(")"):
            self.i += 1
            return _Expr(lambda r, v: bool(ds.navigate(set_name, r, nav)), "Edm.Boolean")
        var = self.take(kind="ident").text
        self.take(":")
        self.lambda_var, self.lambda_info = var, target
        body = self.parse_or()
        self.lambda_var, self.lambda_info = None, None
        self.take(")")
        bf = body.fn
        if kind == "any":
            return _Expr(
                lambda r, v: any(bf(r, t) is True for t in ds.navigate(set_name, r, nav)), "Edm.Boolean"
            )
        return _Expr(lambda r, v: all(bf(r, t) is True for t in ds.navigate(set_name, r, nav)), "Edm.Boolean")


_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": lambda a, b: a == b,
    "ne": lambda a, b: a != b,
    "gt": lambda a, b: a > b,
    "ge": lambda a, b: a >= b,
    "lt": lambda a, b: a < b,
    "le": lambda a, b: a <= b,
}


# --- query options -----------------------------------------------------------------------------------
@dataclass
class Expand:
    nav: str
    select: list[str] | None = None


@dataclass
class Query:
    """Parsed system query options of one request (names still in the profile's spelling)."""

    filter: str | None = None
    orderby: str | None = None
    top: int | None = None
    skip: int = 0
    select: list[str] | None = None
    expand: list[Expand] = field(default_factory=list)
    count: bool = False
    skiptoken: str | None = None


def _int_option(name: str, value: str) -> int:
    if not value.isdigit():
        raise ODataError(
            400,
            f"{_INVALID}Invalid value '{value}' for {name} query option found. "
            f"The {name} query option requires a non-negative integer value.",
        )
    return int(value)


def _split_top_level(text: str, sep: str) -> list[str]:
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == sep and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    if depth != 0:
        raise ODataError(400, f"{_INVALID}Syntax error: unbalanced parentheses in '{text}'.")
    return [p.strip() for p in parts]


def parse_query(params: list[tuple[str, str]], profile: ApiProfile) -> Query:
    """System query options from decoded ``(name, value)`` pairs; parameters without ``$`` are ignored."""
    q = Query()
    seen: set[str] = set()
    for name, value in params:
        if not name.startswith("$"):
            continue  # the real API silently ignores unknown parameters without '$'
        if name not in SUPPORTED_OPTIONS:
            raise ODataError(400, f"The query parameter '{name}' is not supported.")
        if name in seen:
            raise ODataError(
                400,
                f"{_INVALID}Query option '{name}' was specified more than once, "
                "but it must be specified at most once.",
            )
        seen.add(name)
        if name == "$filter":
            q.filter = value
        elif name == "$orderby":
            q.orderby = value
        elif name == "$top":
            q.top = _int_option(name, value)
            if profile.max_top is not None and q.top > profile.max_top:
                raise ODataError(
                    400,
                    f"{_INVALID}The limit of '{profile.max_top}' for Top query has been "
                    f"exceeded. The value from the incoming request is '{q.top}'.",
                )
        elif name == "$skip":
            q.skip = _int_option(name, value)
        elif name == "$select":
            q.select = [s.strip() for s in value.split(",") if s.strip()]
        elif name == "$expand":
            q.expand = [_parse_expand(part) for part in _split_top_level(value, ",") if part]
        elif name == "$count":
            if value not in ("true", "false"):
                raise ODataError(400, f"{_INVALID}'{value}' is not a valid count option.")
            q.count = value == "true"
        elif name == "$skiptoken":
            if not re.fullmatch(r"Id-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", value):
                raise ODataError(400, f"{_INVALID}Unable to parse the skiptoken value '{value}'.")
            q.skiptoken = value[3:]
        elif name == "$format" and value not in ("json", "application/json"):
            raise ODataError(406, f"The format '{value}' is not supported: only JSON.")
    return q


def _parse_expand(text: str) -> Expand:
    m = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:\((.*)\))?", text, re.S)
    if not m:
        raise ODataError(400, f"{_INVALID}Syntax error in $expand at '{text}'.")
    exp = Expand(m.group(1))
    for opt in _split_top_level(m.group(2) or "", ";"):
        if not opt:
            continue
        key, _, val = opt.partition("=")
        if key.strip() != "$select":
            raise ODataError(
                400,
                f"{_INVALID}The option '{key.strip()}' inside $expand is not supported by "
                "the replay server (only $select).",
            )
        exp.select = [s.strip() for s in val.split(",") if s.strip()]
    return exp


# --- a profile's view of the dataset -----------------------------------------------------------------
@dataclass
class Page:
    """One answer to a collection query."""

    rows: list[dict[str, Any]]
    next_id: str | None
    count: int | None
    offset: Callable[[], int]


class View:
    """The dataset as one profile (plus optional schema drift) serves it."""

    def __init__(self, dataset: Dataset, profile: ApiProfile, drift: dict[str, dict[str, str]] | None = None):
        self.dataset = dataset
        self.profile = profile
        self.drift = drift or {}
        self.namespace = dataset.schema.namespace or "TK.DA.GGM.OData"
        # per entity type: [(served name, canonical name or None for profile-only properties)]
        self._columns: dict[str, list[tuple[str, str | None]]] = {}
        self._types: dict[str, dict[str, str]] = {}
        self._to_canonical: dict[str, dict[str, str | None]] = {}
        self._encoded: dict[tuple, dict[str, bytes]] = {}
        self._encoded_version = -1
        # (entity set, $orderby) -> (dataset version, rows in that order, their sort keys)
        self._ordered: dict[tuple[str, str], tuple[int, list[dict[str, Any]], list[tuple]]] = {}
        for info in {i.name: i for i in dataset.schema.entity_sets.values()}.values():
            renames = self.renames(info.name)
            cols: list[tuple[str, str | None]] = [(renames.get(c, c), c) for c in info.properties]
            cols += [(p, None) for p in profile.added_properties.get(info.name, {})]
            self._columns[info.name] = cols
            types = {renames.get(c, c): t for c, t in info.properties.items()}
            types.update(profile.added_properties.get(info.name, {}))
            self._types[info.name] = types
            self._to_canonical[info.name] = dict(cols)

    def renames(self, entity_type: str) -> dict[str, str]:
        """Canonical -> served property names of ``entity_type``."""
        out = self.profile.renames_for(entity_type)
        out.update(self.drift.get(entity_type, {}))
        return out

    def unknown_property(self, info: EntityTypeInfo, name: str) -> ODataError:
        return ODataError(
            400, f"{_INVALID}Could not find a property named '{name}' on type '{self.namespace}.{info.name}'."
        )

    def prop_type(self, info: EntityTypeInfo, name: str) -> str:
        try:
            return self._types[info.name][name]
        except KeyError:
            raise self.unknown_property(info, name) from None

    def getter(self, info: EntityTypeInfo, name: str) -> Callable[[dict[str, Any]], Any]:
        if name not in self._to_canonical[info.name]:
            raise self.unknown_property(info, name)
        canonical = self._to_canonical[info.name][name]
        if canonical is None:
            return lambda row: None
        return lambda row: row.get(canonical)

    def normalizer(self, typ: str) -> Callable[[Any], Any]:
        if typ == "Edm.DateTimeOffset":
            return self.dataset.ticks
        if typ == "Edm.Guid":
            return lambda g: guid_sort_key(g.lower())
        return lambda x: x

    def compile_filter(self, info: EntityTypeInfo, text: str) -> Callable[[dict[str, Any]], bool]:
        return _Parser(text, self, info).parse()

    # rendering
    def columns(self, info: EntityTypeInfo, select: list[str] | None) -> list[tuple[str, str | None]]:
        cols = self._columns[info.name]
        if not select or "*" in select:
            return cols
        by_name = dict(cols)
        out = []
        for name in select:
            if name not in by_name:
                if name in info.navigations:
                    continue  # a navigation in $select: only meaningful with $expand
                raise self.unknown_property(info, name)
            out.append((name, by_name[name]))
        return out

    def renderer(self, info: EntityTypeInfo, q: Query) -> Callable[[dict[str, Any]], dict[str, Any]]:
        """A function turning a canonical row into the served JSON object for this query."""
        cols = self.columns(info, q.select)
        expands = []
        for exp in q.expand:
            if exp.nav not in info.navigations:
                raise self.unknown_property(info, exp.nav)
            target = self.dataset.schema.entity_sets.get(info.navigations[exp.nav])
            if target is None:
                raise ODataError(400, f"{_INVALID}Navigation '{exp.nav}' has no entity set to expand.")
            expands.append((exp.nav, exp.nav in info.collections, self.columns(target, exp.select)))
        ds, set_name = self.dataset, info.name

        def render(row: dict[str, Any]) -> dict[str, Any]:
            out = {served: (row.get(c) if c else None) for served, c in cols}
            for nav, many, tcols in expands:
                t = ds.navigate(set_name, row, nav)
                if many:
                    out[nav] = [{s: (x.get(c) if c else None) for s, c in tcols} for x in t]  # type: ignore[union-attr]
                else:
                    out[nav] = None if t is None else {s: (t.get(c) if c else None) for s, c in tcols}  # type: ignore[union-attr]
            return out

        return render

    def encoder(self, info: EntityTypeInfo, q: Query) -> Callable[[dict[str, Any]], bytes]:
        """Like :meth:`renderer`, returning each row's JSON bytes, memoised until the dataset changes.

        Pages are the server's hot path; a row is encoded once per distinct ``$select``/``$expand``.
        """
        render = self.renderer(info, q)
        ds = self.dataset
        if self._encoded_version != ds.version or len(self._encoded) > 16:
            self._encoded.clear()
            self._encoded_version = ds.version
        key = (info.name, tuple(q.select or ()), tuple((e.nav, tuple(e.select or ())) for e in q.expand))
        cache = self._encoded.setdefault(key, {})

        def encode(row: dict[str, Any]) -> bytes:
            b = cache.get(row["Id"])
            if b is None:
                b = json.dumps(render(row), ensure_ascii=False, separators=(",", ":")).encode("utf-8")
                cache[row["Id"]] = b
            return b

        return encode

    def sort_key(self, info: EntityTypeInfo, orderby: str) -> Callable[[dict[str, Any]], tuple]:
        keys = []
        for part in _split_top_level(orderby, ","):
            bits = part.split()
            if not bits or len(bits) > 2 or (len(bits) == 2 and bits[1] not in ("asc", "desc")):
                raise ODataError(400, f"{_INVALID}Syntax error in $orderby at '{part}'.")
            getter = self.getter(info, bits[0])
            norm = self.normalizer(self.prop_type(info, bits[0]))
            keys.append((getter, norm, len(bits) == 2 and bits[1] == "desc"))

        def key(row: dict[str, Any]) -> tuple:
            parts: list[Any] = []
            for getter, norm, desc in keys:
                v = getter(row)
                k = (0, 0) if v is None else (1, norm(v))
                parts.append(_Desc(k) if desc else k)
            parts.append(guid_sort_key(row["Id"]))
            return tuple(parts)

        return key

    def query(self, entity_set: str, q: Query, page_size: int) -> Page:
        """The page of ``entity_set`` answering ``q`` (call under ``dataset.lock``)."""
        ds = self.dataset
        info = ds.schema.entity_sets[entity_set]
        rows = ds.rows[entity_set]
        pred = self.compile_filter(info, q.filter) if q.filter else None
        limit = page_size if q.top is None else min(q.top, page_size)

        def matching(ids: Iterator[str] | list[str]) -> Iterator[dict[str, Any]]:
            for i in ids:
                r = rows[i]
                if pred is None or pred(r):
                    yield r

        count = sum(1 for _ in matching(ds.sorted_ids(entity_set))) if q.count else None
        if q.orderby:
            key = self.sort_key(info, q.orderby)
            ordered, keys = self._in_order(entity_set, q.orderby, key)
            start = 0
            if q.skiptoken:
                anchor = rows.get(q.skiptoken)
                if anchor is None:
                    raise ODataError(400, f"{_INVALID}The skiptoken refers to an unknown Id '{q.skiptoken}'.")
                start = bisect.bisect_right(keys, key(anchor))
            # every row in order from the anchor on (the sort is cached; only the filter runs per page)
            it = (r for r in ordered[start:] if pred is None or pred(r))
            for _ in range(q.skip):
                if next(it, None) is None:
                    break
            window = [r for _, r in zip(range(limit + 1), it, strict=False)]
            more = len(window) > limit
            page = window[:limit]

            def offset() -> int:
                return sum(1 for r in ordered[:start] if pred is None or pred(r)) + q.skip
        else:
            ids = ds.sorted_ids(entity_set)
            start = 0
            if q.skiptoken:
                start = bisect.bisect_right(ids, guid_sort_key(q.skiptoken), key=guid_sort_key)
            it = matching(ids[start:] if start else ids)
            for _ in range(q.skip):
                if next(it, None) is None:
                    break
            page = []
            more = False
            for r in it:
                if len(page) == limit:
                    more = True
                    break
                page.append(r)

            def offset() -> int:
                return sum(1 for _ in matching(ids[:start])) + q.skip

        next_id = page[-1]["Id"] if more and q.top is None and page else None
        return Page(page, next_id, count, offset)

    def warm(self) -> None:
        """Sort every entity set by :data:`INDEXED_ORDER` now (call under ``dataset.lock``)."""
        for entity_set, info in self.dataset.schema.entity_sets.items():
            if self.dataset.rows.get(entity_set) and "ApiGewijzigdOp" in self._types.get(info.name, {}):
                self._in_order(entity_set, INDEXED_ORDER, self.sort_key(info, INDEXED_ORDER))

    def _in_order(
        self, entity_set: str, orderby: str, key: Callable[[dict[str, Any]], tuple]
    ) -> tuple[list[dict[str, Any]], list[tuple]]:
        """All rows of ``entity_set`` sorted by ``key`` (``orderby``) and their keys, cached per version."""
        ds = self.dataset
        cached = self._ordered.get((entity_set, orderby))
        if cached is None or cached[0] != ds.version:
            if len(self._ordered) > 2 * len(ds.rows) + 16:  # the indexed order of every set, and some more
                self._ordered.clear()
            decorated = sorted(((key(r), r) for r in ds.rows[entity_set].values()), key=lambda kr: kr[0])
            cached = (ds.version, [r for _, r in decorated], [k for k, _ in decorated])
            self._ordered[(entity_set, orderby)] = cached
        return cached[1], cached[2]

    def count(self, entity_set: str, q: Query) -> int:
        info = self.dataset.schema.entity_sets[entity_set]
        pred = self.compile_filter(info, q.filter) if q.filter else None
        rows = self.dataset.rows[entity_set].values()
        return sum(1 for r in rows if pred is None or pred(r))


class _Desc:
    """Inverts the order of a sort key part (for ``desc``)."""

    __slots__ = ("k",)

    def __init__(self, k: Any):
        self.k = k

    def __lt__(self, other: _Desc) -> bool:
        return other.k < self.k

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Desc) and other.k == self.k

    def __hash__(self) -> int:
        return hash(self.k)
