"""Evaluation statistics: how good a reward model or policy is, against held-out truth."""
