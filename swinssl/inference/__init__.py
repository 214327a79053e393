"""Sliding-window segmentation of whole volumes with bounded memory."""
