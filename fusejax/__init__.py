"""fusejax: FuseChat-3.0 implicit model fusion (SFT + length-normalised DPO) in JAX for TPU pods."""

__version__ = "0.1.0"
