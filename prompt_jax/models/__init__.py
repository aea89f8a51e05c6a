"""Frozen backbones behind one interface (`Backbone`), and their checkpoint loaders."""

from prompt_jax.models.base import Backbone, Params
from prompt_jax.models.convert import CheckpointError, Pretrained, load_pretrained, load_tokenizer
from prompt_jax.models.fetch import REAL_MODELS, fetch, resolve_model
from prompt_jax.models.gemma3 import Gemma3, Gemma3Config
from prompt_jax.models.llama import Llama, LlamaConfig
from prompt_jax.models.roberta import Roberta, RobertaConfig
from prompt_jax.models.t5 import T5, T5Config

__all__ = [
    "Backbone", "CheckpointError", "Gemma3", "Gemma3Config", "Llama", "LlamaConfig", "Params",
    "Pretrained", "REAL_MODELS", "Roberta", "RobertaConfig", "T5", "T5Config", "fetch",
    "load_pretrained", "load_tokenizer", "resolve_model",
]
