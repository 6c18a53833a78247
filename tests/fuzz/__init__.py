"""Coverage-guided fuzzing (atheris) of the request path, run for a bounded time."""
