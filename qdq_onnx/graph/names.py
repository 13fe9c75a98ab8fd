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
