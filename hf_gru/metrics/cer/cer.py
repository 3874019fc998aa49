"""Character error rate, (substitutions + deletions + insertions) / reference characters, over the corpus (jiwer).

An offline `evaluate` metric module: load it with `evaluate.load("<path>/cer")` or `hf_gru.metrics.load_metric`.
Returns a dict (unlike the Hub's `cer`, which returns a bare float) so it combines with other metrics.
"""

import datasets
import evaluate
import jiwer

_DESCRIPTION = "CER = (S + D + I) / N from a character-level Levenshtein alignment, summed over all sentences."
_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[str]`): transcriptions to score.
    references (`list[str]`): reference transcriptions (spaces count as characters).
    return_details (`bool`, defaults to False): also return the substitution, deletion, insertion and hit counts.
Returns:
    `{"cer": float}` (may exceed 1 with many insertions), plus the counts when `return_details`.
Example:
    >>> metric.compute(predictions=["the cat sit on"], references=["the cat sat"])
    {'cer': 0.36363636363636365}
"""


class CER(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
            codebase_urls=["https://github.com/jitsi/jiwer"],
        )

    def _compute(self, predictions, references, return_details: bool = False) -> dict:
        if len(references) == 0:
            raise ValueError("cer needs at least one reference, got 0.")
        out = jiwer.process_characters(list(references), list(predictions))
        scores = {"cer": float(out.cer)}
        if return_details:
            scores.update(substitutions=out.substitutions, deletions=out.deletions, insertions=out.insertions,
                          hits=out.hits)  # fmt: skip
        return scores
