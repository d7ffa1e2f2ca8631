"""The training loop shared by every model and task: optimiser, schedule, seeding, checkpoint selection."""
