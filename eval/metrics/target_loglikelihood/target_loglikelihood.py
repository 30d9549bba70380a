"""Accuracy and perplexity of a target continuation, as lm-evaluation-harness aggregates `loglikelihood` (LAMBADA).

Inputs, one entry per example: the summed log-likelihood (natural log) of the target tokens given the context,
whether every target token was the model's argmax (greedy), and whether the target's LAST token was the argmax
given everything before it (the GPT-2-paper-style / Megatron "last token" check).
Outputs:
    acc            = mean(is_greedy)                       (harness metric `acc`)
    perplexity     = exp(-mean(loglikelihoods))            (harness metric `perplexity`)
    acc_last_token = mean(last_token_correct)              (not a harness metric; labelled as such)
"""

import math

import datasets
import evaluate

_DESCRIPTION = __doc__
_CITATION = """@software{eval-harness, author = {Gao, Leo and others}, title = {A framework for few-shot language model
evaluation}, publisher = {Zenodo}, url = {https://github.com/EleutherAI/lm-evaluation-harness}}"""
_KWARGS_DESCRIPTION = """
Args:
    loglikelihoods (list of float): summed natural-log likelihood of each target.
    is_greedy (list of bool): every target token was the argmax.
    last_token_correct (list of bool): the target's last token was the argmax.
Returns:
    acc, perplexity, acc_last_token (floats).
Example:
    >>> metric = evaluate.load("eval/metrics/target_loglikelihood")
    >>> metric.compute(loglikelihoods=[-1.0, -3.0], is_greedy=[True, False], last_token_correct=[True, True])["acc"]
    0.5
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class TargetLoglikelihood(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"loglikelihoods": datasets.Value("float64"), "is_greedy": datasets.Value("bool"),
                 "last_token_correct": datasets.Value("bool")}
            ),
        )

    def _compute(self, loglikelihoods, is_greedy, last_token_correct):
        n = len(loglikelihoods)
        if n == 0:
            raise ValueError("target_loglikelihood needs at least one example")
        return {
            "acc": sum(map(bool, is_greedy)) / n,
            "perplexity": math.exp(-math.fsum(loglikelihoods) / n),
            "acc_last_token": sum(map(bool, last_token_correct)) / n,
        }
