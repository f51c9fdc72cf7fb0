"""Size limits on what the public endpoint accepts: one place, so the models, the error messages and
the docs agree."""

# LaunchDarkly context keys may be long (hashed emails, URNs); 1,024 covers every real key.
MAX_CONTEXT_KEY = 1024
MAX_CONTEXT_KIND = 64
# Engage computation keys and ids are short identifiers.
MAX_AUDIENCE_KEY = 255
MAX_AUDIENCE_ID = 255
MAX_MESSAGE_ID = 255

# Lambda takes at most 6 MiB (6,291,456 bytes) per synchronous invocation, the whole API Gateway proxy event
# counted: the body (inflated by API Gateway when it came gzipped) sits there as a JSON string, every quote
# escaped (Segment's events grow about 12 %), beside the headers and the request context. 5 MiB leaves that
# room; a larger limit could never be reached, API Gateway answers 413 "Request Too Long" without the function.
MAX_BODY_BYTES = 5 * 1024 * 1024
MAX_EVENTS_PER_REQUEST = 10_000
# Lambda returns at most 6 MB either: an answer lists the first rejected events and counts the others (all
# are logged). 100 worst-case entries (255-character ids and keys of escaped characters) stay under 1.5 MB.
MAX_LISTED_ERRORS = 100
