"""ufinebench: ultra-fine-grained text-based person retrieval (UFineBench, CVPR 2024) and beyond."""

__version__ = "0.1.0"
