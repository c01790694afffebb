"""Training: fit the detector and the heads on labels, measure, evaluate, export."""
