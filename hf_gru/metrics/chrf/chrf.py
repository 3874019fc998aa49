"""Corpus chrF (Popović, 2015) as sacreBLEU computes it: character n-gram F-score (n <= 6, beta 2), 0-100;
`word_order=2` gives chrF++.

An offline `evaluate` metric module: load it with `evaluate.load("<path>/chrf")` or `hf_gru.metrics.load_metric`.
One reference per prediction.
"""

import datasets
import evaluate
import sacrebleu

_DESCRIPTION = "chrF: F-beta (beta 2, recall weighs more) of character 1- to 6-gram matches, whitespace ignored."
_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[str]`): translations to score.
    references (`list[str]`): one reference translation per prediction.
    word_order (`int`, defaults to 0): word n-gram order to add (2 = chrF++).
    lowercase (`bool`, defaults to False): compare case-insensitively.
Returns:
    `{"chrf": float}` on a 0-100 scale.
Example:
    >>> metric.compute(predictions=["the cat sat"], references=["the cat sat"])
    {'chrf': 100.0}
"""


class ChrF(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="Popović, 2015. chrF: character n-gram F-score for automatic MT evaluation. WMT.",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
            codebase_urls=["https://github.com/mjpost/sacrebleu"],
        )

    def _compute(self, predictions, references, word_order: int = 0, lowercase: bool = False) -> dict:
        if len(references) == 0:
            raise ValueError("chrf needs at least one reference, got 0.")
        if word_order < 0:
            raise ValueError(f"`word_order` must be >= 0, got word_order={word_order}.")
        score = sacrebleu.CHRF(word_order=word_order, lowercase=lowercase).corpus_score(predictions, [references])
        return {"chrf": score.score}
