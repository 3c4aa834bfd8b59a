"""Feature statistics on content tokens only: the chat template and prompts never count towards a
feature's density or appear in its snippets, near-duplicate snippets collapse into one with a
count, and a feature's tokens are ranked by specificity, not frequency."""

from __future__ import annotations

import numpy as np
import torch

from steering_core.pack.corpus import Corpus, pack_windows
from steering_core.pack.sae_training import token_rows
from steering_core.pack.stats import StatsSpec, feature_statistics


class ChannelSAE:
    """Feature i is residual channel i, clipped at zero: activations are planted directly."""

    def __init__(self, d_sae: int, d_model: int):
        self.d_sae = d_sae
        self.W_dec = torch.eye(d_sae, d_model)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return x[..., : self.d_sae].clamp(min=0)


def test_pack_windows_masks_the_prompt_and_separators(tiny_hf):
    tok, mask = pack_windows(tiny_hf, [("<p>", "abc"), "xy"], window=4)
    # byte-level tiny tokenizer: "<p>" is 3 tokens, "abc" 3, EOS, "xy" 2, EOS -> 11 tokens, two windows of 4
    assert mask.reshape(-1).tolist() == [False, False, False, True, True, True, False, True]
    assert tok.shape == (2, 4)


def test_sae_training_rows_skip_non_content_tokens():
    c = Corpus(np.zeros((2, 4), np.int64), np.zeros(2), np.array([False, False]),
               np.array([[True, False, True, True], [True, True, False, True]]))
    assert token_rows(c, heldout=False).tolist() == [2, 3, 5, 7]  # position 0 and the masked tokens dropped


def _planted(tiny_hf):
    """12 windows of 16 tokens; positions 1-4 are the prompt. Feature 0 fires only on the prompt;
    feature 1 fires on the same response sentence copied into 6 windows and on 6 different ones;
    feature 2 puts most activation on the common "e" but is specific to the rare "q"."""
    n, w, d = 12, 16, 8
    rng = np.random.default_rng(0)
    e, q = tiny_hf.tokenizer.encode("e")[0], tiny_hf.tokenizer.encode("q")[0]
    letters = [tiny_hf.tokenizer.encode(ch)[0] for ch in "abcdfghijklmnoprstuvw"]
    tokens = rng.choice(letters, size=(n, w))
    tokens[:, 8:12] = e  # the common token
    tokens[:6, 12:16] = np.array(letters[:4])  # windows 0-5 end in the same sentence
    tokens[6, 13] = q
    content = np.ones((n, w), bool)
    content[:, 1:5] = False
    acts = np.zeros((n, w, d), np.float16)
    acts[:, 3, 0] = 5.0  # feature 0: the prompt only
    acts[:, 14, 1] = np.linspace(2.0, 1.0, n)  # feature 1: peaks at position 14, strongest in window 0
    acts[:, 8:12, 2] = 0.5  # feature 2: on every "e" ...
    acts[6, 13, 2] = 3.0  # ... and on the one "q"
    return Corpus(tokens.astype(np.int64), np.zeros(n), np.zeros(n, bool), content), acts, d


def test_stats_count_content_only_and_collapse_duplicates(tiny_hf):
    corpus, acts, d = _planted(tiny_hf)
    st = feature_statistics(tiny_hf, ChannelSAE(3, tiny_hf.d_model), corpus, acts, StatsSpec(top_snippets=20, before=4, after=1),
                            show_bar=False)
    assert st.density[0] == 0 and st.labels[0] == "dead feature"  # fired on prompt tokens only
    assert st.n_tokens == int(corpus.content[:, 1:].sum())
    tops = [s for s in st.snippets if s.feature_id == 1 and s.kind == "top"]
    # the six copies of one sentence are one snippet (counted), the six others stay apart
    assert len(tops) == 7 and sorted(s.similar for s in tops) == [1] * 6 + [6]
    assert tops[0].similar == 6
    for s in st.snippets:
        assert len(s.tokens) == len(s.acts) and max(s.acts) > 0
    assert not any(s.feature_id == 0 for s in st.snippets)
    # "q" carries 3 of feature 2's 27 units of activation, "e" 24, yet "q" is the specific one
    assert st.top_tokens[2][0] == "q" and "e" not in st.top_tokens[2][:1]
