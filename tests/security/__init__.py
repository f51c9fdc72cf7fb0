"""Security tests of the public ingest endpoint: no leaks, fuzzing, and a corpus of hostile requests."""
