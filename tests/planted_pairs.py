"""A planted prompt-pair problem shared by the target-feature tests (tests/measure/test_prompt_pairs.py)
and the prompt-pair efficiency tests (tests/vectors/test_evaluation.py): a template dataset and a
ReLU SAE whose planted features have exact, known activations on its final tokens."""

from __future__ import annotations

import torch

from steering_core.datasets.generators import from_templates
from steering_core.datasets.pairs import ContrastiveDataset
from steering_core.model.recording import record_residuals
from steering_core.model.saes import tiny_sae

LAYER = 1
D_SAE = 128
#: Planted features and their activation on every positive (their pre-activation on negatives is -1).
TARGETS = {5: 1.0, 17: 1.5, 40: 2.0}
BOTH = 30  # +1 on every text of both sides: a target by the document's rule (it fires on all positives)
HALF = 9  # fires on the first half of the positives only
NEGATIVE = 22  # fires on every negative, never on a positive
RARE = 61  # fires on the first negative only
ACTIVE = set(TARGETS) | {BOTH, HALF, NEGATIVE, RARE}


def planted_dataset() -> ContrastiveDataset:
    """24 template pairs whose texts end at the target word, so the final token is the target's."""
    pairs = from_templates(
        ["Everyone thought <context> would lose. In the end they <target>",
         "After the long match <context> had <target>"],
        ["the dancer", "the driver", "my aunt", "the team", "our cat", "the pilot"],
        ["won", "triumphed"], ["lost", "failed"])
    return ContrastiveDataset("planted", pairs)


def final_residuals(model, texts) -> torch.Tensor:
    ids, mask = model.tokenize(list(texts))
    return record_residuals(model, ids, mask, [LAYER])[LAYER][:, -1].double()


def planted_sae(model, dataset: ContrastiveDataset):
    """A ReLU SAE at LAYER whose planted features have exactly the pre-activations above on the final
    token of every text of ``dataset`` (solved by least squares: 48 texts, d_model 64), and whose other
    features never fire (bias −10⁴)."""
    pos = final_residuals(model, [p.positive for p in dataset.pairs])
    neg = final_residuals(model, [p.negative for p in dataset.pairs])
    a = torch.cat([pos, neg])
    n = len(pos)
    pinv = torch.linalg.pinv(a)
    sae = tiny_sae(model, layer=LAYER, d_sae=D_SAE, seed=3)
    w_enc = sae.W_enc.detach().clone().double()
    b_enc = torch.full((D_SAE,), -1e4, dtype=torch.float64)
    ones, minus = torch.ones(n, dtype=torch.float64), -torch.ones(n, dtype=torch.float64)
    wanted = {f: torch.cat([v * ones, minus]) for f, v in TARGETS.items()}
    wanted[BOTH] = torch.cat([ones, ones])
    wanted[HALF] = torch.cat([torch.where(torch.arange(n) < n // 2, 1.0, -1.0).double(), minus])
    wanted[NEGATIVE] = torch.cat([minus, ones])
    wanted[RARE] = torch.cat([minus, torch.where(torch.arange(n) == 0, 1.0, -1.0).double()])
    for f, b in wanted.items():
        w_enc[:, f] = pinv @ b
        b_enc[f] = 0.0
        assert torch.allclose(a @ w_enc[:, f], b, atol=1e-3)  # the plant holds (the texts are independent)
    with torch.no_grad():
        sae.sae.W_enc.copy_(w_enc.float())
        sae.sae.b_enc.copy_(b_enc.float())
    return sae
