"""What every `prompt-jax` command module shares: TensorFlow imported quietly, output printed
once per job, comma-separated lists."""

from __future__ import annotations

import os
import sys

# Our lines only: TensorFlow (which runs the data pipelines) logs its build and device probing
# on import unless told not to. Set before anything imports it; a user's own value wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# Lines TensorFlow's C++ side writes to stderr on import, before its log level applies.
TF_IMPORT_NOISE = ("All log messages before absl::InitializeLog", "oneDNN custom operations",
                   "TF_ENABLE_ONEDNN_OPTS", "Could not find cuda drivers", "cuInit",
                   "Unable to register cu", "cpu_feature_guard", "rebuild TensorFlow",
                   "This TensorFlow binary is optimized", "computation_placer")


def import_tensorflow_quietly() -> None:
    """Imports TensorFlow with its import-time log lines (oneDNN, CUDA probing) hidden.

    Whatever else it writes to stderr while importing is passed on, and errors raise as usual.
    TensorFlow only runs data pipelines here, so it is kept off the GPU (which stays JAX's)
    and its own thread pools small (`readers.data_threads`), off the cores XLA computes on.
    """
    if "tensorflow" in sys.modules:
        return
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            lines = captured.read().decode("utf-8", "replace").splitlines()
            for line in lines:
                if line.strip() and not any(noise in line for noise in TF_IMPORT_NOISE):
                    print(line, file=sys.stderr)
    from prompt_jax.tasks.readers import data_threads

    try:
        tf.config.set_visible_devices([], "GPU")
        tf.config.threading.set_intra_op_parallelism_threads(data_threads())
        tf.config.threading.set_inter_op_parallelism_threads(data_threads())
    except RuntimeError:  # devices already initialized by an earlier import
        pass


def print_once(text: str) -> None:
    """Prints on the primary process only (every process of a job computes the same)."""
    from prompt_jax import distributed

    if distributed.is_primary():
        print(text)


def names(text: str) -> list[str]:
    """The items of a comma-separated list, blanks dropped."""
    return [x.strip() for x in text.split(",") if x.strip()]


# Commands that compile programs, and so gain from JAX's persistent compilation cache: a second
# run of the same shapes reads its programs from disk instead of compiling them again.
COMPILING = ("demo", "train", "eval", "infer", "serve", "transfer", "project")
MIN_COMPILE_SECONDS = 0.5  # programs quicker to compile than this are not worth a disk entry


def compilation_cache_dir() -> str:
    """The persistent compilation cache's folder: `jax/` in the prompt_jax cache folder
    (`$PROMPT_JAX_CACHE`, default ~/.cache/prompt_jax)."""
    from prompt_jax.models.fetch import cache_dir

    return str(cache_dir() / "jax")


def use_compilation_cache(enabled: bool = True) -> str | None:
    """Turns JAX's persistent compilation cache on for this process, or off.

    A folder the user set already (`JAX_COMPILATION_CACHE_DIR` or `jax.config`) is kept;
    otherwise it is `compilation_cache_dir()`.

    Returns:
      The cache folder in use, or None when it is turned off.
    """
    import jax

    if not enabled:
        jax.config.update("jax_enable_compilation_cache", False)
        return None
    jax.config.update("jax_enable_compilation_cache", True)
    if not jax.config.jax_compilation_cache_dir:
        jax.config.update("jax_compilation_cache_dir", compilation_cache_dir())
        jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
    return jax.config.jax_compilation_cache_dir
