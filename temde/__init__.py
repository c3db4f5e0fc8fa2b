"""temde: reference reproduction of T-EMDE (arXiv 2105.04242) with SGRAF and VSRN backbones."""

__version__ = "0.1.0"
