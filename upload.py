"""Publish a release folder and intermediate checkpoints to the Hugging Face Hub (issue #6)."""
