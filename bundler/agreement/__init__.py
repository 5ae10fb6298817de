"""Output agreement of an original model and quantized versions of it, run over a text in
their own runtime: perplexity, KL divergence and top-1 agreement of the next-token
distributions, by llama.cpp's `llama-perplexity --kl-divergence` conventions."""

from bundler.agreement.compare import (
    DEFAULT_CONTEXT,
    LanguageModel,
    TextAgreement,
    compare_text,
    compare_texts,
)

__all__ = ["DEFAULT_CONTEXT", "LanguageModel", "TextAgreement", "compare_text", "compare_texts"]
