"""SwinSSL engine: self-supervised Swin UNETR pretraining, fine-tuning and inference.

Importable and runnable without 3D Slicer; no Slicer or Qt import anywhere in this package.
"""

__version__ = "0.1.0"
