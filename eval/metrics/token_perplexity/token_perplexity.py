"""Token-level loss and perplexity from per-window negative log-likelihood sums and token counts.

    loss       = sum(nll_sums) / sum(token_counts)      (mean cross-entropy per token, nats)
    perplexity = exp(loss)

Used by `owt_val` (each window: summed NLL of its targets and their number) and by `wikitext_sliding`, which passes
the transformers guide's own accounting (window mean loss * (valid labels - 1), valid labels - 1).
"""

import math

import datasets
import evaluate

_DESCRIPTION = __doc__
_CITATION = ""
_KWARGS_DESCRIPTION = """
Args:
    nll_sums (list of float): summed negative log-likelihood of each window (nats).
    token_counts (list of int): tokens each sum counts.
Returns:
    loss, perplexity (floats).
Example:
    >>> metric = evaluate.load("eval/metrics/token_perplexity")
    >>> metric.compute(nll_sums=[2.0, 4.0], token_counts=[1, 2])["loss"]
    2.0
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class TokenPerplexity(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"nll_sums": datasets.Value("float64"), "token_counts": datasets.Value("int64")}),
        )

    def _compute(self, nll_sums, token_counts):
        count = sum(token_counts)
        if count <= 0:
            raise ValueError("token_perplexity needs at least one token")
        loss = math.fsum(nll_sums) / count
        return {"loss": loss, "perplexity": math.exp(loss)}
