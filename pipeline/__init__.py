"""Data layer: feature specs, synthetic logs, CSV converters, validation and the streaming reader.

Nothing in this package parses command lines (that is `jobs/`), and `ple_model/` never imports it.
"""
