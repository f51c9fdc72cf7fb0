"""Size limits on what the public endpoint accepts: one place, so the models, the error messages and
the docs agree."""

# LaunchDarkly context keys may be long (hashed emails, URNs); 1,024 covers every real key.
MAX_CONTEXT_KEY = 1024
MAX_CONTEXT_KIND = 64
# Engage computation keys and ids are short identifiers.
MAX_AUDIENCE_KEY = 255
MAX_AUDIENCE_ID = 255
MAX_MESSAGE_ID = 255
