"""Corpus BLEU as sacreBLEU computes it (Post, 2018): its default 13a tokenisation, exponential smoothing, 0-100.

An offline `evaluate` metric module: load it with `evaluate.load("<path>/sacrebleu")` or `hf_gru.metrics.load_metric`.
One reference per prediction.
"""

import datasets
import evaluate
import sacrebleu

_DESCRIPTION = "BLEU: brevity penalty times the geometric mean of the 1- to 4-gram precisions, over the whole corpus."
_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[str]`): translations to score (detokenised text).
    references (`list[str]`): one reference translation per prediction.
    lowercase (`bool`, defaults to False): compare case-insensitively.
    tokenize (`str`, defaults to "13a"): sacreBLEU tokeniser ("13a", "intl", "char", "none", ...).
Returns:
    `{"bleu": float, "precisions": list[float], "brevity_penalty": float, "sys_len": int, "ref_len": int}`,
    BLEU and n-gram precisions on a 0-100 scale.
Example:
    >>> metric.compute(predictions=["the cat sat on the mat"], references=["the cat sat on the mat"])["bleu"]
    100.00000000000004
"""


class SacreBLEU(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="Post, 2018. A Call for Clarity in Reporting BLEU Scores. WMT.",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
            codebase_urls=["https://github.com/mjpost/sacrebleu"],
        )

    def _compute(self, predictions, references, lowercase: bool = False, tokenize: str = "13a") -> dict:
        if len(references) == 0:
            raise ValueError("sacrebleu needs at least one reference, got 0.")
        if tokenize not in sacrebleu.BLEU.TOKENIZERS:
            raise ValueError(f"Unknown tokenize={tokenize!r}; sacreBLEU has {sorted(sacrebleu.BLEU.TOKENIZERS)}.")
        score = sacrebleu.corpus_bleu(predictions, [references], lowercase=lowercase, tokenize=tokenize)
        return {
            "bleu": score.score,
            "precisions": list(score.precisions),
            "brevity_penalty": score.bp,
            "sys_len": score.sys_len,
            "ref_len": score.ref_len,
        }
