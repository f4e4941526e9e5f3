"""Screen a child's message in context: the pattern layer, the n-gram classifier and (when the default model is
installed) the head on the model's hidden states, fused into one verdict."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from qiaoban.safety import classifier
from qiaoban.safety.lexicon import (
    SEVERITIES,
    Hit,
    abuser_of,
    context_cue,
    context_framed,
    frame_of,
    lowered,
    neutralized,
    played_down,
    scan,
    silencer_of,
)
from qiaoban.safety.policy import categories, respond

if TYPE_CHECKING:
    from qiaoban.safety.head import Head

# Pattern-layer confidence per severity; the classifier can only raise it.
LEXICON_SCORE = {"concern": 0.7, "urgent": 0.85, "emergency": 0.97}
# The classifier alone flags at this probability of risk: the highest bar at which every older red-team split keeps
# recall >= 0.95 once the classifier learned everyday talk (docs/safety.md; chosen on splits already measured):
CLASSIFIER_THRESHOLD = 0.4
# With the head: the mean of the classifier's and the head's probabilities must reach this.
FUSED_THRESHOLD = 0.5
# What the learned layers need on a message the pattern layer reads as hyperbole, a game or a story.
NEUTRALIZED_BAR = 0.8
ABUSE = ("physical_abuse", "sexual_abuse")
# A risk carries forward from the child's last CARRY_TURNS messages when the pattern layer found it or the
# classifier was this sure (on gold dialogues: 50% of the turns of risk conversations flagged instead of 24%, 3.7%
# of everyday turns instead of 2.0%).
CARRY_TURNS = 2
CARRY_SCORE = 0.7


@dataclass
class Verdict:
    risk: bool
    category: str | None = None
    severity: str | None = None  # "concern" | "urgent" | "emergency"
    score: float = 0.0  # confidence of risk, 0..1
    template_reply: str | None = None  # the whole reply, for emergencies: the model is not called
    guidance: str = ""  # added to the system prompt for this turn
    followup: str = ""  # a vetted line appended to the model's reply (risk, not emergency)
    matched: list[str] = field(default_factory=list)  # why: "layer:category:severity:phrase"
    abuser: str | None = None  # who hurt the child, when named ("爸爸", "老师"): never send the child back
    head_score: float | None = None  # the LLM head's probability of risk, when it was asked
    played_down: bool = False  # the child laughed it off, took it back, called it over or normal, or took the blame

    def to_json_dict(self) -> dict[str, Any]:
        return {"risk": self.risk, "category": self.category, "severity": self.severity,
                "score": round(self.score, 4)}


def _rank(hit: Hit) -> tuple[int, int]:
    order = categories()
    return SEVERITIES.index(hit.severity), -order.index(hit.category)


def check(text: str, context: Sequence[str] = (), *, model: dict[str, Any] | None = None,
          threshold: float = CLASSIFIER_THRESHOLD, head: Head | None = None,
          fused_threshold: float = FUSED_THRESHOLD, carry: bool = True) -> Verdict:
    """Screen `text`; `context` holds the child's previous messages, oldest first. `head` adds the LLM layer
    (`qiaoban.safety.head.available()`); `model` and the thresholds replace the packaged classifier and its
    thresholds (for cross-validation). With `carry`, a clear risk in one of the last `CARRY_TURNS` earlier
    messages (read by the fast layers) carries to this one as a concern: a child who disclosed and goes on talking
    ("那我不告诉老师") is still in that conversation."""
    verdict = _check(text, context, model=model, threshold=threshold, head=head, fused_threshold=fused_threshold)
    if verdict.risk or not carry:
        return verdict
    for i in range(len(context) - 1, max(-1, len(context) - 1 - CARRY_TURNS), -1):
        earlier = _check(context[i], context[:i], model=model, threshold=threshold)
        if earlier.risk and (earlier.score >= CARRY_SCORE or any(m.startswith("lexicon:") for m in earlier.matched)):
            return _verdict(earlier.category or "", "concern", max(verdict.score, earlier.score),
                            [f"context:{earlier.category}"], [], _said(context), text, context, framed=False)
    return verdict


def _check(text: str, context: Sequence[str], *, model: dict[str, Any] | None, threshold: float,
           head: Head | None = None, fused_threshold: float = FUSED_THRESHOLD) -> Verdict:
    found = scan(text)
    hits = [h for h in found if not h.negated]
    earlier = _said(context)
    if earlier and (cue := context_cue(text, {h.category for h in earlier})):
        hits.append(cue)
    top = max(hits, key=_rank, default=None)
    framed = bool(top and top.framed)
    if top and top.severity != "emergency" and not top.framed and (frame := frame_of(text)):
        framed = frame == "over"
        top = lowered(top) if framed else None  # played down: lower it; supervised or refused: the learned layers judge
        hits = [top] if top else []
    if top and top.severity == "concern" and not top.framed and context_framed(top.category, text, context):
        hits, top = [], None  # a surprise for mum, a scolding: the learned layers judge
    matched = [f"lexicon:{h.category}:{h.severity}:{h.phrase}" for h in hits]
    probs = classifier.predict(text, model, context)
    risk_prob = 1.0 - probs["benign"]
    top_class = max((c for c in probs if c != "benign"), key=probs.__getitem__)
    head_prob = None

    if top:
        category, severity = top.category, top.severity
        earlier_abuse = [h.category for h in earlier if h.category in ABUSE]
        if category == "bullying" and earlier_abuse:  # "他又打我了" after the child said who "he" is
            category = earlier_abuse[-1]
        score = max(LEXICON_SCORE[severity], risk_prob)
    else:
        category, severity, score = top_class, "concern", risk_prob
        bar = fused_threshold if head is not None else threshold
        if neutralized(text, found, top_class, has_context=bool(context)):
            bar = max(bar, NEUTRALIZED_BAR)  # hyperbole, a game, a story: a higher bar, not a veto
        if head is not None:
            # The mean cannot reach the bar below 2*bar-1, so the head is asked only above it.
            if risk_prob < 2 * bar - 1:
                return Verdict(risk=False, score=risk_prob)
            head_prob = head.score(text, context)
            score = (risk_prob + head_prob) / 2
            if score < bar:
                return Verdict(risk=False, score=score, head_score=head_prob)
            matched.append(f"head:{head_prob:.2f}")
        elif risk_prob < bar:
            return Verdict(risk=False, score=risk_prob)
        matched.append(f"classifier:{category}:{probs[category]:.2f}")

    verdict = _verdict(category, severity, score, matched, hits, earlier, text, context, framed)
    verdict.head_score = head_prob
    return verdict


def _said(context: Sequence[str]) -> list[Hit]:
    """The pattern layer's hits in the child's earlier messages."""
    return [h for message in context for h in scan(message) if not h.negated]


def _verdict(category: str, severity: str, score: float, matched: list[str], hits: list[Hit], earlier: list[Hit],
             text: str, context: Sequence[str], framed: bool) -> Verdict:
    """A risk verdict with the vetted response for it, never pointing the child back to whoever hurt them."""
    abuse_phrases = [h.phrase for h in hits if h.category in ABUSE] + [
        h.phrase for h in earlier if h.category in ABUSE]
    who = abuser_of(abuse_phrases) or (abuser_of([text, *context]) if abuse_phrases else None)
    if who is None and category in (*ABUSE, "neglect"):
        who = silencer_of([text, *context])
    gentle = framed or played_down(text)
    response = respond(category, severity, who[0] if who else None, played_down=gentle)
    return Verdict(
        risk=True, category=category, severity=severity, score=score,
        template_reply=response.template, guidance=response.guidance, followup=response.followup,
        matched=matched, abuser=who[1] if who else None, played_down=gentle,
    )
