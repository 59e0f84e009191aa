"""Adaptive redundancy: ask for another label only while the item's consensus is unsure.

The consensus of one item is the posterior of a one-coin Dawid–Skene model: annotator j is right with
probability a_j and otherwise picks any of the other K − 1 classes uniformly. With labels L = {(j, l_j)}
and a uniform prior over the K classes,

    P(y = k | L) ∝ Π_j  a_j^{[l_j = k]} · ((1 − a_j) / (K − 1))^{[l_j ≠ k]}

(curate's full Dawid–Skene confusion matrices reduce to this with a symmetric matrix; per item it needs only
each annotator's accuracy, and it updates in O(labels) after every new label).

An annotator's accuracy is a Beta(m·s, (1 − m)·s) prior (mean m = default accuracy, strength s pseudo-labels)
updated by their h hits in n checked labels (against gold, or the settled consensus of other items):

    â_j = (m·s + h_j) / (s + n_j)

Curate's own estimate is used for annotators who labeled the item before the workbench.

Stopping rule, with n the workbench labels on the task, w the labels currently wanted, n_max the cap, τ the
confidence threshold and p* = max_k P(y = k | L):

    done      if n ≥ 1 and p* ≥ τ                 (confident: stop asking, even before w)
    escalate  if n ≥ n_max and p* < τ             (the crowd cannot settle it: a reviewer decides)
    more      otherwise, with w ← max(w, n + 1)   (disagreement: ask one more label)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DONE = "done"
MORE = "more"
ESCALATE = "escalate"
_ACCURACY_FLOOR = 1e-3  # keeps log(a) and log(1 − a) finite for an annotator estimated at 0 or 1


def shrunk_accuracy(hits: float, checked: float, prior_mean: float, strength: float) -> float:
    """â = (m·s + h) / (s + n): the Beta posterior mean of an annotator's accuracy."""
    return (prior_mean * strength + hits) / (strength + checked)


def item_posterior(labels: Sequence[int], accuracies: Sequence[float], n_classes: int) -> np.ndarray:
    """P(y = k | L) of the one-coin model (see the module docstring), computed in log space."""
    if n_classes < 2:
        raise ValueError(f"n_classes must be ≥ 2, got {n_classes}")
    log_post = np.zeros(n_classes)
    for label, accuracy in zip(labels, accuracies, strict=True):
        a = min(1.0 - _ACCURACY_FLOOR, max(_ACCURACY_FLOOR, float(accuracy)))
        wrong = math.log((1.0 - a) / (n_classes - 1))
        contribution = np.full(n_classes, wrong)
        contribution[int(label)] = math.log(a)
        log_post += contribution
    log_post -= log_post.max()
    posterior = np.exp(log_post)
    return posterior / posterior.sum()


@dataclass(frozen=True)
class Decision:
    state: str
    label: int
    confidence: float
    labels_wanted: int


def decide(posterior: np.ndarray, new_labels: int, labels_wanted: int, max_labels: int, tau: float) -> Decision:
    """The stopping rule of the module docstring."""
    label = int(np.argmax(posterior))
    confidence = float(posterior[label])
    if new_labels >= 1 and confidence >= tau:
        return Decision(DONE, label, confidence, labels_wanted)
    if new_labels >= max_labels:
        return Decision(ESCALATE, label, confidence, labels_wanted)
    return Decision(MORE, label, confidence, min(max_labels, max(labels_wanted, new_labels + 1)))
