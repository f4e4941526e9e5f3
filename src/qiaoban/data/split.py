"""Seeded train/dev/test splits by dialogue, with near-duplicates kept on the same side.

Each dialogue gets a rank from a hash of (seed, id), so the split does not depend on the order of the input;
dialogues are taken in rank order and cut at exact counts. Near-duplicate dialogues form one group that goes
to one split, so a paraphrase of a test dialogue cannot leak into training.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from qiaoban.data.dedup import NearDuplicateIndex, dialogue_text
from qiaoban.dialogue import Dialogue, content_id

SPLIT_NAMES = ("train", "dev", "test")


def _rank(seed: int, dialogue: Dialogue) -> tuple[bytes, str]:
    digest = hashlib.sha256(f"{seed}\x1f{dialogue.id}".encode()).digest()
    return digest, content_id(dialogue.turns)  # content breaks ties between repeated ids


def split_dialogues(
    dialogues: Iterable[Dialogue],
    ratios: tuple[float, ...] = (0.8, 0.1, 0.1),
    seed: int = 0,
    *,
    names: tuple[str, ...] = SPLIT_NAMES,
    group_near_duplicates: bool = True,
    threshold: float = 0.85,
) -> dict[str, list[Dialogue]]:
    """Split by dialogue: {name: dialogues}, sizes round(ratio * n) (groups of near-duplicates may shift a
    boundary by a few). Deterministic for a seed and independent of input order."""
    if len(ratios) != len(names):
        raise ValueError(f"{len(ratios)} ratios for {len(names)} splits ({', '.join(names)})")
    if any(r < 0 for r in ratios) or abs(sum(ratios) - 1.0) > 1e-6:
        raise ValueError(f"ratios must be non-negative and sum to 1, got {ratios}")
    ranked = sorted(dialogues, key=lambda d: _rank(seed, d))

    groups: dict[int, list[Dialogue]] = {}  # first member's rank position -> members
    if group_near_duplicates:
        index = NearDuplicateIndex(threshold=threshold)
        for position, d in enumerate(ranked):
            twin = index.add(str(position), dialogue_text(d))
            groups.setdefault(position if twin is None else int(twin), []).append(d)
    else:
        groups = {position: [d] for position, d in enumerate(ranked)}

    total = len(ranked)
    bounds, running = [], 0.0
    for ratio in ratios:
        running += ratio
        bounds.append(round(running * total))
    splits: dict[str, list[Dialogue]] = {name: [] for name in names}
    placed = 0
    for position in sorted(groups):
        target = next((i for i, bound in enumerate(bounds) if placed < bound), len(names) - 1)
        splits[names[target]].extend(groups[position])
        placed += len(groups[position])
    return splits
