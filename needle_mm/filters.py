"""MongoDB-style filters: parsing, validation, and a reference evaluator.

``compile_filter`` validates a filter once (raising :class:`FilterError` that
names the offending part) and returns a predicate over one metadata dict. This
evaluator is the reference semantics and the fallback for anything that is
not evaluated column-wise; it follows MongoDB:

- ``{"f": v}`` is ``{"f": {"$eq": v}}``; a field holding an array matches when
  the array equals ``v`` or any element does; dotted paths walk into objects
  and through arrays of objects;
- numbers compare with numbers (``1 == 1.0``), strings with strings; a
  boolean is not a number; comparisons across types never match;
- ``null`` matches a missing field: ``{"f": None}`` and ``{"f": {"$exists":
  False}}`` both match a record without ``f``; ``$ne``/``$nin``/``$not`` match
  missing fields;
- ``$contains`` (ours): the string field contains the operand as a substring.
"""

from __future__ import annotations

from typing import Any, Callable

from .errors import FilterError

__all__ = ["compile_filter", "Filter", "Predicate"]

Predicate = Callable[[dict], bool]
_MISSING = object()

_COMPARISONS = {"$gt", "$gte", "$lt", "$lte"}
_FIELD_OPERATORS = _COMPARISONS | {"$eq", "$ne", "$in", "$nin", "$exists", "$not", "$contains",
                                   "$all", "$size", "$elemMatch"}
_LOGICAL = {"$and", "$or", "$nor"}


class Filter:
    """A validated filter: callable on one metadata dict (the reference
    semantics), and ``tree`` for column-wise evaluation (``filter_eval``)."""

    __slots__ = ("predicate", "tree", "key")

    def __init__(self, doc: dict):
        self.predicate = _compile_doc(doc, "filter")  # validates, raising FilterError
        self.tree = _plan_doc(doc)
        self.key = repr(self.tree)  # identifies the filter for caches

    def __call__(self, meta: dict) -> bool:
        return self.predicate(meta)


# Filters nest at most this deep, counting every object and list (MongoDB's
# own limit for documents): the compiler and evaluators recurse, and a
# hostile request must get a FilterError, not a RecursionError.
MAX_DEPTH = 100


def compile_filter(filter: Any) -> Filter | None:
    """Validate ``filter`` and return a :class:`Filter`, or None for "match all"."""
    if filter is None:
        return None
    if not isinstance(filter, dict):
        raise FilterError(f"a filter must be a dict, got {type(filter).__name__}")
    if not filter:
        return None
    _check_depth(filter)
    return Filter(filter)


def _check_depth(doc: dict) -> None:
    """FilterError if objects and lists nest deeper than MAX_DEPTH (checked without recursion)."""
    stack = [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise FilterError(f"filter nests deeper than {MAX_DEPTH} levels of objects and lists")
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, (list, tuple)):
            stack.extend((v, depth + 1) for v in value)


# ---------------------------------------------------------------- plan tree
#
# ("and" | "or" | "nor", [nodes]) and ("field", path, [(op, arg)]) with
# "$not" carrying its own list of (op, arg); implicit equality is ("$eq", v).
# Built only from documents that _compile_doc accepted.


def _plan_doc(doc: dict):
    nodes = []
    for key, value in doc.items():
        if key.startswith("$"):
            nodes.append((key[1:], [_plan_doc(v) for v in value]))
        elif _is_operator_doc(value):
            nodes.append(("field", key, _plan_ops(value)))
        else:
            nodes.append(("field", key, [("$eq", value)]))
    return nodes[0] if len(nodes) == 1 else ("and", nodes)


def _plan_ops(ops: dict) -> list:
    return [(op, _plan_ops(arg) if op == "$not" else arg) for op, arg in ops.items()]


# ---------------------------------------------------------------- values


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _type_class(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "bool"
    if _is_number(v):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    if isinstance(v, dict):
        return "object"
    return type(v).__name__


def _equal(a, b) -> bool:
    ta, tb = _type_class(a), _type_class(b)
    if ta != tb:
        return False
    if ta == "array":
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    if ta == "object":
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    return a == b


def _resolve(value, parts: list[str]) -> list:
    """Values at a dotted path, MongoDB style.

    A missing key gives ``_MISSING``; arrays of objects are walked element
    by element (an element without the key counts as missing there); a
    scalar, or an array's non-object elements, have no fields and give
    nothing (so ``{"a.b": None}`` does not match ``{"a": 5}``, as in
    mongomock).
    """
    if not parts:
        return [value]
    head, rest = parts[0], parts[1:]
    if isinstance(value, dict):
        if head in value:
            return _resolve(value[head], rest)
        return [_MISSING]
    if isinstance(value, list):
        out = []
        if head.isdigit() and int(head) < len(value):
            out.extend(_resolve(value[int(head)], rest))
        for item in value:
            if isinstance(item, dict):
                out.extend(_resolve(item, parts))
        return out
    return []


def _candidates(values: list) -> list:
    """Each value, plus the elements of array values (one level)."""
    out = []
    for v in values:
        out.append(v)
        if isinstance(v, list):
            out.extend(v)
    return out


# ---------------------------------------------------------------- compile


def _compile_doc(doc: dict, where: str) -> Predicate:
    if not isinstance(doc, dict):
        raise FilterError(f"{where} must be a dict, got {type(doc).__name__}")
    preds = []
    for key, value in doc.items():
        if not isinstance(key, str):
            raise FilterError(f"{where}: keys must be strings, got {key!r}")
        if key.startswith("$"):
            preds.append(_compile_logical(key, value, where))
        else:
            if not key or any(not p for p in key.split(".")):
                raise FilterError(f"{where}: invalid field path {key!r}")
            preds.append(_compile_field(key, value, f"{where}.{key}"))
    if len(preds) == 1:
        return preds[0]
    return lambda m: all(p(m) for p in preds)


def _compile_logical(op: str, value, where: str) -> Predicate:
    if op not in _LOGICAL:
        hint = " (field operators go inside a field: {'field': {'%s': ...}})" % op if op in _FIELD_OPERATORS else ""
        raise FilterError(f"{where}: unknown top-level operator {op!r}{hint}")
    if not isinstance(value, list) or not value:
        raise FilterError(f"{where}.{op} needs a non-empty list of filters, got {value!r}")
    subs = [_compile_doc(v, f"{where}.{op}[{i}]") for i, v in enumerate(value)]
    if op == "$and":
        return lambda m: all(p(m) for p in subs)
    if op == "$or":
        return lambda m: any(p(m) for p in subs)
    return lambda m: not any(p(m) for p in subs)


def _is_operator_doc(value) -> bool:
    return isinstance(value, dict) and bool(value) and all(isinstance(k, str) and k.startswith("$") for k in value)


def _compile_field(path: str, value, where: str) -> Predicate:
    parts = path.split(".")
    if isinstance(value, dict) and any(isinstance(k, str) and k.startswith("$") for k in value):
        if not _is_operator_doc(value):
            raise FilterError(f"{where}: cannot mix operators and plain fields in {value!r}")
        test = _compile_ops(value, where)
    else:
        _check_literal(value, where)
        test = _eq_test(value)
    return lambda m: test(_resolve(m, parts))


def _compile_ops(ops: dict, where: str) -> Callable[[list], bool]:
    tests = [_compile_op(op, arg, f"{where}.{op}") for op, arg in ops.items()]
    if len(tests) == 1:
        return tests[0]
    return lambda values: all(t(values) for t in tests)


def _check_literal(value, where: str) -> None:
    t = _type_class(value)
    if t not in ("null", "bool", "number", "string", "array", "object"):
        raise FilterError(f"{where}: {value!r} is not a JSON value")
    if t == "number" and value != value:
        raise FilterError(f"{where}: NaN cannot be matched")


def _eq_test(target) -> Callable[[list], bool]:
    if target is None:
        return lambda values: any(v is _MISSING or v is None for v in _candidates(values))
    return lambda values: any(v is not _MISSING and _equal(v, target) for v in _candidates(values))


def _compare(op: str, a, b) -> bool:
    if _type_class(a) != _type_class(b) or isinstance(a, (list, dict)):
        return False
    if op == "$gt":
        return a > b
    if op == "$gte":
        return a >= b
    if op == "$lt":
        return a < b
    return a <= b


def _compile_op(op: str, arg, where: str) -> Callable[[list], bool]:
    if op in ("$eq", "$ne"):
        _check_literal(arg, where)
        eq = _eq_test(arg)
        return eq if op == "$eq" else (lambda values: not eq(values))
    if op in _COMPARISONS:
        if _type_class(arg) not in ("null", "bool", "number", "string"):
            raise FilterError(f"{where}: operand must be a number, string, boolean or null, got {arg!r}")
        if arg is None:
            if op in ("$gte", "$lte"):
                return _eq_test(None)
            return lambda values: False
        return lambda values: any(v is not _MISSING and _compare(op, v, arg) for v in _candidates(values))
    if op in ("$in", "$nin"):
        if not isinstance(arg, list):
            raise FilterError(f"{where} needs a list, got {type(arg).__name__} {arg!r}")
        for i, item in enumerate(arg):
            if isinstance(item, dict) and _is_operator_doc(item):
                raise FilterError(f"{where}[{i}]: operators are not allowed inside {op}")
            _check_literal(item, f"{where}[{i}]")
        eqs = [_eq_test(item) for item in arg]
        if op == "$in":
            return lambda values: any(e(values) for e in eqs)
        return lambda values: not any(e(values) for e in eqs)
    if op == "$exists":
        if not isinstance(arg, bool):
            raise FilterError(f"{where} needs true or false, got {arg!r}")
        return lambda values: any(v is not _MISSING for v in values) == arg
    if op == "$not":
        if not _is_operator_doc(arg):
            raise FilterError(f"{where} needs an operator expression such as {{'$gt': 5}}, got {arg!r}")
        inner = _compile_ops(arg, where)
        return lambda values: not inner(values)
    if op == "$contains":
        if not isinstance(arg, str):
            raise FilterError(f"{where} needs a string, got {arg!r}")
        return lambda values: any(isinstance(v, str) and arg in v for v in _candidates(values))
    if op == "$all":
        if not isinstance(arg, list):
            raise FilterError(f"{where} needs a list, got {type(arg).__name__} {arg!r}")
        for i, item in enumerate(arg):
            _check_literal(item, f"{where}[{i}]")
        eqs = [_eq_test(item) for item in arg]

        def all_test(values):
            arrays = [v for v in values if isinstance(v, list)]
            if not arg:
                return False
            return any(all(e([a]) for e in eqs) for a in arrays) or (
                not arrays and all(e(values) for e in eqs))
        return all_test
    if op == "$size":
        if not _is_number(arg) or int(arg) != arg or arg < 0:
            raise FilterError(f"{where} needs a non-negative integer, got {arg!r}")
        return lambda values: any(isinstance(v, list) and len(v) == arg for v in values)
    if op == "$elemMatch":
        if not isinstance(arg, dict) or not arg:
            raise FilterError(f"{where} needs a non-empty dict, got {arg!r}")
        if _is_operator_doc(arg):
            inner_ops = _compile_ops(arg, where)

            def elem_test(values):
                return any(isinstance(v, list) and any(inner_ops([e]) for e in v) for v in values)
        else:
            inner_doc = _compile_doc(arg, where)

            def elem_test(values):
                return any(isinstance(v, list) and any(isinstance(e, dict) and inner_doc(e) for e in v)
                           for v in values)
        return elem_test
    raise FilterError(f"{where}: unknown operator {op!r}; supported: {sorted(_FIELD_OPERATORS)}")
