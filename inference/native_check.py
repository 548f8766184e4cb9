"""Whether this machine's build of llama.cpp runs on this CPU: a model loaded and a few tokens
decoded, in a process of its own (`python -m inference.native_check MODEL.gguf`).

A build compiled with `-march=native` can use instructions its CPU lists but its hypervisor
does not let it run: on a VM that shows AMX, ggml's AMX kernels died with a general protection
fault at the first matrix product, in every worker, while everything else looked fine. pip's
cache then hands the same broken wheel to every new virtualenv, so `make` checks the build
once per install and builds it again when it crashes (see the Makefile's `model` target).
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m inference.native_check MODEL.gguf", file=sys.stderr)
        return 2
    import llama_cpp

    model = llama_cpp.Llama(model_path=argv[1], n_ctx=256, n_threads=1, verbose=False)
    written = model.create_completion("The capital of France is", max_tokens=4, temperature=0)
    assert isinstance(written, dict)  # not a stream
    if not written["usage"]["completion_tokens"]:
        print("llama.cpp loaded the model but wrote nothing.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
