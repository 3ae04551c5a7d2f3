"""The OData query engine of the replay server: ``$filter``, ``$orderby``, paging, ``$select``, ``$expand``.

``$expand`` items take the options of URL Conventions v4.01 §5.1.3 in their parentheses (``$select``,
``$filter``, ``$orderby``, ``$skip``, ``$top``, ``$count``, a nested ``$expand``); ``$expand=*`` expands
every navigation. Rendering follows the requested :class:`JsonFormat` (the control information of JSON
Format v4.01 §4.5). Valid OData the engine does not implement (``$search``, ``$apply``, ``$compute``,
``$levels``, functions such as ``year()``, arithmetic and ``in``/``has``, nested lambdas, paths in
``$select``/``$orderby``) raises :func:`not_implemented` (HTTP 501) rather than being ignored.

Requests name properties in the served profile's names; rows are stored with canonical names. A
:class:`View` ties a profile to the dataset and does the translation both ways. Everything a client can
get wrong raises :class:`ODataError` with the status and a message in the style of the real API
(ASP.NET OData), which the server wraps in ``{"error": {"code": "", "message": …}}``.
"""

from __future__ import annotations

import bisect
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
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


LEVELS = ("minimal", "full", "none")


@dataclass(frozen=True)
class JsonFormat:
    """The JSON representation a response is written in.

    Attributes:
        metadata: the control information level, ``minimal`` (default), ``full`` or ``none``
            (JSON Format §3.1).
        ieee754: ``IEEE754Compatible=true``: Edm.Int64 and Edm.Decimal values are written as strings
            (JSON Format §3.2).
        streaming: the ``odata.streaming`` parameter echoed in the Content-Type.
    """

    metadata: str = "minimal"
    ieee754: bool = False
    streaming: bool = True

    @property
    def content_type(self) -> str:
        """The response ``Content-Type``, carrying the level served (JSON Format §4.1)."""
        return (
            f"application/json; odata.metadata={self.metadata}; "
            f"odata.streaming={'true' if self.streaming else 'false'}; "
            f"IEEE754Compatible={'true' if self.ieee754 else 'false'}; charset=utf-8"
        )


MINIMAL = JsonFormat()
"""``application/json`` without parameters: minimal metadata (JSON Format v4.01 §3.1.1)."""


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
  | (?P<reserved>[$@][A-Za-z_][A-Za-z0-9_]*)
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
# Valid OData (URL Conventions v4.01 §5.1.1) the engine does not implement: HTTP 501, never a wrong answer.
_UNIMPLEMENTED_FUNCS = {
    "length", "indexof", "substring", "concat", "trim", "matchesPattern", "year", "month", "day", "hour",
    "minute", "second", "fractionalseconds", "totalseconds", "date", "time", "totaloffsetminutes", "now",
    "mindatetime", "maxdatetime", "round", "floor", "ceiling", "cast", "isof", "hassubset", "hassubsequence",
    "case",
}  # fmt: skip
_UNIMPLEMENTED_OPS = {"add", "sub", "mul", "div", "divby", "mod", "has", "in"}
# Types a JSON value shows by itself (JSON Format v4.01 §4.5.3): no ``@odata.type`` even in full metadata.
_JSON_NATIVE = {"Edm.String", "Edm.Boolean", "Edm.Double"}
_NUMERIC = {"Edm.Int16", "Edm.Int32", "Edm.Int64", "Edm.Decimal", "Edm.Double", "Edm.Single", "Edm.Byte"}


@dataclass
class _Tok:
    kind: str
    text: str
    pos: int


def not_implemented(what: str) -> ODataError:
    """HTTP 501 for valid OData the replay server does not implement (Protocol v4.01 §9.3.1)."""
    return ODataError(501, f"{what} is not implemented by the replay server.")


def _tokenize(text: str) -> list[_Tok]:
    out: list[_Tok] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN_RE.match(text, pos)
        if not m:
            raise ODataError(400, f"{_INVALID}Syntax error at position {pos} in '{text}'.")
        kind = m.lastgroup or ""
        if kind == "typed" and m.group().startswith(("duration'", "binary'")):
            raise not_implemented(f"The {m.group().split(chr(39))[0]} literal '{m.group()}'")
        if kind == "reserved":  # $it, $root, $this (URL Conventions §5.1.1.14) or a parameter alias (§5.3)
            raise not_implemented(f"'{m.group()}' in an expression")
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
        if tok is not None and tok.kind == "ident" and tok.text in _UNIMPLEMENTED_OPS:
            raise not_implemented(f"The $filter operator '{tok.text}'")
        if tok is not None and tok.kind == "ident" and tok.text in _CMP:
            self.i += 1
            right = self.parse_primary()
            nxt = self.peek()
            if nxt is not None and nxt.kind == "ident" and nxt.text in _UNIMPLEMENTED_OPS:
                raise not_implemented(f"The $filter operator '{nxt.text}'")
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
            if tok.text in _UNIMPLEMENTED_FUNCS and self.at("("):
                raise not_implemented(f"The $filter function '{tok.text}'")
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
            if self.at("/"):
                raise not_implemented("A navigation path inside any/all (one level only)")
            getter = self.view.getter(self.lambda_info, prop.text)
            typ = self.view.prop_type(self.lambda_info, prop.text)
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
            raise not_implemented("A nested any/all lambda (one level deep only)")
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
    """One item of ``$expand``: the navigation and the options in its parentheses (URL Conventions
    v4.01 §5.1.3, Protocol v4.01 §11.2.5.2.1 Expand Options)."""

    nav: str
    query: Query = field(default_factory=lambda: Query())

    @property
    def select(self) -> list[str] | None:
        return self.query.select


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
    format: str | None = None
    expand_all: bool = False  # ``$expand=*``: every navigation of the type


# Valid system query options (Protocol v4.01 §11.2) the replay server does not implement: HTTP 501.
UNIMPLEMENTED_OPTIONS = {"$search", "$apply", "$compute", "$index", "$schemaversion", "$deltatoken", "$id"}
_NESTED_OPTIONS = {"$select", "$filter", "$orderby", "$top", "$skip", "$count", "$expand"}
_NESTED_UNIMPLEMENTED = {"$search", "$compute", "$levels", "$apply"}


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
    quoted = False
    for ch in text:
        if ch == "'":
            quoted = not quoted
        elif not quoted and ch == "(":
            depth += 1
        elif not quoted and ch == ")":
            depth -= 1
            if depth < 0:
                break
        if ch == sep and depth == 0 and not quoted:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    if depth != 0:
        raise ODataError(400, f"{_INVALID}Syntax error: unbalanced parentheses in '{text}'.")
    return [p.strip() for p in parts]


def _select_list(name: str, value: str) -> list[str]:
    items = [s.strip() for s in value.split(",")]
    if not value.strip() or any(not s for s in items):
        raise ODataError(400, f"{_INVALID}Syntax error: empty item in {name} '{value}'.")
    for item in items:
        if "/" in item or "(" in item or "." in item:
            raise not_implemented(f"The $select item '{item}' (only property names and '*')")
    return items


def _set_option(q: Query, name: str, value: str, profile: ApiProfile | None) -> None:
    """Set one system query option on ``q`` (shared by the request and the options inside ``$expand``)."""
    if name == "$filter":
        if not value.strip():
            raise ODataError(400, f"{_INVALID}The $filter query option is empty.")
        q.filter = value
    elif name == "$orderby":
        if not value.strip():
            raise ODataError(400, f"{_INVALID}The $orderby query option is empty.")
        q.orderby = value
    elif name == "$top":
        q.top = _int_option(name, value)
        if profile is not None and profile.max_top is not None and q.top > profile.max_top:
            raise ODataError(
                400,
                f"{_INVALID}The limit of '{profile.max_top}' for Top query has been "
                f"exceeded. The value from the incoming request is '{q.top}'.",
            )
    elif name == "$skip":
        q.skip = _int_option(name, value)
    elif name == "$select":
        q.select = _select_list(name, value)
    elif name == "$expand":
        for part in _split_top_level(value, ","):
            if not part:
                raise ODataError(400, f"{_INVALID}Syntax error: empty item in $expand '{value}'.")
            if part == "*":
                q.expand_all = True
            else:
                exp = _parse_expand(part)
                if any(e.nav == exp.nav for e in q.expand):
                    raise ODataError(
                        400, f"{_INVALID}The navigation '{exp.nav}' is expanded twice in $expand."
                    )
                q.expand.append(exp)
    elif name == "$count":
        if value.lower() not in ("true", "false"):  # booleanValue, case-insensitive in the ABNF
            raise ODataError(400, f"{_INVALID}'{value}' is not a valid count option.")
        q.count = value.lower() == "true"


def parse_query(params: list[tuple[str, str]], profile: ApiProfile) -> Query:
    """System query options from decoded ``(name, value)`` pairs; parameters without ``$`` are ignored.

    Unknown ``$`` options and malformed values are HTTP 400; valid OData the engine does not implement
    (:data:`UNIMPLEMENTED_OPTIONS`) is HTTP 501. ``$format`` is kept as written (see
    :mod:`include.tk_replay.formats`).
    """
    q = Query()
    seen: set[str] = set()
    for name, value in params:
        if not name.startswith("$"):
            continue  # the real API silently ignores unknown parameters without '$'
        if name in UNIMPLEMENTED_OPTIONS:
            raise not_implemented(f"The system query option '{name}'")
        if name not in SUPPORTED_OPTIONS:
            raise ODataError(400, f"The query parameter '{name}' is not supported.")
        if name in seen:
            raise ODataError(
                400,
                f"{_INVALID}Query option '{name}' was specified more than once, "
                "but it must be specified at most once.",
            )
        seen.add(name)
        if name == "$skiptoken":
            if not re.fullmatch(r"Id-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", value):
                raise ODataError(400, f"{_INVALID}Unable to parse the skiptoken value '{value}'.")
            q.skiptoken = value[3:]
        elif name == "$format":
            q.format = value
        else:
            _set_option(q, name, value, profile)
    return q


def _parse_expand(text: str) -> Expand:
    """``Nav`` or ``Nav(opt=value;opt=value…)`` (URL Conventions v4.01 §5.1.3, expandItem)."""
    m = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:\((.*)\))?", text, re.S)
    if not m:
        if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_$][A-Za-z0-9_]*)+(\(.*\))?", text, re.S):
            raise not_implemented(f"The $expand path '{text}' ($ref, $count and paths)")
        raise ODataError(400, f"{_INVALID}Syntax error in $expand at '{text}'.")
    exp = Expand(m.group(1))
    seen: set[str] = set()
    inner = m.group(2)
    if inner is not None and not inner.strip():
        raise ODataError(400, f"{_INVALID}Syntax error in $expand at '{text}': empty options.")
    for opt in _split_top_level(inner or "", ";"):
        if not opt:
            continue
        key, eq, val = opt.partition("=")
        key = key.strip()
        if key in _NESTED_UNIMPLEMENTED:
            raise not_implemented(f"The option '{key}' inside $expand")
        if key not in _NESTED_OPTIONS or not eq:
            raise ODataError(400, f"{_INVALID}The option '{key}' inside $expand({exp.nav}) is not valid.")
        if key in seen:
            raise ODataError(400, f"{_INVALID}The option '{key}' is given twice inside $expand({exp.nav}).")
        seen.add(key)
        _set_option(exp.query, key, val.strip(), None)
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

    def __init__(
        self,
        dataset: Dataset,
        profile: ApiProfile,
        drift: dict[str, dict[str, str]] | None = None,
        drops: Mapping[str, Iterable[str]] | None = None,
    ):
        self.dataset = dataset
        self.profile = profile
        self.drift = drift or {}
        # type -> canonical names this view does not serve at all (nor accept in a query)
        self.drops = {t: frozenset(names) for t, names in (drops or {}).items()}
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
            served = {c: t for c, t in info.properties.items() if c not in self.drops.get(info.name, ())}
            cols: list[tuple[str, str | None]] = [(renames.get(c, c), c) for c in served]
            cols += [(p, None) for p in profile.added_properties.get(info.name, {})]
            self._columns[info.name] = cols
            types = {renames.get(c, c): t for c, t in served.items()}
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

    def served_properties(self, info: EntityTypeInfo) -> list[str]:
        """The scalar property names of ``info`` as this view serves them."""
        return list(self._to_canonical[info.name])

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

    def _expansions(self, info: EntityTypeInfo, q: Query) -> list[Expand]:
        """The items of ``q.expand`` checked against ``info``, with ``*`` resolved to every navigation."""
        items = list(q.expand)
        if q.expand_all:
            named = {e.nav for e in items}
            items += [Expand(nav) for nav in info.navigations if nav not in named]
        for exp in items:
            if exp.nav not in info.navigations:
                raise self.unknown_property(info, exp.nav)
            if self.dataset.schema.entity_sets.get(info.navigations[exp.nav]) is None:
                raise ODataError(400, f"{_INVALID}Navigation '{exp.nav}' has no entity set to expand.")
            eq = exp.query
            if exp.nav not in info.collections and (
                eq.filter or eq.orderby or eq.top is not None or eq.skip or eq.count
            ):
                raise ODataError(
                    400,
                    f"{_INVALID}'{exp.nav}' is a single-valued navigation: $filter, $orderby, $top, $skip "
                    "and $count do not apply inside its $expand.",
                )
        return items

    def selection(
        self, info: EntityTypeInfo, q: Query
    ) -> Callable[[list[dict[str, Any]]], tuple[list, int | None]]:
        """Applies ``$filter``, ``$orderby``, ``$skip``, ``$top`` and ``$count`` of an expanded collection.

        Returns a function from the related rows (in server order) to ``(rows to serve, count or None)``;
        the count is of the filtered rows before ``$skip``/``$top`` (Protocol v4.01 §11.2.6.5).
        """
        pred = self.compile_filter(info, q.filter) if q.filter else None
        key = self.sort_key(info, q.orderby) if q.orderby else None

        def pick(rows: list[dict[str, Any]]) -> tuple[list, int | None]:
            kept = [r for r in rows if pred is None or pred(r)]
            if key is not None:
                kept.sort(key=key)
            count = len(kept) if q.count else None
            end = None if q.top is None else q.skip + q.top
            return kept[q.skip : end], count

        return pick

    def renderer(
        self, info: EntityTypeInfo, q: Query, fmt: JsonFormat | None = None, root: str = ""
    ) -> Callable[[dict[str, Any]], dict[str, Any]]:
        """A function turning a canonical row into the served JSON object for this query.

        ``fmt`` (minimal by default) decides the control information (OData JSON Format v4.01 §4.5):
        with ``full`` each entity carries ``@odata.type`` (§4.5.3), ``@odata.id`` (§4.5.8),
        ``@odata.readLink`` (§4.5.9: the entities are read-only, so a read link and no edit link), a
        ``<Nav>@odata.associationLink`` and ``<Nav>@odata.navigationLink`` (§4.5.11) per navigation
        (per selected navigation under ``$select``, Protocol §11.2.5.1) and the ``<Prop>@odata.type`` of
        values whose type JSON cannot show (Guid, DateTimeOffset, Int32…; not String, Boolean, Double);
        ``root`` is the service root those URLs start with. ``IEEE754Compatible=true`` writes Int64 and
        Decimal values, and counts, as strings (§3.2). Expanded entities are rendered the same way,
        recursively, with the options inside their ``$expand(…)`` applied.
        """
        fmt = fmt or MINIMAL
        full = fmt.metadata == "full"
        types = self._types[info.name]
        cols = []
        for served, canonical in self.columns(info, q.select):
            typ = types.get(served, "")
            annotation = (
                f"#{typ[4:]}" if full and typ.startswith("Edm.") and typ not in _JSON_NATIVE else None
            )
            as_string = fmt.ieee754 and typ in ("Edm.Int64", "Edm.Decimal")
            cols.append((served, canonical, annotation, as_string))
        expands: dict[str, tuple[bool, Any, Callable[[dict[str, Any]], dict[str, Any]]]] = {}
        for exp in self._expansions(info, q):
            target = self.dataset.schema.entity_sets[info.navigations[exp.nav]]
            many = exp.nav in info.collections
            pick = self.selection(target, exp.query) if many else None
            expands[exp.nav] = (many, pick, self.renderer(target, exp.query, fmt, root))
        # Full metadata links every navigation of the default selection, else the selected or expanded
        # ones ("*" selects structural properties only, Protocol §11.2.5.1). Each navigation's control
        # information comes right before its expanded value, after every structural property (JSON
        # Format §4.4, the odata.streaming=true the Content-Type promises).
        linked = {n for n in info.navigations if full and (q.select is None or n in q.select or n in expands)}
        navs = [(n, n in linked, expands.get(n)) for n in info.navigations if n in linked or n in expands]
        ds, set_name = self.dataset, info.name
        odata_type = f"#{self.namespace}.{info.name}"

        def render(row: dict[str, Any]) -> dict[str, Any]:
            out: dict[str, Any] = {}
            url = f"{root}/{set_name}({row['Id']})"
            if full:
                out["@odata.type"] = odata_type
                out["@odata.id"] = url
                out["@odata.readLink"] = url
            for served, c, annotation, as_string in cols:
                v = row.get(c) if c else None
                if v is not None:
                    if annotation:
                        out[f"{served}@odata.type"] = annotation
                    if as_string:
                        v = str(v)
                out[served] = v
            for nav, link, expanded in navs:
                if link:
                    out[f"{nav}@odata.associationLink"] = f"{url}/{nav}/$ref"
                    out[f"{nav}@odata.navigationLink"] = f"{url}/{nav}"
                if expanded is None:
                    continue
                many, pick, sub = expanded
                t = ds.navigate(set_name, row, nav)
                if many:
                    rows, count = pick(t)
                    if count is not None:
                        out[f"{nav}@odata.count"] = str(count) if fmt.ieee754 else count
                    out[nav] = [sub(x) for x in rows]
                else:
                    out[nav] = None if t is None else sub(t)  # type: ignore[arg-type]
            return out

        return render

    def encoder(
        self, info: EntityTypeInfo, q: Query, fmt: JsonFormat | None = None, root: str = ""
    ) -> Callable[[dict[str, Any]], bytes]:
        """Like :meth:`renderer`, returning each row's JSON bytes, memoised until the dataset changes.

        Pages are the server's hot path; a row is encoded once per distinct ``$select``/``$expand``,
        format and service root.
        """
        fmt = fmt or MINIMAL
        render = self.renderer(info, q, fmt, root)
        ds = self.dataset
        if self._encoded_version != ds.version or len(self._encoded) > 16:
            self._encoded.clear()
            self._encoded_version = ds.version
        key = (info.name, repr((q.select, q.expand, q.expand_all)), fmt, root)
        cache = self._encoded.setdefault(key, {})

        def encode(row: dict[str, Any]) -> bytes:
            b = cache.get(row["Id"])
            if b is None:
                b = json.dumps(render(row), ensure_ascii=False, separators=(",", ":")).encode("utf-8")
                cache[row["Id"]] = b
            return b

        return encode

    def context_select(self, q: Query) -> str:
        """The select list of a context URL: ``(Id,Nummer,Document(Id))`` or ``""`` (Protocol v4.01
        §10.7-10.10).

        Lists the ``$select``ed properties, then each expanded navigation that has a nested ``$select`` or
        ``$expand``, suffixed with its own list, in the OData 4.0 form the service's ``OData-Version: 4.0``
        promises (an expansion without nested options is left out). A list of expansions only means
        every structural property is selected.
        """
        items = list(q.select or [])
        for exp in q.expand:
            if exp.query.select or exp.query.expand or exp.query.expand_all:
                items.append(f"{exp.nav}{self.context_select(exp.query) or '()'}")
        return f"({','.join(items)})" if items else ""

    def sort_key(self, info: EntityTypeInfo, orderby: str) -> Callable[[dict[str, Any]], tuple]:
        keys = []
        for part in _split_top_level(orderby, ","):
            bits = part.split()
            if len(bits) == 2:
                bits[1] = bits[1].lower()  # ABNF literals are case-insensitive (RFC 5234 §2.3)
            if not bits or len(bits) > 2 or (len(bits) == 2 and bits[1] not in ("asc", "desc")):
                raise ODataError(400, f"{_INVALID}Syntax error in $orderby at '{part}'.")
            if "/" in bits[0] or "(" in bits[0]:
                raise not_implemented(f"The $orderby expression '{bits[0]}' (only property names)")
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

    def query(self, entity_set: str, q: Query, page_size: int, ids: list[str] | None = None) -> Page:
        """The page of ``entity_set`` answering ``q`` (call under ``dataset.lock``).

        ``ids``: the candidates in server order (a navigation's related rows); every row when None.
        """
        ds = self.dataset
        info = ds.schema.entity_sets[entity_set]
        rows = ds.rows[entity_set]
        all_ids = ds.sorted_ids(entity_set) if ids is None else ids
        pred = self.compile_filter(info, q.filter) if q.filter else None
        limit = page_size if q.top is None else min(q.top, page_size)

        def matching(ids: Iterator[str] | list[str]) -> Iterator[dict[str, Any]]:
            for i in ids:
                r = rows[i]
                if pred is None or pred(r):
                    yield r

        count = sum(1 for _ in matching(all_ids)) if q.count else None
        if q.orderby:
            key = self.sort_key(info, q.orderby)
            if ids is None:  # the whole set: its sort is cached per dataset version
                ordered, keys = self._in_order(entity_set, q.orderby, key)
            else:  # a navigation's related rows
                ordered = sorted((rows[i] for i in all_ids), key=key)
                keys = [key(r) for r in ordered]
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
            ids = all_ids
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

    def count(self, entity_set: str, q: Query, ids: list[str] | None = None) -> int:
        """How many rows of ``entity_set`` (or of the candidates ``ids``) match ``q``'s ``$filter``."""
        info = self.dataset.schema.entity_sets[entity_set]
        pred = self.compile_filter(info, q.filter) if q.filter else None
        by_id = self.dataset.rows[entity_set]
        rows = by_id.values() if ids is None else (by_id[i] for i in ids if i in by_id)
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
