"""The evaluation prompt set: P held-out prompts × S seeds with unit noise drawn once.

Every point of every variant sees the same prompts and the same initial unit noise, so any
difference between two points is paired, not luck of the draw.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass
class PromptSet:
    """Image i has prompt ``prompt_index[i]`` and unit noise ``noise[i]``."""

    prompts: list[list[str]]
    prompt_index: torch.Tensor
    noise: torch.Tensor

    @property
    def per_image(self) -> list[list[str]]:
        return [self.prompts[i] for i in self.prompt_index.tolist()]

    @property
    def texts(self) -> list[str]:
        """Each image's prompt as danbooru-style text, the form every model bundle encodes."""
        return [", ".join(p) for p in self.per_image]

    def __len__(self) -> int:
        return len(self.prompt_index)


def make_prompt_set(eval_tags: list[list[str]], n_prompts: int, seeds_per_prompt: int, shape: tuple[int, ...],
                    seed: int, rare_tags: frozenset[str] | set[str] = frozenset(), rare_fraction: float = 0.0
                    ) -> PromptSet:
    """Held-out prompts, round-robin over backgrounds so black and white prompts are always
    present (claims C2/C3), and unit noise of ``shape`` per image drawn once from ``seed``.

    Which prompts is drawn from the pool with ``seed`` too: each training seed's evaluation seed
    (shared by the arms of that seed) draws its own subset, so a recipe-level interval over seeds
    covers the choice of prompts as well, not only these 16.

    ``rare_fraction`` of the prompts are taken first from those carrying a tag of ``rare_tags``
    (claim C6 needs rare concepts prompted often enough to measure their recall; an ordinary draw
    holds few), the rest as usual."""
    rare_tags = set(rare_tags)
    eval_tags = list(eval_tags)
    random.Random(seed).shuffle(eval_tags)
    n_rare = round(n_prompts * rare_fraction) if rare_tags else 0
    with_rare = [t for t in eval_tags if rare_tags.intersection(t)]
    prompts = _round_robin(with_rare, n_rare)
    taken = {id(t) for t in prompts}
    prompts += _round_robin([t for t in eval_tags if id(t) not in taken], n_prompts - len(prompts))
    index = torch.arange(len(prompts)).repeat_interleave(seeds_per_prompt)
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn((len(index), *shape), generator=gen)
    return PromptSet(prompts=prompts, prompt_index=index, noise=noise)


def _round_robin(tag_lists: list[list[str]], n: int) -> list[list[str]]:
    """Up to ``n`` of ``tag_lists``, one background after another, black and white first."""
    by_bg: dict[str, list[list[str]]] = {}
    for t in tag_lists:
        by_bg.setdefault(next((x for x in t if x.endswith("_background")), ""), []).append(t)
    order = sorted(by_bg, key=lambda k: (k not in ("black_background", "white_background"), k))
    out: list[list[str]] = []
    i = 0
    while len(out) < n and any(by_bg.values()):
        bucket = by_bg[order[i % len(order)]]
        if bucket:
            out.append(bucket.pop(0))
        i += 1
    return out


def read_prompt_file(path: str | Path) -> list[list[str]]:
    """One prompt per line (danbooru tags or text, comma-separated) as tag lists; blank lines and
    ``#`` comments are skipped."""
    from nai3train.data.folder import parse_tags

    f = Path(path)
    if not f.is_file():
        raise FileNotFoundError(f"prompt file {f} does not exist")
    lines = [ln.strip() for ln in f.read_text(errors="replace").splitlines()]
    prompts = [parse_tags(ln) for ln in lines if ln and not ln.startswith("#")]
    if not prompts:
        raise ValueError(f"prompt file {f} holds no prompts")
    return prompts
