"""The metric- and model-based learners of the comparison: shapes, batched vs per-task paths,
support-order invariance, relabelling equivariance, query independence, gradients."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from innerloop.algorithms import (
    LEO,
    SNAIL,
    TADAM,
    HyperNetwork,
    InContextTransformer,
    MatchingNet,
    MemoryAugmentedNetwork,
    MetaLearner,
    MetaOptNetSVM,
    R2D2,
    RelationNet,
    Siamese,
)
from innerloop.cli import main
from innerloop.config import ConfigError, config_from_dict, load_config
from innerloop.errors import TaskError
from innerloop.nn import Conv4
from innerloop.tasks import Episodes

WAYS, SHOTS, QUERIES, TASKS = 3, 2, 2, 2


def conv4(**options) -> Conv4:
    return Conv4(hidden_channels=8, image_size=16, **options)


FACTORIES: dict[str, Callable[[], MetaLearner]] = {
    "siamese": lambda: Siamese(conv4()),
    "matching": lambda: MatchingNet(conv4()),
    "matching-fce": lambda: MatchingNet(conv4(), full_context_embeddings=True, attention_steps=3),
    "relation": lambda: RelationNet(conv4(pooled_blocks=2)),
    "tadam": lambda: TADAM(conv4()),
    "r2d2": lambda: R2D2(conv4()),
    "metaoptnet": lambda: MetaOptNetSVM(conv4(), solver_steps=10),
    "mann": lambda: MemoryAugmentedNetwork(conv4(), ways=WAYS, controller_size=16, memory_slots=12,
                                           memory_width=6, read_heads=2),
    "snail": lambda: SNAIL(conv4(), ways=WAYS, shots=SHOTS),
    "transformer": lambda: InContextTransformer(conv4(), ways=WAYS, model_dim=16, layers=2, heads=2,
                                                feedforward_dim=32),
    "hypernet": lambda: HyperNetwork(conv4(), context_dim=16, target_hidden=8),
    "leo": lambda: LEO(conv4(), latent_dim=4, latent_steps=2, finetune_steps=2, latent_lr=0.5, finetune_lr=0.01),
}
SET_BASED = ["siamese", "matching", "relation", "tadam", "r2d2", "metaoptnet", "transformer", "hypernet", "leo"]
WAY_AGNOSTIC = ["siamese", "matching", "matching-fce", "relation", "tadam", "r2d2", "metaoptnet", "hypernet", "leo"]


def make_learner(name: str) -> MetaLearner:
    torch.manual_seed(0)
    return FACTORIES[name]().double().eval()


def make_episodes(seed: int = 0, ways: int = WAYS) -> Episodes:
    generator = torch.Generator().manual_seed(seed)
    support_y = torch.arange(ways).repeat_interleave(SHOTS).expand(TASKS, -1)
    query_y = torch.arange(ways).repeat_interleave(QUERIES).expand(TASKS, -1)
    support_x = torch.rand(TASKS, ways * SHOTS, 1, 16, 16, generator=generator, dtype=torch.float64)
    query_x = torch.rand(TASKS, ways * QUERIES, 1, 16, 16, generator=generator, dtype=torch.float64)
    return Episodes(support_x, support_y.clone(), query_x, query_y.clone(), ways, SHOTS, QUERIES,
                    torch.arange(ways).expand(TASKS, -1))


def with_support(episodes: Episodes, support_x: torch.Tensor, support_y: torch.Tensor) -> Episodes:
    return Episodes(support_x, support_y, episodes.query_x, episodes.query_y, episodes.ways, episodes.shots,
                    episodes.queries, episodes.class_ids)


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_batched_path_matches_adapt_then_predict(name):
    learner, episodes = make_learner(name), make_episodes()
    batched = learner.query_logits(episodes)
    assert batched.shape == (TASKS, WAYS * QUERIES, WAYS)
    assert torch.isfinite(batched).all()
    looped = torch.stack([learner.predict(learner.adapt(e.support_x, e.support_y, WAYS), e.query_x)
                          for e in (episodes[t] for t in range(TASKS))])
    assert torch.allclose(batched, looped, atol=1e-8)


@pytest.mark.parametrize("name", SET_BASED)
def test_support_order_does_not_change_predictions(name):
    learner, episodes = make_learner(name), make_episodes()
    order = torch.randperm(WAYS * SHOTS, generator=torch.Generator().manual_seed(3))
    permuted = with_support(episodes, episodes.support_x[:, order], episodes.support_y[:, order])
    assert torch.allclose(learner.query_logits(episodes), learner.query_logits(permuted), atol=1e-8)


@pytest.mark.parametrize("name", ["matching-fce", "snail", "mann"])
def test_sequence_models_do_depend_on_support_order(name):
    """The invariance test above can fail: these read the support set as a sequence."""
    learner, episodes = make_learner(name), make_episodes()
    order = torch.tensor([1, 0, 3, 2, 5, 4])
    permuted = with_support(episodes, episodes.support_x[:, order], episodes.support_y[:, order])
    assert not torch.allclose(learner.query_logits(episodes), learner.query_logits(permuted), atol=1e-8)


@pytest.mark.parametrize("name", WAY_AGNOSTIC)
def test_relabelling_classes_permutes_the_outputs(name):
    learner, episodes = make_learner(name), make_episodes()
    relabel = torch.tensor([2, 0, 1])  # class k is now called relabel[k]
    relabelled = with_support(episodes, episodes.support_x, relabel[episodes.support_y])
    original, renamed = learner.query_logits(episodes), learner.query_logits(relabelled)
    assert torch.allclose(renamed[..., relabel], original, atol=1e-8)


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_a_query_is_predicted_from_the_support_set_and_itself_only(name):
    learner, episodes = make_learner(name), make_episodes()
    changed_x = episodes.query_x.clone()
    changed_x[:, 1:] = torch.rand_like(changed_x[:, 1:])
    changed = Episodes(episodes.support_x, episodes.support_y, changed_x, episodes.query_y, WAYS, SHOTS,
                       QUERIES, episodes.class_ids)
    assert not learner.transductive
    assert torch.allclose(learner.query_logits(episodes)[:, 0], learner.query_logits(changed)[:, 0], atol=1e-8)


# Parameters whose gradient is zero by construction at initialisation: convolution biases right
# before a BatchNorm in training mode (the batch mean cancels them), TADAM's task-embedding
# networks (their FiLM post-multipliers start at 0), and the `previous` tap of SNAIL's last dense
# block (its dilation reaches past the start of the sequence, as in the paper's TCBlock).
ZERO_BY_CONSTRUCTION = (".0.bias", "task_embedding_networks.", "blocks.2.conv.previous.weight")


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_meta_loss_reaches_every_parameter(name):
    learner = make_learner(name).train()
    loss, metrics = learner.meta_loss(make_episodes())
    assert torch.isfinite(loss) and 0 <= metrics["accuracy"] <= 1
    loss.backward()
    missing = [n for n, p in learner.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"no finite gradient for {missing}"
    zero = [n for n, p in learner.named_parameters()
            if float(p.grad.abs().max()) < 1e-9 and not any(part in n for part in ZERO_BY_CONSTRUCTION)]
    assert not zero, f"zero gradient for {zero}"


def test_tadam_film_networks_learn_once_the_post_multipliers_move():
    learner = make_learner("tadam").train()
    with torch.no_grad():
        learner.gamma_scale.fill_(0.1)
        learner.beta_scale.fill_(0.1)
    learner.meta_loss(make_episodes())[0].backward()
    for network in learner.task_embedding_networks:
        assert all(float(p.grad.abs().max()) > 1e-9 for p in network.parameters())


def test_relation_scores_in_chunks_at_evaluation(monkeypatch):
    from innerloop.algorithms.metric import relation

    learner, episodes = make_learner("relation"), make_episodes()
    whole = learner.query_logits(episodes)
    monkeypatch.setattr(relation, "EVAL_PAIRS_PER_CALL", 7)  # 2 tasks x 3 classes: one query per call
    assert torch.allclose(learner.query_logits(episodes), whole, atol=1e-12)


@pytest.mark.parametrize("name", ["mann", "snail", "transformer"])
def test_fixed_ways_models_refuse_other_ways_with_advice(name):
    learner = make_learner(name)
    with pytest.raises(TaskError, match="--ways 3"):
        learner.query_logits(make_episodes(ways=4))


def test_siamese_classifies_by_the_most_similar_support_example():
    learner = make_learner("siamese")
    support = torch.randn(1, 6, learner.backbone.embedding_dim, dtype=torch.float64)
    query = torch.randn(1, 4, learner.backbone.embedding_dim, dtype=torch.float64)
    support_y = torch.tensor([[0, 0, 1, 1, 2, 2]])
    from innerloop.algorithms.metric.siamese import best_match_per_class

    pairs = learner.pair_logits(query, support)
    expected = pairs.view(1, 4, 3, 2).amax(-1)
    assert torch.equal(best_match_per_class(pairs, support_y, 3), expected)
    weights = learner.distance.weight[0]
    manual = (weights * (query[0, 2] - support[0, 5]).abs()).sum() + learner.distance.bias[0]
    assert torch.allclose(pairs[0, 2, 5], manual)


def test_siamese_pair_loss_weighs_positive_and_negative_pairs_equally():
    learner = make_learner("siamese").train()
    episodes = make_episodes()
    loss, _ = learner.meta_loss(episodes)
    from innerloop.algorithms.base import embed_episodes

    support, query = embed_episodes(learner.backbone, episodes)
    logits = learner.pair_logits(query, support)
    same = episodes.query_y.unsqueeze(-1) == episodes.support_y.unsqueeze(-2)
    positive = torch.nn.functional.softplus(-logits[same]).mean()
    negative = torch.nn.functional.softplus(logits[~same]).mean()
    assert torch.allclose(loss, 0.5 * (positive + negative))


def test_relation_scores_are_probabilities_trained_by_mse():
    learner = make_learner("relation").train()
    episodes = make_episodes()
    scores = learner.query_logits(episodes)
    assert ((scores > 0) & (scores < 1)).all()
    loss, _ = learner.meta_loss(episodes)
    targets = torch.nn.functional.one_hot(episodes.query_y, WAYS).double()
    assert torch.allclose(loss, ((learner.query_logits(episodes) - targets) ** 2).mean())


def test_tadam_starts_as_a_scaled_protonet():
    """With the FiLM post-multipliers at 0 the conditioned embedding is the plain one."""
    learner = make_learner("tadam")
    episodes = make_episodes()
    from innerloop.algorithms.metric.protonet import ProtoNet

    protonet = ProtoNet(learner.backbone).eval()
    with torch.no_grad():
        learner.log_metric_scale.fill_(torch.log(torch.tensor(2.5)))
    assert torch.allclose(learner.query_logits(episodes), 2.5 * protonet.query_logits(episodes), atol=1e-8)
    with torch.no_grad():
        learner.gamma_scale.fill_(0.5)
    assert not torch.allclose(learner.query_logits(episodes), 2.5 * protonet.query_logits(episodes), atol=1e-6)


def test_matching_predictions_are_attention_weighted_labels():
    learner = make_learner("matching")
    episodes = make_episodes()
    log_probabilities = learner.query_logits(episodes)
    assert torch.allclose(log_probabilities.exp().sum(-1), torch.ones(TASKS, WAYS * QUERIES, dtype=torch.float64))
    support = learner.backbone(episodes.support_x[0])
    query = learner.backbone(episodes.query_x[0, :1])
    cosine = torch.nn.functional.cosine_similarity(query, support)
    attention = torch.softmax(cosine, 0)
    expected = torch.stack([attention[episodes.support_y[0] == k].sum() for k in range(WAYS)])
    assert torch.allclose(log_probabilities[0, 0].exp(), expected)


RECIPES = Path(__file__).resolve().parents[1] / "configs" / "omniglot"
COMPARISON = ["siamese", "matching", "matching-fce", "relation", "tadam", "r2d2", "metaoptnet", "hypernet",
              "leo", "mann", "snail", "transformer"]


@pytest.mark.parametrize("name", COMPARISON)
def test_recipe_trains_and_evaluates_on_real_omniglot(name, tmp_path, omniglot_root):
    """Each comparison recipe runs end to end through the command line (a few steps)."""
    recipe = RECIPES / f"{name}-5w1s.yaml"
    config = load_config(recipe)
    assert config.model.algorithm == name.removesuffix("-fce")
    assert (config.train.ways == 5) == type(make_learner(name)).fixed_ways  # set-based ones train 20-way
    settings = ["num_threads=1", "train.steps=4", "train.val_every=4", "train.val_episodes=4",
                "train.log_every=2", "eval.episodes=6", "train.meta_batch_size=1"]
    run_dir = tmp_path / name
    code = main(["train", str(recipe), "--run-dir", str(run_dir), "--data-root", str(omniglot_root), "--quiet",
                 *[part for setting in settings for part in ("--set", setting)]])
    assert code == 0
    report = json.loads((run_dir / "eval-test-5w1s15q-best-6ep-seed0.json").read_text())
    assert report["method"] == config.model.algorithm and report["transductive"] is False
    assert "of the support set" in report["adaptation"]
    assert 0 <= report["results"][0]["mean"] <= 1


def test_fixed_ways_methods_must_be_evaluated_with_their_training_ways():
    with pytest.raises(ConfigError, match="eval.ways: snail has one output per label of a 5-way task"):
        config_from_dict({"model": {"algorithm": "snail"}, "train": {"ways": 5}, "eval": {"ways": 20}})
    config_from_dict({"model": {"algorithm": "relation"}, "train": {"ways": 20}, "eval": {"ways": 5}})


def test_model_options_are_checked_and_reach_the_learner():
    from innerloop.build import build_learner

    with pytest.raises(ConfigError, match="model.svm_c must be > 0"):
        config_from_dict({"model": {"algorithm": "metaoptnet", "svm_c": 0}})
    learner = build_learner(config_from_dict({"model": {"algorithm": "metaoptnet", "svm_c": 0.5, "solver_steps": 7}}))
    assert (learner.svm_c, learner.solver_steps) == (0.5, 7)
    matching = build_learner(config_from_dict({"model": {"algorithm": "matching", "full_context_embeddings": True,
                                                         "attention_steps": 2}}))
    assert matching.context is not None and matching.context.attention_steps == 2
    relation = build_learner(config_from_dict({"model": {"algorithm": "relation"}}))
    assert relation.backbone.feature_side == 7  # 28 → 14 → 7, the last two blocks unpooled
    leo = build_learner(config_from_dict({"model": {"algorithm": "leo"}, "inner": {"steps": 3, "eval_steps": 8}}))
    assert (leo.latent_steps, leo.eval_latent_steps) == (3, 8) and "8 latent gradient steps" in leo.adaptation_cost()
    with pytest.raises(ConfigError, match="model.full_context_embeddings applies to matching only"):
        config_from_dict({"model": {"algorithm": "protonet", "full_context_embeddings": True}})
    with pytest.raises(ConfigError, match="model.solver_steps applies to metaoptnet only"):
        config_from_dict({"model": {"algorithm": "r2d2", "solver_steps": 5}})
    # runs saved while these options had numeric defaults still load for evaluation and resume
    from innerloop.config import without_inapplicable_model_options

    saved = {"model": {"algorithm": "siamese", "attention_steps": 5, "svm_c": 0.1, "solver_steps": 20, "latent_dim": 64}}
    assert config_from_dict(without_inapplicable_model_options(saved)).model.solver_steps is None
