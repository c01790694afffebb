"""The classify pipeline: plan -> analyse (photo -> faces) -> commit."""
