"""Annotation QA: agreement, consensus, annotator health, preference pairs, active learning."""
