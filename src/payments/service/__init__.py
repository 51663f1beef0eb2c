"""The service that runs in production: Restate handlers, input rules, answers, the serving process."""
