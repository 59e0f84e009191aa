"""rlhf-ray core library: contracts, the synthetic world, lineage, models, telemetry. Starts no actors."""

__version__ = "0.1.0"
