"""Face heads: a face -> scores."""
