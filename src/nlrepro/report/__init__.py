"""Reports built from pipeline outputs (plots, summaries)."""
