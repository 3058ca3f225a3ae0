"""Several sequences decoded together by transformers: one padded forward per step over a KV
cache that holds every running sequence as a row (left-padded, masked). A joining sequence is
prefilled alone and then merged in as a new row; a finished one's row is dropped at once.

On a CPU the plain decode loop is Python-bound (FACTS: ~20 tok/s whatever the model), so one
forward for B sequences costs about what one costs for one: that is the whole gain here.
transformers' own ``generate_batch`` was measured at ~9.5 s of set-up per call on CPU."""

import warnings

from quantkit.core.errors import InputError


class TransformersBatch:
    max_batch_tokens = None  # a prompt is prefilled in one forward

    def __init__(self, engine, n_seq: int, n_ctx_seq: int):
        self.engine, self.torch = engine, engine.torch
        self.n_seq, self.n_ctx_seq = n_seq, n_ctx_seq
        self.rows: list[int] = []  # the seq id of each cache row
        self.layers: list[tuple] = []  # per layer (keys, values) [rows, heads, length, dim]
        self.mask = None  # [rows, length] 1 = a real token, 0 = left padding
        self.pos: dict[int, int] = {}  # seq -> tokens it holds

    def _cache(self, layers):
        from transformers import DynamicCache

        cache = DynamicCache()
        for i, (keys, values) in enumerate(layers):
            cache.update(keys, values, i)
        return cache

    def _run(self, input_ids, layers, mask, position_ids):
        with self.torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = self.engine.model(
                input_ids=input_ids,
                attention_mask=mask,
                position_ids=position_ids,
                past_key_values=self._cache(layers) if layers else None,
                use_cache=True,
            )
        cache = out.past_key_values
        layers = [(layer.keys, layer.values) for layer in cache.layers]
        return out.logits[:, -1].float().cpu().numpy(), layers

    def step(self, feeds: dict[int, list[int]]) -> dict:
        """Advance every running row by its one fed token (one forward), then prefill each new
        sequence alone and merge it in; next-token logits per fed sequence."""
        torch, device = self.torch, self.engine.device
        out = {}
        if self.rows and any(s in feeds for s in self.rows):
            if any(len(feeds.get(s, ())) != 1 for s in self.rows):
                raise InputError("every running sequence advances one token per step")
            input_ids = torch.tensor([feeds[s] for s in self.rows], device=device)
            mask = torch.cat([self.mask, torch.ones(len(self.rows), 1, dtype=self.mask.dtype, device=device)], 1)
            position_ids = torch.tensor([[self.pos[s]] for s in self.rows], device=device)
            logits, self.layers = self._run(input_ids, self.layers, mask, position_ids)
            self.mask = mask
            for row, seq in enumerate(self.rows):
                self.pos[seq] += 1
                out[seq] = logits[row]
        for seq, ids in feeds.items():
            if seq in out:
                continue
            if seq in self.pos or len(ids) > self.n_ctx_seq:
                raise InputError(f"sequence {seq}: a prompt comes once, in one piece of at most {self.n_ctx_seq} tokens")
            n = len(ids)
            logits, layers = self._run(
                torch.tensor([ids], device=device),
                None,
                torch.ones(1, n, dtype=torch.long, device=device),
                torch.arange(n, device=device)[None],
            )
            self._merge(seq, layers, n)
            out[seq] = logits[0]
        return out

    def _merge(self, seq: int, layers: list[tuple], n: int) -> None:
        """Add a prefilled sequence as a new row, left-padding the shorter side."""
        torch = self.torch
        if not self.rows:
            self.rows, self.layers, self.pos = [seq], layers, {seq: n}
            self.mask = torch.ones(1, n, dtype=torch.long, device=layers[0][0].device)
            return
        length = self.mask.shape[1]
        width = max(length, n)

        def pad(t, to):  # left-pad the length dimension (2) with zeros
            return t if t.shape[2] == to else torch.nn.functional.pad(t, (0, 0, to - t.shape[2], 0))

        self.layers = [
            (torch.cat([pad(k, width), pad(nk, width)]), torch.cat([pad(v, width), pad(nv, width)]))
            for (k, v), (nk, nv) in zip(self.layers, layers)
        ]
        new_mask = torch.zeros(1, width, dtype=self.mask.dtype, device=self.mask.device)
        new_mask[0, width - n :] = 1
        self.mask = torch.cat([torch.nn.functional.pad(self.mask, (width - length, 0)), new_mask])
        self.rows.append(seq)
        self.pos[seq] = n

    def free(self, seq: int) -> None:
        if seq not in self.pos:
            return
        torch = self.torch
        keep = [i for i, s in enumerate(self.rows) if s != seq]
        del self.pos[seq]
        self.rows = [self.rows[i] for i in keep]
        if not keep:
            self.layers, self.mask = [], None
            return
        index = torch.tensor(keep, device=self.mask.device)
        self.mask = self.mask.index_select(0, index)
        first = int((self.mask.sum(0) > 0).nonzero()[0])  # columns that are padding in every row go
        self.mask = self.mask[:, first:]
        self.layers = [(k.index_select(0, index)[:, :, first:], v.index_select(0, index)[:, :, first:]) for k, v in self.layers]

    def close(self) -> None:
        self.rows, self.layers, self.mask, self.pos = [], [], None, {}
