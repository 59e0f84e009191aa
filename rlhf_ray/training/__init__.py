"""Model training pieces that do not depend on Ray: batch encoding, objectives, checkpoint state."""
