"""The learned layer: a character n-gram logistic regression (scikit-learn), trained on data generated from our own
templates (trainset.yaml) plus hand-written labelled messages (the dev red-team sets). `qiaoban safety train`
rebuilds model.json reproducibly from a seed and those files."""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Sequence
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from tqdm import tqdm

from qiaoban.dialogue import iter_jsonl
from qiaoban.safety.labelled import read_labelled
from qiaoban.safety.lexicon import plain_text

NGRAMS = (1, 2, 3)
# The classifier reads the current message with this many of the child's earlier messages ("我想好了" after
# "活着好累" is not "我想好了" after "选社团"); their character bigrams are features of their own.
CONTEXT_TURNS = 2
DEFAULT_SEED = 7
DEFAULT_PER_LABEL = 400
DEFAULT_MAX_ITER = 2000
# Most of what children say is benign: the benign label gets this many times more examples.
BENIGN_WEIGHT = 8
# Each hand-written example given with --examples counts this many times.
EXAMPLE_REPEAT = 3
_SLOT = re.compile(r"\{(\w+)\}")
# How children pad a message; added at random to the generated text.
_LEADS = ("", "", "", "嗯，", "那个，", "我跟你说，", "说真的，", "你知道吗，", "唉，", "小桥，")
_TAILS = ("", "", "", "😭", "😢", "。。", "!!", "~", "怎么办", "不知道该怎么办", "你说呢")


def model_path() -> Path:
    return Path(str(resources.files("qiaoban.safety").joinpath("model.json")))


# A training example: the message, its label ("benign" or a category) and the earlier messages.
Row = tuple[str, str, tuple[str, ...]]


def features(normalized: str, context: str = "") -> set[str]:
    """N-grams of a `plain_text` message, plus "<"-marked bigrams of its `context_text`."""
    padded = f"^{normalized}$"
    grams = {padded[i : i + n] for n in NGRAMS for i in range(len(padded) - n + 1)}
    grams.update("<" + context[i : i + 2] for i in range(len(context) - 1))
    return grams


def context_text(context: Sequence[str]) -> str:
    return "|".join(plain_text(message) for message in context[-CONTEXT_TURNS:]) if CONTEXT_TURNS else ""


def generate(seed: int = DEFAULT_SEED, per_label: int = DEFAULT_PER_LABEL) -> list[Row]:
    """Rows without context filled from trainset.yaml's templates; the same seed gives the same list."""
    spec = yaml.safe_load(resources.files("qiaoban.safety").joinpath("trainset.yaml").read_text("utf-8"))
    rng = random.Random(seed)
    slots: dict[str, list[str]] = spec["slots"]
    rows = []
    for label, templates in spec["labels"].items():
        seen: set[str] = set()
        wanted = per_label * (BENIGN_WEIGHT if label == "benign" else 1)
        for _ in range(wanted * 3):
            if len(seen) >= wanted:
                break
            text = _SLOT.sub(lambda m: rng.choice(slots[m.group(1)]), rng.choice(templates))
            text = rng.choice(_LEADS) + text + rng.choice(_TAILS)
            if rng.random() < 0.15:  # children type with spaces between words
                text = " ".join(text[i : i + rng.randint(2, 4)] for i in range(0, len(text), 3))
            if text not in seen:
                seen.add(text)
                rows.append((text, label, ()))
    return rows


def labelled_rows(path: str | Path, repeat: int = EXAMPLE_REPEAT) -> list[Row]:
    """Rows from a labelled red-team JSONL file; see `rows_from_items`."""
    return rows_from_items(read_labelled(path), repeat)


def rows_from_items(items: list[dict[str, Any]], repeat: int = EXAMPLE_REPEAT) -> list[Row]:
    """Each labelled item `repeat` times: hand-written messages count for more than template fillings."""
    return [(item["text"], item["category"] if item["label"] == "risk" else "benign", tuple(item.get("context", ())))
            for item in items for _ in range(repeat)]


def everyday_rows(path: str | Path) -> list[Row]:
    """Benign rows from a dialogue corpus: every child turn of a dialogue without a risk (`meta.risk` empty),
    after that child's earlier messages. Ordinary talk (a lost match, a dead hamster, "累死了") in the many
    voices real children use, which the templates and the red-team sets do not cover."""
    rows = []
    for dialogue in iter_jsonl(path):
        if dialogue.meta.get("risk"):
            continue
        said: list[str] = []
        for turn in dialogue.turns:
            if turn.role == "child":
                rows.append((turn.text, "benign", tuple(said[-CONTEXT_TURNS:])))
                said.append(turn.text)
    return rows


def file_digest(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def train(rows: list[Row], max_iter: int = DEFAULT_MAX_ITER, l2: float = 1e-4, min_count: int = 3) -> dict[str, Any]:
    """Multinomial logistic regression (scikit-learn, L-BFGS) on binary n-gram features seen at least
    `min_count` times; the penalty is `l2`/2 times the squared weights per example. Deterministic: the same rows
    give the same model."""
    from scipy.sparse import csr_matrix
    from sklearn.linear_model import LogisticRegression

    grams = [features(plain_text(text), context_text(context)) for text, _, context in tqdm(
        rows, desc="safety classifier features", leave=False)]
    counts: dict[str, int] = {}
    for g in grams:
        for f in g:
            counts[f] = counts.get(f, 0) + 1
    vocab = {f: i for i, f in enumerate(sorted(f for f, c in counts.items() if c >= min_count))}
    ids = [sorted(vocab[f] for f in g if f in vocab) for g in grams]
    indptr = np.concatenate([[0], np.cumsum([len(row) for row in ids])])
    cols = np.fromiter((i for row in ids for i in row), dtype=np.int64)
    x = csr_matrix((np.ones(len(cols)), cols, indptr), shape=(len(rows), len(vocab)))
    fitted = LogisticRegression(C=1.0 / (l2 * len(rows)), max_iter=max_iter, tol=1e-6)
    fitted.fit(x, [label for _, label, _ in rows])
    labels = [str(label) for label in fitted.classes_]
    w, b = fitted.coef_.T, fitted.intercept_
    if len(labels) == 2:  # one logit for the second label; a softmax over (0, logit) gives the same probabilities
        w, b = np.hstack([np.zeros_like(w), w]), np.concatenate([[0.0], b])
    weights = {f: [round(float(v), 4) for v in w[i]] for f, i in vocab.items() if np.abs(w[i]).max() >= 1e-3}
    return {"labels": labels, "ngrams": list(NGRAMS), "bias": [round(float(v), 4) for v in b], "weights": weights}


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def save(model: dict[str, Any], path: str | Path, **meta: Any) -> None:
    Path(path).write_text(json.dumps({**meta, **model}, ensure_ascii=False, separators=(",", ":")) + "\n",
                          encoding="utf-8")


@cache
def load(path: str | None = None) -> dict[str, Any]:
    file = Path(path) if path else model_path()
    if not file.is_file():
        raise FileNotFoundError(f"safety classifier not found at {file}; build it with `qiaoban safety train`")
    return prepare(json.loads(file.read_text("utf-8")))


def prepare(model: dict[str, Any]) -> dict[str, Any]:
    """Add the numpy arrays `predict` reads to a model dict (as `train` returns or model.json holds)."""
    model["_weights"] = {f: np.asarray(v, dtype=np.float64) for f, v in model["weights"].items()}
    model["_bias"] = np.asarray(model["bias"], dtype=np.float64)
    return model


def predict(text: str, model: dict[str, Any] | None = None, context: Sequence[str] = (),
            prepared: bool = False) -> dict[str, float]:
    """Probability per label ("benign" and each category) of `text` after the earlier messages `context`;
    `prepared` when `text` is already `plain_text`."""
    model = model if model is not None else load()
    table = model["_weights"]
    z = model["_bias"].copy()
    for f in features(text if prepared else plain_text(text), context_text(context)):
        if (w := table.get(f)) is not None:
            z += w
    p = _softmax(z)
    return dict(zip(model["labels"], p.tolist(), strict=True))
