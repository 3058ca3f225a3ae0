"""The generation loop and next-token choice shared by the engines (greedy, or temperature +
top-p with a seeded RNG), written once over the protocol's reset/forward/detokenize."""

import codecs

import numpy as np

# Control-token texts of common chat templates; engines add their own tokenizer's list.
COMMON_SPECIAL = {
    "<|im_start|>",
    "<|im_end|>",
    "<|endoftext|>",
    "<|eot_id|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|begin_of_text|>",
    "<start_of_turn>",
    "<end_of_turn>",
    "<|end|>",
    "<|user|>",
    "<|assistant|>",
    "<|system|>",
    "[INST]",
    "[/INST]",
    "</s>",
}
# End-of-turn tokens looked up by text when the config does not list them all.
END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<|endoftext|>", "<end_of_turn>", "<|end|>", "<|eom_id|>")


class Sampler:
    def __init__(self, temperature: float = 0.0, top_p: float = 1.0, seed: int | None = None):
        self.temperature = temperature
        self.top_p = top_p
        self.rng = np.random.default_rng(seed)

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0

    def __call__(self, logits: np.ndarray) -> int:
        if self.temperature <= 0:
            return int(np.argmax(logits))
        scaled = logits.astype(np.float64) / self.temperature
        probs = np.exp(scaled - scaled.max())
        probs /= probs.sum()
        if self.top_p < 1.0:
            order = np.argsort(-probs)
            keep = np.cumsum(probs[order]) - probs[order] < self.top_p  # always keeps the first
            mask = np.zeros_like(probs, dtype=bool)
            mask[order[keep]] = True
            probs = np.where(mask, probs, 0.0)
            probs /= probs.sum()
        return int(self.rng.choice(len(probs), p=probs))


class TextPieces:
    """Incremental detokenization: the text each new token adds, once complete (a multi-byte
    character split over tokens comes out whole). With ``engine.token_bytes`` each token's bytes
    go through one incremental UTF-8 decoder (no re-decoding per token); otherwise a small window
    is decoded twice per token, as TGI does."""

    def __init__(self, engine):
        self.engine, self.ids, self.prefix, self.read = engine, [], 0, 0
        self.token_bytes = getattr(engine, "token_bytes", None)
        if self.token_bytes is not None:
            self.decode = codecs.getincrementaldecoder("utf-8")("replace").decode

    def add(self, token: int) -> str:
        if self.token_bytes is not None:
            return self.decode(self.token_bytes(token))
        self.ids.append(token)
        before = self.engine.detokenize(self.ids[self.prefix : self.read])
        after = self.engine.detokenize(self.ids[self.prefix :])
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self.prefix, self.read = self.read, len(self.ids)
            return after[len(before) :]
        return ""


def stream_tokens(
    engine,
    prompt_ids: list[int],
    max_tokens: int,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int | None = None,
    ignore_eos: bool = False,
):
    """Yield Token(id, text) after ``prompt_ids`` until an eos id (not yielded; with ``ignore_eos``
    it is yielded and generation goes on) or ``max_tokens``.
    Text is decoded incrementally so a multi-byte character is emitted once it is complete."""
    from quantkit.engines.base import Token

    sample = Sampler(temperature, top_p, seed)
    pieces = TextPieces(engine)
    engine.reset()
    logits = engine.forward(list(prompt_ids))
    for step in range(max_tokens):
        token = sample(logits)
        if token in engine.eos_ids and not ignore_eos:
            return
        yield Token(token, pieces.add(token))
        if step + 1 < max_tokens:
            logits = engine.forward([token])
