"""Serving maths and data shapes, free of Ray: sticky weighted assignment, the OpenAI-style request and
response schemas, feedback → signal-contract rows, guardrail checks, atomic shard writing."""
