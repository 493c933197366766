"""How well does each generator do its edits? `bench edit-success` measures it on
evaluation faces with the attribute classifier: success (the output shows the asked
value of the target attribute), the control (the same test when no edit is asked)
and their difference, the gain, per target."""

from __future__ import annotations

import pandas as pd
import torch

from bench.contract.errors import BenchError


def edit_success_rows(generator, images: torch.Tensor, labels: torch.Tensor, batch_size: int,
                      amp: bool = False) -> list[dict]:
    from bench.toolkit.generation import batched_generate, edits_of
    from bench.toolkit.metrics import attribute_hits

    edits = edits_of(generator, labels)
    if edits is None:
        raise BenchError(f"{generator.name} does not state what its edits ask for")
    edited = batched_generate(generator, images, generator.targets(labels), batch_size, amp)
    unedited = batched_generate(generator, images, edits.unedited, batch_size, amp)
    success = attribute_hits(edited, edits.expected, edits.target_names)
    control = attribute_hits(unedited, edits.expected, edits.target_names)
    rows = [{"generator": generator.name, "target": name, "edit_success": success[t].mean().item(),
             "edit_success_control": control[t].mean().item(), "n": success[t].numel()}
            for t, name in enumerate(edits.target_names)]
    rows.append({"generator": generator.name, "target": "mean", "edit_success": success.mean().item(),
                 "edit_success_control": control.mean().item(), "n": success.numel()})
    for row in rows:
        row["gain"] = row["edit_success"] - row["edit_success_control"]
    return rows


def edit_success_table(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows)[["generator", "target", "edit_success", "edit_success_control", "gain", "n"]]
