"""The service's plumbing, below the channels and above the domain: what a process is built
with and how a request is served (the runtime, the request's session, the webhook guard,
parsed inputs, the spool, the provider's client, rate limits, settings, logs)."""
