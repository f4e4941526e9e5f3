"""Seeded train/dev/test splits by dialogue, with near-duplicates kept on the same side.

Each dialogue gets a rank from a hash of (seed, id), so the split does not depend on the order of the input;
dialogues are taken in rank order and cut at exact counts. Near-duplicate dialogues form one group that goes
to one split, so a paraphrase of a test dialogue cannot leak into training; so do dialogues that share a
`group_by` field (e.g. `meta.scenario`). With `stratify_by` fields (e.g. `meta.category`, `meta.age_band`)
every combination of their values is cut in the same shares.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

from qiaoban.data.dedup import NearDuplicateIndex, dialogue_text
from qiaoban.dialogue import Dialogue, content_id, field_value

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
    group_by: str | None = None,
    stratify_by: Sequence[str] = (),
) -> dict[str, list[Dialogue]]:
    """Split by dialogue: {name: dialogues}, sizes round(ratio * n) per stratum (groups may shift a boundary by
    a few). Deterministic for a seed and independent of input order."""
    if len(ratios) != len(names):
        raise ValueError(f"{len(ratios)} ratios for {len(names)} splits ({', '.join(names)})")
    if any(r < 0 for r in ratios) or abs(sum(ratios) - 1.0) > 1e-6:
        raise ValueError(f"ratios must be non-negative and sum to 1, got {ratios}")
    ranked = sorted(dialogues, key=lambda d: _rank(seed, d))

    groups: dict[int, list[Dialogue]] = {}  # first member's rank position -> members
    index = NearDuplicateIndex(threshold=threshold) if group_near_duplicates else None
    leader_of: dict[int, int] = {}  # rank position -> the position that leads its group
    first_with_value: dict[str, int] = {}
    for position, d in enumerate(ranked):
        leader = position
        if index is not None and (twin := index.add(str(position), dialogue_text(d))) is not None:
            leader = leader_of[int(twin)]
        value = field_value(d, group_by) if group_by else None
        if value is not None:
            # A dialogue that is a near-duplicate of one group and shares a field with another joins the first.
            leader = first_with_value.setdefault(str(value), leader)
        leader_of[position] = leader
        groups.setdefault(leader, []).append(d)

    # Stratified: each stratum's groups are spread evenly over one ordering (the k-th of n sits at (k + ½) / n),
    # which is then cut at exact counts, so every stratum is split in the same shares, to within one group.
    strata: dict[tuple, list[int]] = {}
    for leader, members in groups.items():
        strata.setdefault(tuple(str(field_value(members[0], f)) for f in stratify_by), []).append(leader)
    spread = {leader: ((k + 0.5) / len(leaders), leader)
              for leaders in strata.values() for k, leader in enumerate(sorted(leaders))}
    return _cut({position: groups[leader] for position, leader in enumerate(sorted(groups, key=spread.get))},
                ratios, names)


def _cut(groups: dict[int, list[Dialogue]], ratios: tuple[float, ...], names: tuple[str, ...]
         ) -> dict[str, list[Dialogue]]:
    """Groups in rank order, cut at round(cumulative ratio * n)."""
    total = sum(len(members) for members in groups.values())
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
