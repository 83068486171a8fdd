"""The runtime: compiled models (`model`), checkpoints, progress and history,
the spec's train/expect sections (`training`), and data sources (`data`)."""
