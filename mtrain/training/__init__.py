"""The training loop (trainer), its schedule, progress and validation, and the session that starts or resumes it."""
