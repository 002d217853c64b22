"""The data layer: feature spec, id mapping, validation, collate into `Batch`, the streaming
reader and its rebatching, synthetic logs with a planted truth, CSV converters."""
