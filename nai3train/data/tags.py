"""Tag vocabulary and encodings shared by the model (token ids) and the tagger (multi-hot)."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import torch

PAD = 0  # token id 0 is padding; it is also the unconditional (empty prompt) token


@dataclass(frozen=True)
class Vocabulary:
    tags: tuple[str, ...]

    @classmethod
    def build(cls, tag_lists: list[list[str]]) -> "Vocabulary":
        """Most frequent first, ties by name: stable for the same data."""
        freq = Counter(t for ts in tag_lists for t in ts)
        return cls(tuple(sorted(freq, key=lambda t: (-freq[t], t))))

    def __len__(self) -> int:
        return len(self.tags)

    def ids(self, tag_lists: list[list[str]], max_tags: int) -> torch.Tensor:
        """(N, max_tags) token ids (tag index + 1), padded with PAD; unknown tags dropped."""
        index = {t: i + 1 for i, t in enumerate(self.tags)}
        out = torch.full((len(tag_lists), max_tags), PAD, dtype=torch.long)
        for n, ts in enumerate(tag_lists):
            known = [index[t] for t in ts if t in index][:max_tags]
            out[n, : len(known)] = torch.tensor(known, dtype=torch.long)
        return out

    def multi_hot(self, tag_lists: list[list[str]]) -> torch.Tensor:
        index = {t: i for i, t in enumerate(self.tags)}
        out = torch.zeros(len(tag_lists), len(self.tags))
        for n, ts in enumerate(tag_lists):
            for t in ts:
                if t in index:
                    out[n, index[t]] = 1.0
        return out
