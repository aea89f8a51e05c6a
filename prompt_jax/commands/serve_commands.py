"""The `prompt-jax serve` and `prompt-jax infer --bank` commands over a prompt bank."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def _ints(text: str) -> tuple[int, ...]:
    values = tuple(sorted(int(x) for x in text.split(",") if x.strip()))
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers like 8,16,32, got {text!r}")
    return values


def add_bank_flags(p: argparse.ArgumentParser) -> None:
    """Flags shared by `serve` and `infer --bank`."""
    g = p.add_argument_group("prompt bank (many tasks' prompts in mixed batches)")
    g.add_argument("--bank", help="folder of saved prompts (<name>.npy + <name>.json sidecar "
                                  "naming task, template and model)")
    g.add_argument("--batch_buckets", type=_ints, default=(8, 16, 32),
                   help="batch sizes compiled for (default 8,16,32); the largest is the most "
                        "rows per forward")
    g.add_argument("--length_buckets", type=_ints, default=(32, 64, 128),
                   help="input lengths compiled for (default 32,64,128); the largest must hold "
                        "--max_input_length")
    g.add_argument("--max_input_length", type=int, default=0,
                   help="input tokens kept per request (default: the run config's, 128)")
    g.add_argument("--slots", type=int, default=16,
                   help="prompts the bank holds before it grows (default 16)")
    g.add_argument("--overlong", choices=["truncate", "reject"], default="truncate",
                   help="an input over --max_input_length: cut (and said in the answer) or "
                        "refused (serve: 422)")


def load_bank(model: str, bank_dir: str, args, *, dtype: str = "float32", mesh_data: int = 0,
              mesh_model: int = 1, max_input_length: int = 128):
    """Loads the model once, fills a bank from `bank_dir` and returns its classifier."""
    from prompt_jax import engine
    from prompt_jax.serving.bank import PromptBank
    from prompt_jax.serving.classifier import Buckets, MixedClassifier

    loaded = engine.load_model(model, dtype=dtype, mesh_data=mesh_data, mesh_model=mesh_model)
    bank = PromptBank(loaded, slots=args.slots,
                      max_input_length=args.max_input_length or max_input_length)
    bank.load_dir(bank_dir)
    return MixedClassifier(bank, Buckets(args.batch_buckets, args.length_buckets),
                           overlong=args.overlong)


def infer_bank(args, config) -> None:
    """`prompt-jax infer --bank DIR --input requests.jsonl`: JSON lines in, JSON lines out."""
    from tqdm import tqdm

    from prompt_jax.serving import classifier as serving

    classifier = load_bank(config.model, args.bank, args, dtype=config.dtype,
                           mesh_data=config.mesh_data, mesh_model=config.mesh_model,
                           max_input_length=config.max_input_length)
    source = args.input or "stdin"
    if args.input:
        with open(args.input, encoding="utf-8") as f:
            requests = serving.read_requests(f, source)
    else:
        requests = serving.read_requests(sys.stdin, source)
    out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout  # noqa: SIM115
    started = time.perf_counter()
    try:
        with tqdm(total=len(requests), desc="infer", unit="row", file=sys.stderr) as bar:
            for answer in serving.infer_requests(classifier, requests, source=source,
                                                 progress=bar.update):
                out.write(json.dumps(answer) + "\n")
    finally:
        if args.output:
            out.close()
    seconds = time.perf_counter() - started
    print(f"{len(requests)} rows of {len({r['task'] for r in requests})} tasks in "
          f"{seconds:.1f} s ({classifier.compilations} compilations)", file=sys.stderr)


def serve(args) -> None:
    """`prompt-jax serve --model M --bank DIR`: the HTTP server (127.0.0.1 by default)."""
    from prompt_jax.serving import guard, server

    if not args.bank:
        raise ValueError("serve needs --bank (a folder of saved prompts)")
    api_key = args.api_key or os.environ.get(guard.API_KEY_ENV) or None
    guard.check_bind(args.host, api_key, args.insecure)  # before minutes of loading
    limits = guard.Limits(max_body_bytes=args.max_body_bytes,
                          max_text_chars=args.max_text_chars, max_rows=args.max_rows)
    classifier = load_bank(args.model, args.bank, args, dtype=args.dtype,
                           mesh_data=args.mesh_data)
    compiled = classifier.warm_up()
    bank = classifier.bank
    access = "an API key" if api_key else "no API key"
    print(f"serving {len(bank)} prompts ({', '.join(bank.names)}) of {args.model} on "
          f"http://{args.host}:{args.port} with {access} ({compiled} compilations in warm-up)",
          file=sys.stderr)
    config = server.ServerConfig(max_batch=args.max_batch or classifier.max_batch,
                                 max_wait_ms=args.max_wait_ms, queue_limit=args.queue_limit,
                                 overlong=args.overlong, limits=limits, api_key=api_key)
    server.serve(classifier, config, host=args.host, port=args.port, log_level=args.log_level,
                 insecure=args.insecure)


def main(args) -> None:
    """Runs `serve`."""
    from prompt_jax.commands.common import import_tensorflow_quietly

    import_tensorflow_quietly()  # seqio inside
    serve(args)


def add_parser(sub) -> None:
    """Adds `serve` to the `prompt-jax` subparsers."""
    p = sub.add_parser("serve", help="serve a folder of prompts over HTTP: mixed-task batches, "
                                     "dynamic batching")
    p.add_argument("--model", required=True,
                   help="REAL_MODELS name, local directory or file, or hub id")
    add_bank_flags(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default "
                                                       "127.0.0.1: this machine only); any "
                                                       "other needs an API key or --insecure")
    p.add_argument("--port", type=int, default=8000)
    g = p.add_argument_group("access and limits (checked before any work)")
    g.add_argument("--api_key", default="",
                   help="the key every endpoint but /health needs, as 'Authorization: Bearer "
                        "KEY' (at least 16 characters); better through $PROMPT_JAX_API_KEY, "
                        "which other users cannot read in the process list")
    g.add_argument("--insecure", action="store_true",
                   help="listen beyond loopback without an API key (anyone who reaches the "
                        "port may add and remove prompts)")
    g.add_argument("--max_body_bytes", type=int, default=2 * 2**20,
                   help="largest request body (default 2 MiB; an uploaded prompt is base64 in "
                        "it); larger: 413")
    g.add_argument("--max_text_chars", type=int, default=4096,
                   help="characters per input text (default 4096), cut before tokenization "
                        "(--overlong truncate) or refused with 413 (reject)")
    g.add_argument("--max_rows", type=int, default=256,
                   help="input rows per request (default 256); more: 413")
    p.add_argument("--max_batch", type=int, default=0,
                   help="rows per forward (default: the largest batch bucket)")
    p.add_argument("--max_wait_ms", type=float, default=5.0,
                   help="how long a request waits for its batch to fill (default 5)")
    p.add_argument("--queue_limit", type=int, default=256,
                   help="rows waiting at most; beyond it 503 with Retry-After (default 256)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--mesh_data", type=int, default=0,
                   help="devices on the data axis (0 = all); batch buckets must divide by it")
    p.add_argument("--log_level", default="info", help="uvicorn's log level")
    p.set_defaults(func=main)
