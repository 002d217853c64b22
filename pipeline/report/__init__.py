"""The multi-task comparison (variants at a matched parameter budget, trained through the
real training path) and its Markdown + PNG report."""
