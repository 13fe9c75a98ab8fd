"""Fresh tensor and node names for graph edits."""

from __future__ import annotations


class FreshNames:
    """Names not yet taken in a graph: `base`, else `base_1`, `base_2`, ..."""

    def __init__(self, taken: set[str]) -> None:
        self.taken = taken

    def __call__(self, base: str) -> str:
        """A name no tensor or node of the graph has, now taken."""
        name, k = base, 1
        while name in self.taken:
            name, k = f"{base}_{k}", k + 1
        self.taken.add(name)
        return name


def positional_output_names(count: int) -> list[str]:
    """The names converted models give outputs by position: `output` for one output,
    `output_<i>` (Keras order) for several."""
    return ["output"] if count == 1 else [f"output_{i}" for i in range(count)]


def output_aliases(outputs: list[str]) -> dict[str, str]:
    """{positional name: output name} for the graph outputs `outputs` (in order), where the
    positional name is not itself one of them: models converted before outputs were named
    by their Keras layers called them `output_<i>`, and settings and labels keyed that way
    still reach the same output."""
    return {alias: name for alias, name in zip(positional_output_names(len(outputs)), outputs)
            if alias not in outputs}
