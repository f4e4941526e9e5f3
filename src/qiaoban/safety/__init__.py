"""Child safety: screen what a child says (crisis, abuse, bullying, ...) and what the companion answers.

    from qiaoban.safety import check, SafetyGuard, screen_reply
    check("我不想活了").to_json_dict()   # {"risk": True, "category": "self_harm", "severity": "urgent", ...}
    engine = ChatEngine(backend, guard=SafetyGuard())

Layers: a pattern lexicon (lexicon.yaml) with negation, hyperbole and game/story handling, a character
n-gram classifier trained on data we generate and write ourselves (`qiaoban safety train`), and, when the default
model is installed, a head on that model's hidden states (`qiaoban.safety.head`, `qiaoban safety train-head`). The response policy
(taxonomy.yaml) gives vetted follow-ups and emergency templates; detections are stored as guardian events.
"""

from qiaoban.safety.bench import run_bench
from qiaoban.safety.detect import Verdict, check
from qiaoban.safety.events import EventStore, SafetyEvent
from qiaoban.safety.guard import SafetyGuard, screen_reply
from qiaoban.safety.labelled import LabelledFormatError, read_labelled
from qiaoban.safety.policy import categories

__all__ = ["LabelledFormatError", "EventStore", "SafetyEvent", "SafetyGuard", "Verdict", "categories", "check",
           "read_labelled", "run_bench", "screen_reply"]
