"""Prompt layout for the list DSL (docs/design.md §3): fixed slots, so element i of an input and of
its output always sit at the same offset. One example renders as

    x 3 1 4 _ _ _ y 1 3 4 _ _ _        (list output)
    x 3 1 4 _ _ _ n 8 _ _ _ _ _        (int output)

examples are joined by ``;`` and the prompt ends with ``prog``, after which the model writes
the program tokens and ``<eos>``. Every prompt of a dataset has the same length.
"""

from __future__ import annotations

from spolab.tasks import listdsl as dsl

PAD_SLOT = "_"
PROMPT_END = "prog"
STRUCTURE = ["x", "y", "n", PAD_SLOT, ";", PROMPT_END]


def _slots(values: list[int]) -> list[str]:
    return [str(v) for v in values] + [PAD_SLOT] * (dsl.MAX_LIST_LEN - len(values))


def render_example(inp: list[int], out) -> list[str]:
    if isinstance(out, int):
        return ["x", *_slots(inp), "n", *_slots([out])]
    return ["x", *_slots(inp), "y", *_slots(list(out))]


def prompt_text(examples: list) -> str:
    words: list[str] = []
    for i, (inp, out) in enumerate(examples):
        if i:
            words.append(";")
        words += render_example(inp, out)
    words.append(PROMPT_END)
    return " ".join(words)


def task_vocab() -> list[str]:
    """All words of prompts and programs, in a fixed order."""
    numbers = [str(i) for i in range(dsl.MAX_VALUE + 1)]
    words = STRUCTURE + [w for w in dsl.program_vocab() if not w.isdigit()] + numbers
    assert len(set(words)) == len(words)
    return words
