"""debx: DeBERTa from PyTorch to fast, quantized deployments whose accuracy is proven."""

__version__ = "0.1.0"
