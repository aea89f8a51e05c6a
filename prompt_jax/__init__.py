"""prompt_jax: prompt tuning and prompt transfer for frozen pretrained models in JAX/Flax."""

__version__ = "0.1.0"
