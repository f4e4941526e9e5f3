"""Evaluation: reproducible scores for companion models, simulated children, and a report people can read.

    from qiaoban.eval import run_eval, scorer_for, write_report
    backend = load_backend("llama", model="default")
    run_eval(backend, read_jsonl("dev.jsonl"), "runs/eval/base", scorer=scorer_for(backend))
    write_report(["runs/eval/base", "runs/eval/lora"], "runs/eval/report.html")   # + report.json

Parts: `generate` (teacher-forced replies, cached), `perplexity` (reference NLL, llama.cpp or transformers),
`metrics` (character BLEU/ROUGE-L, Distinct, length, questions, markdown, coaching-strategy lexicon), `judge`
(pointwise PICA protocol + our dimensions, pairwise in both orders), `simulate` (scenario cards), `pipeline`
(one run directory per model), `report` (bootstrap intervals, HTML with inline SVG, report.json).
"""

from qiaoban.eval.cache import CachedBackend, JsonlCache, stable_hash
from qiaoban.eval.generate import EVAL_GENERATION, EvalItem, eval_items, generate_replies
from qiaoban.eval.judge import (
    REPLY_DIMENSIONS,
    Judge,
    JudgeSettings,
    Parsed,
    judge_replies,
    pairwise,
    parse_score,
    parse_verdict,
)
from qiaoban.eval.metrics import bleu, distinct, reference_scores, reply_stats, rouge_l, strategy_profile
from qiaoban.eval.perplexity import LlamaCppScorer, TransformersScorer, perplexity, reference_nll, scorer_for
from qiaoban.eval.pipeline import run_eval, safety_score
from qiaoban.eval.report import ReportError, bootstrap_ci, build_report, load_run, summarize, write_report
from qiaoban.eval.simulate import load_cards, risk_check, run_simulations

__all__ = [
    "EVAL_GENERATION",
    "REPLY_DIMENSIONS",
    "CachedBackend",
    "EvalItem",
    "Judge",
    "JudgeSettings",
    "JsonlCache",
    "LlamaCppScorer",
    "Parsed",
    "ReportError",
    "TransformersScorer",
    "bleu",
    "bootstrap_ci",
    "build_report",
    "distinct",
    "eval_items",
    "generate_replies",
    "judge_replies",
    "load_cards",
    "load_run",
    "pairwise",
    "parse_score",
    "parse_verdict",
    "perplexity",
    "reference_nll",
    "reference_scores",
    "reply_stats",
    "risk_check",
    "rouge_l",
    "run_eval",
    "run_simulations",
    "safety_score",
    "scorer_for",
    "stable_hash",
    "strategy_profile",
    "summarize",
    "write_report",
]
