"""Data layer: annotation formats and validation, statistics, image and text pipelines,
torch datasets and distributed-aware samplers."""
