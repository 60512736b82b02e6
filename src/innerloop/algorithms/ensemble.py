"""Deep ensembles of any meta-learner (Lakshminarayanan, Pritzel & Blundell, NeurIPS 2017).

``M`` members of the same method, each initialised from its own seed, are meta-trained side by
side and predict together:

    loss = sum_m member_m.meta_loss(episodes)          (members share no parameter, so each
                                                         member's gradient is its own loss's)
    classification:  probs = (1/M) sum_m softmax(member_m logits)
    regression:      p(y) = (1/M) sum_m p_m(y)          (a mixture of the members' predictives)

The members see the same meta-batches (a deep ensemble's diversity comes from the random
initialisation; Lakshminarayanan et al. found shuffling adds little). For deterministic methods
(MAML, ProtoNet, ...) member 0 is therefore exactly the single learner trained with the run's
seed; methods that sample (neural processes, VERSA, PLATIPUS) share torch's random stream, so
their member 0 differs from the single run in its noise draws only. ``optim.grad_clip`` is
rejected for ensembles: a global norm over all members would couple them. Applies to every method: a MAML ensemble is a
deep ensemble of meta-learned initialisations. Set ``model.ensemble: M`` in a recipe.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from innerloop.algorithms.base import MetaLearner
from innerloop.algorithms.predictive import CategoricalPredictive, GaussianMixturePredictive, Predictive
from innerloop.tasks.episodes import Episodes


class DeepEnsemble(MetaLearner):
    """``members`` (instances of one method) trained side by side, predicting as a mixture."""

    def __init__(self, members: list[MetaLearner]) -> None:
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least 2 members, got {len(members)}")
        kinds = {type(member) for member in members}
        if len(kinds) != 1:
            raise ValueError(f"ensemble members must be one method, got {sorted(k.__name__ for k in kinds)}")
        self.members = nn.ModuleList(members)
        first = members[0]
        self.name = f"{first.name}-ensemble{len(members)}"
        self.transductive = first.transductive
        self.metric_name, self.higher_is_better = first.metric_name, first.higher_is_better
        self.fixed_ways, self.task_kinds = first.fixed_ways, first.task_kinds

    def adaptation_cost(self) -> str:
        return f"{len(self.members)} members, each: {self.members[0].adaptation_cost()}"

    def set_training_step(self, step: int) -> None:
        for member in self.members:
            member.set_training_step(step)

    def meta_loss(self, episodes: Episodes) -> tuple[Tensor, dict[str, float]]:
        """The sum of the members' objectives; metrics are the members' means."""
        losses, metrics = [], {}
        for member in self.members:
            loss, member_metrics = member.meta_loss(episodes)
            losses.append(loss)
            for name, value in member_metrics.items():
                metrics[name] = metrics.get(name, 0.0) + value / len(self.members)
        return torch.stack(losses).sum(), metrics

    def predictive(self, episodes: Episodes) -> Predictive:
        predictives = [member.predictive(episodes) for member in self.members]
        if isinstance(predictives[0], GaussianMixturePredictive):
            return GaussianMixturePredictive(torch.cat([p.means for p in predictives], dim=-1),
                                             torch.cat([p.stds for p in predictives], dim=-1))
        return CategoricalPredictive(torch.stack([p.probs for p in predictives]).mean(0))

    def query_logits(self, episodes: Episodes) -> Tensor:
        """Log of the averaged member probabilities (classification)."""
        predictive = self.predictive(episodes)
        if isinstance(predictive, GaussianMixturePredictive):
            return predictive.mean.unsqueeze(-1)
        return predictive.probs.clamp_min(1e-30).log()

    def episode_metric(self, episodes: Episodes) -> Tensor:
        """Accuracy of the averaged probabilities, or MSE of the mixture mean."""
        if self.metric_name == "mse":
            return super().episode_metric(episodes)
        probs = self.predictive(episodes).probs
        accuracy = (probs.argmax(-1) == episodes.query_y).to(torch.float64).mean(1)
        finite = torch.isfinite(probs).flatten(1).all(1)
        return torch.where(finite, accuracy, torch.full_like(accuracy, float("nan")))
