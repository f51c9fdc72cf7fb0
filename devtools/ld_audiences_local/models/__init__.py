"""Models of the outside systems, each in one place, pure (no threads, no clock of their own: the caller
passes the time), so that the local stack (real time), the tests and the simulation (bench/, virtual time)
follow the same rules:

* `rate_window`: LaunchDarkly's rate-limit windows and headers;
* `sqs_event_source`: Lambda's SQS event source mapping (batching, payload, partial batch responses,
  redrive to the dead-letter queue, scaling).
"""
