"""Side-by-side benchmarks of SwinSSL against the MONAI reference pipelines (``python -m benchmarks.run``)."""
